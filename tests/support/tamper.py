"""A TCP relay on 127.0.0.1 that corrupts what clients send: bytes changed on the way.

:class:`TamperingRelay` forwards every connection to a server's port and, in the
client's bytes, replaces the first occurrence of ``marker`` with ``swapped`` (same
length, so HTTP framing stays intact and only a hash can tell), or with ``cut=True``
drops that connection there, half sent, as a network that fails mid-upload. It holds back the last
``len(marker) - 1`` bytes of what it has seen until more arrive or the client pauses, so
a marker split across reads is still found. Every loop is bounded: the relay stops with
its context, each connection when either side closes or after ``CONNECTION_SECONDS``.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time

CONNECTION_SECONDS = 60.0
PAUSE_SECONDS = 0.05
"""A client quiet this long has sent all it will before an answer: flush what is held."""


class TamperingRelay:
    def __init__(
        self, target_port: int, marker: bytes, swapped: bytes, *, cut: bool = False
    ) -> None:
        if len(marker) != len(swapped) or not marker or marker == swapped:
            raise ValueError("swapped must differ from marker and have its length")
        self._target = target_port
        self._marker = marker
        self._swapped = swapped
        self._cut = cut
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.swaps = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> TamperingRelay:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(CONNECTION_SECONDS)
        self._listener.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._relay, client)

    def _relay(self, client: socket.socket) -> None:
        deadline = time.monotonic() + CONNECTION_SECONDS
        with client, socket.create_connection(("127.0.0.1", self._target)) as upstream:
            held = b""
            with selectors.DefaultSelector() as selector:
                selector.register(client, selectors.EVENT_READ)
                selector.register(upstream, selectors.EVENT_READ)
                while time.monotonic() < deadline and not self._stop.is_set():
                    events = selector.select(PAUSE_SECONDS)
                    if not events and held:
                        upstream.sendall(held)
                        held = b""
                    for key, _ in events:
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                        if not data:
                            with contextlib.suppress(OSError):
                                upstream.sendall(held)
                            return
                        if key.fileobj is client:
                            held, cut = self._forward(upstream, held + data)
                            if cut:
                                return  # both sockets close half way
                        else:
                            client.sendall(data)

    def _forward(self, upstream: socket.socket, seen: bytes) -> tuple[bytes, bool]:
        """Send what cannot be the start of a marker; return the rest to hold, and whether
        this connection is to be cut here."""
        with self._lock:
            if self.swaps == 0 and self._marker in seen:
                self.swaps += 1
                if self._cut:
                    upstream.sendall(seen[: seen.index(self._marker)])
                    return b"", True
                seen = seen.replace(self._marker, self._swapped, 1)
        keep = len(self._marker) - 1
        upstream.sendall(seen[:-keep] if keep else seen)
        return (seen[-keep:] if keep else b""), False
