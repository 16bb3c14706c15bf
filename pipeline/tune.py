#!/usr/bin/env python
"""Stage `tune`: Optuna tuning of LightGBM on one feature set (tuning.feature_set), or with
tuning.per_member a study per active LightGBM member, tuning.feature_set first, sharing the budget.

Writes tuning/best_params.json ({"params": ...} and with per_member {"members": {name: {"params": ...}}},
read by train_trees) and
study_summary.json (every trial, for the run's history plot) in the config folder.
The study lives in tuning.storage (default: SQLite file work/<ds>/tuning/study.db,
shared by the data set's configs), so rerunning an
interrupted stage resumes it, and more workers can join it at any time:

    python pipeline/tune.py --data-dir /data/smpd --config configs/smpd.yaml      # one more worker
    python pipeline/tune.py --data-dir /data/smpd --config configs/smpd.yaml \
        --set tuning.storage=postgresql://user:pw@host/db

A worker takes run_all.py's arguments (--data-dir, --work-dir, --config, --set) with the
same meaning and finds the same config folder work/<data set>/config-<digest> from them
(--work-dir is the data set's folder, as in run_all.py); the tune stage must have started
there (it saves the config a worker checks against). All workers share the trial budget
tuning.n_trials. The stage itself starts tuning.workers - 1 extra processes and waits for every trial.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from models import sizing, tuning  # noqa: E402
from models.validation import report_rows, selection_rows  # noqa: E402
from common.io import write_json, write_text  # noqa: E402
from pipeline.config import Config, ConfigError  # noqa: E402
from pipeline.catalog import RunContext, add_context_arguments, make_context, worker_config_path  # noqa: E402
from pipeline.stage import Stage  # noqa: E402
from pipeline.members import lightgbm_members, load_member_data, sample_selection_mask  # noqa: E402

log = logging.getLogger(__name__)


def tuned_members(cfg: Config) -> dict[str, list[str]]:
    """The members tuned, in the order they are tuned: tuning.feature_set, then (tuning.per_member)
    every other active LightGBM member. Their blocks."""
    members = lightgbm_members(cfg)
    name = cfg.tuning.feature_set
    if name not in members:
        raise ValueError(f"tuning.feature_set {name!r} is not an active gbdt.feature_sets member under this "
                         f"config; active: {sorted(members)}")
    later = {m: b for m, b in members.items() if m != name} if cfg.tuning.per_member else {}
    return {name: members[name], **later}


# --- the study --------------------------------------------------------------------------------
def objective_digest(cfg: Config, blocks: list[str], X: pd.DataFrame, y: np.ndarray, folds: pd.DataFrame) -> str:
    """Digest of everything that defines the objective: trials of one study must be comparable.

    The budget, time cap, storage, workers, sampler seed and pruning settings are left
    out: changing them continues the same study.
    """
    t, g = cfg.tuning, cfg.gbdt
    data = hashlib.sha256()
    data.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    data.update(",".join(X.columns).encode())
    report = report_rows(folds)  # the report slice's labels never reach a trial (models/validation.py)
    data.update(np.where(report, np.nan, np.asarray(y, dtype=np.float64)).tobytes())
    data.update(folds[["fold", "feature_fold"]].to_numpy(dtype=np.int64).tobytes())
    if report.any():
        data.update(report.tobytes())
    parts = {
        "metric": t.metric, "search_space": t.search_space, "blocks": blocks,
        "gbdt": {"params": g.params, "num_boost_round": g.num_boost_round,
                 "early_stopping_rounds": g.early_stopping_rounds, "seed": g.seeds[0],
                 "adapt_to_size": g.adapt_to_size},
        "metadata": dataclasses.asdict(cfg.metadata), "sample_selection": cfg.prototype.sample_selection,
        "data": data.hexdigest(),
    }
    if g.stop_metric != "l2":  # only when set: studies of l2-stopped trials keep their names
        parts["gbdt"]["stop_metric"] = g.stop_metric
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def prepare(ctx: RunContext, member: str | None = None):
    """The study (created or loaded) of `member` (default tuning.feature_set), the objective, the storage
    URL, the first trial's parameters and the whole trial budget (of every member together)."""
    cfg, t = ctx.config, ctx.config.tuning
    if t.metric not in tuning.METRICS:
        raise ValueError(f"tuning.metric must be one of {sorted(tuning.METRICS)}, got {t.metric!r}")
    if t.n_trials < 1:
        raise ValueError(f"tuning.n_trials must be at least 1, got {t.n_trials}")
    space = tuning.search_space(t.search_space)
    blocks = tuned_members(cfg)[member or t.feature_set]
    X, _, y, folds, stats, _ = load_member_data(ctx, blocks)
    fit_mask = sample_selection_mask(ctx, blocks, len(y))
    g = cfg.gbdt
    objective = tuning.lightgbm_objective(
        X, y, folds, space, g.params, metric=t.metric, target_stats=stats, fit_mask=fit_mask,
        num_boost_round=g.num_boost_round, early_stopping_rounds=g.early_stopping_rounds,
        num_threads=g.num_threads, seed=g.seeds[0], report_interval=t.report_interval, pruning=t.pruning,
        adapt_to_size=g.adapt_to_size, stop_metric=g.stop_metric)
    url = ctx.study_storage
    # a member's own study holds a share of the budget: never the shared study's trials
    name = f"{t.study_name}-{f'{member or t.feature_set}-' if t.per_member else ''}{objective_digest(cfg, blocks, X, y, folds)}"
    pruner = tuning.make_pruner(t.prune_startup_trials, t.prune_warmup_rounds, t.pruning, t.prune_percentile)
    study = tuning.open_study(url, name, t.metric, t.seed, t.startup_trials, pruner, t.heartbeat_s)
    study.set_user_attr("feature_set", member or t.feature_set)
    first = tuning.base_trial_params(g.params, space) if t.base_first else None
    n_trials = sizing.tuning_trials(t.n_trials, int(selection_rows(folds).sum())) if t.adapt_to_size else t.n_trials
    if n_trials < t.n_trials:
        log.info("tuning: %d trials (tuning.n_trials %d is the cap; %d validated posts)", n_trials, t.n_trials,
                 int(selection_rows(folds).sum()))
    return study, objective, url, first, n_trials


