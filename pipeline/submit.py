"""Stage `submit`: checked submission files for the run and a leaderboard row.

Writes submissions/<run>/submission.csv and submission.json (test file order),
scores.json, config.yaml and predictions.parquet (every post's final prediction with its fold and
label: reporting/run_predictions.py; what pipeline/blend_runs.py blends), and appends a row to
submissions/leaderboard.csv.
With hidden test labels (`--test-labels`), the row also gets the test scores. The row names
the validation protocol and a digest of the folds (models/validation.py): the leaderboard
ranks a run only among runs of the same protocol and folds.
With validation.adversarial on, scores.json gets an `adversarial` section (stage `adversarial`: the
train-versus-test AUC, the most shifted features, the train posts most like test ones).
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

from common.io import read_json, read_parquet, write_json, write_parquet, write_text
from models.validation import folds_digest, run_protocol
from pipeline.catalog import RunContext, git_commit
from pipeline.stage import Stage
from reporting.run_predictions import predictions_table, validation_by_kind
from reporting.run_predictions import test_scores as run_test_scores
from reporting.submission_format import (add_leaderboard_row, check_submission, leaderboard_row, submission_csv,
                                          submission_json)

log = logging.getLogger(__name__)


def final_test_predictions(final: pd.DataFrame, test_pids: np.ndarray) -> np.ndarray:
    test = final[final["split"] == "test"]
    pids = test["Pid"].astype(str).to_numpy()
    check_submission(test_pids, pids, test["pred"].to_numpy())
    return test["pred"].to_numpy(dtype=np.float64)


def run(ctx: RunContext) -> None:
    test_pids = read_parquet(ctx.posts("test"), columns=["Pid"])["Pid"].astype(str).to_numpy()
    final = read_parquet(ctx.final_preds)
    blend = read_json(ctx.final_summary)
    preds = final_test_predictions(final, test_pids)

    write_text(ctx.run_file("submission.csv"), submission_csv(test_pids, preds))
    write_text(ctx.run_file("submission.json"), submission_json(test_pids, preds))
    write_text(ctx.run_file("config.yaml"), yaml.safe_dump(ctx.config.to_dict(), sort_keys=True))

    posts = read_parquet(ctx.posts("train"), columns=["Pid", "Uid", "label", "Postdate"])
    test_posts = read_parquet(ctx.posts("test"), columns=["Pid", "Uid", "Postdate"])
    folds = read_parquet(ctx.folds)
    table = predictions_table(final, posts, test_posts, folds)
    write_parquet(ctx.run_predictions, table)  # the folder blends with other runs without its work folder
    val_by_kind = validation_by_kind(table)
    test_scores, test_by_kind = run_test_scores(table, ctx.test_labels)
    if test_scores:
        log.info("test: SRC %.4f MAE %.4f MSE %.4f", test_scores["src"], test_scores["mae"], test_scores["mse"])
    plan = read_json(ctx.folds_plan)
    protocol, digest = run_protocol(folds, plan["scheme"]), folds_digest(folds)
    log.info("posts by users unseen in the fit part: validation %.1f%%, test %.1f%% (scheme %s)",
             100 * val_by_kind["unseen_share"], 100 * test_by_kind["unseen_share"], plan["scheme"])
    scores = {"validation": blend["score"], "test": test_scores, "members": blend["members"],
              "weights": blend["weights"], "method": blend["method"], "scheme": plan["scheme"],
              "protocol": protocol, "folds_digest": digest, "scored_on": blend.get("scored_on"),
              "validation_selection": blend.get("score_selection"),
              **({"refit_check": blend["refit_check"]} if "refit_check" in blend else {}),
              "folds": plan, "validation_by_kind": val_by_kind, "test_by_kind": test_by_kind,
              # what pipeline/blend_runs.py checks before it blends runs: same data set, same folds
              "dataset": ctx.dataset, "config_digest": ctx.config.digest(), "work_dir": str(ctx.config_dir),
              "test_labels": str(ctx.test_labels) if ctx.test_labels is not None else None}
    if ctx.config.validation.adversarial:
        scores["adversarial"] = adversarial_scores(read_json(ctx.adversarial_summary))
    write_json(ctx.scores, scores)

    row = leaderboard_row(
        run=ctx.run_name, commit=git_commit(), config_digest=ctx.config.digest(), dataset=ctx.dataset,
        scheme=plan["scheme"], protocol=protocol, folds_digest=digest, member=f"blend:{blend['method']}",
        validation=blend["score"], test=test_scores, members=blend["members"], val_by_kind=val_by_kind,
        test_by_kind=test_by_kind, n_train=int((final["split"] == "train").sum()), n_test=len(test_pids))
    add_leaderboard_row(ctx.leaderboard, row)
    log.info("wrote %s and %s; leaderboard %s", ctx.run_file("submission.csv"), ctx.run_file("submission.json"),
             ctx.leaderboard)


TOP_SHIFTED = 10  # features of the adversarial classifier in scores.json (its summary lists them all)


def adversarial_scores(summary: dict) -> dict:
    """scores.json's `adversarial` section: the stage's summary with the most shifted features only."""
    out = {k: v for k, v in summary.items() if k != "features"}
    out["top_shifted_features"] = summary["features"][:TOP_SHIFTED]
    return out


def outputs(ctx: RunContext) -> list[Path]:
    return [ctx.run_file(name) for name in ("submission.csv", "submission.json", "scores.json", "config.yaml")] + \
        [ctx.run_predictions]


STAGE = Stage(
    name="submit",
    run=run,
    inputs=lambda ctx: [ctx.posts("train"), ctx.posts("test"), ctx.folds, ctx.folds_plan, ctx.final_preds,
                        ctx.final_summary]
    + ([ctx.adversarial_summary] if ctx.config.validation.adversarial else [])
    + ([ctx.test_labels] if ctx.test_labels is not None and Path(ctx.test_labels).is_file() else []),
    outputs=outputs,
    per_run=True,
    modules=("reporting.submission_format", "reporting.run_predictions", "models.metrics", "models.validation",
             "features.blocks", "features.smpd"),
    description="write the checked submission files and a leaderboard row",
)
