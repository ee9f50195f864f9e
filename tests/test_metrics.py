import threading
import time

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as flm

import motune as mt
from motune.metrics import known_metrics, measure
from motune.locks import timing_lock
from motune.metrics.latency import CpuTimer, CudaTimer, time_calls, timer_for
from motune.metrics.robustness import perturb
from motune.models import Predictor, device_of


class Rule:
    """A hand-written classifier: predicts x1 > 0 for group a, x1 > -1 for group b."""

    def predict(self, X):
        return np.where(X["group"] == "a", X["x1"] > 0, X["x1"] > -1).astype(int)

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-X["x1"].to_numpy()))
        return np.column_stack([1 - p, p])


def test_accuracy_and_fairness_match_hand_computed_values(task):
    m = measure(Rule(), task, ["accuracy", "balanced_accuracy", "demographic_parity_difference",
                               "equalized_odds_difference", "worst_group_accuracy", "roc_auc"])
    X, y, s = task.split("valid")
    pred = pd.Series(Rule().predict(X), index=X.index)
    df = pd.DataFrame({"y": y, "p": pred, "g": s})
    acc_by_group = df.assign(ok=df.y == df.p).groupby("g")["ok"].mean()
    sel = df.groupby("g")["p"].mean()
    tpr = df[df.y == 1].groupby("g")["p"].mean()
    fpr = df[df.y == 0].groupby("g")["p"].mean()
    recall = [((df.p == c) & (df.y == c)).sum() / (df.y == c).sum() for c in (0, 1)]
    v = m.values
    assert v["accuracy"] == pytest.approx((df.y == df.p).mean())
    assert v["balanced_accuracy"] == pytest.approx(np.mean(recall))
    assert v["demographic_parity_difference"] == pytest.approx(sel.max() - sel.min())
    assert v["equalized_odds_difference"] == pytest.approx(max(tpr.max() - tpr.min(), fpr.max() - fpr.min()))
    assert v["worst_group_accuracy"] == pytest.approx(acc_by_group.min())
    assert v["demographic_parity_difference"] > 0.1  # the rule really is unfair
    # the same numbers fairlearn's own functions give
    assert v["demographic_parity_difference"] == pytest.approx(
        flm.demographic_parity_difference(y, pred, sensitive_features=s))
    assert v["equalized_odds_difference"] == pytest.approx(
        flm.equalized_odds_difference(y, pred, sensitive_features=s))
    table = {row["group"]: row for row in m.details["fairness"]["by_group"]}
    assert set(table) == {"a", "b"}
    assert table["b"]["count"] == int((s == "b").sum())
    assert table["a"]["selection_rate"] == pytest.approx(sel["a"])
    assert table["b"]["true_positive_rate"] == pytest.approx(tpr["b"])
    assert 0.5 < v["roc_auc"] <= 1.0


def test_each_metric_function_runs_once_and_predictions_are_shared(task):
    calls = []

    class Counting(Rule):
        def predict(self, X):
            calls.append(len(X))
            return super().predict(X)

    measure(Counting(), task, ["accuracy", "balanced_accuracy", "demographic_parity_difference", "worst_group_accuracy"])
    assert calls == [len(task.y_valid)]


def test_bad_predictions_are_reported(task):
    class Nan(Rule):
        def predict(self, X):
            return np.full(len(X), np.nan)

    class Short(Rule):
        def predict(self, X):
            return np.zeros(3)

    with pytest.raises(mt.MetricError, match="NaN"):
        measure(Nan(), task, ["accuracy"])
    with pytest.raises(mt.MetricError, match="returned 3 rows"):
        measure(Short(), task, ["accuracy"])
    with pytest.raises(TypeError, match="predict"):
        Predictor(object(), task)

    class NoScores:
        predict = Rule.predict

    with pytest.raises(mt.MetricError, match="predict_proba nor decision_function"):
        measure(NoScores(), task, ["roc_auc"])


