"""Content-addressed attack artifacts: a backdoored model, its poison index and its metrics.

``<root>/<attack_key>/`` holds ``model.pt`` (state dict), ``poison_index.pt`` (int64
``[K]``), ``attack_state.pt`` (what the test-time trigger needs; often empty) and
``meta.json`` (metrics, counts and the sha256 of the tensor files). A
directory appears complete or not at all (written beside, then renamed), and is
trusted only after its hashes check out. Loading reads each file once: the bytes it
hashes are the bytes it deserialises.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.core.files import staging_folder

TENSOR_FILES = ("model.pt", "poison_index.pt", "attack_state.pt")


class ArtifactError(RuntimeError):
    """An artifact that is missing, incomplete or fails its checksum."""


@dataclass(frozen=True)
class Artifact:
    state_dict: dict[str, Tensor]
    poison_index: Tensor
    attack_state: dict[str, Tensor]
    meta: dict[str, Any]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_artifact(
    directory: Path,
    state_dict: dict[str, Tensor],
    poison_index: Tensor,
    meta: dict[str, Any],
    attack_state: dict[str, Tensor] | None = None,
) -> None:
    """Write the artifact atomically; an existing verified artifact of the same key is kept."""
    directory = Path(directory)
    with staging_folder(directory) as staging:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, staging / "model.pt")
        torch.save(poison_index.cpu(), staging / "poison_index.pt")
        torch.save({k: v.detach().cpu() for k, v in (attack_state or {}).items()}, staging / "attack_state.pt")
        hashes = {name: sha256_file(staging / name) for name in TENSOR_FILES}
        (staging / "meta.json").write_text(json.dumps({**meta, "sha256": hashes}, indent=2, sort_keys=True))
        if directory.exists():
            if verify_artifact(directory):
                return
            shutil.rmtree(directory)
        os.rename(staging, directory)


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ArtifactError(f"artifact metadata {path} is unreadable: {error}") from error


def verify_artifact(directory: Path) -> bool:
    """True when every tensor file exists and matches the sha256 recorded in ``meta.json``."""
    try:
        hashes = read_meta(directory)["sha256"]
        return all(sha256_file(Path(directory) / name) == hashes[name] for name in TENSOR_FILES)
    except (ArtifactError, OSError, KeyError):
        return False


def load_artifact(directory: Path) -> Artifact:
    """Load a verified artifact (``torch.load(weights_only=True)``, on the CPU); raise ``ArtifactError`` otherwise.

    Each tensor file is read once; its bytes are checked against ``meta.json`` and then deserialised.
    """
    meta = read_meta(directory)
    tensors = {}
    for name in TENSOR_FILES:
        path = Path(directory) / name
        try:
            blob = path.read_bytes()
        except OSError as error:
            raise ArtifactError(f"artifact file {path} is unreadable: {error}") from error
        if hashlib.sha256(blob).hexdigest() != meta.get("sha256", {}).get(name):
            raise ArtifactError(f"artifact {directory} is missing or fails its sha256 check ({name})")
        tensors[name] = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    return Artifact(tensors["model.pt"], tensors["poison_index.pt"], tensors["attack_state.pt"], meta)
