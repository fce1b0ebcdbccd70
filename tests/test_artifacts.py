"""Attack artifacts: round trip, checksums, atomic and idempotent saving, weights-only loading."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from bench.core.artifacts import ArtifactError, load_artifact, save_artifact, sha256_file, verify_artifact


def weights(value: float) -> dict[str, torch.Tensor]:
    return {"conv.weight": torch.full((4, 3, 3, 3), value), "bn.num_batches_tracked": torch.tensor(7)}


INDEX = torch.tensor([2, 5, 11, 40], dtype=torch.int64)
META = {"attack_key": "abc123", "metrics": {"acc": 0.9, "asr": 0.95, "ra": 0.04}, "n_poison": 4}


def flip_a_byte(path, position: int | None = None) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 if position is None else position] ^= 0x01
    path.write_bytes(bytes(raw))


def test_round_trip(tmp_path):
    directory = tmp_path / "artifacts" / "abc123"  # parents are created
    save_artifact(directory, weights(0.5), INDEX, META)
    assert verify_artifact(directory)
    artifact = load_artifact(directory)
    assert artifact.state_dict.keys() == weights(0.5).keys()
    assert all(torch.equal(artifact.state_dict[k], v) for k, v in weights(0.5).items())
    assert torch.equal(artifact.poison_index, INDEX) and artifact.poison_index.dtype == torch.int64
    assert {k: artifact.meta[k] for k in META} == META
    assert sorted(artifact.meta["sha256"]) == ["attack_state.pt", "model.pt", "poison_index.pt"]
    assert artifact.attack_state == {}
    assert artifact.meta["sha256"]["model.pt"] == sha256_file(directory / "model.pt")


def test_save_leaves_nothing_beside_the_artifact(tmp_path):
    save_artifact(tmp_path / "k", weights(0.5), INDEX, META)
    assert [p.name for p in tmp_path.iterdir()] == ["k"]
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["attack_state.pt", "meta.json", "model.pt", "poison_index.pt"]


@pytest.mark.parametrize("name", ["model.pt", "poison_index.pt", "attack_state.pt"])
def test_a_changed_byte_fails_verification_and_loading(tmp_path, name):
    directory = tmp_path / "k"
    save_artifact(directory, weights(0.5), INDEX, META)
    flip_a_byte(directory / name)
    assert not verify_artifact(directory)
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(directory)


@pytest.mark.parametrize("missing", ["model.pt", "poison_index.pt", "meta.json"])
def test_a_missing_file_fails_verification_and_loading(tmp_path, missing):
    directory = tmp_path / "k"
    save_artifact(directory, weights(0.5), INDEX, META)
    (directory / missing).unlink()
    assert not verify_artifact(directory)
    with pytest.raises(ArtifactError):
        load_artifact(directory)


def test_meta_without_hashes_fails_verification(tmp_path):
    directory = tmp_path / "k"
    save_artifact(directory, weights(0.5), INDEX, META)
    (directory / "meta.json").write_text(json.dumps(META))
    assert not verify_artifact(directory)


def test_no_artifact_at_all(tmp_path):
    assert not verify_artifact(tmp_path / "nothing")
    with pytest.raises(ArtifactError):
        load_artifact(tmp_path / "nothing")


def test_saving_over_a_verified_artifact_keeps_it(tmp_path):
    directory = tmp_path / "k"
    save_artifact(directory, weights(0.5), INDEX, META)
    save_artifact(directory, weights(9.0), INDEX[:2], {**META, "n_poison": 2})
    artifact = load_artifact(directory)
    assert torch.equal(artifact.state_dict["conv.weight"], weights(0.5)["conv.weight"])
    assert torch.equal(artifact.poison_index, INDEX) and artifact.meta["n_poison"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_saving_over_a_corrupted_artifact_replaces_it(tmp_path):
    directory = tmp_path / "k"
    save_artifact(directory, weights(0.5), INDEX, META)
    flip_a_byte(directory / "model.pt")
    save_artifact(directory, weights(9.0), INDEX, META)
    assert verify_artifact(directory)
    assert torch.equal(load_artifact(directory).state_dict["conv.weight"], weights(9.0)["conv.weight"])
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


class _Payload:
    """Unpickling this runs code (creates a file): what weights-only loading must refuse."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_refuses_pickled_code_even_with_matching_hashes(tmp_path):
    directory = tmp_path / "k"
    save_artifact(directory, weights(0.5), INDEX, META)
    marker = tmp_path / "executed"
    torch.save({"conv.weight": _Payload(str(marker))}, directory / "model.pt")
    meta = json.loads((directory / "meta.json").read_text())
    meta["sha256"]["model.pt"] = sha256_file(directory / "model.pt")
    (directory / "meta.json").write_text(json.dumps(meta))
    assert verify_artifact(directory)  # the checksum alone cannot tell
    with pytest.raises((pickle.UnpicklingError, ArtifactError)):
        load_artifact(directory)
    assert not marker.exists()


def test_attack_state_round_trips(tmp_path):
    state = {"generator.weight": torch.arange(6.0).view(2, 3)}
    save_artifact(tmp_path / "k", weights(0.5), INDEX, META, state)
    loaded = load_artifact(tmp_path / "k").attack_state
    assert loaded.keys() == state.keys() and torch.equal(loaded["generator.weight"], state["generator.weight"])
