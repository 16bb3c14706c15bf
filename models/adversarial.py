"""Adversarial validation: how well a classifier tells train posts from test posts.

A LightGBM classifier learns `is_test` from the feature blocks the members use, cross-fitted on
stratified, seeded folds over train and test posts together: every post's test-likeness comes
from the model that did not see it, and the AUC of those out-of-fold probabilities says how far
apart the two splits are (0.5: indistinguishable). Beside it, for each feature, its share of the
classifier's gain and its univariate AUC (the raw value for a number; the out-of-fold test share
of its category for a categorical), ranked by distance of that AUC from 0.5: the features that
shift most. A feature that follows the post date closely (the test period follows the train
period) is ranked but kept out of the classifier, as the date itself is: it separates the splits by
construction, and the AUC is meant to show what shifts besides time. Optionally, weights for the train posts from their test-likeness (odds, clipped,
mean 1), so that a fit leans on the train posts that look like test posts.

Pure: frames in, a result dataclass out (the stage `adversarial` reads and writes the files).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from models.sizing import leaf_size

log = logging.getLogger(__name__)

# Columns left out of the classifier because they separate the splits by construction, not by a
# shift a model could suffer from. SMPD's test period follows the train period, so the post date
# itself (and the calendar columns that spell it) tells them apart almost perfectly and would hide
# every other feature; the post date's own AUC is reported apart (`time_auc`). A train post's count
# of its user's train posts includes the post itself (at least 1), while a test post of a new user
# has 0.
EXCLUDED = {
    "meta_postdate_days": "the post date: reported apart as time_auc",
    "meta_period_position": "the post date: reported apart as time_auc",
    "meta_day_of_year": "the post date's calendar day: reported apart as time_auc",
    "meta_month": "the post date's month: reported apart as time_auc",
    "meta_user_posts_train": "counts the post itself when it is a train post (a new user's test post has 0)",
}
MAX_TIME_CORR = 0.5  # |Spearman| with the post date from which a feature counts as standing in for it
MAX_WEIGHT = 10.0   # train-post weights are clipped to [1 / MAX_WEIGHT, MAX_WEIGHT] times their mean
CATEGORY_PRIOR = 10.0  # pseudo-posts of the overall test share added to each category's (smoothing)


@dataclass
class AdversarialResult:
    """auc: out-of-fold AUC of the classifier (None when it could not be cross-fitted: `reason`).

    train_likeness / test_likeness: each post's out-of-fold probability of being a test post (NaN
    without an AUC). features: one row per feature used (`feature`, `gain_share`, `univariate_auc`,
    `shift` = |univariate_auc - 0.5|, `time_corr`: Spearman correlation with the post date, NaN for a
    categorical or without dates; `in_classifier`: False for a feature that stands in for the post
    date, ranked but not used), the largest shift first. excluded: column -> why it was left out.
    """
    auc: float | None
    fold_aucs: list[float]
    n_train: int
    n_test: int
    n_folds: int
    train_likeness: np.ndarray
    test_likeness: np.ndarray
    features: pd.DataFrame
    excluded: dict[str, str] = field(default_factory=dict)
    reason: str = ""


def univariate_auc(train_values, test_values) -> float:
    """AUC of one numeric column as a score for `is_test` (above 0.5: larger in test). A missing value
    ranks below every present one, so a shift in missingness counts; a constant column gives 0.5."""
    values = np.concatenate([np.asarray(train_values, dtype=np.float64), np.asarray(test_values, dtype=np.float64)])
    target = np.r_[np.zeros(len(train_values)), np.ones(len(test_values))]
    return _auc(target, _missing_lowest(values))


def _missing_lowest(values: np.ndarray) -> np.ndarray:
    values = np.where(np.isinf(values), np.nan, values)  # roc_auc_score refuses infinities
    finite = values[~np.isnan(values)]
    return np.where(np.isnan(values), (finite.min() - 1.0) if len(finite) else 0.0, values)


def _auc(target: np.ndarray, score: np.ndarray) -> float:
    if len(np.unique(target)) < 2:
        return float("nan")
    return float(roc_auc_score(target, score))


def _categorical_score(codes: np.ndarray, target: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each post's score: its category's smoothed test share over the posts of the other folds."""
    score = np.empty(len(codes))
    prior = target.mean()
    for k in np.unique(folds):
        out = folds == k
        frame = pd.DataFrame({"code": codes[~out], "t": target[~out]}).groupby("code")["t"].agg(["sum", "count"])
        share = (frame["sum"] + CATEGORY_PRIOR * prior) / (frame["count"] + CATEGORY_PRIOR)
        score[out] = pd.Series(codes[out]).map(share).fillna(prior).to_numpy()
    return score


