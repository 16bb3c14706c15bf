"""Principal components for every block that needs them (embeddings, user texts, prototype outputs).

Written here rather than taken from scikit-learn: it streams the covariance in row blocks, so it
fits memory-mapped float16 arrays of any size without loading them (scikit-learn's PCA needs the
whole matrix in memory), and it fixes each component's sign, so results are deterministic.
"""
from __future__ import annotations

import numpy as np

ROWS_PER_STEP = 65536  # float16 arrays are converted to float64 this many rows at a time


class PCA:
    """Principal components from the covariance matrix, computed in row blocks (memory-light),
    with signs fixed so that each component's largest loading is positive (deterministic)."""

    def __init__(self, n_components: int):
        self.n_components = n_components

    def fit(self, x: np.ndarray, rows: np.ndarray | None = None) -> "PCA":
        rows = np.arange(len(x)) if rows is None else rows
        if len(rows) < 2:
            raise ValueError(f"PCA needs at least 2 training rows, got {len(rows)}")
        dim = x.shape[1]
        total, outer = np.zeros(dim), np.zeros((dim, dim))
        for start in range(0, len(rows), ROWS_PER_STEP):
            block = np.asarray(x[rows[start:start + ROWS_PER_STEP]], dtype=np.float64)
            total += block.sum(axis=0)
            outer += block.T @ block
        n = len(rows)
        self.mean_ = total / n
        cov = (outer - n * np.outer(self.mean_, self.mean_)) / (n - 1)
        self.total_variance_ = float(np.trace(cov))
        values, vectors = np.linalg.eigh(cov)
        k = min(self.n_components, dim, n)
        order = np.argsort(values)[::-1][:k]
        components = vectors[:, order].T
        signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
        self.components_ = components * signs[:, None]
        self.explained_variance_ratio_ = values[order] / max(values.sum(), 1e-12)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), len(self.components_)), np.float32)
        for start in range(0, len(x), ROWS_PER_STEP):
            block = np.asarray(x[start:start + ROWS_PER_STEP], dtype=np.float64)
            out[start:start + ROWS_PER_STEP] = (block - self.mean_) @ self.components_.T
        return out
