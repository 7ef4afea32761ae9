"""Building bundles (host only, at build time): which wheels a Pyodide worker can load and
what they depend on (``wheels``), fetching them into a cache (``fetch``), the lock that
names them (``lock``), the pinned npm runtime (``runtime``), and the whole bundle
(``writer``: ``python -m workerbridge bundle``). Nothing here runs in a browser.
"""
