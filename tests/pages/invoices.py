# invoices.py, loaded by the workers (modules=["./invoices.py"])
from workerbridge import Context, Flow, Retry, handler, workflow


@handler("invoices", "validate")
async def validate(ctx: Context, invoice: dict) -> dict:
    if invoice["amount"] <= 0:
        raise ValueError("an invoice has a positive amount")
    return invoice


@handler("invoices", "charge")
async def charge(ctx: Context, invoice: dict) -> dict:
    return {**invoice, "charged": True}


@handler("invoices", "notify")
async def notify(ctx: Context, invoice: dict) -> str:
    return f"invoice {invoice['id']} charged"


@workflow("invoice")
async def invoice(w: Flow, data: dict) -> str:
    checked = await w.step("validate", "invoices.validate", data)
    await w.sleep(1)  # durable: through reloads, and while no tab is open
    charged = await w.step("charge", "invoices.charge", checked, retry=Retry(3, delay=5))
    return await w.step("notify", "invoices.notify", charged)
