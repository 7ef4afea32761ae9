"""Built-in worker modules. Importing one registers its handlers with the runtime.

``BUILTIN`` lists the modules every worker loads at boot.
"""

BUILTIN = ("crypto", "file", "compression", "network", "storage", "storage_fields",
           "storage_audit", "storage_sync", "storage_changes", "jobs", "outbox")
