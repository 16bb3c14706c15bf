"""Out-of-fold target statistics: smoothed mean labels of a post's user, classes and tags.

A post's own label never reaches its own features: rows that a model fits on
get statistics from the other `inner_fold`s only, and rows it is applied to
(validation, test) get statistics from all fit rows. The caller passes the
folds, so every model and every statistic share one fold assignment.

The smoothing (how many posts' worth of the prior a group mean is shrunk towards) is
`auto` by default: per key, the empirical-Bayes ratio of the within-group variance of
the label to the variance of the true group means, estimated from the fit rows. A key
whose groups differ a lot (users, on Flickr) gets little smoothing, a key whose groups
barely differ gets much, at any data size; a fixed 10 shrinks a user of 5 posts two
thirds of the way to the prior, which costs most on small data sets.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from features.metadata import per_post_mean_max_min, tag_pairs


def _smoothed_oof(codes_fit: np.ndarray, y: np.ndarray, inner_fold: np.ndarray, codes_apply: np.ndarray,
                  n_groups: int, smoothing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Smoothed group means (and counts): out of fold for fit rows, from all fit rows for apply rows.

    Codes of -1 in codes_apply (groups never seen in fit rows) get the prior and a count of 0.
    No fit rows at all (no post has a tag) say nothing: every mean is NaN, every count 0.
    """
    if len(codes_fit) == 0:
        return np.zeros(0), np.zeros(0), np.full(len(codes_apply), np.nan), np.zeros(len(codes_apply))
    n_folds = int(inner_fold.max()) + 1
    flat = codes_fit * n_folds + inner_fold
    sums = np.bincount(flat, weights=y, minlength=n_groups * n_folds).reshape(n_groups, n_folds)
    counts = np.bincount(flat, minlength=n_groups * n_folds).reshape(n_groups, n_folds).astype(np.float64)
    total_sum, total_count = sums.sum(1), counts.sum(1)
    fold_sum, fold_count = sums.sum(0), counts.sum(0)

    prior_fit = (fold_sum.sum() - fold_sum[inner_fold]) / np.maximum(fold_count.sum() - fold_count[inner_fold], 1)
    s = total_sum[codes_fit] - sums[codes_fit, inner_fold]
    c = total_count[codes_fit] - counts[codes_fit, inner_fold]
    with np.errstate(invalid="ignore", divide="ignore"):
        fit_mean = np.where(c + smoothing > 0, (s + smoothing * prior_fit) / (c + smoothing), prior_fit)

    prior = y.mean()
    seen = codes_apply >= 0
    safe = np.where(seen, codes_apply, 0)
    s_apply = np.where(seen, total_sum[safe], 0.0)
    c_apply = np.where(seen, total_count[safe], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        apply_mean = np.where(c_apply + smoothing > 0, (s_apply + smoothing * prior) / (c_apply + smoothing), prior)
    return fit_mean, c, apply_mean, c_apply


AUTO = "auto"
MAX_SMOOTHING = 1000.0  # groups indistinguishable from the prior: shrink (almost) all the way


def empirical_bayes_smoothing(codes: np.ndarray, y: np.ndarray) -> float:
    """sigma^2_within / tau^2_between for groups `codes` of labels `y` (the credibility constant).

    tau^2 (variance of the true group means) is the spread of the group means of groups with
    two or more rows, less the part their sampling noise explains.
    """
    y = np.asarray(y, dtype=np.float64)
    counts = np.bincount(codes).astype(np.float64)
    sums = np.bincount(codes, weights=y)
    multi = counts >= 2
    if multi.sum() < 2:
        return MAX_SMOOTHING
    means = sums[multi] / counts[multi]
    squares = np.bincount(codes, weights=y * y)[multi]
    within = float((squares - counts[multi] * means ** 2).sum() / (counts[multi] - 1).sum())
    between = float(np.var(means, ddof=1) - within * np.mean(1.0 / counts[multi]))
    if not np.isfinite(within) or between <= 0:
        return MAX_SMOOTHING
    return float(np.clip(within / between, 0.0, MAX_SMOOTHING))


def resolve_smoothing(smoothing: float | str, codes: np.ndarray, y: np.ndarray) -> float:
    if smoothing == AUTO:
        return empirical_bayes_smoothing(codes, y)
    if isinstance(smoothing, str) or not np.isfinite(smoothing) or smoothing < 0:
        raise ValueError(f"metadata.target_stat_smoothing must be {AUTO!r} or a number >= 0, got {smoothing!r}")
    return float(smoothing)


def _codes(fit_values: pd.Series, apply_values: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    codes_fit, uniques = pd.factorize(fit_values.to_numpy())
    codes_apply = pd.Index(uniques).get_indexer(apply_values.to_numpy())
    return codes_fit.astype(np.int64), codes_apply.astype(np.int64), len(uniques)


def target_statistics(keys_fit: pd.DataFrame, y_fit: np.ndarray, inner_fold: np.ndarray, keys_apply: pd.DataFrame,
                      key_columns: list[str], smoothing: float | str, tags: bool = True,
                      tag_min_count: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Target-statistic features for fit rows (out of fold) and apply rows (from all fit rows).

    keys_*: the posts' key columns (`key_columns`, plus `Alltags` when `tags`).
    inner_fold: fold id per fit row, 0..K-1 (the folds' `feature_fold`).
    """
    y_fit = np.asarray(y_fit, dtype=np.float64)
    inner_fold = pd.factorize(np.asarray(inner_fold))[0].astype(np.int64)  # compact ids 0..K'-1
    if len(y_fit) != len(keys_fit) or len(inner_fold) != len(keys_fit):
        raise ValueError("keys_fit, y_fit and inner_fold must have one row per fit post")
    fit_out, apply_out = {}, {}
    for key in key_columns:
        codes_fit, codes_apply, n_groups = _codes(keys_fit[key], keys_apply[key])
        fm, fc, am, ac = _smoothed_oof(codes_fit, y_fit, inner_fold, codes_apply, n_groups,
                                       resolve_smoothing(smoothing, codes_fit, y_fit))
        fit_out[f"te_{key}_mean"], apply_out[f"te_{key}_mean"] = fm, am
        fit_out[f"te_{key}_n"], apply_out[f"te_{key}_n"] = fc, ac
    if tags:
        fit_tags, apply_tags = _tag_statistics(keys_fit["Alltags"], y_fit, inner_fold, keys_apply["Alltags"],
                                               smoothing, tag_min_count)
        fit_out.update(fit_tags)
        apply_out.update(apply_tags)
    return pd.DataFrame(fit_out), pd.DataFrame(apply_out)


def _tag_statistics(tags_fit: pd.Series, y: np.ndarray, inner_fold: np.ndarray, tags_apply: pd.Series,
                    smoothing: float | str, min_count: int) -> tuple[dict, dict]:
    """Per post: mean, max and min over its tags of the tags' smoothed out-of-fold mean label."""
    post_fit, tags_of_fit = tag_pairs(tags_fit)
    post_apply, tags_of_apply = tag_pairs(tags_apply)
    if len(post_fit) == 0:  # no fit post has a tag: nothing is known of any tag
        return tuple({f"te_tag_{s}": np.full(n, np.nan) for s in ("mean", "max", "min")}
                     for n in (len(tags_fit), len(tags_apply)))
    encoded = pc.dictionary_encode(tags_of_fit)  # tag -> group id, in C
    codes_fit = encoded.indices.to_numpy().astype(np.int64)
    codes_apply = pc.index_in(tags_of_apply, value_set=encoded.dictionary).to_numpy(zero_copy_only=False)
    codes_apply = np.nan_to_num(codes_apply.astype(np.float64), nan=-1).astype(np.int64)  # unseen tag: -1
    n_groups = len(encoded.dictionary)
    # the pair carries its post's label and fold, so a post's own label is left out of its own tags
    smoothing = resolve_smoothing(smoothing, codes_fit, y[post_fit])
    fm, fc, am, ac = _smoothed_oof(codes_fit, y[post_fit], inner_fold[post_fit], codes_apply, n_groups, smoothing)
    # rare tags say little: treat them as unseen (the prior)
    fm = np.where(fc >= min_count, fm, np.nan)
    am = np.where(ac >= min_count, am, np.nan)
    out = []
    for post, means, n_posts in ((post_fit, fm, len(tags_fit)), (post_apply, am, len(tags_apply))):
        mean, high, low = per_post_mean_max_min(post, means, n_posts)
        out.append({"te_tag_mean": mean, "te_tag_max": high, "te_tag_min": low})
    return out[0], out[1]
