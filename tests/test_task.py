import numpy as np
import pandas as pd
import pytest

import motune as mt


def test_splits_are_stratified_disjoint_and_reproducible(frame):
    t1 = mt.Task.from_frame(frame, label="y", sensitive="group", seed=3)
    t2 = mt.Task.from_frame(frame, label="y", sensitive="group", seed=3)
    t3 = mt.Task.from_frame(frame, label="y", sensitive="group", seed=4)
    sizes = [len(t1.y_train), len(t1.y_valid), len(t1.y_test)]
    assert sum(sizes) == len(frame) and sizes == [360, 120, 120]
    idx = [set(t1.X_train.index), set(t1.X_valid.index), set(t1.X_test.index)]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
    assert list(t1.X_valid.index) == list(t2.X_valid.index)
    assert list(t1.X_valid.index) != list(t3.X_valid.index)
    assert t1.fingerprint == t2.fingerprint != t3.fingerprint
    # label x group strata keep each split's positive rate per group close to the whole frame's
    whole = frame.groupby("group")["y"].mean()
    for split in ("train", "valid", "test"):
        _, y, s = t1.split(split)
        assert (y.groupby(s).mean() - whole).abs().max() < 0.05
    assert set(t1.sensitive_valid) == {"a", "b"}
    assert (t1.sensitive_valid == frame.loc[t1.X_valid.index, "group"]).all()


def test_label_encoding_and_positive_label(frame):
    words = frame.assign(y=frame["y"].map({1: "yes", 0: "no"}))
    with pytest.raises(ValueError, match="pass positive_label"):
        mt.Task.from_frame(words, label="y", sensitive="group")
    t = mt.Task.from_frame(words, label="y", sensitive="group", positive_label="yes")
    assert t.classes == ("no", "yes") and t.positive_label == "yes"
    assert (t.y_train == (words.loc[t.X_train.index, "y"] == "yes").astype(int)).all()
    with pytest.raises(ValueError, match="is not a value"):
        mt.Task.from_frame(words, label="y", sensitive="group", positive_label="maybe")


def test_bad_sensitive_and_label_columns_are_refused(frame):
    with pytest.raises(ValueError, match="sensitive column 'race' is not in the frame"):
        mt.Task.from_frame(frame, label="y", sensitive="race")
    with pytest.raises(ValueError, match="single group"):
        mt.Task.from_frame(frame.assign(group="a"), label="y", sensitive="group")
    with pytest.raises(ValueError, match="missing values"):
        mt.Task.from_frame(frame.assign(group=frame["group"].where(frame.index > 3)), label="y", sensitive="group")
    with pytest.raises(ValueError, match="label column 'z' is not in the frame"):
        mt.Task.from_frame(frame, label="z", sensitive="group")
    with pytest.raises(ValueError, match="single class"):
        mt.Task.from_frame(frame.assign(y=1), label="y", sensitive="group")
    with pytest.raises(ValueError, match="test_fraction"):
        mt.Task.from_frame(frame, label="y", sensitive="group", test_fraction=1.5)


def test_multiclass_label(frame):
    three = frame.assign(y=np.where(frame["x1"] > 0.5, "hi", np.where(frame["x1"] < -0.5, "lo", "mid")))
    t = mt.Task.from_frame(three, label="y", sensitive="group")
    assert t.n_classes == 3 and not t.is_binary and t.classes == ("hi", "lo", "mid")
    assert set(t.y_train.unique()) == {0, 1, 2}


def test_numeric_matrices_are_float32_with_encoders_fit_on_train_only(frame):
    frame = frame.copy()
    t = mt.Task.from_frame(frame, label="y", sensitive="group", seed=0)
    # a category that exists only outside the training split must encode as all zeros
    unseen_row = t.X_valid.index[0]
    frame.loc[unseen_row, "color"] = "purple"
    t = mt.Task.from_frame(frame, label="y", sensitive="group", seed=0)
    n = t.numeric()
    assert n.X_train.dtype == np.float32 and n.X_valid.dtype == np.float32 and n.y_train.dtype == np.int64
    assert n.X_train.shape == (len(t.y_train), len(n.feature_names))
    assert not any("purple" in f for f in n.feature_names)
    color_cols = [i for i, f in enumerate(n.feature_names) if f.startswith("color_")]
    pos = list(t.X_valid.index).index(unseen_row)
    assert n.X_valid[pos, color_cols].sum() == 0
    # the scaler was fit on the training split: train columns are centred, valid columns need not be
    x1 = n.feature_names.index("x1")
    assert abs(n.X_train[:, x1].mean()) < 1e-5 and abs(n.X_train[:, x1].std() - 1) < 1e-3
    assert n.transform(t.X_test).shape == n.X_test.shape
    assert t.numeric() is n  # computed once


def test_drop_sensitive_and_from_any_frame():
    frame = pd.DataFrame({"f": np.arange(100.0), "s": ["u", "v"] * 50, "t": [True, False, False, True] * 25})
    t = mt.Task.from_frame(frame, label="t", sensitive="s", drop_sensitive=True)
    assert "s" not in t.X_train.columns and t.classes == (False, True)
    assert t.summary()["groups"] == ["u", "v"]
