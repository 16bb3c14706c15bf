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


def timed(n=300, seed=0):
    """`data` with post times: whole days, so that many posts share a second (batch uploads)."""
    keys, y, fold = data(n, seed)
    return keys.assign(Postdate=np.random.default_rng(seed + 1).integers(0, 60, n) * 86400.0), y, fold


def test_time_holdout_fit_rows_see_only_the_users_strictly_earlier_posts():
    keys, y, fold = timed()
    fit, _ = target_statistics(keys, y, fold, keys.iloc[:1], KEYS, smoothing=3.0, tags=False, window="expanding")
    t, uid = keys["Postdate"].to_numpy(), keys["Uid"].to_numpy()
    n_f, s_f = np.bincount(fold), np.bincount(fold, weights=y)
    for i in range(0, 300, 7):
        earlier = (uid == uid[i]) & (t < t[i])  # the same second is not earlier: the row itself is out
        prior = (s_f.sum() - s_f[fold[i]]) / (n_f.sum() - n_f[fold[i]])  # the other inner folds' mean
        assert fit["te_Uid_n"][i] == earlier.sum()
        assert np.isclose(fit["te_Uid_mean"][i], (y[earlier].sum() + 3.0 * prior) / (earlier.sum() + 3.0))


def test_time_holdout_counts_of_fit_and_apply_rows_are_on_one_scale():
    """An apply row at a fit row's moment sees exactly what that fit row sees: the earlier fit posts."""
    keys, y, fold = timed()
    later = keys.assign(Postdate=keys["Postdate"] + 100 * 86400.0)  # validation and test: after every fit post
    fit, same_moment = target_statistics(keys, y, fold, keys, KEYS, "auto", tags=True, window="expanding")
    for key in KEYS:
        np.testing.assert_array_equal(fit[f"te_{key}_n"], same_moment[f"te_{key}_n"])
    _, after = target_statistics(keys, y, fold, later, KEYS, "auto", tags=False, window="expanding")
    np.testing.assert_array_equal(after["te_Uid_n"], keys["Uid"].map(keys["Uid"].value_counts()))


def test_kfold_apply_counts_are_the_mean_of_what_fit_rows_outside_each_fold_see():
    keys, y, fold = data()
    fit, apply = target_statistics(keys, y, fold, keys, KEYS, "auto", tags=False)
    for i in range(0, 300, 11):
        same = (keys["Subcategory"] == keys["Subcategory"][i]).to_numpy()
        outside_each_fold = [(same & (fold != k)).sum() for k in range(5)]
        assert np.isclose(apply["te_Subcategory_n"][i], np.mean(outside_each_fold))
        assert fit["te_Subcategory_n"][i] == outside_each_fold[fold[i]]


def test_kfold_fit_rows_equal_scikit_learns_target_encoder_on_the_same_folds():
    """At a fixed smoothing the `folds` window's fit rows are sklearn's cross-fitted TargetEncoder
    (its `auto` is a per-category variance ratio, not our pooled one; it has no counts, tags or
    expanding window, hence our own code: docs/notes/leaks.md)."""
    from sklearn.preprocessing import TargetEncoder
    keys, y, fold = data()
    splits = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(5)]
    expected = TargetEncoder(smooth=4.0, cv=splits, target_type="continuous").fit_transform(keys[KEYS], y)
    fit, _ = target_statistics(keys, y, fold, keys.iloc[:1], KEYS, 4.0, tags=False)
    np.testing.assert_allclose(fit[[f"te_{k}_mean" for k in KEYS]].to_numpy(), expected, rtol=1e-12)
