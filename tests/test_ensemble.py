"""Blend weights from out-of-fold rows only, level recalibration, ridge member, and the demo end to end."""
import json
import os

import numpy as np
import pandas as pd
import pytest
from tiny_demo import OPTIONAL_OFF

from models.ensemble import blend_frame, cross_fitted_blend, fit_blend, level_recalibration, time_chunks
from models.linear import RidgeRegressor


def member_rows(seed=0, n_train=600, n_test=100, holdout=True):
    """Keys like the members' prediction files, labels, and two members' predictions."""
    rng = np.random.default_rng(seed)
    y = rng.normal(6, 2, n_train)
    fold = np.full(n_train, -1)
    if holdout:
        fold[n_train // 2:] = 0  # the later half validates
    else:
        fold = np.arange(n_train) % 4
    keys = pd.DataFrame({"Pid": [str(i) for i in range(n_train + n_test)],
                         "split": ["train"] * n_train + ["test"] * n_test,
                         "fold": np.r_[fold, np.full(n_test, -1)]})
    truth = np.r_[y, rng.normal(6, 2, n_test)]
    preds = {"good": truth + rng.normal(0, 1.0, len(truth)), "fair": truth + rng.normal(0, 2.0, len(truth)),
             "bad": -truth + rng.normal(0, 1.0, len(truth))}
    preds = {m: np.where((keys["split"] == "train") & (keys["fold"] < 0), np.nan, p) for m, p in preds.items()}
    return keys, preds, y, np.arange(n_train, dtype=np.float64)


def test_nnls_weights_are_non_negative_sum_to_one_and_favour_the_better_member():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, 2000)
    oof = {"a": y + rng.normal(0, 0.5, 2000), "b": y + rng.normal(0, 1.0, 2000), "anti": -y + rng.normal(0, 0.1, 2000)}
    blend = fit_blend("nnls", oof, y)
    w = blend.weights
    assert w["anti"] == 0.0 and w["a"] > w["b"] > 0 and np.isclose(sum(w.values()), 1.0)
    # the optimum for independent errors: weights proportional to 1/variance -> 0.8, 0.2
    assert abs(w["a"] - 0.8) < 0.05
    assert fit_blend("best", oof, y).weights == {"a": 1.0, "b": 0.0, "anti": 0.0}
    with pytest.raises(ValueError):
        fit_blend("mean", oof, y)


