"""Every Python example in README.md and docs/ runs, as written, on a real page.

A document's examples run in order in one namespace, as a reader would run them one after
another, after a prelude that makes the few things examples take as given: ``file`` (a
File holding b"abc"), ``key`` and ``salt``, ``password``, a progress ``bar``, ``show``,
``server_url``, a real local server that acknowledges outbox events, and ``fleet_url``
and ``fleet_token``, the session's real fleet (RabbitMQ, gateway, 2 workers). A
block that starts with ``# name.py`` is a worker module: it must be the file the tests
serve under that name, which the pool then loads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PAGES, ROOT, Harness
from outbox_server import ServerProcess

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

PRELUDE = """
import asyncio, time, js
import workerbridge
from workerbridge import WorkerBridge
file = js.File.new([js.TextEncoder.new().encode("abc")], "abc.txt")
key = bytes(range(32))
salt = b"a salt of 16 B.."
password = "correct horse battery staple"

class Bar:
    value = 0.0

bar = Bar()

def show(p):
    bar.value = p

_ = None
"""


def python_blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)


def test_every_document_has_examples_and_only_known_fences():
    for doc in DOCS:
        text = doc.read_text()
        fences = re.findall(r"^```(\w*)$", text, re.M)
        # Opening fences carry a language; closing ones are bare.
        langs = set(fences[::2])
        assert langs <= {"python", "sh", "html", "text"}, f"{doc.name}: {langs}"
    assert sum(len(python_blocks(d)) for d in DOCS) >= 15


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    remote = ServerProcess(tmp_path_factory.mktemp("outbox") / "effects.jsonl")
    remote.start()
    yield remote.ws_url
    remote.kill()


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_examples_run(harness: Harness, doc: Path, server_url: str, fleet: Any):
    blocks = python_blocks(doc)
    modules = [b for b in blocks if re.match(r"# \w+\.py", b)]
    for module in modules:
        name = re.match(r"# (\w+\.py)", module).group(1)  # type: ignore[union-attr]
        served = (PAGES / name).read_text()
        assert module.split("\n", 1)[1].strip() in served, f"{name} is not the served file"
    runnable = [b for b in blocks if b not in modules]
    if not runnable:
        return
    prelude = PRELUDE + f"server_url = {server_url!r}\nfleet_url = {fleet.ws_url!r}\n" \
        f"fleet_token = {fleet.token!r}\n"
    harness.py("DOC = {'__name__': 'doc'}\nexec(" + repr(prelude) + ", DOC)")
    for i, block in enumerate(runnable):
        code = "from pyodide.code import eval_code_async\n" \
               f"await eval_code_async({block!r}, DOC)\n'ok'"
        try:
            assert harness.py(code) == "ok"
        except AssertionError as exc:
            raise AssertionError(f"{doc.name}, example {i + 1}:\n{block}\n{exc}") from None


def test_minimal_page_example_runs(harness: Harness):
    readme = (ROOT / "README.md").read_text()
    page = re.search(r'<script type="py" config="./dist/pyscript.json">\n(.*?)</script>',
                     readme, re.S)
    assert page is not None
    code = page.group(1).replace("print(digest)", "digest")
    assert harness.py(code) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert (ROOT / "dist" / "pyscript.json").exists()
