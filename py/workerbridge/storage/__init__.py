"""IndexedDB collections. The page API is ``storage`` and its features ``storage_audit``,
``storage_fields`` and ``storage_sync`` (each named after its worker half in
``workers/``); below them the pure core: ``query`` (filters), ``plan`` (index choice),
``schema``, ``txn`` (transaction programs), ``hlc`` (clocks), ``audit`` (the hash chain),
``fieldcrypt`` (field encryption), ``calls``/``serial`` (batching), and ``idb``, the thin
layer over IndexedDB itself (browser only).

Depends on ``core``, ``pool`` and ``channels``.
"""
