"""The validation protocol (models/validation.py): the report slice's labels reach no early-stopping
round, no trial score and no blend weight, and the reported score is computed on the report slice only.

Real code path on tiny data: make_folds, cross_fit with LightGBM and CatBoost (early stopping, target
statistics inside each fit), the Optuna objective, the blend. A control run without the report slice
(today's protocol before this change) shows that the same perturbation does move the rounds there.
"""
from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from models.catboost_member import CatBoostMember
from models.cv import TargetStatSpec, cross_fit
from models.ensemble import blend_frame
from models.gbdt import LightGBMRegressor
from models.metrics import score
from models.tuning import TrialSeededTPESampler, lightgbm_objective, search_space
from models.validation import (MIN_REPORT_POSTS, fold_plan, folds_digest, make_folds, report_rows, run_protocol,
                               scored_rows, selection_rows)

PARAMS = {"learning_rate": 0.1, "num_leaves": 7, "min_data_in_leaf": 5}


def tiny(n=300, n_test=40, seed=0):
    """Posts with a time, a user and a label that a user statistic and two features explain."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 30, n + n_test)
    user_level = rng.normal(0, 1, 30)
    X_all = pd.DataFrame({"a": rng.normal(size=n + n_test), "b": rng.normal(size=n + n_test)})
    y_all = 5 + user_level[users] + X_all["a"] - 0.5 * X_all["b"] ** 2 + rng.normal(0, 0.5, n + n_test)
    posts = pd.DataFrame({"Pid": [str(i) for i in range(n)], "Uid": [f"u{u}" for u in users[:n]],
                          "Postdate": np.arange(n) * 3600 + 1_500_000_000})
    keys = pd.DataFrame({"Uid": [f"u{u}" for u in users], "Alltags": "", "Postdate": np.arange(n + n_test)})
    stats = TargetStatSpec(keys.iloc[:n].reset_index(drop=True), keys.iloc[n:].reset_index(drop=True), ["Uid"],
                           smoothing=5.0, tags=False)
    return posts, X_all.iloc[:n].reset_index(drop=True), y_all[:n].to_numpy(), X_all.iloc[n:].reset_index(drop=True), stats


def lightgbm(seed, rounds):
    return LightGBMRegressor(PARAMS, rounds or 300, 10, 1, seed)


def catboost(seed, rounds):
    return CatBoostMember({"depth": 3, "learning_rate": 0.2}, rounds or 150, 10, num_threads=1, seed=seed)


def choices(posts, X, y, X_test, stats, folds):
    """Everything the protocol lets the selection posts choose, and the run's reported scores."""
    selection = selection_rows(folds)
    out = {"selection": selection}
    results = {}
    for name, make in (("lightgbm", lightgbm), ("catboost", catboost)):
        spec = TargetStatSpec(stats.keys_train, stats.keys_test, stats.key_columns, stats.smoothing, stats.tags)
        r = cross_fit(make, X, y, folds, X_test, target_stats=spec, progress=False, name=name)
        results[name] = r
        out[f"{name}_rounds"] = r.best_iterations
        out[f"{name}_selection_oof"] = r.oof[selection]
        out[f"{name}_selection_score"] = r.selection_score
        out[f"{name}_score"] = r.score
    # two Optuna trials, the sampler seeded by trial number
    study = optuna.create_study(direction="maximize", sampler=TrialSeededTPESampler(0, 1))
    objective = lightgbm_objective(X, y, folds, search_space({"num_leaves": [3, 15], "learning_rate": [0.05, 0.3]}),
                                   PARAMS, "src", stats, num_boost_round=300, early_stopping_rounds=10, num_threads=1)
    study.optimize(objective, n_trials=2)
    out["trials"] = [(t.params, t.value, t.user_attrs["best_iterations"]) for t in study.trials]
    # the blend, on the members' rows as the stage writes them
    n = len(y)
    keys = pd.DataFrame({"Pid": [str(i) for i in range(n + len(X_test))], "split": ["train"] * n + ["test"] * len(X_test),
                         "fold": np.r_[folds["fold"].to_numpy(), np.full(len(X_test), -1)]})
    preds = {m: np.r_[r.oof, r.test] for m, r in results.items()}
    final, info = blend_frame(keys, preds, y, posts["Postdate"].to_numpy(dtype=float), "nnls", 3, False,
                              report_rows(folds))
    out["weights"] = info["weights"]
    out["blend_selection"] = final["pred"].to_numpy()[:n][selection]
    out["blend_score"], out["blend_pred"] = info["score"], final["pred"].to_numpy()[:n]
    return out


def perturbed(y, rows, seed=1):
    moved = y.copy()
    moved[rows] = np.random.default_rng(seed).permutation(moved[rows]) + 3.0
    return moved


