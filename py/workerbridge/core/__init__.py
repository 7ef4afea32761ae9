"""The wire core, below everything else: envelopes (``envelope``), the exception tree
(``errors``), futures that settle in the turn they are resolved (``futures``), platform
detection (``platform``), JS conversion of messages (``jsconv``, browser only), binary
inputs read in chunks (``data``) and shared state over SharedArrayBuffer (``shared``).

Imports only the standard library (``jsconv`` and parts of ``data`` also reach ``js``).
"""
