"""The pooled ``packb``: msgpack's own bytes, and no packer is ever shared by two calls."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.packing import _BUFFER_BYTES, _POOL, packb

NATIVE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(NATIVE)
def test_same_bytes_as_msgpack_packb(value: Any) -> None:
    assert packb(value) == msgpack.packb(value, use_bin_type=True)


def test_a_call_nested_inside_packing_gets_its_own_packer() -> None:
    # Packing a dict subclass runs its items(): a nested packb there (or another
    # thread's, at that moment) must not write into the outer call's buffer.
    inner: list[bytes] = []

    class Sneaky(dict[str, int]):
        def items(self) -> Any:
            inner.append(packb([1, 2, 3]))
            return super().items()

    outer = packb([Sneaky(a=1), "x"])
    assert outer == msgpack.packb([{"a": 1}, "x"], use_bin_type=True)
    assert inner == [msgpack.packb([1, 2, 3])]


def test_a_packer_that_raised_is_not_reused() -> None:
    _POOL.clear()
    for bad in ([1, object()], [1, 2**70]):
        packb([0])
        assert len(_POOL) == 1
        with pytest.raises((TypeError, OverflowError)):
            packb(bad)
        assert _POOL == []  # dropped (its buffer may have grown before it failed)
        assert packb([5]) == msgpack.packb([5])


def test_a_packer_whose_buffer_grew_is_not_kept() -> None:
    # A packer keeps its largest buffer: the pool must not hold on to big ones.
    _POOL.clear()
    fits = b"x" * (_BUFFER_BYTES - 5)  # bin 32 header: 5 bytes
    assert packb(fits) == msgpack.packb(fits)
    assert len(_POOL) == 1
    big = b"x" * _BUFFER_BYTES
    assert packb(big) == msgpack.packb(big)
    assert _POOL == []
