"""Building bundles with third-party packages (host only, at build time): which wheels a
Pyodide worker can load and what they depend on (``wheels``), and the lock that names
them (``lock``). Nothing here runs in a browser.
"""
