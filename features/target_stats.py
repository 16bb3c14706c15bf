"""Target statistics: smoothed mean labels of a post's user, classes and tags, never its own.

A post's own label never reaches its own features, and a statistic means the same on the rows a
model fits on as on the rows it is applied to (validation, test). The caller passes the folds, so
every model and every statistic share one fold assignment, and the window (`window_of` the folds):
- `folds` (k-fold schemes): a fit row's statistic comes from the other `inner_fold`s, an apply
  row's from all fit rows, its sums and counts weighted by (K-1)/K, the share a fit row draws on,
  so that `te_*_n` is on one scale for both;
- `expanding` (a time holdout): every row's statistic comes from the fit rows posted strictly
  before it, a fit row's as a validation or test row's, which see only earlier posts (the 2020
  winners' sliding-window user means). A fit row's user mean then never uses the user's later posts.

The smoothing (how many posts' worth of the prior a group mean is shrunk towards) is
`auto` by default: per key, the empirical-Bayes ratio of the within-group variance of
the label to the variance of the true group means, estimated, for a fit row, from the fit
rows of the other inner folds (for an apply row: from all fit rows). A key whose groups
differ a lot (users, on Flickr) gets little smoothing, a key whose groups barely differ
gets much, at any data size; a fixed 10 shrinks a user of 5 posts two thirds of the way
to the prior, which costs most on small data sets. The prior of a fit row is the mean of
the other inner folds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from features.metadata import per_post_mean_max_min, tag_pairs


WINDOWS = ("folds", "expanding")


def window_of(fold: np.ndarray) -> str:
    """The statistics' window for a fold table's `fold` column (models/validation.py): `expanding` for
    a time holdout (it alone has rows of fold -1, which only ever fit), `folds` for k-fold schemes."""
    return "expanding" if (np.asarray(fold) < 0).any() else "folds"


def fold_priors(y: np.ndarray, inner_fold: np.ndarray) -> np.ndarray:
    """Per fit row: the mean label of the fit rows of the other inner folds (all rows' mean if none)."""
    n_folds = int(inner_fold.max()) + 1
    fold_sum = np.bincount(inner_fold, weights=y, minlength=n_folds)
    fold_n = np.bincount(inner_fold, minlength=n_folds).astype(np.float64)
    rest = fold_n.sum() - fold_n[inner_fold]
    return np.where(rest > 0, (fold_sum.sum() - fold_sum[inner_fold]) / np.maximum(rest, 1.0), y.mean())


def fold_sums(groups: np.ndarray, y: np.ndarray, inner_fold: np.ndarray, n_groups: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """(n_groups, K) label sums and row counts per group and inner fold."""
    n_folds = int(inner_fold.max()) + 1
    flat = groups * n_folds + inner_fold
    sums = np.bincount(flat, weights=y, minlength=n_groups * n_folds).reshape(n_groups, n_folds)
    counts = np.bincount(flat, minlength=n_groups * n_folds).reshape(n_groups, n_folds).astype(np.float64)
    return sums, counts


def out_of_fold_sums(groups_fit: np.ndarray, y: np.ndarray, inner_fold: np.ndarray, groups_apply: np.ndarray,
                     n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Window `folds`: label sum and count of each row's group, per fit row over the other inner
    folds; per apply row over all fit rows, weighted by (K-1)/K, the share of the fit rows a fit
    row draws on, so that the counts of fit and apply rows are on one scale. -1: no group (0, 0)."""
    sums, counts = fold_sums(groups_fit, y, inner_fold, n_groups)
    s_fit = sums.sum(1)[groups_fit] - sums[groups_fit, inner_fold]
    c_fit = counts.sum(1)[groups_fit] - counts[groups_fit, inner_fold]
    share = (sums.shape[1] - 1) / sums.shape[1]
    seen = groups_apply >= 0
    safe = np.where(seen, groups_apply, 0)
    s_apply = np.where(seen, share * sums.sum(1)[safe], 0.0)
    c_apply = np.where(seen, share * counts.sum(1)[safe], 0.0)
    return s_fit, c_fit, s_apply, c_apply


def earlier_sums(groups_fit: np.ndarray, t_fit: np.ndarray, y: np.ndarray, groups_query: np.ndarray,
                 t_query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Window `expanding`: per query (group, time), label sum and count of the fit rows of its group
    posted strictly earlier. A post made in the same second is not earlier (a batch upload: none of
    its posts sees another's label, as a test post never sees its batch's), so a fit row never sees
    itself. -1: no group (0, 0)."""
    times = np.unique(np.r_[t_fit, t_query], return_inverse=True)[1].astype(np.int64)
    stride = int(times.max(initial=0)) + 2
    key_fit = groups_fit * stride + times[:len(t_fit)]  # (group, time rank) as one exact integer
    order = np.argsort(key_fit, kind="stable")
    sorted_key = key_fit[order]
    before = np.r_[0.0, np.cumsum(y[order])]  # label sum of the first j rows in (group, time) order
    seen = groups_query >= 0
    safe = np.where(seen, groups_query, 0)
    start = np.searchsorted(sorted_key, safe * stride, side="left")
    end = np.searchsorted(sorted_key, safe * stride + times[len(t_fit):], side="left")
    return np.where(seen, before[end] - before[start], 0.0), np.where(seen, end - start, 0).astype(np.float64)


def shrunk_mean(s: np.ndarray, c: np.ndarray, prior, smoothing) -> np.ndarray:
    """(s + a prior) / (c + a): a group mean shrunk towards the prior by `smoothing` (a) rows' worth."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c + smoothing > 0, (s + smoothing * prior) / (c + smoothing), prior)


def _group_statistics(groups_fit: np.ndarray, y: np.ndarray, inner_fold: np.ndarray, groups_apply: np.ndarray,
                      n_groups: int, smoothing: float | str, window: str, t_fit: np.ndarray | None,
                      t_apply: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Smoothed group means and counts of fit rows and apply rows (see `target_statistics`).

    Codes of -1 in groups_apply (groups never seen in fit rows) get the prior and a count of 0.
    No fit rows at all (no post has a tag) say nothing: every mean is NaN, every count 0.
    """
    if len(groups_fit) == 0:
        return np.zeros(0), np.zeros(0), np.full(len(groups_apply), np.nan), np.zeros(len(groups_apply))
    if window == "expanding":
        s_fit, c_fit = earlier_sums(groups_fit, t_fit, y, groups_fit, t_fit)
        s_apply, c_apply = earlier_sums(groups_fit, t_fit, y, groups_apply, t_apply)
    else:
        s_fit, c_fit, s_apply, c_apply = out_of_fold_sums(groups_fit, y, inner_fold, groups_apply, n_groups)
    smoothing_fit, smoothing_apply = out_of_fold_smoothing(smoothing, groups_fit, y, inner_fold)
    return (shrunk_mean(s_fit, c_fit, fold_priors(y, inner_fold), smoothing_fit), c_fit,
            shrunk_mean(s_apply, c_apply, y.mean(), smoothing_apply), c_apply)


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


def out_of_fold_smoothing(smoothing: float | str, groups: np.ndarray, y: np.ndarray, inner_fold: np.ndarray
                          ) -> tuple[np.ndarray, float]:
    """The smoothing of each fit row and of the apply rows. `auto` is estimated per inner fold k from
    the fit rows of the other folds (a row's own label must not set how much its own mean is
    shrunk) and, for the apply rows, from all fit rows."""
    if smoothing != AUTO:
        fixed = resolve_smoothing(smoothing, groups, y)
        return np.full(len(groups), fixed), fixed
    n_folds = int(inner_fold.max()) + 1
    per_fold = np.array([empirical_bayes_smoothing(groups[inner_fold != k], y[inner_fold != k])
                         for k in range(n_folds)])
    return per_fold[inner_fold], empirical_bayes_smoothing(groups, y)


def _codes(fit_values: pd.Series, apply_values: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    codes_fit, uniques = pd.factorize(fit_values.to_numpy())
    codes_apply = pd.Index(uniques).get_indexer(apply_values.to_numpy())
    return codes_fit.astype(np.int64), codes_apply.astype(np.int64), len(uniques)


def target_statistics(keys_fit: pd.DataFrame, y_fit: np.ndarray, inner_fold: np.ndarray, keys_apply: pd.DataFrame,
                      key_columns: list[str], smoothing: float | str, tags: bool = True,
                      tag_min_count: int = 1, window: str = "folds") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Target-statistic features for fit rows and apply rows, `te_<key>_mean` and `te_<key>_n`.

    keys_*: the posts' key columns (`key_columns`, plus `Alltags` when `tags`, plus `Postdate` for
    the window `expanding`).
    inner_fold: fold id per fit row, 0..K-1 (the folds' `feature_fold`).
    window (`window_of` the folds): `folds`, a fit row's group over the other inner folds and an
    apply row's over all fit rows, counts weighted to the fit rows' scale; `expanding` (a time
    holdout), every row's group over the fit rows posted strictly before it.
    """
    if window not in WINDOWS:
        raise ValueError(f"target statistics: window must be one of {WINDOWS}, got {window!r}")
    y_fit = np.asarray(y_fit, dtype=np.float64)
    inner_fold = pd.factorize(np.asarray(inner_fold))[0].astype(np.int64)  # compact ids 0..K'-1
    if len(y_fit) != len(keys_fit) or len(inner_fold) != len(keys_fit):
        raise ValueError("keys_fit, y_fit and inner_fold must have one row per fit post")
    t_fit = t_apply = None
    if window == "expanding":
        missing = [name for name, keys in (("fit", keys_fit), ("apply", keys_apply)) if "Postdate" not in keys]
        if missing:
            raise ValueError(f"target statistics, window expanding: the {' and '.join(missing)} keys have no "
                             "column Postdate (the post time the window orders by)")
        t_fit, t_apply = (keys["Postdate"].to_numpy(np.float64) for keys in (keys_fit, keys_apply))
    fit_out, apply_out = {}, {}
    for key in key_columns:
        codes_fit, codes_apply, n_groups = _codes(keys_fit[key], keys_apply[key])
        fm, fc, am, ac = _group_statistics(codes_fit, y_fit, inner_fold, codes_apply, n_groups, smoothing, window,
                                           t_fit, t_apply)
        fit_out[f"te_{key}_mean"], apply_out[f"te_{key}_mean"] = fm, am
        fit_out[f"te_{key}_n"], apply_out[f"te_{key}_n"] = fc, ac
    if tags:
        fit_tags, apply_tags = _tag_statistics(keys_fit["Alltags"], y_fit, inner_fold, keys_apply["Alltags"],
                                               smoothing, tag_min_count, window, t_fit, t_apply)
        fit_out.update(fit_tags)
        apply_out.update(apply_tags)
    return pd.DataFrame(fit_out), pd.DataFrame(apply_out)


def _tag_statistics(tags_fit: pd.Series, y: np.ndarray, inner_fold: np.ndarray, tags_apply: pd.Series,
                    smoothing: float | str, min_count: int, window: str, t_fit: np.ndarray | None,
                    t_apply: np.ndarray | None) -> tuple[dict, dict]:
    """Per post: mean, max and min over its tags of the tags' smoothed mean label (in the window)."""
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
    # the pair carries its post's label, fold and time, so a post's own label is left out of its own tags
    times = (None, None) if t_fit is None else (t_fit[post_fit], t_apply[post_apply])
    fm, fc, am, ac = _group_statistics(codes_fit, y[post_fit], inner_fold[post_fit], codes_apply, n_groups,
                                       smoothing, window, *times)
    # rare tags say little: treat them as unseen (the prior)
    fm = np.where(fc >= min_count, fm, np.nan)
    am = np.where(ac >= min_count, am, np.nan)
    out = []
    for post, means, n_posts in ((post_fit, fm, len(tags_fit)), (post_apply, am, len(tags_apply))):
        mean, high, low = per_post_mean_max_min(post, means, n_posts)
        out.append({"te_tag_mean": mean, "te_tag_max": high, "te_tag_min": low})
    return out[0], out[1]
