"""Who may talk to a Dask scheduler: the TLS and loopback policy, decided before any packet.

Whoever can open a connection to a Dask scheduler can run any code on its workers, and Dask has
no authentication but mutual TLS. The rules, as :func:`tls_files` applies them to
``BackendOptions.extra`` and the ``--address``:

- the three PEM files (``tls_ca_file``, ``tls_cert``, ``tls_key``) come together or not at all,
  and each must be a readable file;
- a ``tls://`` address needs them, and a ``tcp://`` address with them is a mistake (the user
  meant ``tls://``);
- plain ``tcp://`` to a host that is not this machine's loopback is refused unless
  ``extra["insecure"]`` says the user knows (``--insecure``): anyone on the path could read the
  traffic and anyone who can reach the scheduler could run code.

An engine without TLS (Ray) follows the same loopback rule (:func:`require_loopback`): its
traffic, the cluster's token among it, crosses the network in clear, so no packet goes to a
host that is not this machine's loopback unless ``extra["insecure"]`` says the user knows.

Pure logic, with no engine import, so that it is tested without Dask; the Dask backend only
turns the :class:`TlsFiles` into a ``distributed.security.Security``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cluster_runner.backends.addresses import Address, is_loopback
from cluster_runner.errors import UsageError

#: The ``BackendOptions.extra`` keys of the TLS files, and the flags that set them.
TLS_KEYS = ("tls_ca_file", "tls_cert", "tls_key")


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of mutual TLS: the cluster's CA, and a certificate it signed with its key."""

    ca_file: str
    cert: str
    key: str


def tls_files(extra: Mapping[str, Any], address: Address | None) -> TlsFiles | None:
    """The TLS files ``extra`` asks for, checked against ``address``; ``None``: plain TCP.

    Raises a one-line :class:`UsageError` for incomplete or missing TLS files, a ``tls://``
    address without them (or ``tcp://`` with them), and plain TCP to a scheduler that is not on
    a loopback address without ``insecure``: all before any packet is sent.
    """
    files = {name: extra.get(name) for name in TLS_KEYS}
    given = {name: str(value) for name, value in files.items() if value}
    flags = {name: "--" + name.replace("_", "-") for name in files}
    if given and len(given) < len(files):
        missing = ", ".join(flags[name] for name in files if name not in given)
        raise UsageError(f"TLS needs --tls-ca-file, --tls-cert and --tls-key: {missing} missing")
    for name, path in given.items():
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise UsageError(f"{flags[name]} {path}: no such readable file")
    scheme = address.scheme if address else ""
    if not given:
        if scheme == "tls":
            raise UsageError(
                f"--address {address} is a TLS address: give --tls-ca-file, --tls-cert and"
                " --tls-key (PEM files of the cluster's CA and of a certificate it signed)"
            )
        if address is not None and not is_loopback(address.host) and not extra.get("insecure"):
            raise UsageError(
                f"refusing plain tcp:// to the Dask scheduler at {address.host}, which is not"
                " on this machine: anyone who can reach it can run code on its workers, and"
                " the traffic is not encrypted. Use tls://HOST:PORT with --tls-ca-file,"
                " --tls-cert and --tls-key, or pass --insecure on a network you trust"
            )
        return None
    if scheme == "tcp":
        assert address is not None
        raise UsageError(
            f"--address {address} is plain TCP but TLS files were given: use"
            f" tls://{address.hostport}"
        )
    return TlsFiles(given["tls_ca_file"], given["tls_cert"], given["tls_key"])


def require_loopback(engine: str, address: Address | None, extra: Mapping[str, Any]) -> None:
    """Refuse a plain (unencrypted) connection to ``address`` off this machine, unless
    ``extra["insecure"]``: one line, before any packet is sent (and before a token is read)."""
    if address is None or is_loopback(address.host) or extra.get("insecure"):
        return
    raise UsageError(
        f"refusing to connect to the {engine} cluster at {address}, which is not on this"
        f" machine, over an unencrypted connection: its token and your data would cross the"
        f" network in clear, and anyone who can reach it can run code on its workers. Tunnel"
        f" it (ssh -L {address.port}:127.0.0.1:{address.port} HEAD, then --address"
        f" 127.0.0.1:{address.port}), or pass --insecure on a network you trust"
    )
