"""Blending the members' predictions, and recalibrating the level of the blend.

Blend weights are fit on out-of-fold predictions only (train posts that a
member predicted without having been fit on them), never on test. The blend's
own validation score is cross-fitted too: the out-of-fold rows are cut into
chunks, and each chunk is predicted with weights fit on the other chunks, so
choosing the weights does not flatter the score.

Level recalibration: the challenge's test period follows the train period and
has a lower mean label (the platform drifts). On a time-ordered holdout, the
median residual of a model fit on earlier posts measures that drift; shifting
the test prediction by it is meant to lower MAE (SRC unchanged). It is measured
on the models fit before the holdout, while test is predicted by refits that
trained on the holdout, so the measurement does not carry over; off by default.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from models.metrics import mae, src

log = logging.getLogger(__name__)

METHODS = ("best", "nnls")


@dataclass
class Blend:
    weights: dict[str, float]  # non-negative, summing to one: the blend keeps the members' level

    def predict(self, preds: dict[str, np.ndarray]) -> np.ndarray:
        out = np.zeros(len(next(iter(preds.values()))))
        for member, weight in self.weights.items():
            if weight:
                out = out + weight * np.asarray(preds[member], dtype=np.float64)
        return out


def fit_blend(method: str, oof: dict[str, np.ndarray], y: np.ndarray) -> Blend:
    """Blend weights from out-of-fold predictions `oof` (member -> prediction per validated post).

    best: weight 1 on the member with the highest SRC (ties: the first listed).
    nnls: non-negative least squares on the labels with a free intercept, then the
    weights scaled to sum to one. The intercept and scale are dropped on purpose: on a
    time-ordered holdout they would move the prediction's level by the drift between
    the periods, which is `level_recalibration`'s job, measured and switched on its own.
    """
    if method not in METHODS:
        raise ValueError(f"ensemble.method must be one of {METHODS}, got {method!r}")
    members = list(oof)
    if not members:
        raise ValueError("no member predictions to blend")
    y = np.asarray(y, dtype=np.float64)
    P = np.column_stack([np.asarray(oof[m], dtype=np.float64) for m in members])
    if P.shape[0] != len(y) or not np.isfinite(P).all():
        raise ValueError(f"out-of-fold predictions must be finite, one per validated post ({len(y)}); got "
                         f"{P.shape[0]} rows, {int((~np.isfinite(P)).sum())} non-finite")
    if method == "best":
        scores = [src(y, P[:, j]) if np.ptp(P[:, j]) > 0 else -np.inf for j in range(len(members))]
        best = int(np.argmax(scores))
        return Blend({m: float(j == best) for j, m in enumerate(members)})
    # centring leaves the intercept free while the weights stay non-negative
    weights, _ = nnls(P - P.mean(axis=0), y - y.mean())
    if not weights.any():
        log.warning("nnls blend: no member fits the labels with a positive weight; using equal weights")
        weights = np.ones(len(members))
    weights = weights / weights.sum()
    return Blend({m: float(w) for m, w in zip(members, weights)})


def cross_fitted_blend(method: str, oof: dict[str, np.ndarray], y: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """Blend prediction per validated post from weights fit on the other chunks only."""
    chunk = np.asarray(chunk)
    out = np.full(len(y), np.nan)
    ids = np.unique(chunk)
    if len(ids) < 2:
        raise ValueError("cross-fitting the blend needs at least two chunks of out-of-fold rows")
    for c in ids:
        rows = chunk == c
        blend = fit_blend(method, {m: p[~rows] for m, p in oof.items()}, np.asarray(y)[~rows])
        out[rows] = blend.predict({m: p[rows] for m, p in oof.items()})
    return out


def time_chunks(time: np.ndarray, n_chunks: int) -> np.ndarray:
    """Contiguous chunks in time order (ties keep row order): chunk id per row."""
    order = np.argsort(np.asarray(time), kind="stable")
    chunk = np.empty(len(order), dtype=np.int64)
    chunk[order] = np.arange(len(order)) * n_chunks // max(len(order), 1)
    return chunk


def level_recalibration(y: np.ndarray, pred: np.ndarray, time: np.ndarray, later: np.ndarray | None = None) -> dict:
    """Median residual on a time-ordered holdout, and what it does to MAE there.

    The shift applied to test is the median residual (label - prediction) over the
    whole holdout. Its effect is measured forward in time: the shift fit on the
    earlier posts of the holdout is applied to the `later` ones (default: its later
    half in time; pipeline/blend.py passes the report slice), and their MAE is
    reported before and after. These are the models fit before the holdout: the
    refits that predict test have trained on it, so the figure does not say what the
    shift does to them (docs/notes/protocol.md); ensemble.recalibrate_level is off.
    """
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if len(y) < 4:
        raise ValueError(f"level recalibration needs at least 4 holdout posts, got {len(y)}")
    later = time_chunks(time, 2) == 1 if later is None else np.asarray(later, dtype=bool)
    residual = y - pred
    half_shift = float(np.median(residual[~later]))
    return {
        "shift": float(np.median(residual)),
        "shift_earlier_half": half_shift,
        "mae_later_half_before": mae(y[later], pred[later]),
        "mae_later_half_after": mae(y[later], pred[later] + half_shift),
        "mean_residual": float(residual.mean()),
        "n_holdout": int(len(y)),
    }
