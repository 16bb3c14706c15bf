"""Size adaptation: the budgets and smoothing follow the data, and tiny data gets room to fit."""
import numpy as np
import pandas as pd
import pytest

from features.target_stats import empirical_bayes_smoothing, target_statistics
from models import sizing
from models.gbdt import LightGBMRegressor
from pipeline.config import ConfigError, load_config


def test_leaf_size_rounds_and_trials_follow_the_size():
    assert sizing.leaf_size(20, 160) == 16 and sizing.leaf_size(20, 40) == 5
    assert sizing.leaf_size(20, 3000) == 20 and sizing.leaf_size(50, 300_000) == 50  # large data: as configured
    assert sizing.refit_rounds(100, 2400, 3000) == 125
    assert sizing.tuning_trials(30, 160) == 8 and sizing.tuning_trials(30, 40) == 5
    assert sizing.tuning_trials(30, 600) == 30 and sizing.tuning_trials(60, 61_000) == 60


def test_lightgbm_on_tiny_data_can_split_when_adapted():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=60)})
    y = 3 * (X["x"] > 0).to_numpy() + rng.normal(0, 0.1, 60)
    params = {"objective": "regression", "learning_rate": 0.3, "min_data_in_leaf": 40, "num_leaves": 8}
    fixed = LightGBMRegressor(params, 30, num_threads=1).fit(X, y)
    adapted = LightGBMRegressor(params, 30, num_threads=1, adapt_to_size=True).fit(X, y)
    # 40 rows a leaf of 60 allows one split at best; the cap (6 rows) lets the trees follow the step
    assert np.abs(adapted.predict(X) - y).mean() < np.abs(fixed.predict(X) - y).mean()
    assert fixed.params["min_data_in_leaf"] == 40  # the configured parameters are left as they were


def test_empirical_bayes_smoothing_follows_the_between_group_spread():
    rng = np.random.default_rng(1)
    codes = np.repeat(np.arange(400), 10)
    group_means = rng.normal(0, 1.0, 400)
    y = group_means[codes] + rng.normal(0, 2.0, len(codes))  # within variance 4, between variance 1
    assert empirical_bayes_smoothing(codes, y) == pytest.approx(4.0, rel=0.25)
    no_groups = rng.normal(0, 2.0, len(codes))  # groups that do not differ: shrink (almost) to the prior
    assert empirical_bayes_smoothing(codes, no_groups) > 20


def test_auto_smoothing_shrinks_less_where_groups_differ():
    rng = np.random.default_rng(2)
    n = 400
    keys = pd.DataFrame({"Uid": rng.integers(0, 40, n).astype(str), "Alltags": ""})
    y = 3.0 * (keys["Uid"].astype(int).to_numpy() % 2) + rng.normal(0, 1, n)
    fold = np.arange(n) % 5
    auto, _ = target_statistics(keys, y, fold, keys.iloc[:1], ["Uid"], "auto", tags=False)
    ten, _ = target_statistics(keys, y, fold, keys.iloc[:1], ["Uid"], 10.0, tags=False)
    # the user effect is large: auto tracks the users' means more closely than a fixed 10
    assert np.corrcoef(auto["te_Uid_mean"], y)[0, 1] > np.corrcoef(ten["te_Uid_mean"], y)[0, 1]
    with pytest.raises(ValueError, match="target_stat_smoothing"):
        target_statistics(keys, y, fold, keys.iloc[:1], ["Uid"], "lots", tags=False)


def test_config_takes_auto_or_a_number_for_the_smoothing():
    assert load_config(None).metadata.target_stat_smoothing == "auto"
    assert load_config(None, ["metadata.target_stat_smoothing=10"]).metadata.target_stat_smoothing == 10.0
    with pytest.raises(ConfigError, match="'auto' or a number"):
        load_config(None, ["metadata.target_stat_smoothing=lots"])


def test_kfold_refit_fits_every_post_with_the_folds_median_rounds():
    from models.cv import cross_fit
    from models.validation import make_folds
    rng = np.random.default_rng(3)
    n = 200
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = X["a"].to_numpy() * 2 + rng.normal(0, 0.5, n)
    posts = pd.DataFrame({"Pid": np.arange(n).astype(str), "Uid": rng.integers(0, 30, n).astype(str),
                          "Postdate": np.arange(n)})
    fits = []

    class Recording(LightGBMRegressor):
        def fit(self, X, y, X_val=None, y_val=None):
            fits.append((len(X), X_val is None, self.num_boost_round))
            return super().fit(X, y, X_val, y_val)

    def make(seed, rounds):
        return Recording({"objective": "regression", "learning_rate": 0.1}, rounds or 300, 20, 1, seed)

    folds = make_folds(posts, "kfold", 4, 0)
    result = cross_fit(make, X, y, folds, X.iloc[:10], seeds=[0], progress=False, refit_kfold=True,
                       scale_refit_rounds=True)
    assert len(fits) == 5 and all(not no_val for _, no_val, _ in fits[:4])
    rows, no_val, rounds = fits[4]
    assert rows == n and no_val  # one refit on every post, after the four fold models
    assert rounds == sizing.refit_rounds(int(np.median(result.best_iterations)), 150, n)