def test_blend_weights_are_fit_on_out_of_fold_rows_only():
    keys, preds, y, t = member_rows()
    final, info = blend_frame(keys, preds, y, t, "nnls", 5, recalibrate=False)
    test = (keys["split"] == "test").to_numpy()
    train_only = ((keys["split"] == "train") & (keys["fold"] < 0)).to_numpy()
    changed = {m: p.copy() for m, p in preds.items()}
    rng = np.random.default_rng(5)
    for p in changed.values():
        p[test] = rng.normal(0, 50, test.sum())  # test predictions are never compared with anything
        p[train_only] = rng.normal(0, 50, train_only.sum())  # nor are rows no member validated
    y_changed = y.copy()
    y_changed[: len(y) // 2] += 100.0  # labels of rows that never validate
    again, info_again = blend_frame(keys, changed, y_changed, t, "nnls", 5, recalibrate=False)
    assert info_again["weights"] == info["weights"] and info_again["score"] == info["score"]
    expected = sum(w * changed[m][test] for m, w in info["weights"].items())
    assert np.allclose(again["pred"].to_numpy()[test], expected)
    # while the out-of-fold rows do decide the weights
    swapped = dict(preds, good=preds["fair"], fair=preds["good"])
    assert blend_frame(keys, swapped, y, t, "nnls", 5, False)[1]["weights"]["fair"] > info["weights"]["fair"]


def test_the_cross_fitted_blend_score_never_uses_a_chunks_own_labels():
    keys, preds, y, t = member_rows()
    validated = (keys["split"] == "train").to_numpy() & (keys["fold"] >= 0).to_numpy()
    oof = {m: p[validated] for m, p in preds.items()}
    yv = y[validated[: len(y)]]
    chunk = time_chunks(np.arange(len(yv)), 5)
    assert np.bincount(chunk).tolist() == [60] * 5 and (np.diff(chunk) >= 0).all()
    base = cross_fitted_blend("nnls", oof, yv, chunk)
    shuffled = yv.copy()
    shuffled[chunk == 2] = np.random.default_rng(1).permutation(shuffled[chunk == 2]) + 7.0
    again = cross_fitted_blend("nnls", oof, shuffled, chunk)
    assert np.array_equal(again[chunk == 2], base[chunk == 2])
    assert not np.array_equal(again[chunk != 2], base[chunk != 2])


def test_level_recalibration_measures_the_drift_forward_in_time_and_shifts_test_only():
    keys, preds, y, t = member_rows()
    validated = (keys["fold"] >= 0).to_numpy() & (keys["split"] == "train").to_numpy()
    drifted = y.copy()
    drifted[validated[: len(y)]] -= 0.8  # the holdout period scores lower than the models expect
    report = level_recalibration(drifted[validated[: len(y)]], preds["good"][validated], t[validated[: len(y)]])
    assert -1.0 < report["shift"] < -0.6
    assert report["mae_later_half_after"] < report["mae_later_half_before"]

    plain, info = blend_frame(keys, preds, drifted, t, "best", 5, recalibrate=False)
    shifted, info_shift = blend_frame(keys, preds, drifted, t, "best", 5, recalibrate=True)
    test = (keys["split"] == "test").to_numpy()
    shift = info_shift["recalibration"]["shift"]
    assert info_shift["recalibration"]["applied"] and not info["recalibration"]["applied"]
    assert np.allclose(shifted["pred"][test], plain["pred"][test] + shift)
    assert np.array_equal(shifted["pred"][~test].to_numpy(), plain["pred"][~test].to_numpy(), equal_nan=True)

    keys_kfold, preds_kfold, y_kfold, t_kfold = member_rows(holdout=False)
    _, info_kfold = blend_frame(keys_kfold, preds_kfold, y_kfold, t_kfold, "nnls", 5, recalibrate=False)
    assert "recalibration" not in info_kfold and info_kfold["chunks"] == 4  # the folds are the chunks
    with pytest.raises(ValueError, match="time_holdout"):
        blend_frame(keys_kfold, preds_kfold, y_kfold, t_kfold, "nnls", 5, recalibrate=True)


def test_ridge_is_nan_safe_one_hot_encodes_and_recovers_a_linear_signal():
    rng = np.random.default_rng(0)
    n = 1500
    X = pd.DataFrame({"x": rng.normal(size=n), "heavy": rng.lognormal(0, 3, n), "noise": rng.normal(size=n),
                      "cat": pd.Categorical(rng.choice(["a", "b", "c"], n), categories=["a", "b", "c"]),
                      "wide": pd.Categorical(rng.integers(0, 500, n).astype(str))})
    y = 2 * X["x"] + np.log(X["heavy"]) + (X["cat"] == "b") * 3 + rng.normal(0, 0.3, n)
    X.loc[::7, "x"] = np.nan
    model = RidgeRegressor(alpha=1.0).fit(X.iloc[:1000], y[:1000])
    pred = model.predict(X.iloc[1000:])
    assert np.isfinite(pred).all()
    assert np.corrcoef(pred, y[1000:])[0, 1] > 0.9
    assert np.array_equal(pred, RidgeRegressor(alpha=1.0).fit(X.iloc[:1000], y[:1000]).predict(X.iloc[1000:]))
    with pytest.raises(ValueError, match="columns"):
        model.predict(X.iloc[1000:, ::-1])


def test_demo_tuned_blend_is_not_worse_than_the_untuned_single_model(tmp_path):
    """Both runs of a small demo, in process, on the same data and folds; scores from the leaderboard."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pipeline.catalog import make_context
    from pipeline.run_all import parse_args, run_stages
    from pipeline.stage import load_stages
    common = ["--work-dir", str(tmp_path / "work"), "--submissions-dir", str(tmp_path / "subs"),
              "--set", "demo.n_train=1200", "--set", "demo.n_test=200", "--set", "demo.n_users=150",
              "--set", "demo.image_size=16", "--set", "gbdt.num_boost_round=300",
              "--set", "gbdt.params.learning_rate=0.1", "--set", "gbdt.num_threads=1", *OPTIONAL_OFF,
              "--set", "validation.min_holdout_posts=0"]  # keep the time holdout (240 posts) and its recalibration
    untuned = ["--run-name", "untuned", "--set", "ensemble.method=best", "--set", "ensemble.linear_members={}"]
    tuned = ["--run-name", "tuned", "--set", "tuning.enabled=true", "--set", "tuning.n_trials=10",
             "--set", "tuning.startup_trials=5", "--set", "tuning.prune_startup_trials=3",
             "--set", "tuning.prune_warmup_rounds=30", "--set", "gbdt.seeds=[0,1,2]", "--set", "ensemble.method=nnls"]
    stages = [s for s in load_stages() if s.name not in ("report",)]
    for extra in (untuned, tuned):
        run_stages(make_context(parse_args(common + extra)), stages, None, force=False)
    board = pd.read_csv(tmp_path / "subs" / "leaderboard.csv").set_index("run")
    assert board.loc["tuned", "member"] == "blend:nnls" and "ridge_meta" in board.loc["tuned", "members"]
    # the choices' own (cross-fitted) score: tuning and the blend must not make it worse; the report
    # slice's score is a measurement no choice saw and may go either way on 120 posts (it did, and so
    # did the hidden test score: docs/notes/lead.md), so it is not asserted
    chosen = {run: json.loads((tmp_path / "subs" / run / "blend.json").read_text())["score_selection"]["src"]
              for run in ("tuned", "untuned")}
    assert chosen["tuned"] >= chosen["untuned"]
    assert np.isfinite(board.loc["tuned", "val_src"]) and board.loc["tuned", "protocol"] == "time_holdout/report-slice"
    study = json.loads((make_context(parse_args(common + tuned)).tuning_summary).read_text())
    base = next(t for t in study["trials"] if t["number"] == 0)
    assert study["best_value"] >= base["value"]  # trial 0 is the untuned parameters
    run_dir = tmp_path / "subs" / "tuned"
    for name in ("optimisation_history.png", "feature_importance.png", "predicted_vs_true.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    blend = json.loads((run_dir / "blend.json").read_text())
    assert set(blend["weights"]) == {"meta", "ridge_meta"} and "recalibration" in blend
