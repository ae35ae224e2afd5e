"""Everything deterministic in raft-actors: messages, the codec and the pure cores.

Nothing in this package reads a clock, draws randomness it was not given, starts a
thread or touches a socket or a disk (``tests/test_boundary.py`` enforces it).
"""

from protocol.codec import ProtocolError, decode, encode

__all__ = ["ProtocolError", "decode", "encode"]
