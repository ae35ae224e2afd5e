"""The CURVE tests' fixtures: one key ring per test module, transports to stop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security.harness import Stoppers
from tests.security.keys import KeyRing, make_keys


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def stoppers() -> Iterator[Stoppers]:
    made: Stoppers = []
    yield made
    for transport in made:
        transport.stop()
