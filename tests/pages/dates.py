# The example worker module of docs/packages.md, verbatim (tests/browser/test_docs.py).
from workerbridge import Context, handler


@handler("dates", "next_month")
async def next_month(ctx: Context, payload: dict) -> str:
    await ctx.install("python-dateutil")  # micropip, on the bundle's own index
    from dateutil import parser, relativedelta

    when = parser.isoparse(payload["when"]) + relativedelta.relativedelta(months=1)
    return when.date().isoformat()
