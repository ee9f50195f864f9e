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
    for epoch in range(1, 61):
        module.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(X), y).backward()
        opt.step()
        if epoch % 20 == 0:  # a training loop reports; motune measures the study's metrics on the model
            ctx.report(epoch // 20, TorchClassifier(module.eval(), data))
    return TorchClassifier(module.eval(), data)


def test_a_torch_mlp_runs_as_a_trial(task):
    study = make_study(task, optuna.storages.InMemoryStorage(), space=space, train=train,
                       metrics=["latency_p50_ms"], metric_options=FAST_LATENCY)
    result = study.optimize(n_trials=3, show_progress=False)
    records = result.records()
    assert records[0].state == "COMPLETE"
    for r in records:  # the default policy may stop a trial at a rung; then it says why
        assert r.state == "COMPLETE" or (r.state == "PRUNED" and r.attrs["pruned"]["rule"])
    reports = sorted(k for k in result.study.trials[0].system_attrs if k.startswith("motune:report:0:"))
    assert reports == ["motune:report:0:1", "motune:report:0:2", "motune:report:0:3"]
    assert set(result.study.trials[0].system_attrs["motune:report:0:3"]) == {
        "accuracy", "demographic_parity_difference", "equalized_odds_difference", "balanced_accuracy"}
    assert max(r.metrics.get("accuracy", 0) for r in records) > 0.8
    latency = records[0].attrs["latency"]
    assert latency["device"] == "cpu" and latency["threads"]["torch"] >= 1
    assert "torch" in records[0].attrs["provenance"]["versions"]
