"""A stand-in for ``raft-actors node`` in process-management tests.

``python fake_node.py --config PATH [--stubborn]``: installs its SIGTERM handler (exit
0, or ignore the signal with ``--stubborn``), then writes ``PATH.ready`` so a test knows
the handler is in place, and waits to be signalled (at most 60 s, so a leaked stand-in
cannot outlive a test run by much).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--stubborn", action="store_true")
    args, _ = parser.parse_known_args()
    done = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        if not args.stubborn:
            done.set()

    signal.signal(signal.SIGTERM, on_term)
    Path(args.config + ".ready").write_text("ready\n")
    done.wait(60.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
