"""The page side of live queries and sync between tabs (``storage.watch``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._ns_storage import StorageCore as _Base
else:
    _Base = object


class SyncAPI(_Base):
    """Live queries and sync between tabs: the methods ``StorageNamespace`` gets."""
