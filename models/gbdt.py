"""LightGBM regressor behind the project's one model contract: fit(X, y, X_val, y_val), predict(X)."""
from __future__ import annotations

from typing import Any, Callable

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.metrics import ChallengeScore
from models.sizing import leaf_size

# what a fit with a validation set stops early on: LightGBM's own l2 (the objective's metric), or the
# challenge's two metrics in one number (models.metrics.challenge_score), evaluated every round
STOP_METRICS = ("l2", "challenge")


class LightGBMRegressor:
    """Deterministic LightGBM (fixed seed and threads, row-wise histograms).

    With a validation set it stops early on it and keeps `best_iteration_`;
    without one it trains exactly `num_boost_round` rounds. adapt_to_size: cap
    min_data_in_leaf by the number of fit rows (models/sizing.py). stop_metric: `l2` (LightGBM's
    metric of the regression objective) or `challenge` (`challenge_score` on the validation set,
    as LightGBM's only metric, so that early stopping and `best_iteration_` follow it).
    """

    def __init__(self, params: dict[str, Any], num_boost_round: int = 2000, early_stopping_rounds: int = 100,
                 num_threads: int = 2, seed: int = 0, callbacks: list[Callable] | None = None,
                 adapt_to_size: bool = False, stop_metric: str = "l2"):
        self.params = {
            **params,
            "seed": seed,
            "num_threads": num_threads,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.callbacks = list(callbacks or [])
        self.adapt_to_size = adapt_to_size
        self.stop_metric = stop_metric
        self.booster_: lgb.Booster | None = None
        self.best_iteration_: int | None = None

    def fit(self, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame | None = None,
            y_val: np.ndarray | None = None, sample_weight: np.ndarray | None = None) -> "LightGBMRegressor":
        """sample_weight: per fit row (pseudo-labelled test posts weigh less than train posts)."""
        _check_xy(X, y)
        if self.stop_metric not in STOP_METRICS:
            raise ValueError(f"gbdt.stop_metric must be one of {list(STOP_METRICS)}, got {self.stop_metric!r}")
        params = dict(self.params)
        if self.adapt_to_size:
            params["min_data_in_leaf"] = leaf_size(params.get("min_data_in_leaf", 20), len(X))
        if sample_weight is not None and len(sample_weight) != len(X):
            raise ValueError(f"sample_weight has {len(sample_weight)} values for {len(X)} rows")
        train_set = lgb.Dataset(X, label=np.asarray(y, dtype=np.float64), weight=sample_weight, free_raw_data=True)
        callbacks = list(self.callbacks)
        valid_sets = []
        feval = None
        if X_val is not None:
            _check_xy(X_val, y_val)
            if list(X_val.columns) != list(X.columns):
                raise ValueError("validation features must have the training columns, in the same order")
            valid_sets = [lgb.Dataset(X_val, label=np.asarray(y_val, dtype=np.float64), reference=train_set)]
            callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
            if self.stop_metric == "challenge":
                params["metric"] = "None"  # the custom metric alone: early stopping watches it
                feval = _challenge_feval(y_val)
        self.booster_ = lgb.train(params, train_set, num_boost_round=self.num_boost_round, valid_sets=valid_sets,
                                  valid_names=["valid"][:len(valid_sets)], feval=feval, callbacks=callbacks)
        self.best_iteration_ = self.booster_.best_iteration or self.booster_.current_iteration()
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.booster_ is None:
            raise RuntimeError("fit the model before predict")
        return self.booster_.predict(X, num_iteration=self.best_iteration_)

    def feature_importance(self) -> pd.Series:
        """Total gain per feature."""
        booster = self.booster_
        return pd.Series(booster.feature_importance("gain", iteration=self.best_iteration_),
                         index=booster.feature_name(), dtype=np.float64)


def _challenge_feval(y_val) -> Callable:
    """LightGBM custom metric (higher better) on the validation labels, ranked once for every round."""
    scorer = ChallengeScore(np.asarray(y_val, dtype=np.float64))

    def feval(preds: np.ndarray, data: lgb.Dataset) -> tuple[str, float, bool]:
        return "challenge", scorer(preds), True
    return feval


def _check_xy(X: pd.DataFrame, y) -> None:
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"features must be a pandas DataFrame, got {type(X).__name__}")
    if y is None or len(y) != len(X):
        raise ValueError(f"features have {len(X)} rows but labels have {0 if y is None else len(y)}")
    y = np.asarray(y, dtype=np.float64)
    if not np.isfinite(y).all():
        raise ValueError(f"labels must be finite; row {int(np.argmax(~np.isfinite(y)))} is not")
