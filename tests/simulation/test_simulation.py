"""Deterministic simulation: randomized fault schedules against the safety checks of
:mod:`tests.simulation.cluster` and the liveness check of
:mod:`tests.simulation.scenario`.

A failure prints the falsifying ``Scenario``; ``run_scenario(<that scenario>)``
replays it exactly (everything is seeded). The default suite runs 500 schedules; with
``scripts/test --long`` (``RAFT_ACTORS_LONG=1``) another 20,000 run.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from protocol.raft import raftlog
from tests.simulation.cluster import SafetyViolation
from tests.simulation.scenario import KINDS, Scenario, run_scenario

LONG = os.environ.get("RAFT_ACTORS_LONG") == "1"
CHAOS_TICKS = 100

ops = st.lists(
    st.tuples(
        st.integers(0, CHAOS_TICKS - 1),
        st.sampled_from(KINDS),
        st.integers(0, 7),
        st.integers(0, 7),
    ),
    max_size=25,
).map(lambda xs: tuple(sorted(xs)))

scenarios = st.builds(
    Scenario,
    seed=st.integers(0, 2**32 - 1),
    voters=st.sampled_from([3, 5]),
    drop=st.sampled_from([0.0, 0.02, 0.1]),
    duplicate=st.sampled_from([0.0, 0.05]),
    max_delay=st.integers(0, 3),
    sync=st.sampled_from([1.0, 0.7, 0.3]),
    ops=ops,
    chaos_ticks=st.just(CHAOS_TICKS),
    lazy_commit_notices=st.booleans(),
)


def _check(scenario: Scenario) -> None:
    note(f"replay: run_scenario({scenario!r})")
    run_scenario(scenario)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(scenarios)
def test_random_schedules_are_safe_and_live(scenario: Scenario) -> None:
    _check(scenario)


@pytest.mark.long
@pytest.mark.timeout(3 * 3600)
@settings(
    max_examples=20_000,
    suppress_health_check=[HealthCheck.too_slow],
    deadline=None,
    database=None,
)
@given(scenarios)
def test_random_schedules_long(scenario: Scenario) -> None:
    _check(scenario)


@pytest.mark.parametrize("lazy", [False, True])
def test_a_replayed_scenario_is_deterministic(lazy: bool) -> None:
    s = Scenario(
        seed=7,
        voters=5,
        drop=0.1,
        duplicate=0.05,
        max_delay=2,
        sync=0.3,
        ops=((10, "partition", 3, 0), (30, "crash", 1, 0), (40, "heal", 0, 0)),
        lazy_commit_notices=lazy,
    )
    a, b = run_scenario(s), run_scenario(s)
    assert a.chosen_terms == b.chosen_terms
    assert (a.sent, a.delivered, a.now) == (b.sent, b.delivered, b.now)


def test_the_checks_catch_a_broken_election_restriction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the up-to-date vote rule (§3.6.1) committed entries get lost: the
    harness must notice within a few schedules (so its checks can fail)."""
    monkeypatch.setattr(raftlog.RaftLog, "is_up_to_date", lambda self, i, t: True)
    caught = [0, 0]
    for seed in range(120):
        lazy = seed % 2 == 1  # with and without lazy commit notices
        s = Scenario(
            seed=seed // 2,
            lazy_commit_notices=lazy,
            voters=3,
            drop=0.1,
            max_delay=2,
            sync=0.5,
            ops=tuple(
                (t, "crash" if t % 20 == 0 else "restart", t // 7, 0) for t in range(0, 100, 5)
            ),
        )
        try:
            run_scenario(s)
        except SafetyViolation:
            caught[lazy] += 1
        except AssertionError:
            pass  # a liveness failure is not what this test is after
    assert caught[False] > 0 and caught[True] > 0
