"""Stage `submit`: checked submission files for the run and a leaderboard row.

Writes submissions/<run>/submission.csv and submission.json (test file order),
scores.json and config.yaml, and appends a row to submissions/leaderboard.csv.
With hidden test labels (`--test-labels`), the row also gets the test scores. The row names
the validation protocol and a digest of the folds (models/validation.py): the leaderboard
ranks a run only among runs of the same protocol and folds.
Scores are also split by kind of post: validation posts whose user has a post in the
part that fit their model (`seen`) or not (`unseen`), and test posts whose user is in
train or not; the share of unseen posts of each part goes beside them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from common.io import read_json, read_parquet, write_json, write_text
from features.blocks import check_post_order
from features.smpd import read_labels
from models.metrics import score, score_by_kind
from models.validation import folds_digest, run_protocol, scored_rows, seen_in_fit
from pipeline.catalog import RunContext, git_commit
from pipeline.stage import Stage
from reporting.submission_format import (add_leaderboard_row, check_submission, leaderboard_row, submission_csv,
                                          submission_json)

log = logging.getLogger(__name__)


def final_test_predictions(final: pd.DataFrame, test_pids: np.ndarray) -> np.ndarray:
    test = final[final["split"] == "test"]
    pids = test["Pid"].astype(str).to_numpy()
    check_submission(test_pids, pids, test["pred"].to_numpy())
    return test["pred"].to_numpy(dtype=np.float64)


def validation_by_kind(final: pd.DataFrame, posts: pd.DataFrame, folds: pd.DataFrame) -> dict:
    """Validation scores of the final predictions on the posts the run reports (the report slice,
    models/validation.py), split by posts of seen and unseen users."""
    train = final[final["split"] == "train"]
    check_post_order(train["Pid"], posts["Pid"], "the final predictions", "rerun the blend")
    check_post_order(folds["Pid"], posts["Pid"], "the folds", "rerun make_folds")
    fold = train["fold"].to_numpy()
    seen = seen_in_fit(posts["Uid"].to_numpy(), fold)
    rows = scored_rows(folds)
    return score_by_kind(posts["label"].to_numpy()[rows], train["pred"].to_numpy()[rows], seen[rows])


def run(ctx: RunContext) -> None:
    test_pids = read_parquet(ctx.posts("test"), columns=["Pid"])["Pid"].astype(str).to_numpy()
    final = read_parquet(ctx.final_preds)
    blend = read_json(ctx.final_summary)
    preds = final_test_predictions(final, test_pids)

    write_text(ctx.run_file("submission.csv"), submission_csv(test_pids, preds))
    write_text(ctx.run_file("submission.json"), submission_json(test_pids, preds))
    write_text(ctx.run_file("config.yaml"), yaml.safe_dump(ctx.config.to_dict(), sort_keys=True))

    posts = read_parquet(ctx.posts("train"), columns=["Pid", "Uid", "label"])
    test_uids = read_parquet(ctx.posts("test"), columns=["Uid"])["Uid"].to_numpy()
    test_seen = np.isin(test_uids, posts["Uid"].to_numpy())
    folds = read_parquet(ctx.folds)
    val_by_kind = validation_by_kind(final, posts, folds)
    test_scores, test_by_kind = {}, {"unseen_share": float((~test_seen).mean()), "n_unseen": int((~test_seen).sum()),
                                     "n_seen": int(test_seen.sum())}
    if ctx.test_labels is not None and Path(ctx.test_labels).is_file():
        labels = read_labels(ctx.test_labels, len(test_pids))
        test_scores = score(labels, preds)
        test_by_kind = score_by_kind(labels, preds, test_seen)
        log.info("test: SRC %.4f MAE %.4f MSE %.4f", test_scores["src"], test_scores["mae"], test_scores["mse"])
    plan = read_json(ctx.folds_plan)
    protocol, digest = run_protocol(folds, plan["scheme"]), folds_digest(folds)
    log.info("posts by users unseen in the fit part: validation %.1f%%, test %.1f%% (scheme %s)",
             100 * val_by_kind["unseen_share"], 100 * test_by_kind["unseen_share"], plan["scheme"])
    scores = {"validation": blend["score"], "test": test_scores, "members": blend["members"],
              "weights": blend["weights"], "method": blend["method"], "scheme": plan["scheme"],
              "protocol": protocol, "folds_digest": digest, "scored_on": blend.get("scored_on"),
              "validation_selection": blend.get("score_selection"),
              "folds": plan, "validation_by_kind": val_by_kind, "test_by_kind": test_by_kind}
    write_json(ctx.scores, scores)

    row = leaderboard_row(
        run=ctx.run_name, commit=git_commit(), config_digest=ctx.config.digest(), dataset=ctx.dataset,
        scheme=plan["scheme"], protocol=protocol, folds_digest=digest, member=f"blend:{blend['method']}",
        validation=blend["score"], test=test_scores, members=blend["members"], val_by_kind=val_by_kind,
        test_by_kind=test_by_kind, n_train=int((final["split"] == "train").sum()), n_test=len(test_pids))
    add_leaderboard_row(ctx.leaderboard, row)
    log.info("wrote %s and %s; leaderboard %s", ctx.run_file("submission.csv"), ctx.run_file("submission.json"),
             ctx.leaderboard)


def outputs(ctx: RunContext) -> list[Path]:
    return [ctx.run_file(name) for name in ("submission.csv", "submission.json", "scores.json", "config.yaml")]


STAGE = Stage(
    name="submit",
    run=run,
    inputs=lambda ctx: [ctx.posts("train"), ctx.posts("test"), ctx.folds, ctx.folds_plan, ctx.final_preds,
                        ctx.final_summary]
    + ([ctx.test_labels] if ctx.test_labels is not None and Path(ctx.test_labels).is_file() else []),
    outputs=outputs,
    per_run=True,
    modules=("reporting.submission_format", "models.metrics", "models.validation"),
    description="write the checked submission files and a leaderboard row",
)
