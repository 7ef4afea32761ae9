# The README's custom worker module, verbatim (tests/browser/test_readme.py runs it).
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
