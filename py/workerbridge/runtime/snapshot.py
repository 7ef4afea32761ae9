"""What a worker must redo after booting from a Pyodide memory snapshot (pure Python).

A snapshot is a copy of one worker's WebAssembly memory, taken right after its modules
were imported and before it served anything; every worker booted from it starts with
that memory. State derived from randomness at import time would then be the same in all
of them, so it is drawn again here:

- ``random``'s shared generator (seeded from ``os.urandom`` when ``random`` was
  imported) is reseeded. ``os.urandom`` itself, and so ``secrets`` and ``uuid.uuid4``,
  read the browser's ``crypto.getRandomValues`` on every call and need nothing.
- ``tempfile``'s random name sequence is dropped; it is rebuilt on first use.

Not reset: ``str``/``bytes`` hash randomisation. Python fixes its hash secret when the
interpreter starts, and the snapshot holds dicts and interned strings hashed under it, so
every worker booted from one snapshot shares that snapshot's secret. The secret is still
random per snapshot — made in the user's browser, not shipped in the bundle — so it
differs between browser profiles and between bundle versions.
"""

from __future__ import annotations

import random
import sys

# The states ``ready_info["snapshot"]`` reports.
MADE = "made"  # booted normally, then made the snapshot the next workers boot from
LOADED = "loaded"  # booted from a snapshot
OFF = "off"  # booted normally; no snapshot made or used

# Set by ``reseed``: this worker booted from a snapshot (in its own memory, not the copy).
booted_from_snapshot = False


def reseed() -> None:
    """Draw fresh random state for this worker (see the module docstring)."""
    global booted_from_snapshot
    booted_from_snapshot = True
    random.seed()
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile._name_sequence = None  # type: ignore[attr-defined]
