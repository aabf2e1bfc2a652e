"""Cluster addresses: split one into its parts, and check that something answers there.

Shared by the backends that take ``--address`` (Dask, Ray). An engine's own connect can wait a
long time on an address where nothing listens (Ray retries its GCS for minutes), so the backends
first open a plain TCP connection here, within ``--connect-timeout``: an address that refuses or
does not answer becomes a one-line :class:`~cluster_runner.errors.ConnectError` at once, before
the engine is asked.

:func:`is_loopback` tells, from the address alone (no name lookup, no packet), whether a host
is this machine's loopback: the backends refuse unprotected connections to any other host.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass

from cluster_runner.errors import ConnectError, UsageError


@dataclass(frozen=True)
class Address:
    """``scheme://host:port`` taken apart; ``scheme`` is ``""`` when the user gave none."""

    scheme: str
    host: str
    port: int

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.hostport}" if self.scheme else self.hostport


def parse_address(text: str, schemes: tuple[str, ...], example: str) -> Address:
    """``text`` as an :class:`Address` whose scheme is one of ``schemes`` (``""``: none given).

    Raises a :class:`UsageError` naming the accepted form (``example``) for anything else.
    """
    scheme, sep, rest = text.strip().rpartition("://")
    if not sep:
        scheme, rest = "", text.strip()
    host, colon, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if scheme not in schemes or not colon or not host or not port.isdigit():
        raise UsageError(f"--address {text!r} is not an address of the form {example}")
    if not 0 < int(port) < 65536:
        raise UsageError(f"--address {text!r}: port {port} is out of range")
    return Address(scheme, host, int(port))


def is_loopback(host: str) -> bool:
    """True for ``localhost`` (RFC 6761) and loopback IP literals (127.0.0.0/8, ``::1``).

    Any other name counts as remote: resolving it would ask a name server, and what it
    resolves to may change.
    """
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def probe(address: Address, timeout: float, engine: str) -> None:
    """Open (and close) a TCP connection to ``address`` within ``timeout`` seconds.

    Retries a refused connection until the time is up, so a scheduler that is still starting
    gets the whole timeout; raises :class:`ConnectError` saying what happened if none succeeds.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((address.host, address.port), timeout=max(left, 0.1)):
                return
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            if isinstance(exc, socket.gaierror):
                raise ConnectError(
                    f"cannot connect to the {engine} cluster at {address}: unknown host"
                    f" {address.host!r} ({reason})"
                ) from None
            if time.monotonic() + 0.25 >= deadline:
                raise ConnectError(
                    f"cannot connect to the {engine} cluster at {address}: nothing answered"
                    f" within {timeout:g} s ({reason}); is it running, and is the address"
                    " right? (--connect-timeout sets the wait)"
                ) from None
            time.sleep(0.25)
