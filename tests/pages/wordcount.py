# The docs' custom worker module, verbatim (tests/browser/test_docs.py checks and runs it).
from workerbridge import Context, handler


@handler("text", "word_count")
async def word_count(ctx: Context, payload: dict) -> int:
    lines = payload["text"].splitlines()
    ctx.set_total(len(lines))
    words = 0
    for i, line in enumerate(lines, 1):
        words += len(line.split())
        ctx.progress(i)
        await ctx.checkpoint()  # raises if the caller cancelled
    return words


@handler("text", "count_into")
async def count_into(ctx: Context, payload: dict) -> int:
    """Add the text's word count to the page's SharedCounter; returns the new total."""
    from workerbridge import SharedCounter

    counter = SharedCounter.from_buffer(payload["counter"])
    return counter.increment(len(payload["text"].split()))


@handler("text", "describe")
async def describe(ctx: Context, payload: int) -> str:
    """A workflow's second step (docs/jobs.md): the first step's count, in words."""
    return f"{payload} words"
