"""The client connection registry's pure core (hosted by ``actors.registry``)."""

from protocol.registry.core import Registry
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
]
