"""The ``storage`` channel's audit log: a hash-chained record of every write, kept in
the write's own transaction."""

from __future__ import annotations
