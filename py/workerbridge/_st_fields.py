"""The page side of field encryption by classification (``storage.classify_data``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._ns_storage import StorageCore as _Base
else:
    _Base = object


class FieldsAPI(_Base):
    """Field encryption: the methods ``StorageNamespace`` gets."""
