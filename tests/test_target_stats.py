import numpy as np
import pandas as pd

from features.target_stats import target_statistics

KEYS = ["Uid", "Subcategory"]


def data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    keys = pd.DataFrame({"Uid": rng.choice(["a", "b", "c", "d", "e"], n),
                         "Subcategory": rng.choice(["Food", "Cars", "Love"], n),
                         "Alltags": [" ".join(rng.choice(["sun", "sea", "cat", "dog", "x"], rng.integers(0, 4)))
                                     for _ in range(n)]})
    y = rng.normal(6, 2, n)
    fold = np.arange(n) % 5
    return keys, y, fold


def test_a_posts_own_label_never_reaches_its_features():
    keys, y, fold = data()
    apply = keys.iloc[:10]
    base, base_apply = target_statistics(keys, y, fold, apply, KEYS, smoothing=5.0)
    for i in (0, 17, 123):
        changed = y.copy()
        changed[i] += 1000.0
        fit, _ = target_statistics(keys, changed, fold, apply, KEYS, smoothing=5.0)
        row = fit.iloc[i]
        assert np.allclose(row.to_numpy(), base.iloc[i].to_numpy(), equal_nan=True)
        # posts of the same user in other folds do see it: the statistic is not a constant
        same_user_other_fold = np.flatnonzero((keys["Uid"] == keys["Uid"][i]) & (fold != fold[i]))
        assert not np.isclose(fit["te_Uid_mean"][same_user_other_fold[0]], base["te_Uid_mean"][same_user_other_fold[0]])


def test_apply_rows_use_all_fit_rows_and_unseen_keys_get_the_prior():
    keys, y, fold = data()
    apply = pd.DataFrame({"Uid": ["a", "zzz"], "Subcategory": ["Food", "Food"], "Alltags": ["sun", "neverseen"]})
    _, out = target_statistics(keys, y, fold, apply, KEYS, smoothing=0.0)
    assert np.isclose(out["te_Uid_mean"][0], y[keys["Uid"] == "a"].mean())
    assert np.isclose(out["te_Uid_mean"][1], y.mean()) and out["te_Uid_n"][1] == 0
    assert np.isnan(out["te_tag_mean"][1])


def test_out_of_fold_mean_matches_a_direct_computation():
    keys, y, fold = data()
    fit, _ = target_statistics(keys, y, fold, keys.iloc[:1], KEYS, smoothing=0.0, tags=False)
    i = 5
    others = (keys["Subcategory"] == keys["Subcategory"][i]) & (fold != fold[i])
    assert np.isclose(fit["te_Subcategory_mean"][i], y[others].mean())
    assert fit["te_Subcategory_n"][i] == others.sum()
