#!/usr/bin/env python
"""The reference model: a competitor's first honest LightGBM on the pipeline's metadata features.

What the pipeline must never lose to: the `meta` feature block plus the same target statistics as
the pipeline's `meta` member (features/target_stats.py `target_statistics`: smoothed user, class and
tag means at the default metadata settings, each row's from the train posts posted strictly before
it, the window a time holdout uses), and one LightGBM with fixed parameters that early-stops on its
own inner time split (the latest INNER_HOLDOUT of the train posts), then is refit on all train
posts with those rounds, scaled to the extra rows. No tuning, no blend, no other member.

    python benchmarks/reference.py --work-dir work/<data set> [--test-labels FILE]

reads the work folder of a pipeline run (posts and the `meta` block) and prints the
test scores (with labels) split by posts of users seen in train and unseen.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO_ROOT = Path(__file__).resolve().parent.parent

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.smpd import read_labels  # noqa: E402
from features.target_stats import target_statistics  # noqa: E402
from models.metrics import score_by_kind  # noqa: E402
from models.sizing import refit_rounds  # noqa: E402
from pipeline.config import MetadataConfig  # noqa: E402

PARAMS = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 20,
          "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "verbosity": -1,
          "num_threads": 2, "deterministic": True, "force_row_wise": True}
MAX_ROUNDS = 2000
EARLY_STOPPING_ROUNDS = 100
INNER_HOLDOUT = 0.2   # latest share of the train posts that picks the rounds
N_FOLDS = 5           # random inner folds: the target statistics' priors and `auto` smoothing
STATS = MetadataConfig()  # the default target statistics, whatever a panel row switches
KEY_COLUMNS = list(dict.fromkeys(STATS.target_stat_keys + ["Alltags", "Postdate"]))


def with_target_stats(X_fit: pd.DataFrame, keys_fit: pd.DataFrame, y_fit: np.ndarray, X_apply: pd.DataFrame,
                      keys_apply: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The features plus the `meta` member's target statistics (window `expanding`) of fit and apply rows."""
    inner = np.random.default_rng(seed).permutation(np.arange(len(y_fit)) % N_FOLDS)
    fit_stats, apply_stats = target_statistics(keys_fit, y_fit, inner, keys_apply, STATS.target_stat_keys,
                                               STATS.target_stat_smoothing, STATS.tag_target_stats,
                                               STATS.tag_min_count, window="expanding")
    return (pd.concat([X_fit.reset_index(drop=True), fit_stats], axis=1),
            pd.concat([X_apply.reset_index(drop=True), apply_stats], axis=1))


def reference_predictions(meta_train: pd.DataFrame, meta_test: pd.DataFrame, keys_train: pd.DataFrame,
                          y: np.ndarray, keys_test: pd.DataFrame, seed: int = 0) -> tuple[np.ndarray, int]:
    """(test predictions of the reference model, the rounds its inner time split chose).

    keys_*: the posts' target-statistic key columns (KEY_COLUMNS, with Postdate)."""
    y = np.asarray(y, dtype=np.float64)
    X_train = meta_train.drop(columns=["Pid"]).reset_index(drop=True)
    X_test = meta_test.drop(columns=["Pid"]).reset_index(drop=True)
    keys_train, keys_test = keys_train.reset_index(drop=True), keys_test.reset_index(drop=True)
    order = np.argsort(keys_train["Postdate"].to_numpy(np.float64), kind="stable")
    n_stop = max(1, int(round(INNER_HOLDOUT * len(y))))
    fit, stop = np.sort(order[:-n_stop]), np.sort(order[-n_stop:])
    X_fit, X_stop = with_target_stats(X_train.iloc[fit], keys_train.iloc[fit], y[fit], X_train.iloc[stop],
                                      keys_train.iloc[stop], seed)
    params = {**PARAMS, "seed": seed}
    booster = lgb.train(params, lgb.Dataset(X_fit, label=y[fit]), num_boost_round=MAX_ROUNDS,
                        valid_sets=[lgb.Dataset(X_stop, label=y[stop])],
                        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)])
    rounds = refit_rounds(booster.best_iteration or MAX_ROUNDS, len(fit), len(y))
    X_all, X_tst = with_target_stats(X_train, keys_train, y, X_test, keys_test, seed)
    refit = lgb.train(params, lgb.Dataset(X_all, label=y), num_boost_round=rounds)
    return refit.predict(X_tst), rounds


def reference_for_work_dir(work_dir: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(test predictions, seen-in-train flag per test post) for a pipeline work folder (a config folder:
    the posts tables are in the data set's folder above it)."""
    shared = work_dir if (work_dir / "posts_train.parquet").is_file() else work_dir.parent
    posts = {s: pd.read_parquet(shared / f"posts_{s}.parquet",
                                columns=list(dict.fromkeys(["Pid", "Uid", *KEY_COLUMNS])) + (["label"] if s == "train" else []))
             for s in ("train", "test")}
    meta = {s: pd.read_parquet(work_dir / "features" / f"meta_{s}.parquet") for s in ("train", "test")}
    for s in ("train", "test"):
        if not np.array_equal(meta[s]["Pid"].astype(str).to_numpy(), posts[s]["Pid"].astype(str).to_numpy()):
            raise ValueError(f"{work_dir}/features/meta_{s}.parquet does not list the posts of posts_{s}.parquet")
    uid_train, uid_test = posts["train"]["Uid"].to_numpy(), posts["test"]["Uid"].to_numpy()
    pred, _ = reference_predictions(meta["train"], meta["test"], posts["train"][KEY_COLUMNS],
                                    posts["train"]["label"].to_numpy(), posts["test"][KEY_COLUMNS], seed)
    return pred, np.isin(uid_test, uid_train)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--test-labels", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pred, seen = reference_for_work_dir(args.work_dir, args.seed)
    if args.test_labels is None:
        print(json.dumps({"n_test": len(pred), "unseen_share": float((~seen).mean())}))
        return 0
    print(json.dumps(score_by_kind(read_labels(args.test_labels, len(pred)), pred, seen), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
