"""PyTorch models as trials: a hand-written loop, the fit helper, the fairness-penalised loss, FGSM / PGD."""

import numpy as np
import optuna
import pytest

import motune as mt
from conftest import FAST_LATENCY, make_study

torch = pytest.importorskip("torch")

from motune.models.torch import TorchClassifier  # noqa: E402


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
            ctx.report(epoch // 20, TorchClassifier.for_task(module, task))
    return TorchClassifier.for_task(module.eval(), task)


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


# ---------------------------------------------------------------- fit helper, fairness loss, FGSM / PGD

from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference  # noqa: E402

from motune.metrics import MetricError, measure  # noqa: E402
from motune.models.torch import fit  # noqa: E402
from motune.training import FairnessPenalizedLoss, demographic_parity_gap, equalized_odds_gap, group_codes  # noqa: E402


def mlp(width, hidden=16, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))


def test_fairness_gaps_match_fairlearn_on_hard_predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    pred = rng.integers(0, 2, 200)
    groups = rng.choice(["a", "b", "c"], 200)
    codes, names = group_codes(groups)
    assert names == ["a", "b", "c"]
    logits = torch.tensor(np.c_[np.zeros(200), np.where(pred == 1, 50.0, -50.0)], requires_grad=True)
    dp = demographic_parity_gap(logits, codes)
    assert dp.item() == pytest.approx(demographic_parity_difference(y, pred, sensitive_features=groups))
    eo = equalized_odds_gap(logits, torch.as_tensor(y), codes)
    assert eo.item() == pytest.approx(equalized_odds_difference(y, pred, sensitive_features=groups))
    soft = torch.zeros(4, 2, requires_grad=True)
    gap = demographic_parity_gap(soft + torch.tensor([[0, 1.0], [0, 1.0], [0, 0], [0, 0]]), torch.tensor([0, 0, 1, 1]))
    gap.backward()
    assert gap.item() > 0 and soft.grad.abs().sum() > 0  # differentiable
    assert demographic_parity_gap(soft, torch.zeros(4, dtype=torch.long)).item() == 0.0  # one group: no gap
    with pytest.raises(ValueError, match="weight must be >= 0"):
        FairnessPenalizedLoss(-1)
    with pytest.raises(ValueError, match="penalty must be one of"):
        FairnessPenalizedLoss(1, penalty="parity")


def test_the_fairness_weight_moves_the_model_along_the_front(task):
    data = task.numeric()
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    groups, _ = group_codes(task.sensitive_train)
    gaps, accs = [], []
    for weight in (0.0, 5.0):
        module = mlp(X.shape[1])
        fit(module, X, y, epochs=40, lr=0.02, batch_size=128, loss=FairnessPenalizedLoss(weight), groups=groups, seed=0)
        m = measure(TorchClassifier.for_task(module, task), task, ["accuracy", "demographic_parity_difference"],
                    split="train")
        gaps.append(m.values["demographic_parity_difference"])
        accs.append(m.values["accuracy"])
    assert gaps[1] < gaps[0] - 0.05  # the penalty closes the group gap ...
    assert accs[1] < accs[0]  # ... at some cost in accuracy: a trade-off, not a free lunch


def test_fit_reports_each_epoch_and_checks_its_arguments(task):
    def train(params, task_, ctx):
        data = task_.numeric()
        module = mlp(data.X_train.shape[1], params["hidden"])
        model = TorchClassifier.for_task(module, task_)
        fit(module, torch.from_numpy(data.X_train), torch.from_numpy(data.y_train), epochs=4, lr=0.02,
            ctx=ctx, model=model, seed=ctx.seed)
        return model

    def space_(trial):
        trial.suggest_int("hidden", 4, 16)

    study = make_study(task, optuna.storages.InMemoryStorage(), train=train, pruning=None, space=space_)
    result = study.optimize(n_trials=2, show_progress=False)
    attrs = result.study.trials[0].system_attrs
    assert sorted(k for k in attrs if k.startswith("motune:report:0:")) == [f"motune:report:0:{e}" for e in range(1, 5)]
    X = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="pass ctx and model together"):
        fit(mlp(3), X, torch.zeros(4, dtype=torch.long), epochs=1, ctx=object())
    with pytest.raises(ValueError, match="same number of rows"):
        fit(mlp(3), X, torch.zeros(5, dtype=torch.long), epochs=1)


def test_fgsm_and_pgd_lower_accuracy_and_move_only_continuous_features(task):
    data = task.numeric()
    module = mlp(data.X_train.shape[1])
    fit(module, torch.from_numpy(data.X_train), torch.from_numpy(data.y_train), epochs=30, lr=0.02, seed=0)
    model = TorchClassifier.for_task(module, task)
    assert model.continuous.tolist() == [n in ("x1", "x2") for n in data.feature_names]
    fgsm = measure(model, task, ["adversarial_accuracy"], options={"adversarial": {"eps": 0.3}})
    clean = fgsm.details["adversarial"]["clean_accuracy"]
    assert clean == pytest.approx(measure(model, task, ["accuracy"]).values["accuracy"])
    assert fgsm.values["adversarial_accuracy"] < clean - 0.05
    assert fgsm.details["adversarial"]["attack"] == "fgsm" and fgsm.details["adversarial"]["features_attacked"] == 2
    pgd = measure(model, task, ["adversarial_accuracy"], options={"adversarial": {"eps": 0.3, "steps": 10}})
    assert pgd.values["adversarial_accuracy"] <= fgsm.values["adversarial_accuracy"] + 0.02
    bigger = measure(model, task, ["adversarial_accuracy"], options={"adversarial": {"eps": 1.0}})
    assert bigger.values["adversarial_accuracy"] <= fgsm.values["adversarial_accuracy"]

    # a model that reads only the one-hot colour columns cannot be moved by the attack
    colour = torch.tensor([not c for c in model.continuous], dtype=torch.float32)
    blind = TorchClassifier.for_task(torch.nn.Sequential(_Mask(colour), mlp(len(colour))), task)
    m = measure(blind, task, ["adversarial_accuracy"], options={"adversarial": {"eps": 5.0}})
    assert m.values["adversarial_drop"] == 0.0


class _Mask(torch.nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x):
        return x * self.mask


def test_adversarial_refuses_models_without_input_gradients(task):
    from motune.models.compress import quantize_int8

    data = task.numeric()
    module = mlp(data.X_train.shape[1])
    with pytest.raises(MetricError, match="needs a motune.models.torch.TorchClassifier"):
        measure(TorchClassifier(module, lambda X: torch.from_numpy(data.transform(X))), task, ["adversarial_accuracy"])
    with pytest.raises(MetricError, match="quantized"):
        measure(TorchClassifier.for_task(quantize_int8(module), task), task, ["adversarial_accuracy"])
    with pytest.raises(mt.SpecError, match="eps > 0"):
        make_study(task, optuna.storages.InMemoryStorage(), metrics=["adversarial_accuracy"],
                   metric_options={"adversarial": {"eps": 0}})
