"""Example applications built on raft-actors."""
