"""Pseudo-labelling of test posts (models/pseudo_label.py, `gbdt.pseudo_label`)."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from tiny_demo import ROOT, config_dir
from models.cv import cross_fit
from models.pseudo_label import PseudoLabels, confident_rows, pseudo_labels


class WeightedRidge:
    """A model without early stopping, so a validation label can reach its predictions only through its fit rows."""

    def fit(self, X, y, X_val=None, y_val=None, sample_weight=None):
        self.model = Ridge(alpha=1.0).fit(X.to_numpy(), y, sample_weight=sample_weight)
        return self

    def predict(self, X):
        return self.model.predict(X.to_numpy())


def holdout_data(seed=0, n=120, n_test=60):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    y = X.to_numpy() @ np.array([1.0, -0.5, 0.25]) + rng.normal(scale=0.3, size=n)
    X_test = pd.DataFrame(rng.normal(size=(n_test, 3)), columns=["a", "b", "c"])
    # time holdout: the latest 30 posts validate (fold 0), the rest only fit (fold -1)
    folds = pd.DataFrame({"fold": np.r_[np.full(n - 30, -1), np.zeros(30, int)], "feature_fold": np.arange(n) % 2})
    return X, y, folds, X_test


def two_stages(X, y, folds, X_test, leaky=False):
    make = lambda seed, rounds: WeightedRidge()  # noqa: E731
    first = cross_fit(make, X, y, folds, X_test, progress=False)
    pseudo = pseudo_labels(first, share=1.0, weight=1.0)
    if leaky:  # what an honest scheme must not do: the fold's fit labelled by a model that saw the fold
        pseudo = PseudoLabels(pseudo.rows, {v: pseudo.refit for v in pseudo.by_fold}, pseudo.refit, pseudo.weight)
    return first, cross_fit(make, X, y, folds, X_test, progress=False, pseudo=pseudo)


def test_a_validation_posts_label_never_reaches_its_own_prediction_through_pseudo_labels():
    X, y, folds, X_test = holdout_data()
    val = folds["fold"].to_numpy() == 0
    moved = y.copy()
    moved[val] += 5.0  # only the validation labels change
    _, second = two_stages(X, y, folds, X_test)
    _, second_moved = two_stages(X, moved, folds, X_test)
    np.testing.assert_array_equal(second.oof[val], second_moved.oof[val])
    # the refit that predicts test does learn from every train label (through the stage-1 refit too)
    assert not np.allclose(second.test, second_moved.test)
    # the check can fail: labelling the fold's fit with the refit's predictions leaks the validation labels
    _, leaky = two_stages(X, y, folds, X_test, leaky=True)
    _, leaky_moved = two_stages(X, moved, folds, X_test, leaky=True)
    assert not np.allclose(leaky.oof[val], leaky_moved.oof[val])


def test_pseudo_labels_come_from_the_stage_one_model_without_the_fold():
    X, y, folds, X_test = holdout_data(1)
    first = cross_fit(lambda seed, rounds: WeightedRidge(), X, y, folds, X_test, progress=False)
    pseudo = pseudo_labels(first)
    fold_model = Ridge(alpha=1.0).fit(X.to_numpy()[folds["fold"] != 0], y[folds["fold"] != 0])
    np.testing.assert_allclose(pseudo.by_fold[0], fold_model.predict(X_test.to_numpy()))
    np.testing.assert_allclose(pseudo.refit, Ridge(alpha=1.0).fit(X.to_numpy(), y).predict(X_test.to_numpy()))


def test_with_early_stopping_only_the_report_slice_is_out_of_reach_of_pseudo_labels():
    """LightGBM stops early on the fold's selection posts, so their labels reach the stage-1 rounds and,
    through the pseudo-labels, stage 2: the selection score of a pseudo-labelled member is not clean. The
    report slice (models/validation.py) never stops a stage-1 model nor fits one: changing its labels
    moves no out-of-fold prediction of either stage, only the refit that predicts test."""
    from models.gbdt import LightGBMRegressor
    X, y, folds, X_test = holdout_data(2, n=300)
    report = np.zeros(len(y), dtype=bool)
    report[-15:] = True  # the latest half of the 30-post holdout
    folds = folds.assign(report=report)
    selection = (folds["fold"].to_numpy() == 0) & ~report
    make = lambda seed, rounds: LightGBMRegressor({"num_leaves": 7, "min_data_in_leaf": 5}, rounds or 300, 10, 1, seed)  # noqa: E731

    def stages(labels):
        first = cross_fit(make, X, labels, folds, X_test, progress=False)
        second = cross_fit(make, X, labels, folds, X_test, progress=False, pseudo=pseudo_labels(first, 1.0, 1.0))
        return first, second

    first, second = stages(y)
    moved = y.copy()
    moved[report] += 5.0
    first_r, second_r = stages(moved)
    assert first.best_iterations == first_r.best_iterations and second.best_iterations == second_r.best_iterations
    np.testing.assert_array_equal(second.oof, second_r.oof)
    assert not np.allclose(second.test, second_r.test)  # the refit learns from every train label
    # the corrected claim: the fold's selection labels do reach its stage-2 fit (through stage 1's rounds)
    moved_selection = y.copy()
    moved_selection[selection] = np.random.default_rng(0).permutation(y[selection])
    first_s = cross_fit(make, X, moved_selection, folds, X_test, progress=False)
    assert first_s.best_iterations != first.best_iterations
    assert not np.allclose(pseudo_labels(first_s).by_fold[0], pseudo_labels(first).by_fold[0])


def test_confident_rows_keep_the_share_the_models_agree_on():
    a = np.array([0.0, 1.0, 2.0, 3.0, np.nan])
    b = np.array([0.0, 3.0, 2.1, 3.5, 1.0])
    np.testing.assert_array_equal(confident_rows([a, b], 0.4), [0, 2])
    np.testing.assert_array_equal(confident_rows([a, b], 1.0), [0, 1, 2, 3])  # never a NaN label
    with pytest.raises(ValueError, match="pseudo_label_share"):
        pseudo_labels(None, share=0.0)


def run_gbdt(run_all_here, data, tmp, *extra):
    """The member `meta` under the time holdout (80 train posts: min_holdout_posts 0 keeps it)."""
    done = run_all_here(
        "--data-dir", str(data), "--work-dir", str(tmp / "work"),
        "--submissions-dir", str(tmp / "subs"), "--run-name", "run", "--config", str(ROOT / "configs" / "demo.yaml"),
        "--stages", "read_data,make_folds,build_metadata,train_trees",
        "--set", "encoders.enabled=false", "--set", "prototype.enabled=false", "--set", "tuning.enabled=false",
        "--set", "gbdt.seeds=[0]", "--set", "gbdt.num_boost_round=40", "--set", "validation.min_holdout_posts=0",
        *sum((["--set", e] for e in extra), []))
    assert done.returncode == 0, done.stderr[-3000:]
    folder = config_dir(tmp / "work")
    return pd.read_parquet(folder / "preds" / "meta.parquet"), json.loads((folder / "preds" / "meta.json").read_text())


def test_the_switch_off_and_on_in_the_stage(demo_dir, tmp_path, run_all_here):
    off, off_info = run_gbdt(run_all_here, demo_dir, tmp_path / "off")
    on, on_info = run_gbdt(run_all_here, demo_dir, tmp_path / "on", "gbdt.pseudo_label=true")
    assert not off_info["pseudo_labelled"] and on_info["pseudo_labelled"]
    assert off["Pid"].tolist() == on["Pid"].tolist()
    validated = (off["split"] == "train") & (off["fold"] >= 0)
    assert np.isfinite(on.loc[validated | (on["split"] == "test"), "pred"]).all()
    assert not np.allclose(off.loc[off["split"] == "test", "pred"], on.loc[on["split"] == "test", "pred"])
