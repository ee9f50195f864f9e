"""The two seeds of a trial, and why they differ.

- :func:`train_seed` is ``ctx.seed``: the study's seed plus the trial number.
  Python's, numpy's and torch's global generators are seeded with it before
  ``train`` runs (:func:`seed_everything`), so the same params and seed give
  the same model in any study: a user can rebuild trial 7's model from its
  params and ``seed + 7`` alone.
- :func:`sampler_seed` seeds the sampler's suggestion for the trial: a hash
  of the study's seed and the trial number. Trial numbers are unique within a
  study whichever worker runs the trial, so a fresh run is reproducible and
  two workers never share a random stream; hashing keeps the streams of
  neighbouring trials (and of two studies whose seeds differ by one) apart,
  which ``seed + number`` would not (study 0's trial 1 and study 1's trial 0
  would draw the same suggestions).
"""

from __future__ import annotations

import hashlib
import random
import sys

import numpy as np


def train_seed(seed: int, number: int) -> int:
    """``ctx.seed`` of trial ``number`` of a study seeded with ``seed``."""
    return int(seed) + int(number)


def sampler_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s suggestions in a study seeded with ``seed``."""
    digest = hashlib.sha256(f"motune:{seed}:{number}".encode()).hexdigest()
    return int(digest[:8], 16)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and (when loaded) torch's global random generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")  # never import torch just to seed it
    if torch is not None:
        torch.manual_seed(seed)  # CPU and every CUDA device


__all__ = ["sampler_seed", "seed_everything", "train_seed"]
