"""The Prometheus endpoint of a node (``metrics_port``; needs the ``metrics`` extra).

A custom prometheus-client ``Collector`` reads everything at scrape time: the gauges
from the node's :class:`~actors.status.StatusBoard`, the counters and histograms from
its :class:`~actors.metrics.NodeMetrics`, the log and snapshot sizes from the Raft
core, the frame counters from the transports. Nothing on the hot path talks to
prometheus-client, and importing a node does not import it: the node imports this
module only when ``metrics_port`` is set, after :func:`actors.metrics.require_prometheus`
gave a clear error if the extra is missing.

Every metric carries a ``member`` label, so several nodes of one process (tests) or
one Prometheus job over a whole cluster stay apart. Names:

=========================================  =========  ==========================================
``raft_term``                              gauge      current term
``raft_role{role}``                        gauge      1 for the node's role, 0 for the others
``raft_commit_index``                      gauge      highest committed log index
``raft_applied_index``                     gauge      highest applied log index
``raft_last_log_index``                    gauge      last log index
``raft_log_entries`` / ``raft_log_bytes``  gauge      entries (and their payload bytes) in the
                                                      in-memory log (since the compaction point)
``raft_snapshot_index``                    gauge      index of the latest snapshot
``raft_snapshot_bytes``                    gauge      size of the latest snapshot
``raft_voters`` / ``raft_learners``        gauge      members of the latest configuration
``raft_removed``                           gauge      1 once this node learnt it was removed
``raft_proposals_total``                   counter    commands handed to Raft
``raft_commits_total``                     counter    committed entries handed to the state machine
``raft_applies_total``                     counter    entries applied
``raft_apply_seconds``                     histogram  time to apply one batch of entries
``raft_fsync_seconds``                     histogram  time of one storage sync (group commit)
``raft_append_batch_entries``              histogram  log entries written per storage sync
``raft_elections_started_total``           counter    elections started (not pre-votes)
``raft_elections_won_total``               counter    elections won
``raft_sessions``                          gauge      open client sessions
``raft_pending_server_requests``           gauge      server requests awaiting an ack
``raft_server_requests_retried_total``     counter    server requests resent
``raft_frames_in_total{port}``             counter    frames received on ``peer``/``client``
``raft_frames_out_total{port}``            counter    frames sent
``raft_frames_dropped_total{port}``        counter    frames dropped (no route, full queue)
``raft_frame_decode_errors_total{port}``   counter    frames dropped as undecodable/malformed
                                                      (or, with CURVE, sent under another
                                                      member's id)
``raft_uptime_seconds``                    gauge      seconds since the node started
=========================================  =========  ==========================================
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from actors.metrics import Histogram
from actors.status import StatusBoard
from actors.transport import TransportStats
from protocol.raft import RaftCore

__all__ = ["MetricsServer", "MetricsSource", "NodeCollector", "start_metrics_server"]

_ROLES = ("follower", "pre-candidate", "candidate", "leader", "removed")


@dataclass(frozen=True, slots=True)
class MetricsSource:
    """What a node's collector reads at scrape time."""

    member_id: str
    board: StatusBoard
    started_at: float  # time.monotonic() at start
    core: RaftCore | None = None
    #: Port name ("peer", "client") -> that transport's ``stats``.
    transports: Mapping[str, Callable[[], TransportStats]] = field(default_factory=dict)
    #: Extra decode errors per port counted above the transport (e.g. by an actor).
    decode_errors: Mapping[str, Callable[[], int]] = field(default_factory=dict)


def _log_sizes(core: RaftCore | None) -> tuple[int, int]:
    if core is None:
        return 0, 0
    entries = list(core.log.entries)  # one atomic copy: the consensus actor appends
    return len(entries), sum(len(e.data) for e in entries)


