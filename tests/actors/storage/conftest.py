"""Fixtures for the storage tests: one factory per implementation, child process reaping."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.storage import DurableLog, DurableStorage, MemoryStorage

Storage = MemoryStorage | DurableStorage


@dataclass
class Backend:
    """Opens a storage and "restarts" it: memory keeps its object, durable reopens the dir."""

    name: str
    open: Callable[[], Storage]
    #: Close (unsynced writes lost, as in a crash) and return the restarted storage.
    restart: Callable[[Storage], Storage]


def _memory(_: Path) -> Backend:
    def restart(storage: Storage) -> Storage:
        storage.close()
        return storage

    return Backend("memory", MemoryStorage, restart)


def _durable(durable_log: DurableLog) -> Callable[[Path], Backend]:
    def made(path: Path) -> Backend:
        def open_() -> Storage:
            return DurableStorage.open(path, durable_log=durable_log)

        def restart(storage: Storage) -> Storage:
            storage.close()
            return open_()

        return Backend(durable_log, open_, restart)

    return made


BACKENDS = {"memory": _memory, "sqlite": _durable("sqlite"), "file": _durable("file")}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened: list[Storage] = []
    made = BACKENDS[request.param](tmp_path / "node")

    def open_() -> Storage:
        storage = made.open()
        opened.append(storage)
        return storage

    def restart(storage: Storage) -> Storage:
        storage = made.restart(storage)
        opened.append(storage)
        return storage

    yield Backend(made.name, open_, restart)
    for storage in opened:
        storage.close()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[Any]]]:
    """Every child process a test starts goes here; all are killed and reaped at the end."""
    procs: list[subprocess.Popen[Any]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                stream.close()
