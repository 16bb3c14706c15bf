"""Blending the members' predictions, and recalibrating the level of the blend.

Blend weights are fit on out-of-fold predictions only (train posts that a
member predicted without having been fit on them), never on test. The blend's
own validation score is cross-fitted too: the out-of-fold rows are cut into
chunks, and each chunk is predicted with weights fit on the other chunks, so
choosing the weights does not flatter the score. `blend_frame` applies that protocol
to a table of rows (the selection rows fit the weights, the report slice gives the
score); the blend stage (pipeline/blend.py) calls it on the members of one run.

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
import pandas as pd
from scipy.optimize import nnls

from models.metrics import mae, score, src
from models.validation import validation_folds

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


def blend_frame(keys: pd.DataFrame, preds: dict[str, np.ndarray], y_train: np.ndarray, time_train: np.ndarray,
                method: str, n_chunks: int, recalibrate: bool, report: np.ndarray | None = None,
                refit_checks: dict[str, np.ndarray] | None = None) -> tuple[pd.DataFrame, dict]:
    """The blended predictions of every row, from weights fit on the selection rows, and a summary.

    report: per train post, in the report slice (models/validation.report_rows); those rows never
    reach the weights, and the summary's `score` is theirs (the selection rows' cross-fitted score
    when there is no report slice). refit_checks: per member, its refit-check predictions
    (validation.refit_check, models/cv.py); the summary's `refit_check` is their blend's score."""
    train = (keys["split"] == "train").to_numpy()
    test = (keys["split"] == "test").to_numpy()
    fold = keys["fold"].to_numpy()
    in_report = np.zeros(len(keys), dtype=bool)
    if report is not None:
        in_report[np.flatnonzero(train)] = np.asarray(report, dtype=bool)
    validated = train & (fold >= 0)
    selection = validated & ~in_report
    rep = validated & in_report
    y_all = np.full(len(keys), np.nan)
    t_all = np.full(len(keys), np.nan)
    y_all[train], t_all[train] = y_train, time_train  # train rows are in posts order
    y, t = y_all[selection], t_all[selection]
    oof = {m: p[selection] for m, p in preds.items()}

    blend = fit_blend(method, oof, y)  # selection rows only: test and report rows never reach the weights
    folds_seen = validation_folds(keys[validated])
    chunk = fold[selection] if len(folds_seen) > 1 else time_chunks(t, n_chunks)
    oof_blend = cross_fitted_blend(method, oof, y, chunk)

    pred = np.full(len(keys), np.nan)
    pred[selection] = oof_blend
    pred[rep] = blend.predict({m: p[rep] for m, p in preds.items()})
    pred[test] = blend.predict({m: p[test] for m, p in preds.items()})
    selection_score = score(y, oof_blend)
    info = {"method": method, "weights": blend.weights,
            "score": score(y_all[rep], pred[rep]) if rep.any() else selection_score,
            "scored_on": "report slice" if rep.any() else "selection posts (cross-fitted; no report slice)",
            "n_scored": int(rep.sum() or selection.sum()),
            "score_selection": selection_score,  # cross-fitted: each chunk with weights fit on the others
            "score_in_sample": score(y, blend.predict(oof)),  # weights fit on these very rows: optimistic
            "chunks": int(len(np.unique(chunk)))}
    if rep.any() and refit_checks and set(refit_checks) == set(preds):
        # the blend of the members' refit checks: the report slice predicted as the test is (models/cv.py)
        info["refit_check"] = score(y_all[rep], blend.predict({m: p[rep] for m, p in refit_checks.items()}))
    if len(folds_seen) == 1:  # a time-ordered holdout: the drift of the label level is measurable
        if rep.any():  # the shift from the selection rows, its effect on the later report slice
            recal = level_recalibration(np.r_[y, y_all[rep]], np.r_[oof_blend, pred[rep]],
                                        np.r_[t, t_all[rep]], later=np.r_[np.zeros(len(y), bool), np.ones(rep.sum(), bool)])
        else:
            recal = level_recalibration(y, oof_blend, t)
        recal["applied"] = bool(recalibrate)
        if recalibrate:
            pred[test] += recal["shift"]
        info["recalibration"] = recal
    elif recalibrate:
        raise ValueError("ensemble.recalibrate_level needs a time-ordered holdout (validation.scheme: time_holdout)")
    return keys.assign(pred=pred), info