def tune_members(ctx: RunContext, worker: str) -> dict[str, tuple[optuna.Study, str, int]]:
    """This worker's trials on every tuned member's study in turn; {member: (study, storage URL, its budget)}.

    With tuning.per_member the budget is split (models.tuning.split_trial_budget) and each later member's
    study starts from the first member's best parameters, read once every trial of that study finished.
    tuning.timeout_s caps the whole loop; a member left without trials keeps the first member's parameters.
    """
    t = ctx.config.tuning
    members = list(tuned_members(ctx.config))
    started = None
    studies: dict[str, tuple[optuna.Study, str, int]] = {}
    budgets: dict[str, int] = {}
    warm = None
    for member in members:
        study, objective, url, first, n_trials = prepare(ctx, member)
        budgets = budgets or tuning.split_trial_budget(n_trials, members, t.per_member_first_share)
        log.info("tuning study %s in %s: %d of %d trials%s (worker %s)", study.study_name, tuning.redact(url),
                 budgets[member], n_trials, f", starting from {members[0]}'s best" if warm is not None else "", worker)
        started = started or time.monotonic()
        left = max(t.timeout_s - (time.monotonic() - started), 1e-3) if t.timeout_s > 0 else 0.0
        ran = tuning.run_worker(study, objective, budgets[member], left, storage_url=url, worker=worker,
                                first_params=first, warm_params=warm)
        log.info("worker %s ran %d trial(s) of study %s", worker, ran, study.study_name)
        studies[member] = (study, url, budgets[member])
        if member == members[0] and len(members) > 1:
            wait_for_running(study)  # other workers' trials count toward the best
            warm = tuning.study_summary(study, t.metric, budgets[member]).get("best_params")
    return studies


