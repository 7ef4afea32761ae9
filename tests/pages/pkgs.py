# A worker module that uses third-party packages from the bundle (tests/browser/test_packages.py).
import sys

from workerbridge import Context, handler


@handler("pkgs", "report")
async def report(ctx: Context, payload: dict) -> dict:
    """Use the packages this worker was asked for; say where each was imported from."""
    out: dict = {"modules": {}}
    wanted = payload.get("use", [])
    if "dateutil" in wanted:
        from dateutil import parser, relativedelta

        when = parser.isoparse(payload["date"])
        out["next_month"] = (when + relativedelta.relativedelta(months=1)).isoformat()
    if "attrs" in wanted:
        import attrs

        @attrs.define
        class Point:
            x: int
            y: int

        out["point"] = repr(Point(1, 2))
    if "msgspec" in wanted:
        import msgspec

        class Item(msgspec.Struct):
            name: str
            tags: list[str]

        raw = msgspec.json.encode(Item("a", ["x", "y"]))
        out["msgspec_roundtrip"] = msgspec.json.decode(raw, type=Item).tags
        out["msgspec_raw"] = raw.decode()
        try:
            msgspec.json.decode(b'{"name": 1, "tags": []}', type=Item)
        except msgspec.ValidationError as exc:
            out["msgspec_error"] = str(exc)
    if "idna" in wanted:
        import idna

        out["idna"] = idna.encode("bücher.example").decode()
    for name in ("attrs", "dateutil", "six", "msgspec", "idna"):
        module = sys.modules.get(name)
        out["modules"][name] = getattr(module, "__file__", None) if module else None
    return out


@handler("pkgs", "install")
async def install(ctx: Context, payload: dict) -> dict:
    """Install at run time from the bundle's index, then import what was installed."""
    import importlib

    installed = await ctx.install(*payload["requirements"])
    module = importlib.import_module(payload["import"])
    return {"installed": installed, "file": module.__file__,
            "version": getattr(module, "__version__", None)}


@handler("pkgs", "imported")
async def imported(ctx: Context, payload: dict) -> list:
    """Which of these modules can be imported now."""
    import importlib.util

    return [name for name in payload["names"] if importlib.util.find_spec(name) is not None]
