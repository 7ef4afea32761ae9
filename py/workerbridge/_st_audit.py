"""The page side of the storage audit log (``storage.verify_audit_log``, ``query_audit_logs``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._ns_storage import StorageCore as _Base
else:
    _Base = object


class AuditAPI(_Base):
    """The audit log: the methods ``StorageNamespace`` gets."""