def wait_for_running(study: optuna.Study, poll_s: float = 2.0) -> None:
    """Wait until no trial is running (other workers' trials count toward the best)."""
    said = ""
    while tuning.count_trials(study, (optuna.trial.TrialState.RUNNING,)):
        tuning.fail_dead_local_trials(study)
        tuning.fail_stale_trials(study)  # a dead worker's trial fails after the grace period
        line = tuning.waiting_line(study, "0")
        if line != said and tuning.count_trials(study, (optuna.trial.TrialState.RUNNING,)):
            log.info("%s", line)
            said = line
        time.sleep(poll_s)


def write_results(ctx: RunContext, study: optuna.Study, url: str, seconds: float, n_trials: int,
                  members: dict[str, tuple[optuna.Study, str, int]] | None = None) -> dict:
    """The first member's study is the summary's; `members` (tuning.per_member) adds each member's best."""
    t = ctx.config.tuning
    # the study's own budget: its first trials, never those a config with a larger budget added
    budget = next((n for s, _, n in members.values() if s is study), n_trials) if members else n_trials
    summary = tuning.study_summary(study, t.metric, budget)
    if "best_params" not in summary:
        raise RuntimeError(f"study {study.study_name}: no trial completed ({summary['counts']}); "
                           "see the log above for failed trials, or raise tuning.n_trials")
    summary.update({"storage": tuning.redact(url), "feature_set": t.feature_set, "n_trials": n_trials,
                    "tuning_seconds": round(seconds, 1), "workers": t.workers,
                    "trial_seconds_total": round(sum(r["seconds"] or 0.0 for r in summary["trials"]), 1)})
    best = {"params": summary["best_params"], "value": summary["best_value"], "metric": t.metric,
            "trial": summary["best_trial"], "scores": summary["best_scores"], "study_name": study.study_name,
            "feature_set": t.feature_set,
            "n_finished": sum(summary["counts"].get(s, 0) for s in ("COMPLETE", "PRUNED"))}
    if members:
        own = {m: tuning.study_summary(s, t.metric, n) for m, (s, _, n) in members.items()}
        summary["members"] = {m: {k: o.get(k) for k in ("study_name", "counts", "best_value", "best_trial", "best_params")}
                              | {"n_trials": members[m][2],
                                 "trial_seconds_total": round(sum(r["seconds"] or 0.0 for r in o["trials"]), 1)}
                              for m, o in own.items()}
        summary["trial_seconds_total"] = round(sum(o["trial_seconds_total"] for o in summary["members"].values()), 1)
        best["members"] = {m: {"params": o["best_params"], "value": o["best_value"], "trial": o["best_trial"],
                               "study_name": o["study_name"], "n_trials": members[m][2]}
                           for m, o in own.items() if "best_params" in o}
    write_json(ctx.tuning_summary, summary)
    # no timings here: this file is an input of train_trees, so it must not change when nothing else does
    write_json(ctx.best_params, best)
    log.info("tuning: best %s %.4f (trial %d) in %.1f s; %s", t.metric, summary["best_value"], summary["best_trial"],
             seconds, summary["counts"])
    return summary


# --- stage ----------------------------------------------------------------------------------
def quiet_optuna() -> None:
    """Optuna's own line per trial off: run_worker logs one line per trial (models/tuning.trial_line)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def sqlite_problem(path: Path) -> str:
    """Why the SQLite file at `path` cannot be used as a study ('' when it can)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            rows = con.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as err:
        return str(err) or type(err).__name__
    return "" if rows == [("ok",)] else str(rows[0][0])


def set_aside_unreadable_study(url: str) -> None:
    """A SQLite study file that cannot be read (truncated, overwritten) is named and moved aside,
    so that the study starts again instead of every rerun failing the same way."""
    if not url.startswith("sqlite:///"):
        return  # a database server reports its own errors, naming itself
    path = Path(url[len("sqlite:///"):])
    reason = sqlite_problem(path) if path.is_file() else ""
    if reason:
        aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        log.warning("cannot read %s (%s); moved aside to %s, rebuilding the study", path, reason, aside.name)


