# The parts of micropip (0.11, loaded in a worker from the bundle) that workerbridge uses.
from collections.abc import Mapping, Sequence
from typing import Any

class _Package:
    name: str
    version: str

def set_index_urls(urls: Sequence[str]) -> None: ...
async def install(requirements: str | Sequence[str], *, index_urls: Sequence[str] | None = ...,
                  **options: Any) -> None: ...
def list() -> Mapping[str, _Package]: ...
