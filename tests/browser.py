"""Open a page in a real headless Chromium, as a person would, and report what it saw.

Through the DevTools protocol (the browser's own, over a websocket; tornado's client, which
distributed already installs): every console error and uncaught exception, every request the
page made (an offline page makes none but ``file:`` and ``data:``), what a script finds in
the DOM once the page has loaded, and a screenshot of the whole page. Chromium comes from the
system's packages (``apt-get install chromium``, which ``.ci/run`` does); :func:`chromium`
is None without it, and the tests that need it skip.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Seconds the browser has to start, and the page to load.
START_S = 60.0
LOAD_S = 60.0


def chromium() -> str | None:
    """The system's Chromium (or Chrome), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageVisit:
    """What the browser saw: errors, requests, the DOM script's answer, a screenshot."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dom: Any = None
    screenshot: bytes = b""


def visit(page: Path, dom_script: str, screenshot: Path | None = None) -> PageVisit:
    """Load ``page`` in headless Chromium; run ``dom_script`` (an expression whose value is
    JSON-able) after the load event; keep a full-page screenshot in ``screenshot``."""
    binary = chromium()
    assert binary is not None, "no chromium on this machine"
    with tempfile.TemporaryDirectory(prefix="runner-chromium-") as profile:
        proc = subprocess.Popen(
            [
                binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", "--window-size=1300,900", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its helpers in one process group, ended together
        )  # fmt: skip
        try:
            url = _devtools_url(proc)
            visit_ = asyncio.run(asyncio.wait_for(_drive(url, page, dom_script), LOAD_S))
        finally:
            _end(proc)
    if screenshot is not None:
        screenshot.write_bytes(visit_.screenshot)
    return visit_


def _devtools_url(proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + START_S
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line.strip())
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            return match.group(1)
    raise RuntimeError("chromium did not start: " + " | ".join(seen[-5:]))


def _end(proc: subprocess.Popen) -> None:
    """End the browser and its helpers (its own process group, which we started)."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # helpers that outlived it (zygote, GPU process)
    proc.wait(timeout=10)
    if proc.stderr is not None:
        proc.stderr.close()


async def _drive(url: str, page: Path, dom_script: str) -> PageVisit:
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(url, max_message_size=256 * 2**20)
    seen = PageVisit()
    counter = iter(range(1, 10**9))
    pending: dict[int, asyncio.Future] = {}
    loaded = asyncio.get_running_loop().create_future()

    async def reader() -> None:
        while True:
            message = await ws.read_message()
            if message is None:
                return
            data = json.loads(message)
            if "id" in data and data["id"] in pending:
                pending.pop(data["id"]).set_result(data)
                continue
            _observe(data.get("method"), data.get("params", {}), seen, loaded)

    async def send(method: str, session: str | None = None, **params: Any) -> dict:
        number = next(counter)
        future = asyncio.get_running_loop().create_future()
        pending[number] = future
        message = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await ws.write_message(json.dumps(message))
        answer = await future
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    task = asyncio.create_task(reader())
    try:
        target = (await send("Target.createTarget", url="about:blank"))["targetId"]
        session = (await send("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            await send(f"{domain}.enable", session)
        await send("Page.navigate", session, url=page.resolve().as_uri())
        await loaded
        await asyncio.sleep(1.0)  # late errors (a script run after load)
        value = await send("Runtime.evaluate", session, expression=dom_script, returnByValue=True)
        seen.dom = value.get("result", {}).get("value")
        metrics = await send("Page.getLayoutMetrics", session)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = await send(
            "Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )  # fmt: skip
        seen.screenshot = base64.b64decode(shot["data"])
        await send("Browser.close")
    finally:
        task.cancel()
        ws.close()
    return seen


def _observe(method: str | None, params: dict, seen: PageVisit, loaded: asyncio.Future) -> None:
    if method == "Page.loadEventFired" and not loaded.done():
        loaded.set_result(True)
    elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        seen.errors.append(f"console.{params['type']}: {args}")
    elif method == "Runtime.exceptionThrown":
        seen.errors.append(f"exception: {params['exceptionDetails'].get('text')}")
    elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
        seen.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
    elif method == "Network.requestWillBeSent":
        seen.requests.append(params["request"]["url"])
    elif method == "Network.loadingFailed":
        seen.errors.append(f"failed to load: {params.get('errorText')}")
