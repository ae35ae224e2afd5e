"""Hypothesis strategies for any codec-registered message, derived from its type hints."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import strategies as st

from protocol.codec import ProtocolError

#: msgpack's integer range.
INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)


def for_type(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for values of the field type ``tp`` (the codec's supported subset)."""
    supertype = getattr(tp, "__supertype__", None)
    if supertype is not None:
        return for_type(supertype)
    if tp is type(None) or tp is None:
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return INTS
    if tp is str:
        return st.text(max_size=20)
    if tp is bytes:
        return st.binary(max_size=40)
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        return st.sampled_from(list(tp))
    if dataclasses.is_dataclass(tp):
        return for_message(tp)  # type: ignore[arg-type]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(for_type(a) for a in args))
    if origin is tuple:
        return st.lists(for_type(args[0]), max_size=4).map(tuple)
    if origin is dict:
        return st.dictionaries(for_type(args[0]), for_type(args[1]), max_size=4)
    raise TypeError(f"no strategy for {tp!r}")


def for_message(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: for_type(hints[f.name]) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


def any_of(classes: tuple[type[Any], ...]) -> st.SearchStrategy[Any]:
    return st.one_of(*(for_message(c) for c in classes))


def assert_only_protocol_errors(
    data: bytes, decoders: tuple[Callable[[bytes], Any], ...], types: tuple[type, ...]
) -> None:
    """Each decoder turns ``data`` into one of ``types`` or raises ``ProtocolError``,
    never anything else."""
    for decoder in decoders:
        try:
            msg = decoder(data)
        except ProtocolError:
            continue
        assert type(msg) in types


def corrupted_and_truncated(frame: bytes, noise: bytes, at: int) -> Iterator[bytes]:
    """``frame`` with ``noise`` written over it at ``at`` (mod its length), then every
    prefix of that corrupted frame."""
    corrupted = bytearray(frame)
    at %= len(corrupted)
    corrupted[at : at + len(noise)] = noise
    yield bytes(corrupted)
    for cut in range(len(corrupted)):
        yield bytes(corrupted[:cut])
