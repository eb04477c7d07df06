"""What every in-package cloud fake shares: a loopback JSON server, faults, one vocabulary.

Each adapter ships a fake of its cloud (``multicloud_aws.testing``, ...) that the real SDK
reaches over HTTP on 127.0.0.1, so the adapter's requests are exactly the SDK's. The fakes
speak one vocabulary to the tests (:class:`FakeCloud`):

* ``fail_next(operation, error, times=1)`` — the next calls of an operation answer with the
  cloud's own error (its code, e.g. ``InsufficientInstanceCapacity``);
* ``preempt(workload)`` — the cloud reclaims a workload (spot interruption, preemption,
  eviction), as the cloud itself would show it;
* ``finish(workload, exit_code)`` — the workload's command ends with ``exit_code``, as its
  node program would report it;
* ``launches`` — launch requests the fake accepted (each launch must be seen exactly once).

:func:`serve_json` runs a handler on a free loopback port; :func:`block_external_network`
proves that nothing reaches a real endpoint while a test runs.
"""

from __future__ import annotations

import abc
import contextlib
import json
import socket
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Call", "FakeCloud", "Faults", "JsonHandler", "block_external_network", "serve_json"]


@dataclass(frozen=True)
class Call:
    """One request a fake received.

    Attributes:
        method: HTTP method.
        path: Path with query string.
        body: Parsed JSON body (or the raw text when not JSON; None when empty).
        headers: Request headers.
        raw: The body's bytes as sent (signed requests hash them).
    """

    method: str
    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def route(self) -> str:
        """The path without its query string."""
        return urllib.parse.urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (the last value of a repeated one)."""
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))


class Faults:
    """Errors queued per operation, taken one call at a time (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[str, list[Any]] = {}

    def add(self, operation: str, error: Any, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``operation`` with ``error``.

        Args:
            operation: The fake's name of the operation.
            error: What the fake answers with (its own description of the cloud's error).
            times: How many calls it hits.
        """
        with self._lock:
            self._queued.setdefault(operation, []).extend([error] * times)

    def take(self, operation: str) -> Any | None:
        """Return the error queued for this call of ``operation``, if any."""
        with self._lock:
            queue = self._queued.get(operation)
            return queue.pop(0) if queue else None

    def clear(self) -> None:
        """Drop every queued error."""
        with self._lock:
            self._queued.clear()


class FakeCloud(abc.ABC):
    """The controls every cloud fake offers to tests (one vocabulary across clouds)."""

    def __init__(self) -> None:
        self.faults = Faults()
        self.launches: Counter[str] = Counter()

    def fail_next(self, operation: str, error: str, *, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``operation`` with the cloud's error ``error``.

        Args:
            operation: The cloud's operation name (``RunInstances``, ``instances.insert``,
                ``virtualMachines.createOrUpdate``, ``create Job``, ...).
            error: The cloud's own error code.
            times: How many calls it hits.
        """
        self.faults.add(operation, error, times)

    @abc.abstractmethod
    def preempt(self, workload: str) -> None:
        """Reclaim a workload the way the cloud shows it (interruption, preemption, eviction).

        Args:
            workload: The handle id of a launch (every node of the gang is reclaimed).
        """

    @abc.abstractmethod
    def finish(self, workload: str, exit_code: int) -> None:
        """End a workload's command with ``exit_code``, reported as its node program would.

        Args:
            workload: The handle id of a launch (every node ends).
            exit_code: The command's exit code.
        """


JsonHandler = Callable[[Call], "tuple[int, Any] | tuple[int, Any, Mapping[str, str]]"]
"""Answers one request: ``(HTTP status, JSON-ready body)``, optionally with response
headers (an ARM ``Azure-AsyncOperation``, an OCI ``opc-next-page``)."""


class _Handler(BaseHTTPRequestHandler):
    answer: JsonHandler

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        call = Call(self.command, self.path, body, dict(self.headers.items()), raw)
        answer = type(self).answer(call)
        status, payload = answer[0], answer[1]
        headers: Mapping[str, str] = answer[2] if len(answer) > 2 else {}
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


@contextlib.contextmanager
def serve_json(answer: JsonHandler, *, name: str = "fake-cloud") -> Iterator[str]:
    """Serve ``answer`` on 127.0.0.1 (a free port) for the duration of the block.

    Args:
        answer: The fake's request handler.
        name: Thread name (for debugging).

    Yields:
        The base URL, ``http://127.0.0.1:<port>``.
    """
    handler = type("Handler", (_Handler,), {"answer": staticmethod(answer)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    # A short poll interval keeps the shutdown at the end of every test quick.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=name, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def block_external_network() -> Iterator[list[str]]:
    """Refuse every socket connection that is not to a loopback address, and record it.

    Yields:
        The refused addresses, for the test to assert empty.
    """
    refused: list[str] = []
    real_connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            refused.append(str(host))
            raise ConnectionRefusedError(f"external network blocked in tests: {host}")
        real_connect(sock, address)

    socket.socket.connect = guarded  # type: ignore[method-assign,assignment]
    try:
        yield refused
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
