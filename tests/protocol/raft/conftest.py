"""Run every paper test twice: with ``RaftOptions.lazy_commit_notices`` off (the
dissertation's behaviour: followers are told a new commit index at once) and on (they
learn it with the next append or heartbeat, or at the next tick). Tests that check
followers right after a commit, with no tick in between, are marked ``eager_commit``
and run with the option off only; the option's own tests are in
``test_lazy_commit_notices.py``."""

from __future__ import annotations

import pytest

from tests.protocol.raft import support


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "eager_commit: a Raft paper test that expects followers to learn a commit at once",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not metafunc.module.__name__.split(".")[-1].startswith("test_paper_"):
        return
    modes = [False]
    if metafunc.definition.get_closest_marker("eager_commit") is None:
        modes.append(True)
    metafunc.fixturenames.append("lazy_commit_notices")
    metafunc.parametrize(
        "lazy_commit_notices", modes, ids=["eager", "lazy"][: len(modes)], indirect=True
    )


@pytest.fixture
def lazy_commit_notices(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The default of ``lazy_commit_notices`` in :func:`support.options` for this test."""
    lazy: bool = request.param
    monkeypatch.setattr(support, "LAZY_COMMIT_NOTICES", lazy)
    return lazy
