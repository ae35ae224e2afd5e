"""The node's address book: learned member addresses kept in the data directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import actors.address_book as address_book
from actors.address_book import MEMBERS_FILE, AddressBook, AddressBookError
from actors.config import MemberAddress
from protocol.ids import MemberId

N1, N2, N4 = MemberId("n1"), MemberId("n2"), MemberId("n4")
CONFIGURED = {
    N1: MemberAddress("tcp://127.0.0.1:1001", "tcp://127.0.0.1:2001"),
    N2: MemberAddress("tcp://127.0.0.1:1002", "tcp://127.0.0.1:2002"),
}
N4_AT = MemberAddress("tcp://127.0.0.1:1004", "tcp://127.0.0.1:2004")


def test_learned_members_are_known_after_a_restart(tmp_path: Path) -> None:
    book = AddressBook(CONFIGURED, tmp_path)
    assert book.members() == CONFIGURED
    assert book.learn(N4, N4_AT) is None
    assert book.members() == {**CONFIGURED, N4: N4_AT}

    again = AddressBook(CONFIGURED, tmp_path)
    assert again.members() == {**CONFIGURED, N4: N4_AT}
    assert again.learned() == {N4: N4_AT}
    document = json.loads((tmp_path / MEMBERS_FILE).read_text())
    assert document == {
        "format": 1,
        "members": {"n4": {"peer": N4_AT.peer, "client": N4_AT.client}},
    }


def test_a_newer_address_replaces_the_learned_one(tmp_path: Path) -> None:
    AddressBook(CONFIGURED, tmp_path).learn(N4, N4_AT)
    moved = MemberAddress("tcp://127.0.0.1:1014", "tcp://127.0.0.1:2014")
    AddressBook(CONFIGURED, tmp_path).learn(N4, moved)
    assert AddressBook(CONFIGURED, tmp_path).members()[N4] == moved


def test_a_learned_address_wins_over_the_config_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moved = MemberAddress("tcp://127.0.0.1:1102", "tcp://127.0.0.1:2102")
    book = AddressBook(CONFIGURED, tmp_path)
    book.learn(N2, moved)  # n2 replaced at a new address
    assert book.members()[N2] == moved
    with caplog.at_level(logging.WARNING):
        restarted = AddressBook(CONFIGURED, tmp_path)
    assert restarted.members() == {**CONFIGURED, N2: moved}
    assert "member n2: using the address learned at run time" in caplog.text
    assert CONFIGURED[N2].peer in caplog.text and moved.peer in caplog.text


def test_learning_what_is_known_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[Path] = []
    real = address_book.atomic_write
    monkeypatch.setattr(
        address_book, "atomic_write", lambda path, data: (writes.append(path), real(path, data))
    )
    book = AddressBook(CONFIGURED, tmp_path)
    book.learn(N4, N4_AT)
    book.learn(N4, N4_AT)
    assert writes == [tmp_path / MEMBERS_FILE]


def test_without_a_data_directory_the_book_is_memory_only(tmp_path: Path) -> None:
    book = AddressBook(CONFIGURED, None)
    assert book.learn(N4, N4_AT) is None
    assert book.members()[N4] == N4_AT
    assert AddressBook(CONFIGURED, None).members() == CONFIGURED
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_is_reported_and_the_address_still_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(address_book, "atomic_write", full_disk)
    book = AddressBook(CONFIGURED, tmp_path)
    error = book.learn(N4, N4_AT)
    assert error is not None
    assert "could not save the address of n4" in error and "No space left" in error
    assert book.members()[N4] == N4_AT


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("not json", "not a member address file"),
        ("[]", "format 1"),
        ('{"format": 2, "members": {}}', "format 1"),
        ('{"format": 1}', "'members' must be an object"),
        ('{"format": 1, "members": {"n4": "tcp://x"}}', "bad entry for member 'n4'"),
        ('{"format": 1, "members": {"n4": {"peer": "tcp://x"}}}', "needs a peer and a client"),
        ('{"format": 1, "members": {"n4": {"peer": "", "client": "c"}}}', "not an endpoint"),
        (
            '{"format": 1, "members": {"n4": {"peer": "h:1", "client": "tcp://h:2"}}}',
            "not an endpoint such as tcp://host:port: 'h:1'",
        ),
        ('{"format": 1, "members": {"": {"peer": "p", "client": "c"}}}', "bad entry"),
    ],
)
def test_a_damaged_file_is_refused_naming_it(tmp_path: Path, content: str, why: str) -> None:
    (tmp_path / MEMBERS_FILE).write_text(content)
    with pytest.raises(AddressBookError, match=why) as info:
        AddressBook(CONFIGURED, tmp_path)
    assert str(tmp_path / MEMBERS_FILE) in str(info.value)


def test_an_unreadable_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / MEMBERS_FILE).mkdir()  # reading it fails with an OSError
    with pytest.raises(AddressBookError, match="cannot read"):
        AddressBook(CONFIGURED, tmp_path)
    (tmp_path / MEMBERS_FILE).rmdir()
    (tmp_path / MEMBERS_FILE).write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(AddressBookError, match="cannot read"):
        AddressBook(CONFIGURED, tmp_path)
