"""Content hashes: sha256 of canonical JSON, the one rule behind grid hashes, attack keys and cell ids.

Ids are stable: the same content gives the same id on any machine, and a default spelled out
in a grid is the same content as a default left out (ids hash validated parameters).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no spaces: equal content, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def content_hash(value: Any, digits: int = 16) -> str:
    """The first ``digits`` hex digits of sha256 over ``canonical_json(value)``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:digits]


ID_SCHEME = 1  # bump when the meaning of an id's content changes: every stored result is then orphaned


def stable_id(content: dict[str, Any]) -> str:
    """The id of an attack key or a cell: ``content_hash`` of ``content`` with the id scheme."""
    return content_hash({"id_scheme": ID_SCHEME, **content})
