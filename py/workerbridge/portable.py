"""Two calls that make page code portable between a py page and an mpy page.

On an mpy page objects live in the host worker (``workerbridge.host``): an attribute
that is not a call is read with ``await value(...)``, and handles are let go with
``await release(...)``. On a py page the objects are right here, so ``value`` returns
its argument (awaited, if it is awaitable) and ``release`` does nothing.
"""

from __future__ import annotations

import inspect
from typing import Any


async def value(obj: Any) -> Any:
    """``await value(bridge.pool.size)``: the attribute's value, on either page kind."""
    if inspect.isawaitable(obj):
        return await obj
    return obj


async def release(*handles: Any) -> None:
    """Let the host forget objects it returned (an mpy page); nothing to do here."""
