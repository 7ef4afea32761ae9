# stages.py, loaded by the workers (modules=["./stages.py"])
from workerbridge import Context, handler


@handler("orders", "validate")
async def validate(ctx: Context, order: dict) -> dict | None:
    return order if order.get("qty", 0) > 0 else None  # None drops the event


@handler("orders", "lines")
async def lines(ctx: Context, order: dict) -> list[dict]:
    return [{"order": order["id"], "item": item} for item in order["items"]]  # a split


@handler("orders", "reserve")
async def reserve(ctx: Context, line: dict) -> dict:
    return {**line, "reserved": True}


@handler("orders", "audit")
async def audit(ctx: Context, line: dict) -> None:
    return None  # the end of the way
