"""The client connection registry's pure core (hosted by ``actors.registry``)."""

from protocol.registry.core import Registry
from protocol.registry.frames import channel_key, pack_server_frames, routing_ids, split_key
from protocol.registry.types import (
    RegistryConfig,
    RegistryEffects,
    RegistryStatus,
    SessionIdSource,
)

__all__ = [
    "Registry",
    "RegistryConfig",
    "RegistryEffects",
    "RegistryStatus",
    "SessionIdSource",
    "channel_key",
    "pack_server_frames",
    "routing_ids",
    "split_key",
]