@pytest.mark.parametrize("scheme,min_holdout", [("time_holdout", 0), ("time_holdout", 10_000), ("kfold", 0)])
def test_report_slice_labels_reach_no_round_trial_or_blend_weight(scheme, min_holdout):
    """time_holdout; time_holdout on a set too small for it (k-fold, report slice the latest posts); kfold."""
    posts, X, y, X_test, stats = tiny()
    folds = make_folds(posts, scheme, 3, seed=0, holdout_frac=0.4, min_holdout_posts=min_holdout, report_frac=0.2)
    report = report_rows(folds)
    assert report.sum() == 60 and (selection_rows(folds) | report).sum() == (folds["fold"] >= 0).sum()
    base = choices(posts, X, y, X_test, stats, folds)
    moved_y = perturbed(y, report)
    moved = choices(posts, X, moved_y, X_test, stats, folds)
    for key in base:
        if key.endswith("score") or key == "blend_pred":
            continue
        if isinstance(base[key], np.ndarray):
            np.testing.assert_array_equal(base[key], moved[key], err_msg=key)
        else:
            assert base[key] == moved[key], key
    # the reported scores are the report slice's: computed on it only, and they move with its labels
    for name in ("lightgbm_score", "blend_score"):
        assert base[name] != moved[name], name
    pred = base["blend_pred"]
    assert base["blend_score"] == score(y[report], pred[report])
    assert np.array_equal(scored_rows(folds), report)


def test_without_a_report_slice_the_same_labels_choose_the_rounds():
    """The control: the same posts' labels, on the protocol before the report slice (they validate like
    every other holdout post), move the early-stopping rounds and the blend weights."""
    posts, X, y, X_test, stats = tiny()
    folds = make_folds(posts, "time_holdout", 3, seed=0, holdout_frac=0.4, report_frac=0.2)
    report = report_rows(folds)
    legacy = folds.drop(columns="report")
    assert not report_rows(legacy).any() and run_protocol(legacy, "time_holdout") == "time_holdout/selection-score"
    base = choices(posts, X, y, X_test, stats, legacy)
    moved = choices(posts, X, perturbed(y, report), X_test, stats, legacy)
    assert base["lightgbm_rounds"] != moved["lightgbm_rounds"] or base["catboost_rounds"] != moved["catboost_rounds"]
    assert base["weights"] != moved["weights"] and base["trials"] != moved["trials"]


def test_the_report_slice_of_each_scheme():
    posts, *_ = tiny(n=400)
    t = posts["Postdate"].to_numpy()
    hold = make_folds(posts, "time_holdout", 5, seed=0, holdout_frac=0.2, report_frac=0.1)
    report = report_rows(hold)
    # the holdout's latest 40 posts: after every selection post in time
    assert report.sum() == 40 and (hold["fold"].to_numpy()[report] == 0).all()
    assert t[report].min() > t[selection_rows(hold)].max()
    # the folds without the slice are those of the protocol before it
    before = make_folds(posts, "time_holdout", 5, seed=0, holdout_frac=0.2)
    assert hold[["fold", "feature_fold"]].equals(before[["fold", "feature_fold"]]) and not report_rows(before).any()
    assert folds_digest(hold) != folds_digest(before) and folds_digest(hold) == folds_digest(hold.copy())
    for scheme in ("kfold", "group_kfold"):
        f = make_folds(posts, scheme, 4, seed=0, report_frac=0.1)
        r, s = report_rows(f), selection_rows(f)
        assert 30 <= r.sum() <= 40 and (r | s).all()
        for v in range(4):  # every fold keeps selection posts to stop on (and, by posts, report posts)
            assert s[f["fold"] == v].sum() >= 2 and (scheme == "group_kfold" or r[f["fold"] == v].any())
        if scheme == "group_kfold":  # whole users: no user on both sides
            assert not set(posts["Uid"][r]) & set(posts["Uid"][s])


def test_small_data_keeps_a_report_slice_or_says_it_has_none():
    posts, X, y, X_test, stats = tiny(n=40)
    plan = fold_plan(40, "time_holdout", 3, 0.2, min_holdout_posts=500, report_frac=0.1)
    assert plan.scheme == "kfold" and plan.n_report == MIN_REPORT_POSTS and plan.protocol == "kfold/report-slice"
    folds = make_folds(posts, "time_holdout", 3, seed=0, min_holdout_posts=500, report_frac=0.1)
    assert report_rows(folds).sum() == MIN_REPORT_POSTS
    r = cross_fit(lightgbm, X, y, folds, X_test, target_stats=stats, progress=False)
    assert np.isfinite(r.oof).all() and np.isfinite(r.score["mae"])
    # nine posts: a slice of 5 would leave 3 folds fewer than two selection posts each; the plan says the
    # reported score is then the selection score
    tiny_plan = fold_plan(9, "time_holdout", 3, 0.2, min_holdout_posts=500, report_frac=0.1)
    assert tiny_plan.n_report == 0 and "optimistic" in tiny_plan.reason
    assert tiny_plan.protocol == "kfold/selection-score"
    with pytest.raises(ValueError, match="report_frac"):
        fold_plan(100, "kfold", 3, report_frac=1.0)