class NodeCollector(Collector):
    """A prometheus-client custom collector over one :class:`MetricsSource`."""

    def __init__(self, source: MetricsSource) -> None:
        self.source = source

    def describe(self) -> list[Any]:
        return []  # unchecked collector: metrics are only produced at scrape time

    def collect(self) -> Iterator[Any]:
        src = self.source
        member = src.member_id
        f = src.board.read()
        m = src.board.metrics

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["member"])
            g.add_metric([member], value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=["member"])
            c.add_metric([member], value)
            return c

        def histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
            total = h.sum
            buckets = h.cumulative()
            hf = HistogramMetricFamily(name, doc, labels=["member"])
            hf.add_metric([member], buckets, total)
            return hf

        yield gauge("raft_term", "Current Raft term.", f.term)
        role = GaugeMetricFamily(
            "raft_role", "1 for the node's Raft role.", labels=["member", "role"]
        )
        for name in _ROLES:
            role.add_metric([member, name], 1.0 if f.role == name else 0.0)
        yield role
        yield gauge("raft_commit_index", "Highest committed log index.", f.commit_index)
        yield gauge("raft_applied_index", "Highest applied log index.", f.applied_index)
        yield gauge("raft_last_log_index", "Last log index.", f.last_log_index)
        entries, nbytes = _log_sizes(src.core)
        yield gauge("raft_log_entries", "Entries in the in-memory log.", entries)
        yield gauge("raft_log_bytes", "Payload bytes of the in-memory log.", nbytes)
        yield gauge("raft_snapshot_index", "Index of the latest snapshot.", f.snapshot_index)
        snap = len(src.core.snapshot_data) if src.core is not None else 0
        yield gauge("raft_snapshot_bytes", "Size of the latest snapshot.", snap)
        yield gauge("raft_voters", "Voters in the latest configuration.", len(f.voters))
        yield gauge("raft_learners", "Learners in the latest configuration.", len(f.learners))
        yield gauge("raft_removed", "1 once this node was removed.", f.role == "removed")
        yield counter("raft_proposals", "Commands handed to Raft.", m.proposals)
        yield counter("raft_commits", "Committed entries handed to apply.", m.commits)
        yield counter("raft_applies", "Entries applied.", m.applies)
        yield histogram("raft_apply_seconds", "Time to apply a batch.", m.apply_seconds)
        yield histogram("raft_fsync_seconds", "Time of one storage sync.", m.fsync_seconds)
        yield histogram(
            "raft_append_batch_entries", "Entries per storage sync.", m.append_batch_entries
        )
        yield counter("raft_elections_started", "Elections started.", m.elections_started)
        yield counter("raft_elections_won", "Elections won.", m.elections_won)
        yield gauge("raft_sessions", "Open client sessions.", f.sessions)
        yield gauge(
            "raft_pending_server_requests",
            "Server requests awaiting an ack.",
            f.pending_server_requests,
        )
        yield counter(
            "raft_server_requests_retried", "Server requests resent.", m.server_requests_retried
        )
        yield counter(
            "raft_ticks_skipped",
            "Consensus ticks skipped while the previous one waited (the actor was behind).",
            m.ticks_skipped,
        )
        frames: dict[str, CounterMetricFamily] = {
            key: CounterMetricFamily(name, doc, labels=["member", "port"])
            for key, name, doc in (
                ("in", "raft_frames_in", "Frames received."),
                ("out", "raft_frames_out", "Frames sent."),
                ("dropped", "raft_frames_dropped", "Frames dropped for lack of a route."),
                ("bad", "raft_frame_decode_errors", "Frames dropped as undecodable/malformed."),
            )
        }
        for port, stats_of in src.transports.items():
            stats = stats_of()
            extra = src.decode_errors.get(port)
            bad = stats.decode_errors + stats.malformed + stats.oversized + stats.forged
            bad += extra() if extra is not None else 0
            frames["in"].add_metric([member, port], stats.frames_in)
            frames["out"].add_metric([member, port], stats.frames_out)
            frames["dropped"].add_metric([member, port], stats.dropped)
            frames["bad"].add_metric([member, port], bad)
        yield from frames.values()
        uptime = time.monotonic() - src.started_at
        yield gauge("raft_uptime_seconds", "Seconds since the node started.", uptime)


class MetricsServer:
    """A running HTTP endpoint serving ``/metrics``; :meth:`stop` ends it."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host: str = server.server_address[0]
        self.port: int = server.server_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self, timeout: float = 5.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


def start_metrics_server(
    source: MetricsSource, port: int, host: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``source``'s metrics on ``http://host:port/metrics`` (port 0: any free
    port, see :attr:`MetricsServer.port`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(source))
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
