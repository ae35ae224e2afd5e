"""The ``harness`` fixture: the conformance suite runs once per transport implementation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import Harness, InMemoryHarness, ZmqHarness, transport_threads


@pytest.fixture(params=[InMemoryHarness, ZmqHarness], ids=["inmemory", "zmq"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    made: Harness = request.param()
    try:
        yield made
    finally:
        made.close()
    assert transport_threads() == [], "a transport left a thread running"
