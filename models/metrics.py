"""The challenge's metrics: SRC (Spearman rank correlation), MAE, and MSE; `challenge_score`, one number for both."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata, spearmanr


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


def challenge_score(y_true, y_pred) -> float:
    """One number for the challenge's two metrics, higher better: the mean of two skill scores,
    SRC and 1 - MAE / MAE_median, where MAE_median is the MAE of the best constant prediction
    (the labels' median).

    The challenge ranks a team by rank(SRC) + rank(MAE): the two metrics weigh the same, and
    neither has a unit the other shares. Both skill scores are 0 for a prediction that carries no
    information (a constant: SRC 0, and the median's MAE) and 1 for a perfect one, so a step from
    no information to perfect is worth the same in either metric, as in the rank sum; dividing by
    the labels' own spread makes the number comparable across data sets. Deterministic (no ties
    broken at random); constant predictions score SRC 0 like `src`.
    """
    y_true, y_pred = _check(y_true, y_pred)
    return ChallengeScore(y_true)(y_pred)


class ChallengeScore:
    """`challenge_score` against fixed labels, for scoring many predictions of them (each boosting
    round of a fit that stops early on it): the labels are ranked and their median MAE found once;
    a call ranks the predictions (one sort) and takes the Pearson correlation of the two rankings,
    which is the Spearman correlation scipy computes (average ranks for ties). A single label (a fit
    stopping on one post) ranks nothing: its score is then -MAE, as for labels all equal."""

    def __init__(self, y_true):
        y_true = np.asarray(y_true, dtype=np.float64)
        if y_true.ndim != 1 or len(y_true) < 1 or not np.isfinite(y_true).all():
            raise ValueError("challenge score: labels must be 1-D, finite, at least one")
        self.y = y_true
        ranks = rankdata(y_true)
        self._centred = ranks - ranks.mean()
        self._norm = float(np.sqrt(np.dot(self._centred, self._centred)))
        # MAE of the labels' median: 0 only when every label is the same (then MAE itself is the skill)
        self._mae_const = float(np.mean(np.abs(y_true - np.median(y_true))))

    def src(self, y_pred: np.ndarray) -> float:
        if self._norm == 0 or np.ptp(y_pred) == 0:
            return 0.0
        ranks = rankdata(y_pred)
        ranks -= ranks.mean()
        return float(np.dot(ranks, self._centred) / (np.sqrt(np.dot(ranks, ranks)) * self._norm))

    def __call__(self, y_pred) -> float:
        y_pred = np.asarray(y_pred, dtype=np.float64)
        if y_pred.shape != self.y.shape:
            raise ValueError(f"challenge score: {len(y_pred)} predictions for {len(self.y)} labels")
        mae_ = float(np.mean(np.abs(self.y - y_pred)))
        mae_skill = 1.0 - mae_ / self._mae_const if self._mae_const > 0 else -mae_
        return 0.5 * (self.src(y_pred) + mae_skill)
