#!/usr/bin/env python
"""Blend several finished runs (configs, seeds, teammates' machines) into one run of its own.

    python pipeline/blend_runs.py submissions/a submissions/b                 # -> submissions/blend-<UTC time>/
    python pipeline/blend_runs.py submissions/a submissions/b --run-name ab --method best
    python pipeline/blend_runs.py A B --test-labels hidden_test_labels.txt   # also score the blend on test

Each run folder keeps its final predictions for every post with their folds and labels
(predictions.parquet, written by the submit stage: reporting/run_predictions.py), so a
teammate's folder blends without its work folder. The runs must predict the same data set
(the same posts in the same order, the same train labels) under the same protocol and folds
(models/validation.py: protocol_name, folds_digest); anything else is one line of error.

The blend is the blend stage's (models/ensemble.blend_frame) with each run as a member: the
weights (ensemble.method: nnls or best) are fit on the selection posts only, the report slice
gets the blend of those weights and gives the only reported score, the selection posts'
own score is cross-fitted. A run's selection-post predictions are its own cross-fitted blend,
so no selection post's label reaches its own prediction at either level. Each run's level
shift, if it applied one (ensemble.recalibrate_level), carries over to test: the weights sum
to one; the blend of runs applies none of its own.

Writes a new run folder under --submissions-dir: submission.csv and submission.json (the
official formats), predictions.parquet (so the blend blends again), scores.json (validation on
the report slice, the weight of each run, each run's own scores), blend_runs.json (what was
blended), and a leaderboard row (member `blend-runs:<method>`, the runs' protocol and folds).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from common.io import UnreadableFile, read_json, read_parquet, write_json, write_parquet, write_text
from models.ensemble import METHODS, blend_frame
from models.validation import folds_digest, protocol_name, report_rows
from pipeline.catalog import (REPO_ROOT, blend_record, git_commit, leaderboard_file, run_name_argument,
                              run_predictions, run_scores)
from pipeline.config import EnsembleConfig
from reporting.report_page import leaderboard_position
from reporting.run_predictions import (check_table, posts_digest, test_scores, train_part,
                                       validation_by_kind)
from reporting.submission_format import (add_leaderboard_row, check_submission, leaderboard_row,
                                         read_leaderboard, submission_csv, submission_json)

log = logging.getLogger("smp")

# what scores.json must say for a folder to be blended (the submit stage writes them)
NEEDED_SCORES = ("validation", "protocol", "folds_digest", "dataset", "scheme")


class BlendRunsError(ValueError):
    """A run folder or a set of runs that cannot be blended: one line, naming the folder and what is wrong."""


@dataclass
class Run:
    name: str
    folder: Path
    scores: dict
    table: pd.DataFrame = field(repr=False)


def _older(folder: Path, what: str) -> BlendRunsError:
    return BlendRunsError(
        f"run folder {folder} was written before run folders kept what blending needs ({what}); rerun its "
        f"submit stage with the options of that run: python pipeline/run_all.py ... --run-name {folder.name} "
        "--stages submit")


def load_run(folder: Path) -> Run:
    """A finished run folder: its scores and its predictions table, checked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BlendRunsError(f"{folder} is not a run folder (no such directory)")
    scores_file, table_file = run_scores(folder), run_predictions(folder)
    if not scores_file.is_file():
        raise BlendRunsError(f"{folder} is not a finished run: no {scores_file.name} (a run writes it in its "
                             "submit stage; finish it with pipeline/run_all.py)")
    try:
        scores = read_json(scores_file)
    except UnreadableFile as err:
        raise BlendRunsError(str(err)) from None
    if not isinstance(scores, dict):
        raise BlendRunsError(f"{scores_file}: expected a JSON object, got {type(scores).__name__}")
    missing = [k for k in NEEDED_SCORES if k not in scores]
    if missing:
        raise _older(folder, f"{scores_file.name} has no {', '.join(missing)}")
    if not table_file.is_file():
        raise _older(folder, f"no {table_file.name}")
    try:
        table = read_parquet(table_file)
    except Exception as err:  # noqa: BLE001 - a damaged file: named, never a deep traceback
        raise BlendRunsError(f"cannot read {table_file} ({type(err).__name__}: {err})") from None
    try:
        check_table(table, table_file)
    except ValueError as err:
        raise BlendRunsError(str(err)) from None
    digest = folds_digest(train_part(table))
    if digest != scores["folds_digest"]:
        raise BlendRunsError(f"{table_file}: its folds (digest {digest}) are not those {scores_file.name} names "
                             f"({scores['folds_digest']}): the folder mixes two runs; rerun its submit stage")
    return Run(folder.name, folder, scores, table)


