"""The challenge's metrics: SRC (Spearman rank correlation), MAE, and MSE."""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def _check(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"labels and predictions must be 1-D of one length, got {y_true.shape} and {y_pred.shape}")
    if len(y_true) < 2:
        raise ValueError("need at least two posts to score")
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise ValueError("labels and predictions must be finite")
    return y_true, y_pred


def src(y_true, y_pred) -> float:
    """Spearman rank correlation, as the challenge computes it (scipy.stats.spearmanr).

    Constant predictions (or labels) rank nothing: scipy's NaN becomes 0, the score of no
    ranking at all, so that a tuning trial, a blend or a leaderboard row always gets a number.
    """
    y_true, y_pred = _check(y_true, y_pred)
    if np.ptp(y_pred) == 0 or np.ptp(y_true) == 0:
        return 0.0
    return float(spearmanr(y_pred, y_true).statistic)


def mae(y_true, y_pred) -> float:
    y_true, y_pred = _check(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def mse(y_true, y_pred) -> float:
    y_true, y_pred = _check(y_true, y_pred)
    return float(np.mean((y_true - y_pred) ** 2))


def score(y_true, y_pred) -> dict[str, float]:
    """All three metrics, keyed `src`, `mae`, `mse`."""
    return {"src": src(y_true, y_pred), "mae": mae(y_true, y_pred), "mse": mse(y_true, y_pred)}


def score_by_kind(y_true, y_pred, seen) -> dict:
    """Scores over all posts and split by kind: posts of users `seen` in the fit part, and unseen ones.

    A part with fewer than two posts has no scores (None); `unseen_share` is its share of the posts.
    """
    y_true, y_pred = _check(y_true, y_pred)
    seen = np.asarray(seen, dtype=bool)
    if seen.shape != y_true.shape:
        raise ValueError(f"one seen flag per post expected: {seen.shape} for {y_true.shape}")
    parts = {"all": np.ones(len(seen), dtype=bool), "seen": seen, "unseen": ~seen}
    out: dict = {k: score(y_true[rows], y_pred[rows]) if rows.sum() >= 2 else None for k, rows in parts.items()}
    out["n_seen"], out["n_unseen"] = int(seen.sum()), int((~seen).sum())
    out["unseen_share"] = float((~seen).mean())
    return out
