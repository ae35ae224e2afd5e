"""Two small parts of the client core: ordered delivery of server requests, deadlines."""

from __future__ import annotations

import heapq
from collections.abc import Callable

from protocol.ids import RequestId
from protocol.wire import ServerRequest

__all__ = ["DeadlineQueue", "ServerRequestInbox"]


class ServerRequestInbox:
    """Delivers one session's server requests in id order, each id exactly once.

    Ids start at 1 per session. Whatever the network does (duplicates, reordering,
    gaps filled later by the server's retries), :meth:`receive` hands out a prefix of
    1, 2, 3, ... (acknowledging them is the core's business: only once handled).
    """

    def __init__(self, max_buffered: int) -> None:
        self._max_buffered = max_buffered
        self._delivered = 0
        self._buffer: dict[int, bytes] = {}

    @property
    def delivered(self) -> int:
        """The highest id delivered; every lower id was delivered too."""
        return self._delivered

    def receive(self, msg: ServerRequest) -> list[ServerRequest]:
        """Take one arrival; return what to deliver now (possibly nothing).

        Duplicates of delivered ids and ids beyond a gap give nothing; the latter are
        held (bounded) until the gap fills.
        """
        rid = msg.request_id
        if rid <= self._delivered:
            return []
        if rid != self._delivered + 1:
            self._hold(rid, msg.payload)
            return []
        out = [msg]
        self._delivered = rid
        while self._delivered + 1 in self._buffer:
            self._delivered += 1
            payload = self._buffer.pop(self._delivered)
            out.append(ServerRequest(RequestId(self._delivered), payload))
        return out

    def clear(self) -> None:
        """Forget what is held out of order (the session ended)."""
        self._buffer.clear()

    def _hold(self, rid: int, payload: bytes) -> None:
        buffer = self._buffer
        if rid not in buffer and len(buffer) >= self._max_buffered:
            highest = max(buffer)
            if rid > highest:
                return  # no room: the server's retry scheduler resends it later
            del buffer[highest]  # keep the ids closest to delivery
        buffer[rid] = payload


class DeadlineQueue:
    """User deadlines of requests and queries, as (kind, id) keys ordered by time.

    Entries of requests that completed otherwise stay until they are due or until the
    queue outgrows the live keys, when it is compacted (so it stays O(pending)).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(
        self,
        deadline_ms: int,
        kind: int,
        ident: int,
        live: int,
        is_live: Callable[[int, int], bool],
    ) -> None:
        """Add a deadline; ``live`` counts the pending keys, ``is_live`` tests one."""
        heapq.heappush(self._heap, (deadline_ms, kind, ident))
        if len(self._heap) > 2 * live + 64:
            self._heap = [e for e in self._heap if is_live(e[1], e[2])]
            heapq.heapify(self._heap)

    def next_ms(self) -> int | None:
        """The earliest deadline queued (perhaps of a key completed meanwhile), if any."""
        return self._heap[0][0] if self._heap else None

    def due(self, now_ms: int) -> list[tuple[int, int]]:
        """Remove and return the (kind, id) keys whose deadline is ``<= now_ms``."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            _, kind, ident = heapq.heappop(heap)
            out.append((kind, ident))
        return out

    def clear(self) -> None:
        self._heap.clear()
