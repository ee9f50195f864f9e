"""motune._pareto: one sign convention; sorts, crowding and hypervolume against hand computations
and against Optuna's own (private) implementations; the fallback hypervolume against the private one."""

import itertools

import numpy as np
import pytest

from motune import _pareto


def test_losses_negate_what_is_maximised():
    losses = _pareto.to_losses([[0.9, 12.0], [0.8, 3.0]], ["maximize", "minimize"])
    assert losses.tolist() == [[-0.9, 12.0], [-0.8, 3.0]]
    assert _pareto.from_losses(losses, ["maximize", "minimize"]).tolist() == [[0.9, 12.0], [0.8, 3.0]]
    with pytest.raises(ValueError, match="direction"):
        _pareto.to_losses([[1.0]], ["max"])


def test_dominance_and_the_front_keep_equal_points():
    assert _pareto.dominates([1, 1], [1, 2]) and not _pareto.dominates([1, 1], [1, 1])
    assert _pareto.weakly_dominates([1, 1], [1, 1]) and not _pareto.weakly_dominates([1, 3], [2, 2])
    losses = np.array([[1, 4], [2, 2], [2, 2], [3, 3], [4, 1], [1, 5]], dtype=float)
    assert _pareto.nondominated_mask(losses).tolist() == [True, True, True, False, True, False]
    assert _pareto.nondominated_mask(np.empty((0, 2))).tolist() == []


def test_ranks_match_a_hand_sort_and_put_infeasible_points_last_by_penalty():
    losses = np.array([[1, 4], [2, 2], [3, 3], [4, 4], [0, 0], [5, 5]], dtype=float)
    assert _pareto.non_domination_rank(losses).tolist() == [1, 1, 2, 3, 0, 4]
    penalty = np.array([0, 0, 0, 0, 0.5, 0.2])  # the two best-looking points are infeasible
    assert _pareto.non_domination_rank(losses, penalty).tolist() == [0, 0, 1, 2, 4, 3]


def test_ranks_equal_optunas_constrained_sort_on_random_points():
    private = pytest.importorskip("optuna.study._multi_objective")
    rng = np.random.default_rng(0)
    for n, m in itertools.product((1, 7, 40), (1, 2, 3)):
        losses = rng.integers(0, 5, size=(n, m)).astype(float)  # ties on purpose
        penalty = np.where(rng.random(n) < 0.3, rng.integers(1, 4, size=n).astype(float), 0.0)
        assert _pareto.non_domination_rank(losses).tolist() == private._fast_non_domination_rank(losses).tolist()
        ours = _pareto.non_domination_rank(losses, penalty)
        theirs = private._fast_non_domination_rank(losses, penalty=penalty)
        assert ours.tolist() == theirs.tolist()


def test_crowding_distance_and_rank_order():
    losses = np.array([[0, 4], [1, 2], [2, 1], [4, 0]], dtype=float)
    d = _pareto.crowding_distance(losses)
    assert np.isinf(d[0]) and np.isinf(d[3])
    assert d[1] == pytest.approx((2 - 0) / 4 + (4 - 1) / 4) and d[2] == pytest.approx((4 - 1) / 4 + (2 - 0) / 4)
    assert _pareto.rank_order(np.array([[3, 3], [1, 1], [2, 0]], dtype=float)) == [1, 2, 0]


def test_hypervolume_by_hand_in_two_and_three_dimensions():
    two = np.array([[1, 3], [2, 2], [3, 1]], dtype=float)
    assert _pareto.hypervolume(two, [4, 4]) == pytest.approx(3 + 2 + 1)
    assert _pareto.hypervolume(np.array([[5, 0]], dtype=float), [4, 4]) == 0.0  # outside the reference
    three = np.array([[0, 0, 1], [1, 1, 0]], dtype=float)
    assert _pareto.hypervolume(three, [2, 2, 2]) == pytest.approx(4 * 1 + 1 * 2 - 1 * 1)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_the_fallback_hypervolume_equals_optunas(m, monkeypatch):
    rng = np.random.default_rng(m)
    for n in (1, 5, 30):
        points = rng.random((n, m))
        ref = np.full(m, 1.1)
        private = _pareto.hypervolume(points, ref)
        monkeypatch.setattr(_pareto, "_USE_OPTUNA_HYPERVOLUME", False)
        fallback = _pareto.hypervolume(points, ref)
        monkeypatch.setattr(_pareto, "_USE_OPTUNA_HYPERVOLUME", True)
        assert fallback == pytest.approx(private, rel=1e-12)


def test_a_failing_private_hypervolume_falls_back(monkeypatch):
    import optuna._hypervolume as hv

    expected = _pareto.hypervolume(np.array([[1.0, 3.0], [2.0, 2.0]]), [4, 4])

    def broken(*_a, **_k):
        raise AttributeError("moved in a new Optuna")

    monkeypatch.setattr(hv, "compute_hypervolume", broken)
    assert _pareto.hypervolume(np.array([[1.0, 3.0], [2.0, 2.0]]), [4, 4]) == expected


def test_gain_is_the_difference_of_two_hypervolumes():
    rng = np.random.default_rng(3)
    front = rng.random((6, 3))
    front = front[_pareto.nondominated_mask(front)]
    ref = np.full(3, 1.2)
    for p in rng.random((5, 3)):
        gain = _pareto.hypervolume_gain(front, p, ref)
        assert gain == pytest.approx(_pareto.hypervolume(np.vstack([front, p]), ref) - _pareto.hypervolume(front, ref))


def test_reference_point_rule():
    losses = np.array([[-0.9, 2.0], [-0.7, 6.0]])
    assert _pareto.reference_point(losses).tolist() == pytest.approx([-0.7 + 0.02, 6.0 + 0.4])
    same = np.array([[-0.5, 0.0], [-0.5, 0.0]])  # no range: 10 % of the magnitude, or 1
    assert _pareto.reference_point(same).tolist() == pytest.approx([-0.45, 0.1])


def test_the_one_front_of_trials_leaves_out_infeasible_and_incomplete_rows_and_keeps_ties():
    from motune._pareto import front_of

    values = [[0.9, 0.1], [0.9, 0.1], [0.8, 0.05], [0.7, 0.2], None, [0.95, 0.01], [float("nan"), 0.0]]
    feasible = [True, True, True, True, True, False, True]
    assert front_of(values, ["maximize", "minimize"], feasible) == [True, True, True, False, False, False, False]
    assert front_of([], ["maximize"], []) == []


def test_joining_and_growing_the_front_follow_the_one_front_rule():
    from motune._pareto import add_to_front, front_of, joins_front

    rng = np.random.default_rng(3)
    directions = ["maximize", "minimize", "minimize"]
    for _ in range(30):
        rows = [list(r) for r in rng.integers(0, 4, size=(25, 3)).astype(float)]  # ties on purpose
        feasible = list(rng.random(25) < 0.7)
        full = front_of(rows, directions, feasible)
        for i in range(len(rows)):
            if feasible[i]:
                others = rows[:i] + rows[i + 1:]
                assert joins_front(rows[i], directions, others, feasible[:i] + feasible[i + 1:]) == full[i]
        grown = []
        for row, ok in zip(rows, feasible):
            if ok:
                grown = add_to_front(grown, row, directions)
        assert sorted(map(tuple, grown)) == sorted(tuple(r) for r, on in zip(rows, full) if on)
