"""Saving and loading each kind of model as one archive with a checked hash, and every archive that is
refused before anything in it is read."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import motune as mt
from motune.models import persist

runner = CliRunner()


# ---------------------------------------------------------------- save / load per model kind

def _round_trip(model, X, tmp_path):
    path = tmp_path / "model.tar"
    manifest = persist.save_archive(model, path)
    loaded = persist.load_archive(path, sha256=manifest["sha256"])
    assert np.array_equal(np.asarray(loaded.predict(X)), np.asarray(model.predict(X)))
    again = persist.save_archive(model, tmp_path / "again.tar")
    return manifest, again


def test_a_scikit_learn_pipeline_round_trips(task, tmp_path):
    from conftest import train

    model = train({"C": 0.5, "fit_intercept": True}, task, None)
    manifest, again = _round_trip(model, task.X_test, tmp_path)
    assert manifest["kind"] == "pickle" and manifest["sha256"] == again["sha256"]  # the same model, the same bytes


def test_a_torch_classifier_round_trips_with_safetensors_weights(task, tmp_path):
    torch = pytest.importorskip("torch")
    from motune.models.torch import TorchClassifier

    data = task.numeric()
    module = torch.nn.Sequential(torch.nn.Linear(data.X_train.shape[1], 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    manifest, _ = _round_trip(TorchClassifier.for_task(module, task), task.X_test, tmp_path)
    assert manifest["kind"] == "torch" and "weights.safetensors" in manifest["files"]


def _scaled_module(n):
    import torch

    class Scaled(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.linear = torch.nn.Linear(n, 2)
            self.register_buffer("scale", torch.full((n,), 3.0), persistent=False)  # not in the state dict

        def forward(self, x):
            return self.linear(x * self.scale)

    globals()["Scaled"] = Scaled  # picklable by name, as a module-level class
    Scaled.__qualname__ = "Scaled"
    return Scaled(n)


def test_non_persistent_buffers_survive_the_round_trip(task, tmp_path):
    torch = pytest.importorskip("torch")
    from motune.models.torch import TorchClassifier

    model = TorchClassifier.for_task(_scaled_module(task.numeric().X_train.shape[1]), task)
    path = tmp_path / "m.tar"
    loaded = persist.load_archive(path, sha256=persist.save_archive(model, path)["sha256"])
    assert torch.equal(loaded.module.scale, torch.full_like(loaded.module.scale, 3.0))
    assert np.array_equal(loaded.predict_proba(task.X_test), model.predict_proba(task.X_test))


def test_a_quantized_torch_classifier_round_trips_as_a_pickle(task, tmp_path):
    torch = pytest.importorskip("torch")
    from motune.models.compress import quantize_int8
    from motune.models.torch import TorchClassifier

    data = task.numeric()
    module = torch.nn.Sequential(torch.nn.Linear(data.X_train.shape[1], 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    manifest, _ = _round_trip(TorchClassifier.for_task(quantize_int8(module), task), task.X_test, tmp_path)
    assert manifest["kind"] == "pickle"


def test_a_text_classifier_round_trips_with_its_tokenizer(tmp_path):
    pytest.importorskip("transformers")
    from text_fixtures import build_tiny_bert, small_text_task

    from motune.models.transformers import TextClassifier, load_classifier

    text = small_text_task(n_texts=60, probe_instances=10)
    folder = build_tiny_bert(tmp_path / "bert", text.texts("train"))
    model, tokenizer = load_classifier(folder, seed=0)
    manifest, _ = _round_trip(TextClassifier(model, tokenizer, max_length=24), text.X_valid, tmp_path)
    assert manifest["kind"] == "transformers"
    loaded = persist.load_archive(tmp_path / "model.tar", sha256=manifest["sha256"])
    assert loaded.max_length == 24


def test_a_changed_or_unreadable_archive_is_refused(task, tmp_path):
    from conftest import train

    path = tmp_path / "model.tar"
    manifest = persist.save_archive(train({"C": 1.0, "fit_intercept": True}, task, None), path)
    with open(path, "r+b") as f:
        f.seek(600)
        f.write(b"x")
    with pytest.raises(mt.ArtifactError, match="corrupt or was changed"):
        persist.load_archive(path, sha256=manifest["sha256"], what="the model of trial 3")
    path.write_bytes(b"not a tar")
    with pytest.raises(mt.ArtifactError, match="cannot be read"):
        persist.load_archive(path, sha256=persist.sha256_of(path))



def _tar(path, files, *, mode="w"):
    """An archive with the given ``{name: bytes}`` members (the way someone other than motune would write it)."""
    import io
    import tarfile

    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return persist.sha256_of(path)


def test_every_hostile_or_malformed_archive_with_a_matching_hash_is_an_artifact_error(task, tmp_path):
    import gzip

    what = "the model of trial 7 of study 'x'"
    manifest = json.dumps({"kind": "pickle"}).encode()
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb") as f:  # 300 MiB of zeros in a few hundred KB
        import tarfile

        with tarfile.open(fileobj=f, mode="w") as tar:
            info = tarfile.TarInfo("model.joblib")
            info.size = 300 * 2**20

            class Zeros:
                left = info.size

                def read(self, n):
                    n = min(n, self.left)
                    self.left -= n
                    return b"\0" * n

            tar.addfile(info, Zeros())
    assert bomb.stat().st_size < 1_000_000
    cases = {
        "gzip-compressed": (bomb, persist.sha256_of(bomb)),
        "has no manifest.json": (tmp_path / "a.tar", _tar(tmp_path / "a.tar", {"model.joblib": b"x"})),
        "cannot be read (JSONDecodeError": (tmp_path / "b.tar", _tar(tmp_path / "b.tar", {"manifest.json": b"{"})),
        "is not a JSON object": (tmp_path / "c.tar", _tar(tmp_path / "c.tar", {"manifest.json": b"[1]"})),
        "unknown model kind 'other'": (tmp_path / "d.tar", _tar(tmp_path / "d.tar",
                                                               {"manifest.json": b'{"kind": "other"}'})),
        "malformed: its pickle model cannot be loaded": (tmp_path / "e.tar", _tar(tmp_path / "e.tar",
                                                                                 {"manifest.json": manifest})),
        "malformed: its torch model cannot be loaded": (tmp_path / "f.tar", _tar(tmp_path / "f.tar", {
            "manifest.json": b'{"kind": "torch"}', "classifier.joblib": b"junk"})),
    }
    for says, (path, sha) in cases.items():
        with pytest.raises(mt.ArtifactError) as info:
            persist.load_archive(path, sha256=sha, what=what)
        assert what in str(info.value) and says.split(" (")[0] in str(info.value), (says, str(info.value))
    many = tmp_path / "many.tar"
    sha = _tar(many, {"manifest.json": manifest, **{f"f{i}": b"" for i in range(30)}})
    with pytest.raises(mt.ArtifactError, match="31 members, over the limit of 10"):
        persist.load_archive(many, sha256=sha, what=what, max_members=10)
    big = tmp_path / "big.tar"
    sha = _tar(big, {"manifest.json": manifest, "model.joblib": b"x" * 50_000})
    with pytest.raises(mt.ArtifactError, match="over the 20000-byte limit"):
        persist.load_archive(big, sha256=sha, what=what, max_size_bytes=20_000)


