import numpy as np
import pandas as pd
import pytest

from models.validation import make_folds, validation_folds


def posts(n=200, n_users=23, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"Pid": [str(i) for i in range(n)],
                         "Uid": [f"u{int(u)}" for u in rng.zipf(1.6, n) % n_users],
                         "Postdate": rng.integers(1_400_000_000, 1_440_000_000, n)})


def test_kfold_covers_every_post_once_and_is_seeded():
    f = make_folds(posts(), "kfold", 5, seed=1)
    assert sorted(f["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (f["fold"] == f["stat_fold"]).all()
    assert f["fold"].value_counts().max() - f["fold"].value_counts().min() <= 1
    assert f.equals(make_folds(posts(), "kfold", 5, seed=1))
    assert not f.equals(make_folds(posts(), "kfold", 5, seed=2))


def test_group_kfold_keeps_users_together():
    p = posts()
    f = make_folds(p, "group_kfold", 4, seed=0)
    assert (p.assign(fold=f["fold"]).groupby("Uid")["fold"].nunique() == 1).all()
    assert validation_folds(f) == [0, 1, 2, 3]


def test_time_holdout_validates_on_the_latest_posts():
    p = posts()
    f = make_folds(p, "time_holdout", 5, seed=0, holdout_frac=0.25)
    hold = f["fold"] == 0
    assert hold.sum() == 50 and set(f["fold"]) == {-1, 0}
    assert p["Postdate"][hold].min() >= p["Postdate"][~hold].max()
    assert set(f["stat_fold"]) == {0, 1, 2, 3, 4}
    assert validation_folds(f) == [0]


def test_bad_scheme_is_named():
    with pytest.raises(ValueError, match="scheme"):
        make_folds(posts(), "random", 5, 0)
