"""Channels of a shared client connection, and the frames that carry a turn's answers.

A client connection (one transport routing id) carries up to
``max_sessions_per_connection`` channels (see :mod:`protocol.wire`). The registry keys
its connection records by *channel key*: the routing id followed by one byte, the
channel. The key is injective (the last byte is the channel, the rest the routing id,
whatever the routing id's length), so no routing id a client can choose makes its
channels collide with another connection's, and everything that carries a connection
id (``QueryAction``, ``SendQueryResponse``...) carries the key unchanged.

:func:`pack_server_frames` turns the ``(key, message)`` sends of one handling turn into
one frame per routing id (more only beyond the item and byte bounds), keeping each
connection's order. A connection whose answers are all for channel 0 gets them as
plain frames, never a ``ServerBatch``: a client that never used a channel beyond 0 (a
lone session, or one from before batches) never has to read one.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol.codec import encode
from protocol.wire import ServerBatch, ServerMessage, pack_batches

__all__ = ["CHANNEL_BYTES", "channel_key", "pack_server_frames", "routing_ids", "split_key"]


#: ``bytes((channel,))`` of every channel, made once (a key is made per message).
CHANNEL_BYTES: tuple[bytes, ...] = tuple(bytes((channel,)) for channel in range(256))


def channel_key(routing_id: bytes, channel: int) -> bytes:
    """The connection key of ``channel`` (0..255) on the connection ``routing_id``."""
    return routing_id + bytes((channel,))


def split_key(key: bytes) -> tuple[bytes, int]:
    """``(routing_id, channel)`` of a key made by :func:`channel_key`."""
    return key[:-1], key[-1]


def routing_ids(keys: Iterable[bytes]) -> list[bytes]:
    """The distinct routing ids of ``keys``, in first-seen order (connections to close)."""
    return list(dict.fromkeys(key[:-1] for key in keys))


def pack_server_frames(
    sends: Iterable[tuple[bytes, ServerMessage]], *, max_items: int, max_bytes: int
) -> list[tuple[bytes, bytes]]:
    """``(routing_id, frame)`` pairs carrying ``sends`` (``(key, message)``): per routing
    id, its messages in order, batched (see :func:`protocol.wire.pack_batches`)."""
    by_connection: dict[bytes, list[tuple[int, bytes]]] = {}
    for key, msg in sends:
        items = by_connection.get(key[:-1])
        if items is None:
            items = by_connection[key[:-1]] = []
        items.append((key[-1], encode(msg)))
    out: list[tuple[bytes, bytes]] = []
    for routing_id, items in by_connection.items():
        if all(channel == 0 for channel, _ in items):
            # Only channel 0: a lone session (or a client from before batches, which
            # could not read a ServerBatch): its answers go as the plain frames they
            # always were, so nodes can be upgraded before their clients.
            out.extend((routing_id, data) for _, data in items)
            continue
        for frame in pack_batches(items, ServerBatch, max_items=max_items, max_bytes=max_bytes):
            out.append((routing_id, frame))
    return out