def check_runs(runs: list[Run]) -> None:
    """Runs blend only when they are distinct runs of one data set under one protocol and folds."""
    if len(runs) < 2:
        raise BlendRunsError(f"blending needs at least 2 run folders, got {len(runs)}")
    seen_folders: dict[Path, str] = {}
    for run in runs:
        where = run.folder.resolve()
        if where in seen_folders:
            raise BlendRunsError(f"run folder {run.folder} is given twice: each run blends once")
        seen_folders[where] = run.name
    names = [r.name for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BlendRunsError(f"two run folders are named {twice[0]!r} (the weights are per run name): copy one "
                             "under another name")
    first = runs[0]
    for run in runs[1:]:
        for key, what in (("dataset", "data set"), ("protocol", "validation protocol"),
                          ("folds_digest", "folds (digest)")):
            if run.scores[key] != first.scores[key]:
                raise BlendRunsError(f"runs {first.name} and {run.name} differ in {what}: {first.scores[key]!r} "
                                     f"vs {run.scores[key]!r}; only runs of one data set, protocol and folds blend "
                                     "(same data, same validation.* settings and seed)")
        a, b = posts_digest(first.table), posts_digest(run.table)
        if a != b:
            raise BlendRunsError(f"runs {first.name} and {run.name} predict different posts or train labels "
                                 f"(posts digest {a} vs {b}): they are runs of different data sets")
        if np.array_equal(first.table["pred"].to_numpy(), run.table["pred"].to_numpy(), equal_nan=True):
            raise BlendRunsError(f"runs {first.name} and {run.name} predict every post alike: the same run "
                                 "twice? Blend distinct runs")


def blend_runs(runs: list[Run], method: str, score_chunks: int) -> tuple[pd.DataFrame, dict]:
    """The blended predictions table (the first run's with the blend's `pred`) and the blend's summary.
    Weights from the selection posts only; the score is the report slice's (models/ensemble.blend_frame)."""
    check_runs(runs)
    table = runs[0].table.drop(columns="pred")
    train = train_part(runs[0].table)
    preds = {r.name: r.table["pred"].to_numpy(dtype=np.float64) for r in runs}
    blended, info = blend_frame(table, preds, train["label"].to_numpy(dtype=np.float64),
                                train["Postdate"].to_numpy(dtype=np.float64), method, score_chunks,
                                recalibrate=False, report=report_rows(train))
    return blended[list(runs[0].table.columns)], info


def blend_id(runs: list[Run], method: str, score_chunks: int) -> dict:
    """What a blend of runs is: the runs (folder, config, posts and folds) and the method; its digest
    is the leaderboard's config_digest, and a rerun may reuse the folder only for the same blend."""
    record = {"method": method, "score_chunks": score_chunks,
              "runs": [{"name": r.name, "folder": str(r.folder.resolve()),
                        "config_digest": r.scores.get("config_digest"), "posts_digest": posts_digest(r.table),
                        "folds_digest": r.scores["folds_digest"]} for r in runs]}
    record["digest"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    return record


def check_output(out: Path, runs: list[Run], record: dict) -> None:
    """The output folder is new, or a folder this same blend wrote (a rerun); never another run's."""
    if any(out.resolve() == r.folder.resolve() for r in runs):
        raise BlendRunsError(f"run folder {out} is one of the runs blended; choose another --run-name")
    if not out.exists():
        return
    mine = blend_record(out)
    try:
        earlier = read_json(mine) if mine.is_file() else None
    except UnreadableFile:
        earlier = None
    if not isinstance(earlier, dict) or earlier.get("digest") != record["digest"]:
        raise BlendRunsError(f"run folder {out} holds another run; choose another --run-name, or remove that "
                             "folder to replace it")


def default_test_labels(runs: list[Run]) -> Path | None:
    """The hidden test labels every run was scored with (the demo's), when they name one file that is there."""
    named = {r.scores.get("test_labels") for r in runs}
    if len(named) == 1 and None not in named and Path(next(iter(named))).is_file():
        return Path(next(iter(named)))
    return None


def write_blend(out: Path, runs: list[Run], blended: pd.DataFrame, info: dict, record: dict,
                labels: Path | None, submissions_dir: Path) -> dict:
    """The blend's run folder and its leaderboard row; returns its scores."""
    first = runs[0]
    write_json(blend_record(out), record)  # first: a rerun of the same blend may then reuse the folder
    test = blended[blended["split"] == "test"]
    pids, pred = test["Pid"].astype(str).to_numpy(), test["pred"].to_numpy(dtype=np.float64)
    check_submission(first.table.loc[first.table["split"] == "test", "Pid"].astype(str).to_numpy(), pids, pred)
    write_parquet(run_predictions(out), blended)
    write_text(out / "submission.csv", submission_csv(pids, pred))
    write_text(out / "submission.json", submission_json(pids, pred))
    val_by_kind = validation_by_kind(blended)
    test_score, test_by_kind = test_scores(blended, labels)
    protocol = protocol_name(first.scores["scheme"], int(report_rows(train_part(blended)).sum()))
    members = {r.name: r.scores["validation"] for r in runs}
    scores = {"validation": info["score"], "test": test_score, "members": members, "weights": info["weights"],
              "method": info["method"], "scheme": first.scores["scheme"], "protocol": protocol,
              "folds_digest": first.scores["folds_digest"], "scored_on": info["scored_on"],
              "n_scored": info["n_scored"], "validation_selection": info["score_selection"],
              "validation_in_sample": info["score_in_sample"], "recalibration": info.get("recalibration"),
              "folds": first.scores.get("folds"), "validation_by_kind": val_by_kind, "test_by_kind": test_by_kind,
              "dataset": first.scores["dataset"], "config_digest": record["digest"],
              "test_labels": str(labels) if labels is not None else None,
              "runs": {r.name: {"folder": str(r.folder.resolve()), "weight": info["weights"][r.name],
                                "validation": r.scores["validation"], "test": r.scores.get("test") or {},
                                "config_digest": r.scores.get("config_digest")} for r in runs}}
    write_json(run_scores(out), scores)
    row = leaderboard_row(
        run=out.name, commit=git_commit(), config_digest=record["digest"], dataset=first.scores["dataset"],
        scheme=first.scores["scheme"], protocol=protocol, folds_digest=first.scores["folds_digest"],
        member=f"blend-runs:{info['method']}", validation=info["score"], test=test_score, members=members,
        val_by_kind=val_by_kind, test_by_kind=test_by_kind, n_train=int((blended["split"] == "train").sum()),
        n_test=len(pids))
    add_leaderboard_row(leaderboard_file(submissions_dir), row)
    return scores


def summary_line(out: Path, runs: list[Run], scores: dict, submissions_dir: Path) -> str:
    """One line per run and one for the blend: validation (report slice) and test, weights, position."""
    def scored(values: dict) -> str:
        v, t = values["validation"], values.get("test") or {}
        return (f"validation SRC {v['src']:.4f} MAE {v['mae']:.4f}"
                + (f", test SRC {t['src']:.4f} MAE {t['mae']:.4f}" if t else ", test: no labels"))
    lines = [f"  run {r.name}: weight {scores['weights'][r.name]:.3f}; {scored(r.scores)}" for r in runs]
    board = read_leaderboard(leaderboard_file(submissions_dir))
    position = leaderboard_position(board, out.name, scores["dataset"]) if board is not None else None
    lines.append(f"  blend ({scores['method']}): {scored(scores)}; "
                 + (f"leaderboard {position[0]} of {position[1]} on {scores['dataset']}" if position
                    else "not on the leaderboard") + f"; run folder {out}")
    return "blend of runs, validation on the " + scores["scored_on"] + f" ({scores['n_scored']} posts):\n" + \
        "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_FOLDER", help="finished run folders (2 or more)")
    parser.add_argument("--run-name", type=run_name_argument,
                        help="name of the blend's run folder under --submissions-dir (default: blend-<UTC time>)")
    parser.add_argument("--submissions-dir", type=Path, default=REPO_ROOT / "submissions",
                        help="where the blend's run folder and leaderboard row go")
    parser.add_argument("--method", choices=METHODS, default=EnsembleConfig.method,
                        help="blend weights (as ensemble.method): nnls or best")
    parser.add_argument("--score-chunks", type=int, default=EnsembleConfig.score_chunks,
                        help="chunks of the cross-fitted selection score on a time holdout (as ensemble.score_chunks)")
    parser.add_argument("--test-labels", type=Path,
                        help="hidden test labels (one float a line) to score the blend (default: the file every "
                             "run was scored with, the demo's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    try:
        if args.score_chunks < 2:
            raise BlendRunsError(f"--score-chunks must be at least 2, got {args.score_chunks}")
        if args.test_labels is not None and not args.test_labels.is_file():
            raise BlendRunsError(f"--test-labels {args.test_labels} is not a file")
        runs = [load_run(folder) for folder in args.runs]
        check_runs(runs)  # before anything is written
        name = args.run_name or f"blend-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
        submissions_dir = args.submissions_dir.resolve()
        out = submissions_dir / name
        record = blend_id(runs, args.method, args.score_chunks)
        check_output(out, runs, record)
        blended, info = blend_runs(runs, args.method, args.score_chunks)
        labels = args.test_labels.resolve() if args.test_labels is not None else default_test_labels(runs)
        scores = write_blend(out, runs, blended, info, record, labels, submissions_dir)
    except (BlendRunsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.info("%s", summary_line(out, runs, scores, submissions_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
