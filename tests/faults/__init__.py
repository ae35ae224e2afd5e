"""Fault-injection runs against real node processes (see ``harness.py``).

Partitions go through a test-only peer transport wrapper
(:class:`actors.transport.FaultControlledPeerTransport`, config option
``fault_control``) that reads drop rules from a file in the cluster directory.
"""
