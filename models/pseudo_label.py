"""Pseudo-labelling of test posts: a second cross-fit that also fits on test posts, labelled by the first.

Two stages (as the 2025 SMP Challenge third place did): stage 1 is the member's ordinary cross-fit;
stage 2 repeats it with the chosen test posts added to every fit at `weight`, their labels the stage-1
predictions. The model validated on fold v is fit on pseudo-labels from the stage-1 model fit without
fold v (`CVResult.test_by_fold`), so no fold-v label reaches it through a fit row; only the refit that
predicts test (validated by nobody) uses the stage-1 test prediction itself. A model that stops early
(LightGBM, CatBoost) chose its stage-1 rounds on fold v's selection posts, so those labels do reach the
pseudo-labels of fold v, and a pseudo-labelled member's selection score is optimistic; the report slice
(models/validation.py) stops and fits no stage-1 model, so the reported score stays clean
(tests/test_pseudo_label.py). Validation posts are never pseudo-labelled (they have labels).

Which test posts: all (`share` 1), or the `share` whose stage-1 predictions agree best across the
stage-1 models (per validation fold and refit): a post the models disagree on has a label that is
mostly noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PseudoLabels:
    rows: np.ndarray                 # indices of the chosen test posts
    by_fold: dict[int, np.ndarray]   # validation fold v -> labels of `rows` from the model fit without fold v
    refit: np.ndarray                # labels of `rows` for the fit that predicts test
    weight: float                    # sample weight of a pseudo-labelled row (a train post weighs 1)


def pseudo_labels(first, share: float = 1.0, weight: float = 0.5) -> PseudoLabels:
    """Pseudo-labels from a stage-1 CVResult (`test_by_fold`, `test`)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"gbdt.pseudo_label_share must be in (0, 1], got {share}")
    if not weight > 0.0:
        raise ValueError(f"gbdt.pseudo_label_weight must be above 0, got {weight}")
    if not first.test_by_fold:
        raise ValueError("the stage-1 cross-fit kept no per-fold test predictions (predict_test was off)")
    refit = np.asarray(first.test, dtype=np.float64)
    by_fold = {v: np.asarray(p, dtype=np.float64) for v, p in first.test_by_fold.items()}
    rows = confident_rows([*by_fold.values(), refit], share)
    return PseudoLabels(rows, {v: p[rows] for v, p in by_fold.items()}, refit[rows], float(weight))


def confident_rows(predictions: list[np.ndarray], share: float) -> np.ndarray:
    """Indices (ascending) of the `share` of posts with the smallest spread of the given predictions;
    ties broken by index, so the choice is deterministic."""
    stacked = np.vstack(predictions)
    n = stacked.shape[1]
    keep = n if share >= 1.0 else max(1, int(round(share * n)))
    finite = np.isfinite(stacked).all(axis=0)
    spread = np.where(finite, stacked.std(axis=0), np.inf)
    order = np.lexsort((np.arange(n), spread))
    chosen = order[:keep]
    return np.sort(chosen[np.isfinite(spread[chosen])])


def with_pseudo_rows(X_fit: pd.DataFrame, y_fit: np.ndarray, X_test: pd.DataFrame, pseudo: PseudoLabels,
                     labels: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The fit rows followed by the chosen test rows of `X_test` (its features as the fit sees them:
    target statistics from the same fit rows) with `labels`; and the sample weights."""
    if list(X_test.columns) != list(X_fit.columns):
        raise ValueError("pseudo-labelled test rows must have the fit rows' columns, in the same order")
    X = pd.concat([X_fit.reset_index(drop=True), X_test.iloc[pseudo.rows].reset_index(drop=True)], ignore_index=True)
    y = np.concatenate([np.asarray(y_fit, dtype=np.float64), labels])
    w = np.concatenate([np.ones(len(y_fit)), np.full(len(pseudo.rows), pseudo.weight)])
    return X, y, w
