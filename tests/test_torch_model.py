"""A PyTorch model as a trial, trained on the task's float32 matrices."""

import numpy as np
import optuna
import pytest

import motune as mt
from conftest import FAST_LATENCY, make_study

torch = pytest.importorskip("torch")


class TorchClassifier:
    """predict(X) for a torch module: encode the rows with the task's train-fitted encoder."""

    def __init__(self, module, numeric):
        self.module, self.numeric = module, numeric

    @property
    def device(self):
        return next(self.module.parameters()).device

    def predict(self, X):
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(self.numeric.transform(X)))
        return logits.argmax(dim=1).numpy()


def space(trial):
    trial.suggest_int("hidden", 4, 32, log=True)
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)


def train(params, task, ctx):
    torch.manual_seed(ctx.seed)
    data = task.numeric()
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    module = torch.nn.Sequential(torch.nn.Linear(X.shape[1], params["hidden"]), torch.nn.ReLU(),
                                 torch.nn.Linear(params["hidden"], 2))
    opt = torch.optim.Adam(module.parameters(), lr=params["lr"])
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(X), y).backward()
        opt.step()
    return TorchClassifier(module.eval(), data)


def test_a_torch_mlp_runs_as_a_trial(task):
    study = make_study(task, optuna.storages.InMemoryStorage(), space=space, train=train,
                       metrics=["latency_p50_ms"], metric_options=FAST_LATENCY)
    result = study.optimize(n_trials=3, show_progress=False)
    records = result.records()
    assert [r.state for r in records] == ["COMPLETE"] * 3
    assert max(r.metrics["accuracy"] for r in records) > 0.8
    latency = records[0].attrs["latency"]
    assert latency["device"] == "cpu" and latency["threads"]["torch"] >= 1
    assert "torch" in records[0].attrs["provenance"]["versions"]