def test_robustness_noise_and_corruption(task):
    zero = measure(Rule(), task, ["robust_accuracy"], options={"robustness": {"noise": 0.0}})
    assert zero.values["robustness_drop"] == 0.0
    assert zero.values["robust_accuracy"] == pytest.approx(measure(Rule(), task, ["accuracy"]).values["accuracy"])
    loud = measure(Rule(), task, ["robust_accuracy"], options={"robustness": {"noise": 1.0, "seed": 1}})
    again = measure(Rule(), task, ["robust_accuracy"], options={"robustness": {"noise": 1.0, "seed": 1}})
    assert loud.values["robustness_drop"] > 0.05
    assert loud.values == again.values
    assert loud.details["robustness"]["noise"] == 1.0 and loud.details["robustness"]["corruption"] == 1.0


def test_perturb_is_seeded_scaled_and_leaves_input_alone(task):
    X = task.X_valid
    before = X.copy()
    p1 = perturb(X, task, noise=0.5, corruption=0.5, seed=7)
    p2 = perturb(X, task, noise=0.5, corruption=0.5, seed=7)
    pd.testing.assert_frame_equal(X, before)
    pd.testing.assert_frame_equal(p1, p2)
    delta = (p1["x1"] - X["x1"]).std()
    assert delta == pytest.approx(0.5 * task.X_train["x1"].std(), rel=0.2)
    changed = (p1["color"] != X["color"]).mean()
    assert 0.2 < changed < 0.5  # half are redrawn, a third of those land on the same colour
    assert set(p1["color"]) <= set(task.X_train["color"])


class Sleepy:
    def __init__(self, seconds):
        self.seconds = seconds

    def predict(self, X):
        time.sleep(self.seconds)
        return np.zeros(len(X), dtype=int)


def test_latency_is_measured_until_min_count_and_min_time(task):
    m = measure(Sleepy(0.002), task, ["latency_p95_ms"],
                options={"latency": {"warmup": 2, "warmup_s": 0.0, "min_count": 10, "min_time_s": 0.1,
                                     "batch_size": 16}})
    d = m.details["latency"]
    one = d["batch_1"]
    # p95 was asked: its interval needs 72 samples, so min_count 10 is raised for the batch-1 run
    assert d["count_asked"] == 72 and one["count"] >= 72 and one["total_s"] >= 0.1 and one["warmup"] == 2
    assert d["batch"]["count"] >= 10 and one["p95_ci_confidence"] >= 0.95
    assert 2.0 <= m.values["latency_p50_ms"] <= m.values["latency_p95_ms"] <= one["p99_ms"]
    assert np.isnan(m.values["latency_p99_ms"])  # 72 samples do not support a p99: not read from them
    assert d["batch"]["batch_size"] == 16
    flow = d["throughput"]  # back-to-back calls, one synchronisation: each call sleeps 2 ms, so at most 8000 rows/s
    assert flow["calls"] >= 10 and m.values["throughput_per_s"] == pytest.approx(16 * flow["calls"] / flow["seconds"])
    assert m.values["throughput_per_s"] <= 16 / 0.002
    assert d["device"] == "cpu" and d["method"] == "perf_counter_ns" and d["mode"] == "end_to_end"
    assert d["timed"] == "predict" and "model.predict" in d["window"]
    assert d["threads"]["cpu_count"] >= 1


def test_latency_stops_at_max_time():
    stats = time_calls(lambda: time.sleep(0.02), timer=CpuTimer(), batch_size=1,
                       warmup=0, min_count=1000, min_time_s=0.0, max_time_s=0.1)
    assert stats.stopped_by == "max_time" and 3 <= stats.count < 1000
    with pytest.raises(ValueError, match="min_count"):
        time_calls(lambda: None, timer=CpuTimer(), batch_size=1, min_count=0)


