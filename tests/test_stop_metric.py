"""Early stopping and trial scoring on the challenge's metrics (gbdt.stop_metric, tuning.metric=challenge).

The one-number proxy (models.metrics.challenge_score) on known inputs; LightGBM stops where that number
peaks on the validation set, not where L2 bottoms out; the default (l2) fits exactly what LightGBM fits
without a custom metric; the stops stay on the selection posts; unknown values are refused at load.
"""
from __future__ import annotations

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd
import pytest
from test_protocol import PARAMS, perturbed, tiny

from models import gbdt, tuning
from models.cv import TargetStatSpec, cross_fit
from models.gbdt import LightGBMRegressor
from models.metrics import ChallengeScore, challenge_score, mae, src
from models.validation import make_folds, report_rows, selection_rows
from pipeline.config import CHOICES, ConfigError, load_config
from pipeline.members import lightgbm_factory


def test_the_score_on_known_inputs():
    y = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    assert challenge_score(y, y) == pytest.approx(1.0, abs=1e-12)   # perfect: both skill scores 1
    assert challenge_score(y, np.full(5, np.median(y))) == 0.0      # the median: no information in either
    # reversed ranking: SRC -1; the MAE part is what it is, by the formula
    rev = y[::-1].copy()
    mae_median = np.mean(np.abs(y - 3.0))
    assert challenge_score(y, rev) == pytest.approx(0.5 * (-1.0 + 1.0 - mae(y, rev) / mae_median))
    # a right ranking at the wrong level keeps SRC 1 but pays for its MAE
    assert challenge_score(y, y + 5.0) == pytest.approx(0.5 * (1.0 + 1.0 - 5.0 / mae_median))
    # labels all equal: no ranking to find, and any error is worse than none
    assert challenge_score(np.ones(4), np.ones(4)) == 0.0
    assert challenge_score(np.ones(4), np.ones(4) + 1) == -0.5


def test_the_fast_spearman_is_scipys_with_ties():
    rng = np.random.default_rng(0)
    y = np.round(rng.normal(size=400), 1)                     # tied labels
    pred = np.round(y + rng.normal(size=400), 0)              # heavily tied predictions (early rounds)
    scorer = ChallengeScore(y)
    assert scorer.src(pred) == pytest.approx(src(y, pred), abs=1e-12)
    assert scorer(pred) == challenge_score(y, pred)
    assert scorer(np.full(400, 2.0)) == challenge_score(y, np.full(400, 2.0))  # constant: SRC 0, no NaN
    with pytest.raises(ValueError, match="399 predictions for 400 labels"):
        scorer(pred[:-1])
    assert ChallengeScore([2.0])(np.array([2.5])) == -0.25  # one post: nothing to rank, -MAE


def test_a_fit_stops_on_a_single_validation_post():
    """A time holdout of one post (validation.min_holdout_posts 0 on a handful of posts) still fits."""
    X, y, X_val, y_val = level_shifted(n=1300)
    model = LightGBMRegressor({"num_leaves": 7}, 50, 5, 1, 0, stop_metric="challenge").fit(X, y, X_val[:1], y_val[:1])
    assert 1 <= model.best_iteration_ <= 50 and np.isfinite(model.predict(X_val)).all()


