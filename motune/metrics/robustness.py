"""Robustness to perturbed inputs.

``robustness(model, task, *, split, noise, corruption, seed) -> Measurement``
with ``robust_accuracy`` (accuracy on a perturbed copy of the split) and
``robustness_drop`` (clean accuracy minus robust accuracy). The perturbation
is seeded and so the same for every trial of a study:

- each numeric feature gets Gaussian noise with standard deviation
  ``noise`` times that feature's standard deviation on the training split;
- each categorical value is replaced, with probability ``corruption``
  (default: ``noise``), by a category drawn uniformly from that feature's
  training categories.

``text_robustness(model, task, *, split, typo_rate, word_drop, seed)`` with
``text_robust_accuracy`` and ``text_robustness_drop``: the same for texts
(a ``text`` column), perturbed by seeded typos (each letter, with
probability ``typo_rate``, is swapped with its neighbour, dropped, doubled
or replaced by a letter next to it on a QWERTY keyboard) and word drops
(each word with probability ``word_drop``; one word always stays).

``adversarial(model, task, *, split, eps, steps, seed)`` with
``adversarial_accuracy`` and ``adversarial_drop``: accuracy under an
L-infinity attack of radius ``eps`` on the continuous inputs of a
:class:`motune.models.torch.TorchClassifier` (for a tabular task, the
standardised numeric features; one-hot categories are not moved). ``steps=1``
is FGSM (Goodfellow et al., 2015); more steps are PGD (Madry et al., 2018)
with a seeded random start and step size ``2.5 * eps / steps``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score

from motune.errors import SpecError
from motune.metrics.registry import Measurement, MetricError, register_metric
from motune.models import unwrap


def check_robustness_options(*, noise: float = 0.1, corruption: float | None = None, seed: int = 0) -> None:
    """Raise ``ValueError`` for option values :func:`robustness` cannot use."""
    corruption = noise if corruption is None else corruption
    if not noise >= 0 or not 0 <= corruption <= 1:
        raise SpecError(f"need noise >= 0 and corruption in [0, 1]; got noise={noise}, corruption={corruption}")


@register_metric(("robust_accuracy", "robustness_drop"), key="robustness", validate=check_robustness_options)
def robustness(
    model: Any,
    task: Any,
    *,
    split: str = "valid",
    noise: float = 0.1,
    corruption: float | None = None,
    seed: int = 0,
) -> Measurement:
    """Accuracy under seeded Gaussian noise and category corruption, and its drop."""
    check_robustness_options(noise=noise, corruption=corruption, seed=seed)
    corruption = noise if corruption is None else corruption
    X, y, _ = task.split(split)
    clean = accuracy_score(y, model.predict(X))
    perturbed = perturb(X, task, noise=noise, corruption=corruption, seed=seed)
    robust = accuracy_score(y, model.predict(perturbed))
    return Measurement(
        {"robust_accuracy": robust, "robustness_drop": clean - robust},
        {"split": split, "noise": noise, "corruption": corruption, "seed": seed, "clean_accuracy": float(clean)},
    )


def perturb(X: pd.DataFrame, task: Any, *, noise: float, corruption: float, seed: int) -> pd.DataFrame:
    """A perturbed copy of ``X`` (see the module docstring); ``X`` is left unchanged."""
    rng = np.random.default_rng(seed)
    out = X.copy()
    n = len(X)
    for column in X.columns:
        if column in task.numeric_columns:
            std = float(task.X_train[column].std())
            if noise > 0 and std > 0:
                out[column] = X[column].astype(float) + rng.normal(0.0, noise * std, size=n)
        elif corruption > 0:
            categories = task.X_train[column].dropna().unique()
            if len(categories) == 0:
                continue
            replace = rng.random(n) < corruption
            values = X[column].to_numpy(dtype=object, copy=True)
            values[replace] = rng.choice(categories, size=int(replace.sum()))
            out[column] = pd.Series(values, index=X.index).astype(X[column].dtype)
    return out


_KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
_NEIGHBOURS = {
    ch: "".join(row[j] for j in (i - 1, i + 1) if 0 <= j < len(row))
    for row in _KEYBOARD for i, ch in enumerate(row)
}


def check_text_robustness_options(*, typo_rate: float = 0.05, word_drop: float = 0.1, seed: int = 0) -> None:
    """Raise ``ValueError`` for option values :func:`text_robustness` cannot use."""
    if not (0 <= typo_rate <= 1 and 0 <= word_drop < 1):
        raise SpecError(f"need typo_rate in [0, 1] and word_drop in [0, 1); got {typo_rate}, {word_drop}")


def perturb_texts(texts: list[str], *, typo_rate: float, word_drop: float, seed: int) -> list[str]:
    """Seeded typos and word drops (see the module docstring); the same seed, the same texts."""
    rng = np.random.default_rng(seed)
    out = []
    for text in texts:
        words = text.split()
        if word_drop > 0 and len(words) > 1:
            kept = [w for w in words if rng.random() >= word_drop]
            words = kept or [words[int(rng.integers(len(words)))]]
        chars = list(" ".join(words))
        i = 0
        while i < len(chars):
            ch = chars[i]
            if ch.isalpha() and rng.random() < typo_rate:
                kind = int(rng.integers(4))
                if kind == 0 and i + 1 < len(chars) and chars[i + 1].isalpha():  # swap with the next letter
                    chars[i], chars[i + 1] = chars[i + 1], ch
                    i += 1
                elif kind == 1:  # drop
                    del chars[i]
                    continue
                elif kind == 2:  # double
                    chars.insert(i, ch)
                    i += 1
                else:  # a neighbouring key
                    near = _NEIGHBOURS.get(ch.lower(), "")
                    if near:
                        new = near[int(rng.integers(len(near)))]
                        chars[i] = new.upper() if ch.isupper() else new
            i += 1
        out.append("".join(chars))
    return out


@register_metric(("text_robust_accuracy", "text_robustness_drop"), key="text_robustness",
                 validate=check_text_robustness_options)
def text_robustness(model: Any, task: Any, *, split: str = "valid", typo_rate: float = 0.05,
                    word_drop: float = 0.1, seed: int = 0) -> Measurement:
    """Accuracy on texts with seeded typos and word drops, and its drop."""
    check_text_robustness_options(typo_rate=typo_rate, word_drop=word_drop, seed=seed)
    X, y, _ = task.split(split)
    if "text" not in X.columns:
        raise MetricError(f"text_robustness needs a 'text' column; split {split!r} has {list(X.columns)[:5]}")
    clean = accuracy_score(y, model.predict(X))
    perturbed = X.copy()
    perturbed["text"] = perturb_texts(X["text"].astype(str).tolist(), typo_rate=typo_rate,
                                      word_drop=word_drop, seed=seed)
    robust = accuracy_score(y, model.predict(perturbed))
    return Measurement(
        {"text_robust_accuracy": robust, "text_robustness_drop": clean - robust},
        {"split": split, "typo_rate": typo_rate, "word_drop": word_drop, "seed": seed,
         "clean_accuracy": float(clean), "example": perturbed["text"].iloc[0] if len(X) else None},
    )


def check_adversarial_options(*, eps: float = 0.1, steps: int = 1, seed: int = 0, batch_size: int = 1024) -> None:
    """Raise ``ValueError`` for option values :func:`adversarial` cannot use."""
    def positive_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if not eps > 0 or not positive_int(steps) or not positive_int(batch_size):
        raise SpecError(f"need eps > 0, an int steps >= 1 and batch_size >= 1; got eps={eps}, steps={steps}, "
                         f"batch_size={batch_size}")


@register_metric(("adversarial_accuracy", "adversarial_drop"), key="adversarial", validate=check_adversarial_options)
def adversarial(model: Any, task: Any, *, split: str = "valid", eps: float = 0.1, steps: int = 1, seed: int = 0,
                batch_size: int = 1024) -> Measurement:
    """Accuracy under an FGSM (steps=1) or PGD attack of L-infinity radius ``eps``, and its drop."""
    from motune.models.torch import TorchClassifier, adversarial_delta, evaluating

    check_adversarial_options(eps=eps, steps=steps, seed=seed, batch_size=batch_size)
    raw = unwrap(model)
    if not isinstance(raw, TorchClassifier) or raw.continuous is None:
        raise MetricError("adversarial accuracy needs a motune.models.torch.TorchClassifier with continuous inputs "
                          "(TorchClassifier.for_task(module, task)); for text use text_robustness")
    import torch

    if any("quantized" in type(m).__module__ for m in raw.module.modules()):
        raise MetricError("a quantized (int8) module has no input gradient: attack the float model")
    X, y, _ = task.split(split)
    if len(X) == 0:
        raise MetricError(f"split {split!r} has no rows to attack")
    labels = torch.from_numpy(np.array(y, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)
    step_size = eps if steps == 1 else 2.5 * eps / steps
    clean_hits = adversarial_hits = 0
    with evaluating(raw.module), torch.inference_mode(False), torch.enable_grad():
        for start in range(0, len(X), batch_size):
            x0 = raw.inputs(X.iloc[start:start + batch_size])
            if not torch.is_tensor(x0) or not x0.is_floating_point():
                raise MetricError("adversarial accuracy needs one floating-point input tensor")
            if x0.ndim != 2 or x0.shape[1] != len(raw.continuous):
                raise MetricError(f"continuous marks {len(raw.continuous)} features, but the inputs have shape "
                                  f"{tuple(x0.shape)}; it needs one flag per input feature")
            target = labels[start:start + batch_size].to(x0.device)
            mask = torch.as_tensor(raw.continuous, dtype=x0.dtype, device=x0.device)
            try:
                delta = adversarial_delta(raw.forward, x0, target, mask, eps=eps, steps=steps, generator=generator)
            except RuntimeError as err:
                if isinstance(err, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in str(err).lower():
                    raise MetricError(f"the adversarial attack ran out of GPU memory at batch_size={batch_size} "
                                      f"({str(err).splitlines()[0]}): lower metric_options robustness batch_size"
                                      ) from None
                if "does not require grad" not in str(err) and "element 0 of tensors" not in str(err) and \
                        "quantized" not in str(err).lower():
                    raise  # another failure of the model: its own error, not a claim about gradients
                raise MetricError(f"no input gradient from this model ({err}); a quantized (int8) module "
                                  "has none: attack the float model") from None
            with torch.no_grad():
                clean_hits += int((raw.forward(x0).argmax(-1) == target).sum())
                adversarial_hits += int((raw.forward(x0 + delta).argmax(-1) == target).sum())
    clean, robust = clean_hits / len(X), adversarial_hits / len(X)
    return Measurement(
        {"adversarial_accuracy": robust, "adversarial_drop": clean - robust},
        {"split": split, "attack": "fgsm" if steps == 1 else "pgd", "eps": eps, "steps": steps,
         "step_size": step_size, "seed": seed, "features_attacked": int(np.sum(raw.continuous)),
         "clean_accuracy": clean},
    )
