"""``fast_frozen_init`` builds the same objects as the dataclass ``__init__`` it replaces."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.fastinit import fast_frozen_init


@dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: str
    c: bytes = b"d"
    d: int | None = None


Reference = dataclasses.make_dataclass(
    "Plain", [("a", int), ("b", str), ("c", bytes, b"d"), ("d", int | None, None)],
    frozen=True, slots=True,
)  # fmt: skip
fast_frozen_init(Plain)


def test_the_init_is_replaced_only_where_it_qualifies() -> None:
    assert Plain.__init__.__qualname__ == "Plain.__init__"
    assert "_s0" in Plain.__init__.__globals__

    @dataclass(frozen=True, slots=True)
    class Validated:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    @dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class KwOnly:
        a: int = field(kw_only=True)

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class Mutable:
        a: int

    for cls in (Validated, Factory, KwOnly, NoSlots, Mutable, int):
        before = cls.__init__
        assert fast_frozen_init(cls) is cls
        assert cls.__init__ is before
    with pytest.raises(ValueError, match="negative"):
        Validated(-1)


@given(st.integers(), st.text(), st.binary(), st.none() | st.integers())
def test_same_object_as_the_dataclass_init(a: int, b: str, c: bytes, d: int | None) -> None:
    fast, ref = Plain(a, b, c, d), Reference(a, b, c, d)
    assert dataclasses.astuple(fast) == dataclasses.astuple(ref)
    assert fast == Plain(a=a, b=b, c=c, d=d)
    assert hash(fast) == hash(Plain(a, b, c, d))
    assert repr(fast) == repr(ref)
    assert Plain(a, b) == Plain(a, b, b"d", None)
    assert dataclasses.replace(fast, a=0).a == 0


def test_still_frozen_and_checks_its_arguments() -> None:
    p = Plain(1, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.a = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Plain(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Plain(1, "x", e=3)  # type: ignore[call-arg]
