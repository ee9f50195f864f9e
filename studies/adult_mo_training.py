"""Adult with a PyTorch MLP trained on several objectives at once; the study tunes the combiner's knob.

Run:  pip install torch==2.13.0 -e '.[training]'      (on a GPU box: your CUDA torch first)
      motune run studies/adult_mo_training.py --trials 20           # the bound on the parity gap
      MOTUNE_COMBINER=conditioned motune run studies/adult_mo_training.py --trials 40
      motune front adult-mo-training-constrained

Every trial trains the same MLP (64 hidden units, Adam, 9 epochs) on
cross-entropy and a differentiable surrogate of the demographic parity gap
(:mod:`motune.training`); ``combiner`` decides how the two are combined and
which knob the study searches:

combiner        knob in the search space                   what a trial costs
``constrained`` ``dp_bound``: the gap's bound (MOPO-style,    one training
                Lagrange multipliers by dual ascent)
``chebyshev``   ``fairness_share``: the preference on the gap one training
                in a weighted Chebyshev scalarisation
``pareto``      ``fairness_preference``: how much faster the  one training
                gap falls in a closed-form Pareto-gradient step
``conditioned`` ``fairness_share`` of one preference-          one prediction (the model is trained
                conditioned MLP (FiLM), trained once over        once per worker process, 18 epochs,
                preferences drawn per minibatch                  and kept)

Objectives: accuracy and demographic parity difference (fairlearn's, on hard
predictions, validation split); constraint: balanced accuracy >= 0.70; the
equalized odds difference is recorded too. Each epoch's surrogates and the
constrained combiner's multipliers are stored with the trial (``training``).
``benchmarks/mo_training.py`` compares the combiners with the weighted penalty
and fairlearn's mitigations at equal training compute.

Data: UCI Adult, Becker & Kohavi (1996), https://doi.org/10.24432/C5XW20, CC BY 4.0.
"""

import os

import torch

import motune as mt
from motune import training as mtt
from motune.models.torch import TorchClassifier, fit

EPOCHS, HIDDEN, LR, BATCH = 9, 64, 0.01, 256
COMBINERS = ("constrained", "chebyshev", "pareto", "conditioned")
_SHARED: dict = {}  # the conditioned arm's one trained model per (task, seed), in this process


def make_study(*, combiner=None, name=None, max_rows=10000, epochs=EPOCHS, storage=None, seed=0, pruning="default"):
    """The study for ``combiner`` (default ``$MOTUNE_COMBINER``, else ``constrained``)."""
    combiner = combiner or os.environ.get("MOTUNE_COMBINER", "constrained")
    if combiner not in COMBINERS:
        raise mt.errors.SpecError(f"combiner must be one of {list(COMBINERS)}, got {combiner!r}")
    task = mt.data.adult(sensitive="sex", max_rows=max_rows)
    objectives = ["cross_entropy", "demographic_parity_gap"]

    def space(trial):
        if combiner == "constrained":
            trial.suggest_float("dp_bound", 0.005, 0.2)
        elif combiner == "pareto":
            trial.suggest_float("fairness_preference", 0.05, 20.0, log=True)
        else:
            trial.suggest_float("fairness_share", 0.5, 0.97)

    def conditioned(task, device):
        key = (id(task), seed)
        if key not in _SHARED:
            data = task.numeric()
            torch.manual_seed(seed)
            module = mtt.ConditionedMLP(data.X_train.shape[1], HIDDEN, len(objectives)).to(device)
            groups, _ = mtt.group_codes(task.sensitive_train)

            def draw(generator):
                share = 0.5 + 0.47 * torch.rand((), generator=generator)
                return torch.stack([1 - share, share])

            mtt.fit_conditioned(module, torch.from_numpy(data.X_train), torch.from_numpy(data.y_train),
                                objectives=objectives, groups=groups, kind="chebyshev", preferences=draw,
                                epochs=2 * epochs, lr=LR, batch_size=BATCH, seed=seed)
            _SHARED[key] = mtt.ConditionedClassifier.for_task(module.eval(), task)
        return _SHARED[key]

    def train(params, task, ctx):
        if combiner == "conditioned":  # a prediction at this trial's preference, not a training
            share = params["fairness_share"]
            return conditioned(task, ctx.device).at([1 - share, share])
        torch.manual_seed(ctx.seed)
        data = task.numeric()
        module = torch.nn.Sequential(torch.nn.Linear(data.X_train.shape[1], HIDDEN), torch.nn.ReLU(),
                                     torch.nn.Linear(HIDDEN, 2)).to(ctx.device)
        model = TorchClassifier.for_task(module, task)
        groups, _ = mtt.group_codes(task.sensitive_train)
        if combiner == "constrained":
            loss = mtt.constrained("cross_entropy", {"demographic_parity_gap": params["dp_bound"]})
        elif combiner == "pareto":
            loss = mtt.pareto(objectives, preference=[1.0, params["fairness_preference"]])
        else:
            loss = mtt.scalarized(objectives, [1 - params["fairness_share"], params["fairness_share"]],
                                  kind="chebyshev")
        fit(module, torch.from_numpy(data.X_train), torch.from_numpy(data.y_train), epochs=epochs, lr=LR,
            batch_size=BATCH, loss=loss, groups=groups, seed=ctx.seed, ctx=ctx, model=model)
        return model

    return mt.Study(
        name=name or f"adult-mo-training-{combiner}",
        description=f"An MLP trained on cross-entropy and a parity-gap surrogate combined by {combiner}; accuracy vs "
                    "demographic parity difference, under a balanced-accuracy constraint.",
        task=task, space=space, train=train,
        objectives=[mt.maximize("accuracy"), mt.minimize("demographic_parity_difference")],
        constraints=[mt.at_least("balanced_accuracy", 0.70)],
        metrics=["equalized_odds_difference"],
        storage=storage, seed=seed, pruning=pruning,
    )


study = make_study()
