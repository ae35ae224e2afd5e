"""A node's metrics: plain counters and histograms that the actors bump as they go.

Keeping the hot path cheap is the point: a bump is an attribute increment (or, for a
histogram, a ``bisect`` and three increments) on the thread that owns the number, with
no lock and no call into a metrics library. Every counter has exactly one writer thread
(named next to it), so increments are never lost; a reader on another thread (the
metrics endpoint, at scrape time) may see a histogram mid-update, off by one
observation, which Prometheus tolerates.

The gauges (term, role, indexes, sessions ...) are not kept here: they are read from
the node's :class:`~actors.status.StatusBoard` at scrape time. :mod:`actors.metrics_http`
turns both into Prometheus metrics; it is the only module that needs
``prometheus-client`` (the ``metrics`` extra).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from protocol.raft.types import Role

__all__ = [
    "BATCH_BUCKETS",
    "LATENCY_BUCKETS",
    "Histogram",
    "MetricsUnavailableError",
    "NodeMetrics",
    "require_prometheus",
]


class MetricsUnavailableError(RuntimeError):
    """Metrics were asked for but prometheus-client (the ``metrics`` extra) is missing."""


def require_prometheus() -> None:
    """Raise :class:`MetricsUnavailableError` unless prometheus-client can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MetricsUnavailableError(
            "metrics are enabled (metrics_port) but prometheus-client is not installed: "
            "pip install 'raft-actors[metrics]'"
        ) from None


#: Upper bounds (seconds) for apply and fsync latencies: 50 us to 2.5 s.
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
#: Upper bounds for batch sizes (entries).
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0)


class Histogram:
    """Counts of observations per bucket (``bounds`` are inclusive upper bounds, the
    last bucket is +Inf), their sum and number. One writer thread only."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, cumulative count)`` pairs as Prometheus wants them, +Inf last."""
        counts = list(self.counts)  # one copy: the writer may bump meanwhile
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out


class NodeMetrics:
    """Every counter and histogram of one node (its writer thread in brackets)."""

    __slots__ = (
        "append_batch_entries",
        "applies",
        "apply_seconds",
        "commits",
        "elections_started",
        "elections_won",
        "fsync_seconds",
        "proposals",
        "server_requests_retried",
        "ticks_skipped",
    )

    def __init__(self) -> None:
        #: Commands handed to the Raft core's ``propose`` [consensus actor].
        self.proposals = 0
        #: Committed entries handed to the state machine [consensus actor].
        self.commits = 0
        #: Entries applied to the state machine [session actor].
        self.applies = 0
        #: Real (not pre-vote) elections this node started [consensus actor].
        self.elections_started = 0
        #: Elections this node won [consensus actor].
        self.elections_won = 0
        #: Server requests resent to clients because unacknowledged [session actor].
        self.server_requests_retried = 0
        #: Consensus ticks skipped because the previous one was still waiting: the
        #: consensus actor was behind, and its timers stretched [ticker].
        self.ticks_skipped = 0
        #: Time to apply one batch of committed entries [session actor].
        self.apply_seconds = Histogram(LATENCY_BUCKETS)
        #: Time of one storage sync (a group commit) [storage writer].
        self.fsync_seconds = Histogram(LATENCY_BUCKETS)
        #: Log entries written per storage sync (group commit size) [storage writer].
        self.append_batch_entries = Histogram(BATCH_BUCKETS)

    def on_role(self, role: Role) -> None:
        """The Raft role changed (or the term did while candidate)."""
        if role == Role.CANDIDATE:
            self.elections_started += 1
        elif role == Role.LEADER:
            self.elections_won += 1

    def tick_skipped(self) -> None:
        """A consensus tick was skipped (:class:`actors.clock.TickGate`)."""
        self.ticks_skipped += 1

    def applied(self, entries: int, seconds: float) -> None:
        """The session actor applied a batch of ``entries`` in ``seconds``."""
        self.applies += entries
        self.apply_seconds.observe(seconds)

    def on_sync(self, seconds: float, entries: int) -> None:
        """The storage writer synced ``entries`` log entries in ``seconds``."""
        self.fsync_seconds.observe(seconds)
        if entries:
            self.append_batch_entries.observe(entries)
