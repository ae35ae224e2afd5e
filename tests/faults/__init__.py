"""Fault-injection runs against real node processes (see ``harness.py``).

Not yet here: network partitions. They need a fault hook in the peer transport that a
test can drive (a test-only transport wrapper selected by a config option, reading drop
rules from a file in the cluster directory) or network namespaces; kills and pauses
only need signals.
"""
