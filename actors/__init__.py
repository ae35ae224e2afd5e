"""The shells of raft-actors: pykka actors, transports, storage, the client and nodes.

Everything here may touch threads, time, sockets and disks; the logic it hosts lives in
the pure cores of :mod:`protocol`.
"""

from actors.client import RaftClient, fetch_status
from actors.config import ConfigError, MemberAddress, NodeConfig, load_config
from actors.node import Node, NodeError, RegistryLink

__all__ = [
    "ConfigError",
    "MemberAddress",
    "Node",
    "NodeConfig",
    "NodeError",
    "RaftClient",
    "RegistryLink",
    "fetch_status",
    "load_config",
]
