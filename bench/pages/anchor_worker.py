"""PyScript's own named worker for the round-trip anchors (pyscript-worker.html,
mpy-worker.html)."""


def echo(x):
    return x


__export__ = ["echo"]
