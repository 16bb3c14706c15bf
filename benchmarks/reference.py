#!/usr/bin/env python
"""The reference model: a plain notebook-style LightGBM on the pipeline's metadata features.

What a competitor's first notebook does, and what the pipeline must never lose to:
the `meta` feature block, plus each post's user's mean label (unsmoothed; out of fold,
5 random folds, for the train posts; over all train posts for the test posts; missing
for a user never seen in train), one LightGBM with fixed parameters and a fixed number
of rounds, no validation, no tuning, no blend.

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
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.smpd import read_labels  # noqa: E402
from models.metrics import score_by_kind  # noqa: E402

PARAMS = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 20,
          "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "verbosity": -1,
          "num_threads": 2, "deterministic": True, "force_row_wise": True}
ROUNDS = 500
N_FOLDS = 5


def user_means(uid_train: np.ndarray, y: np.ndarray, uid_test: np.ndarray, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Unsmoothed user mean label: out of fold for train posts, over all train posts for test (NaN: unseen)."""
    y = np.asarray(y, dtype=np.float64)
    fold = np.random.default_rng(seed).permutation(np.arange(len(y)) % N_FOLDS)
    train_mean = np.full(len(y), np.nan)
    for k in range(N_FOLDS):
        means = pd.Series(y[fold != k]).groupby(uid_train[fold != k]).mean()
        rows = fold == k
        train_mean[rows] = pd.Series(uid_train[rows]).map(means).to_numpy(dtype=np.float64)
    test_mean = pd.Series(uid_test).map(pd.Series(y).groupby(uid_train).mean()).to_numpy(dtype=np.float64)
    return train_mean, test_mean


def reference_predictions(meta_train: pd.DataFrame, meta_test: pd.DataFrame, uid_train: np.ndarray,
                          y: np.ndarray, uid_test: np.ndarray, seed: int = 0) -> np.ndarray:
    """Test predictions of the reference model."""
    X_train = meta_train.drop(columns=["Pid"]).reset_index(drop=True)
    X_test = meta_test.drop(columns=["Pid"]).reset_index(drop=True)
    X_train["user_mean"], X_test["user_mean"] = user_means(np.asarray(uid_train), y, np.asarray(uid_test), seed)
    booster = lgb.train({**PARAMS, "seed": seed}, lgb.Dataset(X_train, label=np.asarray(y, dtype=np.float64)),
                        num_boost_round=ROUNDS)
    return booster.predict(X_test)


def reference_for_work_dir(work_dir: Path, seed: int = 0, shared_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(test predictions, seen-in-train flag per test post) for a pipeline work folder (a config folder,
    with the posts tables in `shared_dir`, the data set's folder; default: work_dir)."""
    shared_dir = shared_dir or work_dir
    posts = {s: pd.read_parquet(shared_dir / f"posts_{s}.parquet", columns=["Pid", "Uid"] + (["label"] if s == "train" else []))
             for s in ("train", "test")}
    meta = {s: pd.read_parquet(work_dir / "features" / f"meta_{s}.parquet") for s in ("train", "test")}
    for s in ("train", "test"):
        if not np.array_equal(meta[s]["Pid"].astype(str).to_numpy(), posts[s]["Pid"].astype(str).to_numpy()):
            raise ValueError(f"{work_dir}/features/meta_{s}.parquet does not list the posts of posts_{s}.parquet")
    uid_train, uid_test = posts["train"]["Uid"].to_numpy(), posts["test"]["Uid"].to_numpy()
    pred = reference_predictions(meta["train"], meta["test"], uid_train, posts["train"]["label"].to_numpy(),
                                 uid_test, seed)
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
