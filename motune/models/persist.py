"""Saving and loading a trained model, one pair per model kind, as one archive file with a content hash.

=============  ==============================================  ===================================
kind           what is saved                                   format
=============  ==============================================  ===================================
``torch``      a :class:`~motune.models.torch.TorchClassifier`  weights in safetensors; the module's
                                                               structure (weights left out) and
                                                               its encoder with joblib
``transformers`` a :class:`~motune.models.transformers.TextClassifier`  ``save_pretrained``
                                                               (safetensors) of model and
                                                               tokenizer, settings in JSON
``pickle``     anything else (scikit-learn pipelines, fairlearn  joblib
               post-processors, a torch model with int8
               quantized layers, which safetensors cannot hold)
=============  ==============================================  ===================================

:func:`save_archive` writes the files into a tar archive beside a
``manifest.json`` (kind, format, versions of the packages that made it) and
returns its sha256 and size. :func:`load_archive` checks the archive's sha256
against the one recorded when it was saved *before* anything in it is read
(joblib and pickle run code when they load; a file that changed since is
refused), then loads it. motune writes plain (uncompressed) tar archives, so a
compressed one is refused before it is opened, and an archive with more than
``max_members`` members or more than ``max_bytes`` bytes (in the file or in
its members: ``MOTUNE_ARTIFACT_MAX_BYTES``, default 64 GiB) is refused before
anything is extracted. A corrupt, changed, oversized or malformed archive (a
missing file, a manifest that names another kind, a loader that fails) is an
:class:`~motune.errors.ArtifactError` naming the model it was. The hash guards against a changed
file only when the expected hash comes from somewhere the file's writer
cannot change: the study's storage (``result.load_model``) does that; a
hash read from beside the file (an exported folder) detects corruption,
not tampering.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from motune.errors import ArtifactError, SpecTypeError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
MAX_MEMBERS = 10_000  # files in one model archive (a transformers model and tokenizer: a few dozen)
MAX_BYTES = 64 * 2**30  # bytes of one model archive, unless MOTUNE_ARTIFACT_MAX_BYTES says otherwise
COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def max_bytes() -> int:
    """The largest model archive loaded, in bytes: ``$MOTUNE_ARTIFACT_MAX_BYTES`` or 64 GiB."""
    import os

    text = os.environ.get("MOTUNE_ARTIFACT_MAX_BYTES", "")
    try:
        return int(float(text)) if text else MAX_BYTES
    except ValueError:
        raise ArtifactError(f"MOTUNE_ARTIFACT_MAX_BYTES must be a number of bytes, got {text!r}") from None


def kind_of(model: Any) -> str:
    """``"transformers"``, ``"torch"`` or ``"pickle"``."""
    from motune.models import unwrap

    model = unwrap(model)
    torch_module = sys.modules.get("motune.models.torch")
    if torch_module is not None and isinstance(model, torch_module.TorchClassifier):
        text = sys.modules.get("motune.models.transformers")
        if text is not None and isinstance(model, text.TextClassifier) and not _quantized(model.module):
            return "transformers"
        return "pickle" if _quantized(model.module) else "torch"
    return "pickle"


def _quantized(module: Any) -> bool:
    return any("quantized" in type(m).__module__ for m in module.modules())


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_archive(model: Any, path: str | Path) -> dict[str, Any]:
    """Save ``model`` as one tar archive at ``path``; returns its manifest with ``sha256`` and ``size_bytes``."""
    from motune.models import unwrap

    model = unwrap(model)
    kind = kind_of(model)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="motune-model-") as tmp:
        folder = Path(tmp)
        {"torch": _save_torch, "transformers": _save_transformers, "pickle": _save_pickle}[kind](model, folder)
        manifest = {"format_version": FORMAT_VERSION, "kind": kind,
                    "class": f"{type(model).__module__}.{type(model).__qualname__}",
                    "packages": dict(_versions()), "files": sorted(p.name for p in folder.iterdir())}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        with tarfile.open(path, "w") as tar:
            for member in sorted(folder.rglob("*")):
                info = tar.gettarinfo(str(member), arcname=str(member.relative_to(folder)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""  # the same model, the same bytes
                if member.is_file():
                    with open(member, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return {**manifest, "sha256": sha256_of(path), "size_bytes": path.stat().st_size}


def load_archive(path: str | Path, *, sha256: str, what: str = "the model", device: str | None = None,
                 max_members: int = MAX_MEMBERS, max_size_bytes: int | None = None) -> Any:
    """Load the model archived at ``path`` after checking that its sha256 is ``sha256``.

    The archive is first copied into a private temporary folder and hashed as it is copied; only that
    copy is read, so a file swapped after the check is never loaded. See the module docstring for what is
    refused before anything is extracted."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what}: no archive at {str(path)!r}")
    limit = max_bytes() if max_size_bytes is None else int(max_size_bytes)
    if path.stat().st_size > limit:
        raise ArtifactError(f"{what}: the archive is {path.stat().st_size} bytes, over the {limit}-byte limit "
                            "(MOTUNE_ARTIFACT_MAX_BYTES)")
    with tempfile.TemporaryDirectory(prefix="motune-model-") as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        copy_path = Path(tmp) / "archive.tar"
        digest = hashlib.sha256()
        with open(path, "rb") as src, open(copy_path, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                dst.write(block)
        if digest.hexdigest() != sha256:
            raise ArtifactError(f"{what} is corrupt or was changed: its sha256 is {digest.hexdigest()[:16]}..., the "
                                f"one recorded when it was saved is {sha256[:16]}...; it is not loaded")
        with open(copy_path, "rb") as f:
            head = f.read(6)
        packed = next((name for magic, name in COMPRESSED.items() if head.startswith(magic)), None)
        if packed is not None:
            raise ArtifactError(f"{what}: the archive is {packed}-compressed; motune writes plain tar archives, so it "
                                "is not one of motune's and is not opened")
        try:
            with tarfile.open(copy_path, "r:") as tar:
                members = tar.getmembers()
                if len(members) > max_members:
                    raise ArtifactError(f"{what}: the archive holds {len(members)} members, over the limit of "
                                        f"{max_members}; it is not extracted")
                total = sum(m.size for m in members)
                if total > limit:
                    raise ArtifactError(f"{what}: the archive's members hold {total} bytes, over the {limit}-byte "
                                        "limit (MOTUNE_ARTIFACT_MAX_BYTES); it is not extracted")
                tar.extractall(folder, filter="data")
            if not (folder / MANIFEST).is_file():
                raise ArtifactError(f"{what}: the archive has no {MANIFEST}, so it is not one of motune's")
            manifest = json.loads((folder / MANIFEST).read_text())
            if not isinstance(manifest, dict):
                raise ValueError(f"{MANIFEST} is not a JSON object")
        except ArtifactError:
            raise
        except (tarfile.TarError, OSError, ValueError, KeyError, UnicodeDecodeError) as err:
            raise ArtifactError(f"{what}: the archive cannot be read ({type(err).__name__}: {err})") from None
        kind = manifest.get("kind")
        loader = {"torch": _load_torch, "transformers": _load_transformers, "pickle": _load_pickle}.get(kind)
        if loader is None:
            raise ArtifactError(f"{what}: unknown model kind {kind!r} in its manifest")
        try:
            model = loader(folder)
        except Exception as err:  # a hash-matching archive whose contents are not what its manifest says
            raise ArtifactError(f"{what}: the archive is malformed: its {kind} model cannot be loaded "
                                f"({type(err).__name__}: {err})") from None
    if device is not None and hasattr(model, "module"):
        model.module.to(device)
    return model


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for package in ("motune", "scikit-learn", "torch", "transformers", "safetensors", "joblib"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------- pickle (scikit-learn and anything else)

def _save_pickle(model: Any, folder: Path) -> None:
    import joblib

    try:
        joblib.dump(model, folder / "model.joblib", compress=3)
    except Exception as err:  # a lambda, a lock, an open file inside the model
        raise SpecTypeError(f"{type(model).__name__} cannot be saved ({type(err).__name__}: {err}): keep module-level "
                            "functions and plain objects in a model, or use Study(keep_models='none')") from None


def _load_pickle(folder: Path) -> Any:
    import joblib

    return joblib.load(folder / "model.joblib")  # only after the archive's hash was checked


# ---------------------------------------------------------------- torch

def _save_torch(model: Any, folder: Path) -> None:
    import joblib
    from safetensors.torch import save_file, save_model

    save_model(model.module, str(folder / "weights.safetensors"))  # shared (tied) tensors saved once
    persistent = set(model.module.state_dict())
    extra = {name: buffer.detach().cpu().contiguous() for name, buffer in model.module.named_buffers()
             if name not in persistent}  # non-persistent buffers: not in the state dict, yet part of the model
    if extra:
        save_file(extra, str(folder / "buffers.safetensors"))
    skeleton = copy.copy(model)
    skeleton.module = copy.deepcopy(model.module).to("meta")  # the structure, without the weights
    buffer = io.BytesIO()
    try:
        joblib.dump(skeleton, buffer)
    except Exception as err:
        raise SpecTypeError(f"this TorchClassifier cannot be saved ({type(err).__name__}: {err}): its encode must "
                            "be a module-level function or a picklable object, not a lambda") from None
    (folder / "classifier.joblib").write_bytes(buffer.getvalue())


def _load_torch(folder: Path) -> Any:
    import joblib
    from safetensors.torch import load_model

    model = joblib.load(folder / "classifier.joblib")
    model.module = model.module.to_empty(device="cpu")
    load_model(model.module, str(folder / "weights.safetensors"), device="cpu")
    if (folder / "buffers.safetensors").exists():
        from safetensors.torch import load_file

        for name, value in load_file(str(folder / "buffers.safetensors")).items():
            model.module.get_buffer(name).copy_(value)
    model.module.eval()
    return model


# ---------------------------------------------------------------- transformers

def _save_transformers(model: Any, folder: Path) -> None:
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar inside a study's progress output
    try:
        model.module.save_pretrained(folder / "model", safe_serialization=True)
        model.tokenizer.save_pretrained(folder / "tokenizer")
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    (folder / "settings.json").write_text(json.dumps({"max_length": model.max_length, "batch_size": model.batch_size,
                                                      "autocast": model.autocast}))


def _load_transformers(folder: Path) -> Any:
    import transformers

    from motune.models.transformers import TextClassifier

    settings = json.loads((folder / "settings.json").read_text())
    module = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder / "model"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    module.eval()
    return TextClassifier(module, tokenizer, **settings)