def level_shifted(n=1600, seed=0):
    """Validation posts of a later period whose level moved: L2 (and MAE) stop improving while the
    ranking still does, so the two stop metrics part."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"x{j}" for j in range(6)])
    y = X["x0"] + np.sin(2 * X["x1"]) + 0.5 * X["x2"] * X["x3"] + rng.normal(0, 0.7, n)
    y = y.to_numpy()
    fit, val = slice(0, 1200), slice(1200, n)
    return X.iloc[fit], y[fit], X.iloc[val].reset_index(drop=True), y[val] - 1.0


def test_lightgbm_stops_where_the_challenge_score_peaks_not_where_l2_does():
    X, y, X_val, y_val = level_shifted()
    params = {"learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 20}
    seen = {"l2": {}, "challenge": {}}  # what LightGBM evaluated on the validation set, round by round
    fits = {m: LightGBMRegressor(params, 600, 50, 1, 0, callbacks=[lgb.record_evaluation(seen[m])],
                                 stop_metric=m).fit(X, y, X_val, y_val) for m in seen}
    l2, challenge = seen["l2"]["valid"]["l2"], seen["challenge"]["valid"]["challenge"]
    assert list(seen["challenge"]["valid"]) == ["challenge"]  # its only metric: the one it stops on
    # each stopped 50 rounds (the patience) after the best round of its own metric, and keeps that round
    assert fits["l2"].best_iteration_ == int(np.argmin(l2)) + 1 == len(l2) - 50
    assert fits["challenge"].best_iteration_ == int(np.argmax(challenge)) + 1 == len(challenge) - 50
    # the rank order went on improving after L2 bottomed out: a later stop
    assert fits["challenge"].best_iteration_ > fits["l2"].best_iteration_
    # the value LightGBM saw is challenge_score of the kept model's predictions
    kept = fits["challenge"]
    assert challenge[kept.best_iteration_ - 1] == pytest.approx(challenge_score(y_val, kept.predict(X_val)), abs=1e-12)
    assert challenge_score(y_val, kept.predict(X_val)) > challenge_score(y_val, fits["l2"].predict(X_val))


def test_the_default_fits_what_lightgbm_fits_without_a_custom_metric():
    X, y, X_val, y_val = level_shifted(n=1400)
    params = {"learning_rate": 0.1, "num_leaves": 7}
    default = LightGBMRegressor(params, 300, 20, 1, 0).fit(X, y, X_val, y_val)
    assert default.stop_metric == "l2"
    # the code before the setting: l2 from the objective, early stopping, no feval
    plain = lgb.train({**default.params}, lgb.Dataset(X, label=y),
                      num_boost_round=300, valid_sets=[lgb.Dataset(X_val, label=y_val)], valid_names=["valid"],
                      callbacks=[lgb.early_stopping(20, verbose=False)])
    assert default.best_iteration_ == plain.best_iteration
    assert default.booster_.model_to_string() == plain.model_to_string()
    cfg = load_config()
    assert cfg.gbdt.stop_metric == "l2" and cfg.tuning.metric == "src"
    assert lightgbm_factory(cfg)(0, None).stop_metric == "l2"
    assert lightgbm_factory(load_config(overrides=["gbdt.stop_metric=challenge"]))(0, None).stop_metric == "challenge"


def test_the_stops_stay_on_the_selection_posts():
    """The report slice's labels move no round of a challenge-stopped fit (models/validation.py)."""
    posts, X, y, X_test, stats = tiny()
    folds = make_folds(posts, "time_holdout", 3, seed=0, holdout_frac=0.4, report_frac=0.2)
    report = report_rows(folds)

    def rounds(labels):
        spec = TargetStatSpec(stats.keys_train, stats.keys_test, stats.key_columns, stats.smoothing, stats.tags)
        make = lambda seed, n: LightGBMRegressor(PARAMS, n or 300, 10, 1, seed, stop_metric="challenge")  # noqa: E731
        return cross_fit(make, X, labels, folds, X_test, target_stats=spec, progress=False).best_iterations

    assert rounds(y) == rounds(perturbed(y, report))
    assert rounds(y) != rounds(perturbed(y, selection_rows(folds)))  # the selection posts' labels do move it


def test_a_challenge_trial_scores_the_selection_posts_on_the_challenge_score():
    posts, X, y, _, stats = tiny()
    folds = make_folds(posts, "time_holdout", 3, seed=0, holdout_frac=0.4, report_frac=0.2)
    space = tuning.search_space({"num_leaves": [3, 15]})
    objective = tuning.lightgbm_objective(X, y, folds, space, PARAMS, "challenge", stats, num_boost_round=200,
                                          early_stopping_rounds=10, num_threads=1, stop_metric="challenge")
    study = optuna.create_study(direction=tuning.METRICS["challenge"], sampler=tuning.TrialSeededTPESampler(0, 1))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    # the same fit, redone: its out-of-fold predictions on the selection posts give the trial's value
    make = lambda seed, n: LightGBMRegressor({**PARAMS, **trial.params}, n or 200, 10, 1, seed,  # noqa: E731
                                             stop_metric="challenge")
    no_test_stats = TargetStatSpec(stats.keys_train, stats.keys_test.iloc[:0], stats.key_columns, stats.smoothing,
                                   stats.tags)
    result = cross_fit(make, X, y, folds, X.iloc[:0], target_stats=no_test_stats, progress=False, predict_test=False)
    chosen = selection_rows(folds)
    assert trial.value == challenge_score(y[chosen], result.oof[chosen]) == trial.user_attrs["challenge"]
    assert trial.user_attrs["best_iterations"] == result.best_iterations


def test_unknown_values_are_refused_at_load():
    with pytest.raises(ConfigError, match=r"gbdt\.stop_metric: expected one of \['l2', 'challenge'\], got 'src'"):
        load_config(overrides=["gbdt.stop_metric=src"])
    with pytest.raises(ConfigError, match=r"tuning\.metric: expected one of .*got 'mae'"):
        load_config(overrides=["tuning.metric=mae"])
    with pytest.raises(ValueError, match="gbdt.stop_metric must be one of"):
        LightGBMRegressor({}, 10, 5, 1, 0, stop_metric="rank").fit(*level_shifted(n=1300)[:2])
    # the load-time lists are the modules' own
    assert CHOICES[("gbdt", "stop_metric")] == gbdt.STOP_METRICS
    assert CHOICES[("tuning", "metric")] == tuple(tuning.METRICS)
