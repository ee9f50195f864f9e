"""Fine-tuning a transformer on accuracy and typo robustness at once; the study tunes the combiner's knob.

Run:  pip install torch==2.13.0 -e '.[text,training]'   (on a GPU box: your CUDA torch first)
      HF_HUB_OFFLINE=1 motune run studies/text_mo_training.py --trials 8
      HF_HUB_OFFLINE=1 MOTUNE_COMBINER=pareto motune run studies/text_mo_training.py --trials 8

Each trial fine-tunes the packaged all-MiniLM-L6-v2 (2 encoder layers kept)
on Rotten Tomatoes reviews with :class:`motune.training.MultiObjectiveTrainer`
and two surrogates: cross-entropy on the reviews, and cross-entropy on a
seeded copy of each review with typos and dropped words (the perturbation the
``text_robust_accuracy`` metric applies, with another seed). The combiner
decides how they meet and what the study searches:

``constrained``  ``robust_loss_bound``: the perturbed loss's bound (Lagrange multipliers by dual ascent)
``pareto``       ``robust_preference``: the perturbed loss's scale in a closed-form Pareto-gradient step

Objectives: accuracy and ``text_robust_accuracy`` (validation); the
counterfactual gender flip rate and the group gap on the probe are recorded.
The combiner's per-epoch history (surrogates, multipliers or weights) is
stored with the trial (``training``).
"""

import os
import tempfile

import motune as mt
from motune import training as mtt
from motune.integrations.transformers import MotuneCallback
from motune.metrics.robustness import perturb_texts
from motune.models.compress import keep_layers
from motune.models.transformers import TextClassifier, default_backbone, load_classifier

COMBINERS = ("constrained", "pareto")
TYPOS = {"typo_rate": 0.05, "word_drop": 0.1}


def perturbed_loss():
    """Cross-entropy of the model on the rows' perturbed copies (``extra_input_ids``, ``extra_attention_mask``)."""
    import torch

    def fn(batch):
        out = batch.module(input_ids=batch.inputs["extra_input_ids"],
                           attention_mask=batch.inputs["extra_attention_mask"])
        return torch.nn.functional.cross_entropy(out.logits.float(), batch.y)

    return mtt.Surrogate("perturbed_cross_entropy", fn, needs=("inputs", "module"))


def make_study(*, combiner=None, backbone=None, name=None, n_texts=1200, probe_instances=200, epochs=2, layers=2,
               max_length=48, storage=None, seed=0, pruning="default"):
    """The study for ``combiner`` (default ``$MOTUNE_COMBINER``, else ``constrained``)."""
    import transformers

    combiner = combiner or os.environ.get("MOTUNE_COMBINER", "constrained")
    if combiner not in COMBINERS:
        raise mt.errors.SpecError(f"combiner must be one of {list(COMBINERS)}, got {combiner!r}")
    backbone = str(backbone or default_backbone())
    task = mt.data.sentiment_task(n_texts=n_texts, attribute="gender", probe_instances=probe_instances, seed=seed)

    def space(trial):
        trial.suggest_float("learning_rate", 1e-4, 5e-4, log=True)
        if combiner == "constrained":
            trial.suggest_float("robust_loss_bound", 0.2, 0.7)
        else:
            trial.suggest_float("robust_preference", 0.1, 10.0, log=True)

    def train(params, task, ctx):
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        model, tokenizer = load_classifier(backbone, seed=ctx.seed)
        keep_layers(model, layers)
        model.to(ctx.device)

        def wrap(m):
            return TextClassifier(m, tokenizer, max_length=max_length)

        texts = task.X_train["text"].astype(str).tolist()
        noisy = wrap(model).encode(perturb_texts(texts, seed=ctx.seed + 1, **TYPOS))
        train_rows = wrap(model).dataset(task.X_train, task.y_train, extra={
            "extra_input_ids": noisy["input_ids"], "extra_attention_mask": noisy["attention_mask"]})
        objectives = ["cross_entropy", perturbed_loss()]
        if combiner == "constrained":
            loss = mtt.constrained("cross_entropy", {objectives[1]: params["robust_loss_bound"]})
        else:
            loss = mtt.pareto(objectives, preference=[1.0, params["robust_preference"]])
        with tempfile.TemporaryDirectory(prefix="motune-text-mo-") as scratch:
            args = transformers.TrainingArguments(
                output_dir=scratch, num_train_epochs=epochs, learning_rate=params["learning_rate"],
                per_device_train_batch_size=16, per_device_eval_batch_size=64, eval_strategy="epoch",
                save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True, seed=ctx.seed,
                data_seed=ctx.seed, use_cpu=ctx.device == "cpu")
            trainer = mtt.MultiObjectiveTrainer(
                model=model, args=args, train_dataset=train_rows,
                eval_dataset=wrap(model).dataset(task.X_valid, task.y_valid),
                callbacks=[MotuneCallback(ctx, wrap)], mo_loss=loss, ctx=ctx)
            trainer.remove_callback(transformers.PrinterCallback)
            trainer.train()  # each epoch's history is stored with the trial (ctx=), also when it is pruned
        return wrap(model)

    return mt.Study(
        name=name or f"text-mo-training-{combiner}",
        description=f"Fine-tune all-MiniLM-L6-v2 ({layers} layers) on clean and typo-perturbed reviews combined by "
                    f"{combiner}; accuracy vs typo-robust accuracy.",
        task=task, space=space, train=train,
        objectives=[mt.maximize("accuracy"), mt.maximize("text_robust_accuracy")],
        metrics=["counterfactual_flip_rate", "demographic_parity_difference"],
        metric_options={"text_robustness": TYPOS},
        storage=storage, seed=seed, pruning=pruning,
    )


study = make_study()
