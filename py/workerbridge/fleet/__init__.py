"""The fleet: the same handlers and the same jobs API on taskiq workers (CPython), behind
a WebSocket gateway (docs/fleet.md).

    python -m workerbridge.fleet worker   a worker process (``worker``)
    python -m workerbridge.fleet gateway  the gateway (``gateway``)

A page reaches it with ``WorkerBridge(remote="ws://127.0.0.1:8765/v1/ws", token=...)``
(``client``). The server parts need the ``fleet`` extra (taskiq, taskiq-aio-pika,
Starlette, uvicorn); ``wire`` and ``client`` run anywhere, a browser page included.
"""