def test_latency_waits_for_the_host_lock_without_counting_the_wait(task, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTUNE_LOCK_DIR", str(tmp_path / "locks"))
    held = threading.Event()

    def hold():
        with timing_lock("cpu"):
            held.set()
            time.sleep(0.4)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    m = measure(Rule(), task, ["latency_p50_ms"],
                options={"latency": {"warmup": 1, "min_count": 5, "min_time_s": 0.0}})
    holder.join()
    assert m.details["latency"]["lock_wait_s"] >= 0.2
    assert m.details["latency"]["batch_1"]["max_ms"] < 200  # the 400 ms spent waiting is not in any sample


class FakeEvent:
    def __init__(self, log, clock, enable_timing):
        assert enable_timing
        self.log, self.clock, self.t = log, clock, None

    def record(self, stream):
        self.log.append(("record", stream))
        self.t = self.clock[0]

    def synchronize(self):
        self.log.append(("event_sync",))

    def elapsed_time(self, other):
        assert ("event_sync",) in self.log, "elapsed_time read before the end event was synchronised"
        return other.t - self.t


class FakeCuda:
    """Records the calls CudaTimer makes, with a clock the timed function advances."""

    def __init__(self):
        self.log, self.clock, self.events = [], [0.0], 0

    def current_stream(self, device):
        return f"stream:{device}"

    def Event(self, enable_timing):
        self.events += 1
        self.log.append(("new_event",))
        return FakeEvent(self.log, self.clock, enable_timing)

    def synchronize(self, device):
        self.log.append(("device_sync", device))


def test_cuda_timer_logic_without_a_gpu():
    cuda = FakeCuda()
    timer = timer_for("cuda:1", cuda=cuda)
    assert isinstance(timer, CudaTimer) and timer.method == "cuda_event"
    # both events exist (made and recorded once) before any timed window: torch would otherwise create an
    # event lazily at its first record, inside the window
    assert cuda.log == [("new_event",), ("new_event",), ("record", "stream:cuda:1"), ("record", "stream:cuda:1"),
                        ("event_sync",)]
    cuda.log.clear()

    def work():
        cuda.log.append(("work",))
        cuda.clock[0] += 3.5

    assert timer.time_ms(work) == 3.5
    assert cuda.log == [("device_sync", "cuda:1"), ("record", "stream:cuda:1"), ("work",),
                        ("record", "stream:cuda:1"), ("event_sync",)]
    stats = time_calls(work, timer=timer, batch_size=1, warmup=2, min_count=4, min_time_s=0.0)
    assert stats.count == 4 and stats.p50_ms == 3.5
    assert cuda.events == 2 and ("new_event",) not in cuda.log  # reused, never made inside a window
    assert isinstance(timer_for("cpu"), CpuTimer)


def test_device_of():
    torch = pytest.importorskip("torch")
    assert device_of(torch.nn.Linear(2, 1)) == "cpu"

    class OnDevice:
        device = "cuda:1"

        def predict(self, X):
            return X

    assert device_of(OnDevice()) == "cuda:1" and device_of(Rule()) == "cpu"


def test_register_a_custom_metric(task):
    @mt.register_metric(("x1_mean_pred",), key="custom_probe")
    def probe(model, task, *, split="valid", scale=1.0):
        X, _, _ = task.split(split)
        return {"x1_mean_pred": scale * float(np.mean(model.predict(X)))}

    try:
        assert "x1_mean_pred" in known_metrics()
        v = measure(Rule(), task, ["x1_mean_pred"], options={"custom_probe": {"scale": 2.0}}).values
        assert v["x1_mean_pred"] == pytest.approx(2 * Rule().predict(task.X_valid).mean())
        with pytest.raises(ValueError, match="already registered"):
            mt.register_metric("x1_mean_pred", lambda m, t: {"x1_mean_pred": 0.0}, key="other")
        with pytest.raises(ValueError, match="reserved"):
            mt.register_metric("anything", lambda m, t: {"anything": 0.0}, key="metrics")
    finally:
        mt.metrics.unregister_metric("x1_mean_pred")
    assert "x1_mean_pred" not in known_metrics()


def test_unknown_metric_suggests_close_names():
    with pytest.raises(mt.UnknownMetricError, match="did you mean 'accuracy'"):
        mt.metrics.group_for("acuracy")
