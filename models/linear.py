"""Ridge regression behind the project's model contract: fit(X, y, X_val, y_val), predict(X).

A model of a different kind than the trees, for the blend: it sees the same
features (and the same in-fold target statistics) but extrapolates linearly, so
its errors differ from LightGBM's. Everything it learns about the features is
learnt inside `fit`, from the rows it is fit on:
- numeric columns: missing values -> the column median plus a missing-value
  indicator; then a quantile transform to a normal shape, so heavy-tailed counts
  (photo counts, posts per day) do not dominate a linear model;
- categorical columns with at most `max_onehot` categories -> one-hot; wider ones
  are dropped (their out-of-fold target statistics carry them);
- standardise, then solve ridge in closed form (float64, deterministic).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.preprocessing import QuantileTransformer

from models.gbdt import _check_xy


class RidgeRegressor:
    """NaN-safe ridge regression; `alpha` is the L2 penalty on standardised features."""

    def __init__(self, alpha: float = 10.0, max_onehot: int = 100, n_quantiles: int = 1000, seed: int = 0):
        if alpha < 0:
            raise ValueError(f"ridge alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self.max_onehot = max_onehot
        self.n_quantiles = n_quantiles
        self.seed = seed
        self.coef_: np.ndarray | None = None

    # --- features ---------------------------------------------------------------------------
    def _fit_transform(self, X: pd.DataFrame) -> np.ndarray:
        self.columns_ = list(X.columns)
        categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
        self.onehot_ = {c: list(X[c].cat.categories) for c in categorical
                        if len(X[c].cat.categories) <= self.max_onehot}
        self.numeric_ = [c for c in X.columns if c not in categorical]
        values = self._numeric(X)
        with warnings.catch_warnings():  # an all-NaN column (e.g. tag statistics without tags): median 0
            warnings.simplefilter("ignore", RuntimeWarning)
            self.median_ = np.nan_to_num(np.nanmedian(values, axis=0)) if values.shape[1] else np.zeros(0)
        self.indicate_ = np.isnan(values).any(axis=0)
        self.quantiles_ = None
        if values.shape[1]:
            self.quantiles_ = QuantileTransformer(n_quantiles=min(self.n_quantiles, len(X)),
                                                  output_distribution="normal", subsample=100_000,
                                                  random_state=self.seed)
            self.quantiles_.fit(self._impute(values))
        Z = self._design(X, values)
        self.mean_ = Z.mean(axis=0)
        std = Z.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        return (Z - self.mean_) / self.scale_

    def _numeric(self, X: pd.DataFrame) -> np.ndarray:
        if not self.numeric_:
            return np.zeros((len(X), 0))
        return X[self.numeric_].to_numpy(dtype=np.float64, na_value=np.nan)

    def _impute(self, values: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(values), self.median_, values)

    def _design(self, X: pd.DataFrame, values: np.ndarray) -> np.ndarray:
        parts = []
        if values.shape[1]:
            parts.append(self.quantiles_.transform(self._impute(values)))
            parts.append(np.isnan(values[:, self.indicate_]).astype(np.float64))
        for column, categories in self.onehot_.items():
            codes = pd.Categorical(X[column], categories=categories).codes
            onehot = np.zeros((len(X), len(categories)))
            seen = codes >= 0
            onehot[np.flatnonzero(seen), codes[seen]] = 1.0
            parts.append(onehot)
        return np.hstack(parts) if parts else np.zeros((len(X), 0))

    def _transform(self, X: pd.DataFrame) -> np.ndarray:
        if list(X.columns) != self.columns_:
            raise ValueError("features must have the columns the model was fit on, in the same order")
        return (self._design(X, self._numeric(X)) - self.mean_) / self.scale_

    # --- model contract ---------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame | None = None,
            y_val: np.ndarray | None = None) -> "RidgeRegressor":
        """Fit on X, y; the validation set is not used (no early stopping for a closed form)."""
        _check_xy(X, y)
        y = np.asarray(y, dtype=np.float64)
        Z = self._fit_transform(X)
        self.intercept_ = float(y.mean())
        gram = Z.T @ Z + self.alpha * np.eye(Z.shape[1])
        self.coef_ = np.linalg.solve(gram, Z.T @ (y - self.intercept_)) if Z.shape[1] else np.zeros(0)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.coef_ is None:
            raise RuntimeError("fit the model before predict")
        return self.intercept_ + self._transform(X) @ self.coef_
