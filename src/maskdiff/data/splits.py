"""How a corpus other than Shakespeare is split by document: a document goes to train, validation or
test by a hash of its name (90% / 5% / 5%), so the split never changes between machines and no
document is in two splits."""
from __future__ import annotations

import hashlib


def split_of(name: str) -> str:
    """train / validation / test for a document name: 90/5/5 by the first bytes of its SHA-256."""
    bucket = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big") % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"
