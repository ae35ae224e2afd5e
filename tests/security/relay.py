"""A recording TCP relay: forwards every connection to a target and keeps a copy of
every byte that passed, so tests can look for plaintext on the wire."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType


class RecordingRelay:
    """Listens on 127.0.0.1 (a free port); each accepted connection is relayed to
    ``target_port``. :meth:`recorded` returns everything seen, both directions."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._data = bytearray()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name="test-relay", daemon=True)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def recorded(self) -> bytes:
        with self._lock:
            return bytes(self._data)

    def start(self) -> RecordingRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        for sock in [*self._sockets, self._listener]:
            sock.close()
        self._selector.close()

    def __enter__(self) -> RecordingRelay:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                if key.data is None:
                    self._accept()
                else:
                    self._pump(key.fileobj, key.data)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            inbound, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            outbound = socket.create_connection(("127.0.0.1", self.target_port), timeout=2.0)
        except OSError:
            inbound.close()
            return
        for sock in (inbound, outbound):
            sock.setblocking(False)
            self._sockets.append(sock)
        self._selector.register(inbound, selectors.EVENT_READ, outbound)
        self._selector.register(outbound, selectors.EVENT_READ, inbound)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            chunk = source.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            for sock in (source, sink):
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
                sock.close()
            return
        with self._lock:
            self._data += chunk
        try:
            sink.setblocking(True)
            sink.sendall(chunk)
            sink.setblocking(False)
        except OSError:
            pass
