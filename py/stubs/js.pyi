# The JS global scope as Pyodide exposes it: every attribute is a JsProxy.
from typing import Any

def __getattr__(name: str) -> Any: ...
