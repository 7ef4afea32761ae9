"""Subscriptions to changes, routed across the tabs of an origin: ``bridge.subscriptions``.

A change (a record created, updated or deleted) is published once, to every tab, over a
BroadcastChannel. Each tab keeps its own subscriptions, in memory, and routes the change
to them itself (``routing.route``: the change's patterns, then each subscription's
filter), so a subscriber hears of a change once, from its own tab, and a closed tab's
subscriptions and pending deliveries go with it. A delivery carries slim metadata: the
event, the record's id, the matching channels and, for an update, the JSON Patch
operations; the record itself only to a subscription that asked for it (``full=True``).

A change may carry a ``key`` that names it (a pipeline's writer stage gives its
idempotency key): a tab routes a key once, so a change published again, by a stage run
again after a crash, reaches no subscriber twice. Pipelines publish from a worker
(``subscriptions.publish``), which posts to the same BroadcastChannel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from workerbridge.core.errors import InvalidInputError, InvalidTypeError
from workerbridge.core.platform import IN_PYODIDE
from workerbridge.jobs.routing import Subscription, change_patterns, route, subscription
from workerbridge.jobs.store import check_value

log = logging.getLogger("workerbridge.subscriptions")

EVENTS = ("model_created", "model_updated", "model_deleted")
PATCH_OPS = ("add", "remove", "replace", "move", "copy", "test")
TAB_EVENT = "workerbridge:change"  # the DOM event a deliver="tab" subscription fires
CHANNEL = "workerbridge-subscriptions"  # the BroadcastChannel changes travel on
REMEMBERED = 4096  # change keys a tab remembers having routed


def check_change(change: Any) -> dict[str, Any]:
    """A change as published: ``event``, ``channel`` ({app, model, id, user?}), the
    ``record`` as changed (None for a deletion) and, for an update, its ``patch``."""
    if not isinstance(change, Mapping):
        raise InvalidTypeError("a change is a dict: event, channel, record, patch")
    event = change.get("event")
    if event not in EVENTS:
        raise InvalidInputError(f"a change's event is one of {', '.join(EVENTS)}")
    channel = dict(change.get("channel") or {})
    change_patterns(channel)  # checks it
    record = change.get("record")
    patch = change.get("patch") or []
    if not isinstance(patch, list) or not all(
            isinstance(p, Mapping) and p.get("op") in PATCH_OPS for p in patch):
        raise InvalidInputError("a change's patch is a list of JSON Patch operations")
    check_value(record, "the record")
    check_value(patch, "the patch")
    out = {"event": event, "channel": channel, "record": record, "patch": list(patch)}
    key = change.get("key")
    if key is not None:
        if not isinstance(key, str) or not key or len(key) > 200:
            raise InvalidInputError("a change's key is a non-empty string of at most 200 "
                                    "characters")
        out["key"] = key
    return out


def slim(change: Mapping[str, Any]) -> dict[str, Any]:
    """A change without its record: what a delivery, or a transport, needs."""
    return {k: v for k, v in change.items() if k != "record"}


class Subscriptions:
    """This tab's subscriptions, and the publishing of changes to every tab."""

    def __init__(self, name: str = CHANNEL) -> None:
        self.name = name
        self._subs: dict[str, Subscription] = {}
        self._deliver: dict[str, Any] = {}
        self._full: dict[str, bool] = {}
        self._channel: Any = None
        self._proxy: Any = None
        self.delivered = 0
        self._seen: OrderedDict[str, None] = OrderedDict()

    def _open(self) -> Any:
        if self._channel is None and IN_PYODIDE:
            import js
            from pyodide.ffi import create_proxy

            self._channel = js.BroadcastChannel.new(self.name)
            self._proxy = create_proxy(lambda event: self._route(json.loads(str(event.data))))
            self._channel.addEventListener("message", self._proxy)
        return self._channel

    async def subscribe(self, pattern: Mapping[str, Any], *,
                        filter: Mapping[str, Any] | None = None,
                        deliver: Callable[[dict[str, Any]], Any] | str | Any = "tab",
                        full: bool = False) -> str:
        """Hear of the changes whose channel matches ``pattern`` ({app, model, user?,
        id?}) and whose record matches ``filter`` (storage query language). ``deliver``:
        a callback, ``"tab"`` (a ``workerbridge:change`` DOM event on ``window``, its
        ``detail`` the delivery as JSON), or a MessagePort (an iframe, another window).
        Returns the subscription's id."""
        sub_id = secrets.token_hex(8)
        sub = subscription(sub_id, pattern, filter)
        if not (callable(deliver) or deliver == "tab" or hasattr(deliver, "postMessage")):
            raise InvalidTypeError("deliver is a callback, 'tab' or a MessagePort")
        self._subs[sub_id] = sub
        self._deliver[sub_id] = deliver
        self._full[sub_id] = bool(full)
        self._open()
        return sub_id

    async def unsubscribe(self, sub_id: str) -> bool:
        self._deliver.pop(sub_id, None)
        self._full.pop(sub_id, None)
        return self._subs.pop(sub_id, None) is not None

    async def publish(self, change: Mapping[str, Any]) -> None:
        """Send a change to every tab of the origin, this one included."""
        checked = check_change(change)
        channel = self._open()
        if channel is not None:
            channel.postMessage(json.dumps(checked))
        self._route(checked)

    def _route(self, change: dict[str, Any]) -> None:
        key = change.get("key")
        if key is not None:
            if key in self._seen:
                return
            self._seen[key] = None
            if len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
        record = None if change["event"] == "model_deleted" else change["record"]
        for sub_id, keys in route(change["channel"], record, self._subs.values()).items():
            delivery = {"event": change["event"], "id": change["channel"]["id"],
                        "channels": keys, "patch": change["patch"]}
            if key is not None:
                delivery["key"] = key
            if self._full.get(sub_id):
                delivery["record"] = change["record"]
            self._send(self._deliver.get(sub_id), delivery)

    def _send(self, target: Any, delivery: dict[str, Any]) -> None:
        self.delivered += 1
        try:
            if target == "tab":
                import js
                from pyodide.ffi import to_js

                detail = to_js({"detail": json.dumps(delivery)},
                               dict_converter=js.Object.fromEntries)
                js.window.dispatchEvent(js.CustomEvent.new(TAB_EVENT, detail))
            elif callable(target):
                target(delivery)
            elif target is not None:
                target.postMessage(json.dumps(delivery))
        except Exception:
            log.exception("a subscription's delivery failed")

    def close(self) -> None:
        self._subs.clear()
        self._deliver.clear()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._proxy is not None:
            with contextlib.suppress(Exception):
                self._proxy.destroy()
            self._proxy = None
