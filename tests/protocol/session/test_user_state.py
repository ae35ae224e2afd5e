"""The user's view of the shared dictionary: hides and refuses ``session/``, rolls back."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.session import MsgpackCodec, ReadOnlyUserState, ReservedKeyError, UserState
from protocol.session.user import SessionContext


@pytest.fixture
def data() -> dict[str, Any]:
    return {"session/x": object(), "b": 2, "a": 1}


def view(data: dict[str, Any]) -> UserState:
    return UserState(data, [1])


def test_reserved_keys_are_invisible(data: dict[str, Any]) -> None:
    v = view(data)
    assert list(v) == ["a", "b"] and len(v) == 2
    assert "session/x" not in v and "a" in v
    assert v.get("session/x", "d") == "d" and v.get("a") == 1
    with pytest.raises(KeyError):
        v["session/x"]
    assert dict(v.items()) == {"a": 1, "b": 2}


def test_reserved_keys_are_refused_for_writes(data: dict[str, Any]) -> None:
    v = view(data)
    for action in (
        lambda: v.__setitem__("session/x", 1),
        lambda: v.__setitem__("session/new", 1),
        lambda: v.__delitem__("session/x"),
        lambda: v.pop("session/x"),
    ):
        with pytest.raises(KeyError) as info:
            action()
        assert info.type in (ReservedKeyError, KeyError)
    with pytest.raises(ReservedKeyError):
        v["session/y"] = 1
    assert "session/y" not in data and "session/x" in data


def test_keys_must_be_strings(data: dict[str, Any]) -> None:
    v = view(data)
    with pytest.raises(TypeError):
        v[1] = 2  # type: ignore[index]
    assert 1 not in v
    with pytest.raises(KeyError):
        v[1]  # type: ignore[index]


def test_rollback_undoes_sets_and_deletes_to_the_first_value(data: dict[str, Any]) -> None:
    v = view(data)
    before = dict(data)
    v["a"] = 10
    v["a"] = 11
    del v["b"]
    v["b"] = 3
    v["c"] = 4
    del v["c"]
    v.setdefault("d", 5)
    v._rollback()
    assert data == before
    v["a"] = 7
    v._commit()
    v._rollback()  # nothing to undo after a commit
    assert data["a"] == 7
    with pytest.raises(KeyError):
        del v["missing"]


def test_read_only_view_refuses_writes(data: dict[str, Any]) -> None:
    v = ReadOnlyUserState(data, [1])
    assert v["a"] == 1
    with pytest.raises(TypeError):
        v["a"] = 2
    with pytest.raises(TypeError):
        del v["a"]


def test_context_send_encodes_and_checks_the_target() -> None:
    ctx = SessionContext(MsgpackCodec())
    ctx.send("s1", [1])  # type: ignore[arg-type]
    assert ctx._outbox == [("s1", b"\x91\x01")]
    with pytest.raises(TypeError):
        ctx.send(1, "x")  # type: ignore[arg-type]


def test_default_codec_is_plain_msgpack() -> None:
    c = MsgpackCodec()
    for enc, dec in (
        (c.encode_command, c.decode_command),
        (c.encode_response, c.decode_response),
        (c.encode_payload, c.decode_payload),
        (c.encode_query, c.decode_query),
    ):
        assert dec(enc({"k": [1, b"x"]})) == {"k": [1, b"x"]}
    assert c.decode_value(c.encode_value([1])) == [1]
