"""Durable jobs: queues in IndexedDB, retries by error type, workflows, schedules.

This folder holds the pure parts, the same on the page and on the host: ``policy``
(``Backoff``, ``Retry``, ``Fail``, the recovery table and the decision after a failed
attempt), ``claims`` (which waiting jobs a claim takes: order, due times, concurrency
per queue and per group, rate limits, leases), ``schedule`` (cron and one-time runs,
catch-up of missed runs) and ``store`` (the jobs as IndexedDB records, and the
transaction programs that add, claim, complete, fail, renew and release them).
"""
