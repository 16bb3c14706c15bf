"""What changes with the size of the data set, in one place.

The budgets of the configs were set for thousands of posts (the demo: 3,000, SMPD: 305k).
On a data set of a few hundred posts the same numbers overfit what little there is to
validate on, or forbid the trees to split. Each rule here is a pure function of sizes;
the configured value is the cap it never exceeds, so large data sets run as configured.
(The fold scheme's own size rule, k-fold below `validation.min_holdout_posts`, lives in
models/validation.py with the schemes.)
"""
from __future__ import annotations

MIN_LEAF = 5             # below this a leaf mean is mostly noise
ROWS_PER_LEAF_CAP = 10   # min_data_in_leaf at most n_fit / 10: a tree on 160 rows can still make ~10 leaves
MIN_TRIALS = 5
VALIDATED_POSTS_PER_TRIAL = 20  # more trials than validated posts / 20 tune to the validation set's noise


def leaf_size(configured: int, n_fit: int) -> int:
    """min_data_in_leaf for a fit on `n_fit` rows: the configured value, capped at n_fit / 10 (not below 5)."""
    return int(min(configured, max(MIN_LEAF, n_fit // ROWS_PER_LEAF_CAP)))


def refit_rounds(best_iteration: int, n_fit: int, n_refit: int) -> int:
    """Boosting rounds of a refit on `n_refit` rows, from the best iteration of a fit on `n_fit` rows.

    More rows take proportionally more rounds to reach the same fit (the usual holdout practice).
    """
    return max(1, int(round(best_iteration * n_refit / max(n_fit, 1))))


def tuning_trials(configured: int, n_validated: int) -> int:
    """Optuna trials for a study validated on `n_validated` posts: at most the configured number."""
    return int(min(configured, max(MIN_TRIALS, n_validated // VALIDATED_POSTS_PER_TRIAL)))
