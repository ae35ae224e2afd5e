"""The thread that hands server requests to the application's handler, in order.

It is separate from the client's session thread so that a handler may itself use the
client (``client.call(...)`` inside a handler waits for the session thread, which keeps
running). A request is reported *handled* only after the handler returned; the session
thread acknowledges it to the cluster only then, so a request whose handler never ran
(the client was closed or the process died) is resent by the cluster, never lost.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from protocol.ids import RequestId
from protocol.wire import ServerRequest

__all__ = ["ServerRequestDispatcher"]

LOG = logging.getLogger("actors.client")


class ServerRequestDispatcher:
    """Calls ``handler(decode(payload))`` for each server request, one at a time, in the
    order given, then ``report_handled(request_id)``.

    A payload that does not decode, or a handler that raises, is logged and counted and
    the request still counts as handled: it cannot be handled better by a retry, and an
    unacknowledged request would block every later one.
    """

    def __init__(
        self,
        handler: Callable[[Any], None],
        decode: Callable[[bytes], Any],
        report_handled: Callable[[RequestId], None],
        *,
        name: str,
    ) -> None:
        self._handler = handler
        self._decode = decode
        self._report = report_handled
        self._name = name
        self._queue: queue.SimpleQueue[list[ServerRequest] | None] = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        #: Handlers called (whether they raised or not).
        self.handled = 0
        #: Payloads that did not decode plus handlers that raised.
        self.errors = 0

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def put(self, batch: list[ServerRequest]) -> None:
        """Queue server requests for the handler (called by the session thread)."""
        self._queue.put(batch)

    def stop(self) -> None:
        """Stop after the handler running now, if any; queued requests are dropped
        unacknowledged (the session is ending). Does not wait: see :meth:`join`."""
        self._stopping = True
        self._queue.put(None)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the thread to end (not from the thread itself)."""
        thread = self._thread
        if thread.ident is not None and thread is not threading.current_thread():
            thread.join(max(timeout, 0.0))
            if thread.is_alive():
                LOG.warning("%s: a server-request handler is still running", self._name)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None or self._stopping:
                return
            for request in batch:
                if self._stopping:
                    return
                self._handle(request)
                self._report(request.request_id)

    def _handle(self, request: ServerRequest) -> None:
        self.handled += 1
        try:
            value = self._decode(request.payload)
        except Exception:
            self.errors += 1
            LOG.exception(
                "%s: server request %d has a payload the codec cannot decode; skipped",
                self._name,
                request.request_id,
            )
            return
        try:
            self._handler(value)
        except Exception:
            self.errors += 1
            LOG.exception(
                "%s: the server-request handler raised on request %d",
                self._name,
                request.request_id,
            )
