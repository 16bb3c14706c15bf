"""Fold schemes: the one source of truth for which post validates which model.

`make_folds` returns, per train post in file order:
- `fold`: the validation fold the post belongs to (0..K-1), or -1 for a post that
  only ever trains (the early part of a time-ordered holdout);
- `stat_fold`: 0..K-1, the fold used for out-of-fold target statistics inside the
  training part, so that no post's own label reaches its own features.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SCHEMES = ("kfold", "group_kfold", "time_holdout")


def make_folds(posts: pd.DataFrame, scheme: str, n_folds: int, seed: int, holdout_frac: float = 0.2) -> pd.DataFrame:
    """Assign folds to the train posts (needs columns Pid, Uid, Postdate)."""
    if scheme not in SCHEMES:
        raise ValueError(f"validation.scheme must be one of {SCHEMES}, got {scheme!r}")
    if n_folds < 2:
        raise ValueError(f"validation.n_folds must be at least 2, got {n_folds}")
    n = len(posts)
    if n < n_folds:
        raise ValueError(f"{n} train posts cannot be split into {n_folds} folds")
    rng = np.random.default_rng(seed)
    random_folds = rng.permutation(np.arange(n) % n_folds)
    if scheme == "kfold":
        fold = random_folds
        stat_fold = fold
    elif scheme == "group_kfold":
        fold = _group_folds(posts["Uid"].to_numpy(), n_folds, rng)
        stat_fold = fold
    else:
        if not 0.0 < holdout_frac < 1.0:
            raise ValueError(f"validation.holdout_frac must be in (0, 1), got {holdout_frac}")
        # stable sort: ties in time keep file order, so the split is reproducible
        order = np.argsort(posts["Postdate"].to_numpy(), kind="stable")
        n_holdout = max(1, int(round(n * holdout_frac)))
        fold = np.full(n, -1, dtype=np.int64)
        fold[order[n - n_holdout:]] = 0
        stat_fold = random_folds
    return pd.DataFrame({"Pid": posts["Pid"].to_numpy(), "fold": np.asarray(fold, dtype=np.int64),
                         "stat_fold": np.asarray(stat_fold, dtype=np.int64)})


def _group_folds(groups: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy balanced assignment of whole groups (largest first) to the lightest fold."""
    codes, sizes = np.unique(groups, return_inverse=True, return_counts=True)[1:]
    n_groups = len(sizes)
    # random tie-break among equal sizes, then largest first
    order = np.lexsort((rng.permutation(n_groups), -sizes))
    load = np.zeros(n_folds, dtype=np.int64)
    group_fold = np.empty(n_groups, dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        group_fold[g] = f
        load[f] += sizes[g]
    return group_fold[codes]


def validation_folds(folds: pd.DataFrame) -> list[int]:
    """The folds that validate a model (all but -1)."""
    return sorted(int(f) for f in np.unique(folds["fold"]) if f >= 0)
