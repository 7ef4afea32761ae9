"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT, Harness

README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def test_custom_module_example_is_the_served_file():
    served = (ROOT / "tests" / "pages" / "wordcount.py").read_text()
    module = next(b for b in python_blocks() if b.startswith("# wordcount.py"))
    body = module.split("\n", 1)[1]
    assert body.strip() in served


def test_custom_module_example_runs(harness: Harness):
    call = next(b for b in python_blocks() if "WorkerBridge(modules=" in b)
    harness.py("from workerbridge import WorkerBridge\n" + call)
    assert harness.py('await bridge.request("text", "word_count", {"text": "a b c\\nd"})') == 4


def test_minimal_page_example_runs(harness: Harness):
    page = re.search(r'<script type="py" config="./dist/pyscript.json">\n(.*?)</script>',
                     README, re.S)
    assert page is not None
    code = page.group(1).replace("print(digest)", "digest")
    assert harness.py(code) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert Path(ROOT / "dist" / "pyscript.json").exists()


def test_compression_example_runs(harness: Harness):
    block = next(b for b in python_blocks() if "compress_data(b\"hello \"" in b)
    harness.py("from workerbridge import WorkerBridge\n" + block + "\n'ran'")


def test_storage_example_runs(harness: Harness):
    block = next(b for b in python_blocks() if "S = WorkerBridge.storage" in b)
    got = harness.py(block + "\n[len(adults), (await S.get('users', ada['id']))['vip']]")
    assert got == [1, True]
