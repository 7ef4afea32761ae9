"""Field encryption for the ``storage`` channel: classified fields sealed with AES-GCM at rest."""

from __future__ import annotations
