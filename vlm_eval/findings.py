"""The one finding-name rule: how 'Pleural_Effusion', 'pleural-effusion' and
'Pleural  effusion' become the same finding (prompt sets, dataset adapters, filters)."""
from __future__ import annotations

import re
import unicodedata

_SPACE_RE = re.compile(r"\s+")


def normalise_finding(name: str) -> str:
    """Case-, underscore-, hyphen- and whitespace-insensitive key (NFKC):
    'Pleural_Effusion' -> 'pleural effusion'."""
    text = unicodedata.normalize("NFKC", str(name)).lower().replace("_", " ").replace("-", " ")
    return _SPACE_RE.sub(" ", text).strip()


def finding_slug(name: str) -> str:
    """'Pleural effusion' -> 'pleural_effusion' (question ids, file names)."""
    return re.sub(r"[^a-z0-9]+", "_", normalise_finding(name)).strip("_")
