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
    assert (f["fold"] == f["feature_fold"]).all()
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
    assert set(f["feature_fold"]) == {0, 1, 2, 3, 4}
    assert validation_folds(f) == [0]


def test_bad_scheme_is_named():
    with pytest.raises(ValueError, match="scheme"):
        make_folds(posts(), "random", 5, 0)


def test_time_holdout_mirrors_the_tests_share_of_unseen_users():
    from models.validation import seen_in_fit, test_unseen_share
    p = posts(n=1000, n_users=200, seed=4)
    test_uids = np.r_[p["Uid"].to_numpy()[:70], [f"new{i}" for i in range(30)]]  # 30% of test posts by new users
    assert test_unseen_share(p["Uid"], test_uids) == 0.3
    f = make_folds(p, "time_holdout", 5, seed=0, holdout_frac=0.2, test_uids=test_uids)
    hold = (f["fold"] == 0).to_numpy()
    assert hold.sum() == 200
    seen = seen_in_fit(p["Uid"].to_numpy(), f["fold"].to_numpy())
    assert abs((~seen[hold]).mean() - 0.3) <= 0.03
    # the seen part is the latest posts of users who keep an earlier post in the fit part
    fit_first = p[~hold].groupby("Uid")["Postdate"].min()
    seen_rows = p[hold & seen]
    assert (seen_rows["Postdate"].to_numpy() >= seen_rows["Uid"].map(fit_first).to_numpy()).all()
    # without the test's users, the plain latest-posts holdout (and its few unseen users)
    plain = make_folds(p, "time_holdout", 5, seed=0, holdout_frac=0.2)
    plain_hold = (plain["fold"] == 0).to_numpy()
    assert p["Postdate"][plain_hold].min() >= p["Postdate"][~plain_hold].max()
    assert (~seen_in_fit(p["Uid"].to_numpy(), plain["fold"].to_numpy())[plain_hold]).mean() < 0.2


def test_kfold_and_target_feature_folds_mirror_the_unseen_share():
    from models.validation import seen_in_fit
    p = posts(n=600, n_users=60, seed=5)
    test_uids = np.r_[p["Uid"].to_numpy()[:50], [f"new{i}" for i in range(50)]]
    f = make_folds(p, "kfold", 5, seed=0, test_uids=test_uids)
    assert (~seen_in_fit(p["Uid"].to_numpy(), f["fold"].to_numpy())).mean() == pytest.approx(0.5, abs=0.06)
    assert f["fold"].value_counts().max() - f["fold"].value_counts().min() <= p["Uid"].value_counts().max()
    plain = make_folds(p, "kfold", 5, seed=0)
    assert (~seen_in_fit(p["Uid"].to_numpy(), plain["fold"].to_numpy())).mean() < 0.2


def test_a_small_data_set_gets_kfold_instead_of_a_tiny_holdout():
    from models.validation import fold_plan
    small = posts(n=200, n_users=20)
    f = make_folds(small, "time_holdout", 5, seed=0, holdout_frac=0.2, min_holdout_posts=100)
    assert (f["fold"] >= 0).all() and validation_folds(f) == [0, 1, 2, 3, 4]  # every post validates
    plan = fold_plan(200, "time_holdout", 5, 0.2, min_holdout_posts=100)
    assert plan.scheme == "kfold" and "40 posts" in plan.reason
    # a data set large enough for the holdout keeps it
    assert fold_plan(1000, "time_holdout", 5, 0.2, min_holdout_posts=100).scheme == "time_holdout"
    big = make_folds(posts(n=1000), "time_holdout", 5, seed=0, holdout_frac=0.2, min_holdout_posts=100)
    assert set(big["fold"]) == {-1, 0}


def test_seen_in_fit_matches_a_direct_count():
    from models.validation import seen_in_fit
    uids = np.array(["a", "a", "b", "c", "c", "d"])
    fold = np.array([0, 1, 1, 0, 0, -1])
    # a: a post in the other fold; b: alone; c: both posts in fold 0; d never validates
    assert seen_in_fit(uids, fold).tolist() == [True, True, False, False, False, False]
    holdout = np.array([-1, 0, 0, -1, 0, 0])
    assert seen_in_fit(uids, holdout).tolist() == [False, True, False, False, True, False]


def test_scores_by_kind_of_post():
    from models.metrics import score, score_by_kind
    rng = np.random.default_rng(0)
    y, pred = rng.normal(size=50), rng.normal(size=50)
    seen = np.arange(50) < 40
    out = score_by_kind(y, pred, seen)
    assert out["seen"] == score(y[:40], pred[:40]) and out["unseen"] == score(y[40:], pred[40:])
    assert out["unseen_share"] == 0.2 and (out["n_seen"], out["n_unseen"]) == (40, 10)
    assert score_by_kind(y, pred, np.arange(50) < 49)["unseen"] is None  # one post: no score
