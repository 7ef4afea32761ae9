"""The worker side: the handler registry and the loop that dispatches requests to them
(``dispatch``), the worker's entry point (``entry``), memory snapshots (``snapshot``) and
the browser's native engines run where a cancel can stop them (``engines``).

Depends on ``core`` only. The worker halves of the built-in channels live in the
top-level ``workers/`` folder (installed as ``workerbridge.workers``).
"""
