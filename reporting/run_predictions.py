"""A run folder's predictions table: what the run predicted for every post, beside what the protocol
needs to score it and to blend it with other runs (pipeline/blend_runs.py).

One row per post, train posts first in the posts table's order, then test posts in test file order:
`Pid`, `split`, `fold` and `report` (the folds of models/validation.py: the report slice is kept
apart from every choice), `seen` (a validation post's user has a post in the part that fit its
model; a test post's user is in train), `label` (train; missing for test), `Postdate` (the blend's
time-ordered chunks) and `pred` (the run's final prediction: cross-fitted on the selection posts,
the blend's weights on the report slice and test; missing for a train post that never validates).
The table makes the folder self-contained: a teammate's run folder blends without its work folder.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from features.blocks import check_post_order
from features.smpd import read_labels
from models.metrics import score, score_by_kind
from models.validation import report_rows, scored_rows, seen_in_fit

COLUMNS = ("Pid", "split", "fold", "report", "seen", "label", "Postdate", "pred")


def predictions_table(final: pd.DataFrame, train_posts: pd.DataFrame, test_posts: pd.DataFrame,
                      folds: pd.DataFrame) -> pd.DataFrame:
    """The table from the blend's final predictions (Pid, split, fold, pred), the posts tables
    (Pid, Uid, Postdate; train also label) and the folds."""
    train = final[final["split"] == "train"]
    test = final[final["split"] == "test"]
    check_post_order(train["Pid"], train_posts["Pid"], "the final predictions", "rerun the blend")
    check_post_order(test["Pid"], test_posts["Pid"], "the final predictions", "rerun the blend")
    check_post_order(folds["Pid"], train_posts["Pid"], "the folds", "rerun make_folds")
    if not np.array_equal(train["fold"].to_numpy(), folds["fold"].to_numpy()):
        raise ValueError("the final predictions' folds are not those of folds.parquet: rerun the member stages")
    n_test = len(test)
    return pd.DataFrame({
        "Pid": np.r_[train["Pid"].astype(str).to_numpy(), test["Pid"].astype(str).to_numpy()],
        "split": np.r_[np.full(len(train), "train"), np.full(n_test, "test")],
        "fold": np.r_[train["fold"].to_numpy(dtype=np.int64), test["fold"].to_numpy(dtype=np.int64)],
        "report": np.r_[report_rows(folds), np.zeros(n_test, dtype=bool)],
        "seen": np.r_[seen_in_fit(train_posts["Uid"].to_numpy(), folds["fold"].to_numpy()),
                      np.isin(test_posts["Uid"].to_numpy(), train_posts["Uid"].to_numpy())],
        "label": np.r_[train_posts["label"].to_numpy(dtype=np.float64), np.full(n_test, np.nan)],
        "Postdate": np.r_[train_posts["Postdate"].to_numpy(dtype=np.float64),
                          test_posts["Postdate"].to_numpy(dtype=np.float64)],
        "pred": np.r_[train["pred"].to_numpy(dtype=np.float64), test["pred"].to_numpy(dtype=np.float64)],
    })


def check_table(table: pd.DataFrame, path: Path) -> None:
    """A predictions table as predictions_table writes it, or a ValueError naming the file and what is wrong."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; expected {list(COLUMNS)}")
    split = table["split"].to_numpy()
    if not set(np.unique(split)) <= {"train", "test"} or not (split == "train").any() or not (split == "test").any():
        raise ValueError(f"{path}: field split: expected train and test rows only, got {sorted(set(split))}")
    first_test = int(np.argmax(split == "test"))
    if (split[first_test:] != "test").any():
        raise ValueError(f"{path}: row {first_test + int(np.argmax(split[first_test:] != 'test'))}: a train row "
                         "after the test rows (expected train posts first, then test posts)")
    train = split == "train"
    # a train post that never validates (fold -1: the early part of a time holdout) has no prediction
    predicted = ~train | (table["fold"].to_numpy() >= 0)
    bad = predicted & ~np.isfinite(table["pred"].to_numpy(dtype=np.float64))
    bad_label = train & ~np.isfinite(table["label"].to_numpy(dtype=np.float64))
    for what, rows in (("pred", bad), ("label", bad_label)):
        if rows.any():
            row = int(np.argmax(rows))
            raise ValueError(f"{path}: row {row} (post {table['Pid'].iloc[row]}): field {what}: expected a finite "
                             f"number, got {table[what].iloc[row]}")


def train_part(table: pd.DataFrame) -> pd.DataFrame:
    """The train rows as a folds table (Pid, fold, report) with the rest of the columns."""
    return table[table["split"] == "train"].reset_index(drop=True)


def validation_by_kind(table: pd.DataFrame) -> dict:
    """Scores on the posts the run reports (the report slice; the selection posts when there is none),
    split by posts of seen and unseen users."""
    train = train_part(table)
    rows = scored_rows(train)
    return score_by_kind(train["label"].to_numpy()[rows], train["pred"].to_numpy()[rows],
                         train["seen"].to_numpy(dtype=bool)[rows])


def test_scores(table: pd.DataFrame, labels_file: Path | None) -> tuple[dict, dict]:
    """Test scores (empty without a labels file) and their split by seen and unseen users (without
    labels: the shares only)."""
    test = table[table["split"] == "test"]
    pred = test["pred"].to_numpy(dtype=np.float64)
    seen = test["seen"].to_numpy(dtype=bool)
    if labels_file is None or not Path(labels_file).is_file():
        return {}, {"unseen_share": float((~seen).mean()), "n_unseen": int((~seen).sum()), "n_seen": int(seen.sum())}
    labels = read_labels(labels_file, len(test))
    return score(labels, pred), score_by_kind(labels, pred, seen)


def posts_digest(table: pd.DataFrame) -> str:
    """12 hex digits naming the data set a table predicts: its posts (split and Pid, in order) and the
    train labels. Runs blend only on equal digests."""
    digest = hashlib.sha256()
    digest.update(table["split"].astype(str).str.cat(sep=",").encode())
    digest.update(b"|" + table["Pid"].astype(str).str.cat(sep=",").encode())
    train = (table["split"] == "train").to_numpy()
    digest.update(b"|" + np.ascontiguousarray(table["label"].to_numpy(dtype=np.float64)[train]).tobytes())
    return digest.hexdigest()[:12]