def _as_model_frame(X_train: pd.DataFrame, X_test: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Both splits stacked (train first), non-numeric columns as one categorical code book; and the
    names of the categorical columns."""
    both = pd.concat([X_train.reset_index(drop=True), X_test.reset_index(drop=True)], ignore_index=True)
    categorical = []
    for column in both.columns:
        if not (pd.api.types.is_numeric_dtype(both[column]) or pd.api.types.is_bool_dtype(both[column])):
            values = both[column].astype(str).where(both[column].notna(), "")
            both[column] = pd.Categorical(values, categories=sorted(values.unique()))
            categorical.append(column)
        elif pd.api.types.is_bool_dtype(both[column]):
            both[column] = both[column].astype(np.float64)
    return both, categorical


def _usable_columns(both: pd.DataFrame, exclude: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    excluded = {c: why for c, why in exclude.items() if c in both.columns}
    used = []
    for column in both.columns:
        if column in excluded:
            continue
        values = both[column]
        if values.isna().all():
            excluded[column] = "missing in every post"
        elif values.nunique(dropna=False) < 2:
            excluded[column] = "the same value in every post"
        else:
            used.append(column)
    return used, excluded


def adversarial_validation(X_train: pd.DataFrame, X_test: pd.DataFrame, n_folds: int = 5, seed: int = 0,
                           num_boost_round: int = 200, learning_rate: float = 0.05, num_leaves: int = 15,
                           num_threads: int = 2, exclude: dict[str, str] | None = None,
                           post_dates: tuple[np.ndarray, np.ndarray] | None = None,
                           users: tuple[np.ndarray, np.ndarray] | None = None,
                           max_time_corr: float = MAX_TIME_CORR) -> AdversarialResult:
    """Cross-fitted train-versus-test classifier on the given feature columns (rows: the posts of each
    split, in order). Fixed rounds, no early stopping: stopping on the fold it then scores would
    flatter the AUC. Too few posts of a split for `n_folds` folds, or no usable column, gives auc None
    with the reason (logged), never an error.

    post_dates: (train, test) post times; users: (train, test) user ids. Each numeric feature's
    Spearman correlation with the post date (`time_corr`: over all posts, or within users, whichever
    is larger in magnitude) is reported, and a feature at or above `max_time_corr` (in absolute
    value) stands in for the post date: with a test period after the train period it separates the
    splits by construction (a user's days since their first post, the account's age at the post:
    the user-level columns tell the trees whose account it is), so it is ranked with the others but
    kept out of the classifier, whose AUC then measures what shifts besides time."""
    if list(X_train.columns) != list(X_test.columns):
        raise ValueError("adversarial validation: train and test features must have the same columns, in order")
    exclude = EXCLUDED if exclude is None else exclude
    n_train, n_test = len(X_train), len(X_test)
    both, categorical = _as_model_frame(X_train, X_test)
    used, excluded = _usable_columns(both, exclude)

    def without_auc(reason: str, features: pd.DataFrame | None = None) -> AdversarialResult:
        log.info("adversarial validation: no AUC: %s", reason)
        nan = np.full(n_train + n_test, np.nan)
        return AdversarialResult(None, [], n_train, n_test, n_folds, nan[:n_train], nan[n_train:],
                                 _ranked([]) if features is None else features, excluded, reason)

    if min(n_train, n_test) < n_folds:
        return without_auc(f"{n_train} train and {n_test} test posts: fewer than {n_folds} (the folds) of a split")
    if not used:
        return without_auc(f"no feature column varies ({len(excluded)} left out)")
    target = np.r_[np.zeros(n_train), np.ones(n_test)]
    folds = np.empty(len(target), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, rows) in enumerate(splitter.split(np.zeros(len(target)), target)):
        folds[rows] = k
    dates = None if post_dates is None else np.concatenate([np.asarray(d, dtype=np.float64) for d in post_dates])
    user = None if users is None else np.concatenate([np.asarray(u).astype(str) for u in users])
    rows = []
    for column in used:
        numeric = column not in categorical
        if numeric:
            values = both[column].to_numpy(dtype=np.float64)
            score = _missing_lowest(values)
        else:
            score = _categorical_score(both[column].cat.codes.to_numpy(), target, folds)
        uni = _auc(target, score)
        corr = _time_corr(values, dates, user) if numeric and dates is not None else np.nan
        proxy = bool(np.isfinite(corr) and abs(corr) >= max_time_corr)
        rows.append({"feature": column, "gain_share": 0.0, "univariate_auc": uni, "shift": abs(uni - 0.5),
                     "time_corr": corr, "in_classifier": not proxy})
    features = _ranked(rows)
    X = both[features.loc[features["in_classifier"], "feature"].tolist()]
    if X.shape[1] == 0:
        return without_auc(f"every varying column stands in for the post date (|Spearman| >= {max_time_corr})",
                           features)
    cats = [c for c in categorical if c in X.columns]
    proba = np.empty(len(target))
    gains = pd.Series(0.0, index=X.columns)
    fold_aucs = []
    for k in range(n_folds):
        fit = folds != k
        params = {"objective": "binary", "learning_rate": learning_rate, "num_leaves": num_leaves,
                  "min_data_in_leaf": leaf_size(20, int(fit.sum())), "feature_fraction": 0.8,
                  "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0, "seed": seed + k,
                  "num_threads": num_threads, "deterministic": True, "force_row_wise": True, "verbosity": -1}
        data = lgb.Dataset(X[fit], label=target[fit], categorical_feature=cats or "auto", free_raw_data=True)
        booster = lgb.train(params, data, num_boost_round=num_boost_round)
        proba[~fit] = booster.predict(X[~fit])
        gains += pd.Series(booster.feature_importance("gain"), index=booster.feature_name()).reindex(X.columns).fillna(0.0)
        fold_aucs.append(_auc(target[~fit], proba[~fit]))
    auc = _auc(target, proba)
    if gains.sum() > 0:
        features["gain_share"] = features["feature"].map(gains / gains.sum()).fillna(0.0).to_numpy()
    log.info("adversarial validation: AUC %.4f over %d folds (%d train, %d test posts, %d features, %d more that "
             "stand in for the post date; most shifted: %s)", auc, n_folds, n_train, n_test, X.shape[1],
             len(features) - X.shape[1], ", ".join(features["feature"].head(3)))
    return AdversarialResult(auc, fold_aucs, n_train, n_test, n_folds, proba[:n_train], proba[n_train:], features,
                             excluded)


def _time_corr(values: np.ndarray, dates: np.ndarray, user: np.ndarray | None) -> float:
    """Spearman correlation of a feature with the post date over all posts, or within users (both
    less their user's mean), whichever is larger in magnitude; NaN where neither varies."""
    pooled = pd.Series(values).corr(pd.Series(dates), method="spearman")
    within = np.nan
    if user is not None:
        frame = pd.DataFrame({"v": values, "d": dates, "u": user})
        centred = frame[["v", "d"]] - frame.groupby("u")[["v", "d"]].transform("mean")
        if centred["v"].abs().max() > 0 and centred["d"].abs().max() > 0:
            within = centred["v"].corr(centred["d"], method="spearman")
    found = [c for c in (pooled, within) if np.isfinite(c)]
    return float(max(found, key=abs)) if found else float("nan")


def _ranked(rows: list[dict]) -> pd.DataFrame:
    """The features table, the largest shift first (ties: the larger gain share, then the name)."""
    columns = {"feature": str, "gain_share": float, "univariate_auc": float, "shift": float, "time_corr": float,
               "in_classifier": bool}
    frame = pd.DataFrame(rows) if rows else pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    return frame.sort_values(["shift", "gain_share", "feature"], ascending=[False, False, True],
                             kind="stable").reset_index(drop=True)


def likeness_weights(likeness: np.ndarray, max_weight: float = MAX_WEIGHT) -> np.ndarray:
    """Weights of the train posts from their test-likeness p: the odds p / (1 - p) (the density ratio
    test / train, up to a constant), scaled so that, clipped to [1 / max_weight, max_weight] (a few
    posts the classifier is sure of must not carry a fit), their mean is 1. Without test-likeness
    (NaN: no AUC) every post weighs 1."""
    p = np.asarray(likeness, dtype=np.float64)
    if len(p) == 0 or not np.isfinite(p).all():
        return np.ones(len(p))
    log_odds = np.log(np.clip(p, 1e-9, 1.0 - 1e-9)) - np.log1p(-np.clip(p, 1e-9, 1.0 - 1e-9))
    low, high = 1.0 / max_weight, max_weight

    def clipped(log_scale: float) -> np.ndarray:
        return np.clip(np.exp(np.clip(log_odds + log_scale, -50.0, 50.0)), low, high)

    # the mean of the clipped weights grows with the scale, from `low` to `high`: bisect for mean 1
    lo, hi = -60.0 - log_odds.max(), 60.0 - log_odds.min()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if clipped(mid).mean() < 1.0 else (lo, mid)
    weights = clipped(0.5 * (lo + hi))
    return weights / weights.mean()  # the bisection's last rounding off 1
