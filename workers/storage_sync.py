"""Live queries and sync between tabs for the ``storage`` channel."""

from __future__ import annotations
