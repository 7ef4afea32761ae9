"""``workerbridge.shared``, kept for code that imports it: shared state now lives in
``workerbridge.core.shared``."""

from workerbridge.core.shared import (
    ProgressInfo,
    SharedCancellation,
    SharedCounter,
    SharedFlag,
    SharedProgress,
    Unsubscribe,
)

__all__ = [
    "ProgressInfo",
    "SharedCancellation",
    "SharedCounter",
    "SharedFlag",
    "SharedProgress",
    "Unsubscribe",
]
