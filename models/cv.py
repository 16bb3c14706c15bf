"""Cross-fitting on the shared folds: out-of-fold predictions for train, predictions for test.

For each validation fold v a model is fit on the other rows and predicts fold v
and the test posts. Out-of-fold target statistics are recomputed inside each
fit, so no validation label ever reaches the rows a model is fit on. The
protocol is models/validation.py's: the model of fold v stops early on fold v's
selection posts only, report-slice posts never fit a cross-fit model, and the
result's `score` is the report slice's (`selection_score`, which tuning reads, is
the selection posts'). In a time-ordered holdout (one fold, the latest posts),
the test prediction comes from a refit on all train posts, report slice
included, with the number of rounds found on the holdout's selection posts.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.target_stats import target_statistics
from models.metrics import score
from models.pseudo_label import PseudoLabels, with_pseudo_rows
from models.sizing import refit_rounds
from models.validation import report_rows, scored_rows, selection_rows, validation_folds

log = logging.getLogger(__name__)


class Regressor(Protocol):
    def fit(self, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame | None = None,
            y_val: np.ndarray | None = None, sample_weight: np.ndarray | None = None) -> "Regressor": ...

    def predict(self, X: pd.DataFrame) -> np.ndarray: ...


# make_model(seed, rounds): rounds is None for a model that may stop early on validation,
# or the fixed number of boosting rounds for a refit (ignored by non-iterative models)
ModelFactory = Callable[[int, "int | None"], Regressor]


@dataclass
class TargetStatSpec:
    """Which target statistics to add inside each fit (keys from the posts table)."""
    keys_train: pd.DataFrame
    keys_test: pd.DataFrame
    key_columns: list[str]
    smoothing: float | str = "auto"  # features.target_stats: "auto" (empirical Bayes) or a number
    tags: bool = True
    tag_min_count: int = 1
    # more out-of-fold statistics, each f(keys_fit, y_fit, inner_fold, keys_apply) -> (fit frame, apply frame)
    # like `target_statistics` (e.g. features.user_features.user_trend_statistics)
    extra: list[Callable] = field(default_factory=list)
    # statistics already computed, by digest of their rows and labels: every seed of a cross-fit and
    # every tuning trial needs the same ones (a spec copied with dataclasses.replace starts empty)
    cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    MAX_CACHED = 16  # fold count x (validation, refit), with room to spare


@dataclass
class CVResult:
    oof: np.ndarray                 # per train post; NaN where the post never validates (fold -1)
    test: np.ndarray                # per test post
    fold_scores: dict[int, dict]    # per fold, on its selection posts
    score: dict                     # the reported score: on the report slice (selection posts when it has none)
    best_iterations: list[int]
    feature_importance: pd.Series = field(default_factory=pd.Series)
    # per validation fold: the test prediction of the models fit without that fold (seed mean); pseudo-labels
    test_by_fold: dict[int, np.ndarray] = field(default_factory=dict)
    selection_score: dict = field(default_factory=dict)  # on the selection posts: what tuning compares
    # cross_fit(refit_check=True): per train post, the report slice predicted as the test is (NaN elsewhere)
    refit_check: np.ndarray | None = None
    refit_check_score: dict = field(default_factory=dict)


def _with_stats(X: pd.DataFrame, stats: pd.DataFrame | None) -> pd.DataFrame:
    if stats is None:
        return X.reset_index(drop=True)
    return pd.concat([X.reset_index(drop=True), stats.reset_index(drop=True)], axis=1)


def _stats(spec: TargetStatSpec | None, fit_idx: np.ndarray, y: np.ndarray, inner: np.ndarray,
           apply_idx: np.ndarray | None):
    """Statistics for the fit rows (out of fold) and for the train rows `apply_idx` followed by the test posts."""
    if spec is None:
        return None, None
    digest = hashlib.sha256()
    for part in (fit_idx, y[fit_idx], inner[fit_idx], np.asarray([] if apply_idx is None else apply_idx)):
        digest.update(np.ascontiguousarray(part).tobytes())
        digest.update(b"|")
    key = (digest.hexdigest(), apply_idx is None, len(spec.keys_test))
    if key not in spec.cache:
        parts = [spec.keys_test] if apply_idx is None else [spec.keys_train.iloc[apply_idx], spec.keys_test]
        apply_keys = pd.concat(parts, ignore_index=True)
        if len(spec.cache) >= spec.MAX_CACHED:
            spec.cache.pop(next(iter(spec.cache)))
        keys_fit = spec.keys_train.iloc[fit_idx]
        parts = [f(keys_fit, y[fit_idx], inner[fit_idx], apply_keys) for f in spec.extra]
        if spec.key_columns or spec.tags:
            parts.insert(0, target_statistics(keys_fit, y[fit_idx], inner[fit_idx], apply_keys, spec.key_columns,
                                              spec.smoothing, spec.tags, spec.tag_min_count))
        if not parts:
            raise ValueError("a TargetStatSpec with no key columns, no tags and no extra statistics")
        spec.cache[key] = tuple(pd.concat([p[i].reset_index(drop=True) for p in parts], axis=1) for i in (0, 1))
    return spec.cache[key]


def cross_fit(make_model: ModelFactory, X: pd.DataFrame, y: np.ndarray, folds: pd.DataFrame, X_test: pd.DataFrame,
              seeds: list[int] = (0,), target_stats: TargetStatSpec | None = None,
              fit_mask: np.ndarray | None = None, progress: bool = True, name: str = "model",
              predict_test: bool = True, scale_refit_rounds: bool = False, refit_kfold: bool = False,
              pseudo: PseudoLabels | None = None, refit_check: bool = False,
              sample_weight: np.ndarray | None = None) -> CVResult:
    """Out-of-fold and test predictions of `make_model`, averaged over `seeds`.

    fit_mask: train posts a model may fit on (sample selection); validation always scores every post.
    predict_test: False skips the test predictions (and the holdout refit): tuning needs only validation.
    scale_refit_rounds: the refit on all posts gets the best rounds scaled by its extra rows.
    refit_kfold: with k folds too, the test prediction comes from a refit on every train post (per seed, with
    the median of the folds' best rounds) instead of the mean of the fold models.
    pseudo: test posts added to every fit with pseudo-labels (models/pseudo_label.py): the fit validated on
    fold v gets `pseudo.by_fold[v]`, the refit `pseudo.refit`.
    refit_check: also predict the report slice the way the test is predicted, with the report slice in the
    test's place (`CVResult.refit_check`): a refit on every other train post (holdout; k folds with
    refit_kfold), or the mean of the fold models. Settings that act only on that step (refit_kfold, the
    refit's rounds) leave the reported score unchanged; this score sees them without a test label.
    The check's refits leave pseudo-labelled posts out: their labels came from models that saw the slice.
    sample_weight: per train post, the weight of its row in every fit it is in (validation.adversarial_weights);
    early stopping and every score stay unweighted.
    """
    y = np.asarray(y, dtype=np.float64)
    if len(X) != len(y) or len(folds) != len(y):
        raise ValueError(f"features ({len(X)}), labels ({len(y)}) and folds ({len(folds)}) must have one row per post")
    fold = folds["fold"].to_numpy()
    inner = folds["feature_fold"].to_numpy()
    report = report_rows(folds)      # kept apart: never fit, never stop early (models/validation.py)
    selection = selection_rows(folds)
    fit_mask = np.ones(len(y), dtype=bool) if fit_mask is None else np.asarray(fit_mask, dtype=bool)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if len(sample_weight) != len(y) or not (np.isfinite(sample_weight).all() and (sample_weight > 0).all()):
            raise ValueError(f"sample_weight: expected {len(y)} finite positive weights, one per train post")
    val_folds = validation_folds(folds)
    if not val_folds:
        raise ValueError("the folds table has no validation fold")
    holdout = len(val_folds) == 1  # time-ordered holdout: refit on everything for test

    oof = np.full(len(y), np.nan)
    test_pred = np.zeros(len(X_test))
    fold_scores: dict[int, dict] = {}
    best_iterations: list[int] = []
    importances = []
    steps = [(s, v) for s in seeds for v in val_folds]
    seed_best: list[int] = []
    seed_fit_rows: list[int] = []
    test_by_fold = {v: np.zeros(len(X_test)) for v in val_folds} if predict_test else {}
    report_idx = np.flatnonzero(report)
    check = np.zeros(len(report_idx)) if refit_check and predict_test and len(report_idx) else None

    def fit(seed: int, rounds: int | None, idx, X_fit, y_fit, X_tst_fit, labels, X_val=None, y_val=None,
            with_pseudo: bool = True) -> Regressor:
        """A model on the fit rows (train posts `idx`), plus the pseudo-labelled test rows `X_tst_fit` when
        pseudo-labelling (and `with_pseudo`)."""
        weight = None if sample_weight is None else sample_weight[idx]
        if pseudo is None or not with_pseudo:
            if weight is None:
                return make_model(seed, rounds).fit(X_fit, y_fit, X_val, y_val)
            return make_model(seed, rounds).fit(X_fit, y_fit, X_val, y_val, sample_weight=weight)
        X_fit, y_fit, pseudo_weight = with_pseudo_rows(X_fit, y_fit, X_tst_fit, pseudo, labels)
        if weight is not None:  # the train rows come first; the pseudo-labelled rows keep their weight
            pseudo_weight[:len(weight)] = weight
        return make_model(seed, rounds).fit(X_fit, y_fit, X_val, y_val, sample_weight=pseudo_weight)

    def refit_test(seed: int, best: int | None, n_fit: int, all_idx: np.ndarray) -> np.ndarray:
        """Test prediction of a refit on the train posts `all_idx`, with the rounds validation chose."""
        full_stats, test_stats = _stats(target_stats, all_idx, y, inner, None)
        rounds = refit_rounds(best, n_fit, len(all_idx)) if scale_refit_rounds and best else best
        X_tst = _with_stats(X_test, test_stats)
        refit = fit(seed, rounds, all_idx, _with_stats(X.iloc[all_idx], full_stats), y[all_idx], X_tst,
                    None if pseudo is None else pseudo.refit)
        return refit.predict(X_tst)

    def report_stats(fit_idx: np.ndarray):
        """(statistics of the fit rows, the report slice's features) for a model fit on `fit_idx`."""
        fit_stats, apply_stats = _stats(target_stats, fit_idx, y, inner, report_idx)
        return fit_stats, _with_stats(X.iloc[report_idx], None if apply_stats is None
                                      else apply_stats.iloc[:len(report_idx)])

    def refit_report(seed: int, best: int | None, n_fit: int, all_idx: np.ndarray) -> np.ndarray:
        """`refit_test` with the report slice as the test: a refit on `all_idx` (no report post)."""
        fit_stats, X_rep = report_stats(all_idx)
        rounds = refit_rounds(best, n_fit, len(all_idx)) if scale_refit_rounds and best else best
        refit = fit(seed, rounds, all_idx, _with_stats(X.iloc[all_idx], fit_stats), y[all_idx], None, None,
                    with_pseudo=False)
        return refit.predict(X_rep)

    for seed, v in tqdm(steps, desc=f"cv {name}", disable=not progress, leave=False):
        fit_idx = np.flatnonzero((fold != v) & fit_mask & ~report)
        val_idx = np.flatnonzero(fold == v)   # predicted: the fold's selection and report posts
        stop = selection[val_idx]             # early stopping sees the selection posts only
        fit_stats, apply_stats = _stats(target_stats, fit_idx, y, inner, val_idx)
        X_fit = _with_stats(X.iloc[fit_idx], fit_stats)
        X_val = _with_stats(X.iloc[val_idx], None if apply_stats is None else apply_stats.iloc[:len(val_idx)])
        X_tst = _with_stats(X_test, None if apply_stats is None else apply_stats.iloc[len(val_idx):])
        # from the stage-1 model fit without fold v; its rounds were chosen on fold v's selection posts
        labels = None if pseudo is None else pseudo.by_fold[v]
        model = fit(seed, None, fit_idx, X_fit, y[fit_idx], X_tst, labels, X_val[stop].reset_index(drop=True),
                    y[val_idx[stop]])
        pred_val = model.predict(X_val)
        oof[val_idx] = np.nan_to_num(oof[val_idx]) + pred_val / len(seeds)
        best = getattr(model, "best_iteration_", None)
        if best is not None:
            best_iterations.append(int(best))
        if hasattr(model, "feature_importance"):
            importances.append(model.feature_importance())
        if not predict_test:
            continue
        fold_test = model.predict(X_tst)
        test_by_fold[v] += fold_test / len(seeds)
        if holdout:
            # test prediction from a refit on every train post, with the rounds the holdout chose
            all_idx = np.flatnonzero(fit_mask | (fold == v))
            test_pred += refit_test(seed, best, len(fit_idx), all_idx) / len(seeds)
            if check is not None:
                check += refit_report(seed, best, len(fit_idx), all_idx[~report[all_idx]]) / len(seeds)
        elif refit_kfold:
            seed_best.append(int(best) if best is not None else 0)
            seed_fit_rows.append(len(fit_idx))
            if v == val_folds[-1]:  # the seed's last fold: one refit with the folds' median rounds
                median = int(np.median(seed_best)) or None
                test_pred += refit_test(seed, median, int(np.mean(seed_fit_rows)), np.flatnonzero(fit_mask)) / len(seeds)
                if check is not None:
                    check += refit_report(seed, median, int(np.mean(seed_fit_rows)),
                                          np.flatnonzero(fit_mask & ~report)) / len(seeds)
                seed_best, seed_fit_rows = [], []
        else:
            test_pred += fold_test / (len(seeds) * len(val_folds))
            if check is not None:  # the fold model on every report post, as on every test post
                check += model.predict(report_stats(fit_idx)[1]) / (len(seeds) * len(val_folds))
    for v in val_folds:
        rows = (fold == v) & selection
        fold_scores[v] = score(y[rows], oof[rows])
    chosen_on = score(y[selection], oof[selection])
    scored = scored_rows(folds)
    overall = score(y[scored], oof[scored])
    importance = pd.concat(importances, axis=1).mean(axis=1).sort_values(ascending=False) if importances else pd.Series(dtype=float)
    if progress:  # a tuning trial (progress off) reports its own one line
        log.info("%s: validation SRC %.4f MAE %.4f MSE %.4f (%s; selection posts SRC %.4f)", name, overall["src"],
                 overall["mae"], overall["mse"], "report slice" if report.any() else "no report slice",
                 chosen_on["src"])
    refit_check_pred = None
    if check is not None:
        refit_check_pred = np.full(len(y), np.nan)
        refit_check_pred[report_idx] = check
    return CVResult(oof=oof, test=test_pred, fold_scores=fold_scores, score=overall,
                    best_iterations=best_iterations, feature_importance=importance, test_by_fold=test_by_fold,
                    selection_score=chosen_on, refit_check=refit_check_pred,
                    refit_check_score=score(y[report_idx], check) if check is not None else {})
