"""``python -m workerbridge.fleet worker|gateway [options]``."""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("worker", "gateway"):
        sys.exit("usage: python -m workerbridge.fleet worker|gateway [options] (--help)")
    if sys.argv[1] == "worker":
        from workerbridge.fleet.worker import main as run
    else:
        from workerbridge.fleet.gateway import main as run
    run(sys.argv[2:])


if __name__ == "__main__":
    main()
