"""The study benchmarks/scale.py runs: each trial "trains" by sleeping (I/O bound, MOTUNE_SCALE_MODE=io) or by
a fixed amount of single-threaded arithmetic (CPU bound, =cpu) for about MOTUNE_SCALE_WORK_S seconds, then
returns a trivial model; no per-group measurement and no kept models, so what a trial costs besides its work is
motune's and Optuna's bookkeeping (sampling, storage writes, the tiny accuracy measurement)."""

import os
import time

import numpy as np
import pandas as pd

import motune as mt

MODE = os.environ.get("MOTUNE_SCALE_MODE", "io")
WORK_S = float(os.environ.get("MOTUNE_SCALE_WORK_S", "0.5"))
rng = np.random.default_rng(0)
frame = pd.DataFrame({"x": rng.normal(size=200), "g": rng.choice(["a", "b"], 200), "y": rng.integers(0, 2, 200)})
task = mt.Task.from_frame(frame, label="y", sensitive="g", seed=0, name="scale")
SPIN = int(os.environ.get("MOTUNE_SCALE_SPIN", "0"))  # matrix products per trial, calibrated by scale.py


class Constant:
    def __init__(self, label):
        self.label = label

    def predict(self, X):
        return np.full(len(X), self.label)


def space(trial):
    trial.suggest_float("a", 0.0, 1.0)
    trial.suggest_float("b", 0.0, 1.0)


def train(params, task, ctx):
    if MODE == "io":
        time.sleep(WORK_S)
    else:
        m = np.random.default_rng(ctx.seed).normal(size=(96, 96))
        for _ in range(SPIN):
            m = np.tanh(m @ m / 96.0)
    return Constant(int(params["a"] > 0.5))


study = mt.Study(name=os.environ.get("MOTUNE_SCALE_STUDY", "scale"), task=task, space=space, train=train,
                 objectives=[mt.maximize("accuracy"), mt.maximize("balanced_accuracy")], measure_by_group=False,
                 keep_models="none", pruning=None, seed=0)
