"""CatBoost regressor behind the project's model contract: fit(X, y, X_val, y_val), predict(X).

CatBoost turns categorical columns into ordered target statistics itself (each row sees
only the labels of rows before it in a random permutation), the 2020 SMP winner's and
the 2025 third place's choice for Uid, Subcategory and Concept. Categorical columns are
the pandas categoricals of the feature blocks plus `cat_columns` (raw key columns);
their values are passed as strings, a missing value as "".
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from models.gbdt import _check_xy


class CatBoostMember:
    """Deterministic CatBoost (fixed seed and threads). With a validation set it keeps the best
    iteration (`best_iteration_`, a count of trees); without one it grows exactly `iterations` trees."""

    def __init__(self, params: dict[str, Any], iterations: int = 2000, early_stopping_rounds: int = 100,
                 cat_columns: tuple[str, ...] = (), num_threads: int = 2, seed: int = 0):
        self.params = dict(params)
        self.iterations = int(iterations)
        self.early_stopping_rounds = early_stopping_rounds
        self.cat_columns = tuple(cat_columns)
        self.num_threads = num_threads if num_threads > 0 else -1  # LightGBM's 0 (all cores) is CatBoost's -1
        self.seed = seed
        self.model_ = None
        self.best_iteration_: int | None = None

    def _pool(self, X: pd.DataFrame, y=None):
        from catboost import Pool
        if list(X.columns) != self.columns_:
            raise ValueError("features must have the columns the model was fit on, in the same order")
        data = X.copy()
        for c in self.categorical_:
            data[c] = data[c].astype(object).where(data[c].notna(), "").astype(str)
        numeric = [c for c in data.columns if c not in self.categorical_]
        data[numeric] = data[numeric].astype(np.float64)
        label = None if y is None else np.asarray(y, dtype=np.float64)
        return Pool(data, label=label, cat_features=self.categorical_)

    def fit(self, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame | None = None,
            y_val: np.ndarray | None = None) -> "CatBoostMember":
        from catboost import CatBoostRegressor
        _check_xy(X, y)
        self.columns_ = list(X.columns)
        self.categorical_ = [c for c in X.columns if c in self.cat_columns or isinstance(X[c].dtype, pd.CategoricalDtype)]
        train = self._pool(X, y)
        model = CatBoostRegressor(iterations=self.iterations, loss_function="RMSE", random_seed=self.seed,
                                  thread_count=self.num_threads, allow_writing_files=False, verbose=False,
                                  **self.params)
        if X_val is not None:
            _check_xy(X_val, y_val)
            model.fit(train, eval_set=self._pool(X_val, y_val), use_best_model=True,
                      early_stopping_rounds=self.early_stopping_rounds)
            self.best_iteration_ = int(model.get_best_iteration()) + 1
        else:
            model.fit(train)
            self.best_iteration_ = int(model.tree_count_)
        self.model_ = model
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError("fit the model before predict")
        return np.asarray(self.model_.predict(self._pool(X)), dtype=np.float64)

    def feature_importance(self) -> pd.Series:
        return pd.Series(self.model_.get_feature_importance(), index=self.columns_, dtype=np.float64)
