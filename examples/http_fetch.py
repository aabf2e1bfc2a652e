"""An I/O-bound workload: fetch items from an HTTP server on 127.0.0.1 that it starts itself.

Each chunk fetches its share of ``requests`` items, one after another; the server holds each
answer for ``latency_ms`` milliseconds (a remote API, a database), so a chunk spends its time
waiting, not computing. Waiting holds no core and no GIL: threads scale this far past the
number of cores (the classic threads-for-I/O lesson), and so do processes, at a higher price.

Who starts the server, and how the workers find it: the workload's ``setup`` runs in the driver
around every run (``serve``: a threaded HTTP server on 127.0.0.1, on a free port), and yields
its URL, which ``split`` (after its ``*``: not a job parameter) puts into every chunk's
arguments. Every worker the runner starts on this machine reaches it, whatever the backend:
threads, pool processes, Dask and Ray workers. (A cluster on other machines would need the
server on an address they can reach.)

Verified by its own check: an item's body is a pure function of its number, so the driver
recomputes the sum without any network.

    runner scale --job examples/http_fetch.toml --backend threads,local --workers 1,2,4,8
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cluster_runner import workload


def item_value(number: int) -> int:
    """What item ``number`` is worth: the first 32 bits of a hash of its name."""
    return int(hashlib.sha256(f"item {number}".encode()).hexdigest()[:8], 16)


class _Items(BaseHTTPRequestHandler):
    """``GET /item/N``: item N's value, after the server's latency."""

    def do_GET(self) -> None:
        prefix = "/item/"
        if not self.path.startswith(prefix) or not self.path[len(prefix) :].isdigit():
            self.send_error(404)
            return
        time.sleep(self.server.latency)  # type: ignore[attr-defined]
        body = str(item_value(int(self.path[len(prefix) :]))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a line per request would drown the runner's output."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many workers may connect at once
    latency = 0.0


@contextlib.contextmanager
def serve(latency_ms: int) -> Iterator[dict[str, str]]:
    """The setup: a server on 127.0.0.1 (a free port) for the runs; yields its URL."""
    server = _Server(("127.0.0.1", 0), _Items)
    server.latency = latency_ms / 1000
    thread = threading.Thread(target=server.serve_forever, name="http_fetch-server", daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_address[1]}"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def split(requests: int = 200, chunks: int = 32, latency_ms: int = 10, *, url: str):
    """One (url, first, stop) range of item numbers per chunk; ``url`` comes from setup."""
    base, extra = divmod(requests, chunks)
    bounds, start = [], 0
    for i in range(chunks):
        stop = start + base + (i < extra)
        bounds.append((url, start, stop))
        start = stop
    return bounds


def expected_total(total: int, requests: int) -> bool:
    """Its own oracle: the sum of every item's value, computed here without the server."""
    return total == sum(item_value(n) for n in range(requests))


#: No proxy for 127.0.0.1, whatever http_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@workload(split=split, reduce=sum, setup=serve, verify=expected_total, weak="requests")
def fetch(url: str, first: int, stop: int) -> int:
    """Fetch items ``first`` to ``stop - 1``, one request each; the sum of their values."""
    total = 0
    for number in range(first, stop):
        with _OPENER.open(f"{url}/item/{number}", timeout=60) as answer:
            total += int(answer.read())
    return total