def run(ctx: RunContext) -> None:
    t = ctx.config.tuning
    quiet_optuna()
    started = time.perf_counter()
    set_aside_unreadable_study(ctx.study_storage)
    # keys in their order: the order of tuning.search_space is the order of the draws, which must match
    write_text(worker_config_path(ctx.config_dir), yaml.safe_dump(ctx.config.to_dict(), sort_keys=False))
    members = list(tuned_members(ctx.config))
    # the stage's own extra workers find this config folder as a worker on another machine would
    worker_args = worker_arguments(ctx)
    log.info("tuning %s over %d worker(s); more workers: python pipeline/tune.py %s",
             ", ".join(members), t.workers, " ".join(worker_args))
    extra = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *worker_args, "--worker", str(i)],
                              cwd=REPO_ROOT) for i in range(1, t.workers)]
    try:
        studies = tune_members(ctx, worker="0")
    finally:
        codes = [p.wait() for p in extra]
    if any(codes):
        raise RuntimeError(f"tuning worker process(es) failed with exit codes {codes}; rerun to resume the study")
    for study, _, _ in studies.values():
        wait_for_running(study)
    study, url, _ = studies[members[0]]
    write_results(ctx, study, url, time.perf_counter() - started, sum(n for _, _, n in studies.values()),
                  studies if t.per_member else None)


def inputs(ctx: RunContext) -> list[Path]:
    paths = [ctx.posts("train"), ctx.posts("test"), ctx.folds]
    blocks = dict.fromkeys(b for bs in tuned_members(ctx.config).values() for b in bs)
    return paths + [ctx.feature_block(b, s) for b in blocks for s in ("train", "test")]


STAGE = Stage(
    name="tune",
    run=run,
    inputs=inputs,
    outputs=lambda ctx: [ctx.best_params, ctx.tuning_summary],
    sections=("tuning", "gbdt", "metadata", "prototype", "users"),
    modules=("models.tuning", "models.cv", "models.gbdt", "models.sizing", "features.target_stats", "features.blocks",
             "features.user_features", "models.validation", "pipeline.members"),
    enabled=lambda ctx: ctx.config.tuning.enabled,
    description="Optuna tuning of LightGBM (persistent study, pruning, shared trial budget)",
)


# --- extra worker -----------------------------------------------------------------------------
def worker_arguments(ctx: RunContext) -> list[str]:
    """tune.py's arguments that find ctx's config folder: the data set, its folder and the saved config."""
    data = [] if ctx.is_demo else ["--data-dir", str(ctx.data_dir)]
    return [*data, "--work-dir", str(ctx.shared_dir), "--config", str(worker_config_path(ctx.config_dir))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_context_arguments(parser)
    parser.add_argument("--worker", default=None, help="name of this worker in the trials (default: host:pid)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        ctx = make_context(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not worker_config_path(ctx.config_dir).is_file():
        print(f"error: {ctx.config_dir} has no tuning/config.yaml: no tune stage has started for this data set "
              "and config; start it (python pipeline/run_all.py with the same --data-dir, --work-dir, --config "
              "and --set) or pass the --config and --set it ran with", file=sys.stderr)
        return 2
    saved = yaml.safe_load(worker_config_path(ctx.config_dir).read_text())["tuning"].get("storage")
    if saved != ctx.config.tuning.storage:
        log.warning("this worker's tuning.storage (%s) is not the one the tune stage saved (%s): it joins another "
                    "study unless both reach the same database", tuning.redact(str(ctx.config.tuning.storage)),
                    tuning.redact(str(saved)))
    ctx.run_name = "tune-worker"
    quiet_optuna()
    worker = args.worker or f"{socket.gethostname()}:{os.getpid()}"
    log.info("worker %s joins the tuning of %s in %s", worker, ", ".join(tuned_members(ctx.config)), ctx.config_dir)
    tune_members(ctx, worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
