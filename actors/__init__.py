"""The shells of raft-actors: pykka actors, transports, storage, the client and nodes.

Everything here may touch threads, time, sockets and disks; the logic it hosts lives in
the pure cores of :mod:`protocol`.
"""

__all__: list[str] = []
