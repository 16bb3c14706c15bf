#!/usr/bin/env python
"""Stage `tune`: Optuna tuning of LightGBM on one feature set (tuning.feature_set).

Writes tuning/best_params.json ({"params": ...}, read by train_gbdt) and
study_summary.json (every trial, for the run's history plot) in the config folder.
The study lives in tuning.storage (default: SQLite file work/<ds>/tuning/study.db,
shared by the data set's configs), so rerunning an
interrupted stage resumes it, and more workers can join it at any time:

    python pipeline/tune.py --work-dir work/<ds>/config-<d>            # one more worker, same machine
    python pipeline/tune.py --work-dir work/<ds>/config-<d> --set tuning.storage=postgresql://user:pw@host/db

--work-dir is the config folder the stage runs in (the stage's log names it). A
worker reads the config the stage saved there (tuning/config.yaml) unless given
--config; all workers share the trial budget tuning.n_trials. The stage itself
starts tuning.workers - 1 extra processes and waits for every trial.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import socket
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
from common.io import read_json, write_json, write_text  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.catalog import RunContext, worker_config_path, worker_context_path  # noqa: E402
from pipeline.stage import Stage  # noqa: E402
from pipeline.members import lightgbm_members, load_member_data, sample_selection_mask  # noqa: E402

log = logging.getLogger(__name__)


def tuned_blocks(cfg: Config) -> list[str]:
    members = lightgbm_members(cfg)
    name = cfg.tuning.feature_set
    if name not in members:
        raise ValueError(f"tuning.feature_set {name!r} is not an active gbdt.feature_sets member under this "
                         f"config; active: {sorted(members)}")
    return members[name]


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
    data.update(np.asarray(y, dtype=np.float64).tobytes())
    data.update(folds[["fold", "stat_fold"]].to_numpy(dtype=np.int64).tobytes())
    parts = {
        "metric": t.metric, "search_space": t.search_space, "blocks": blocks,
        "gbdt": {"params": g.params, "num_boost_round": g.num_boost_round,
                 "early_stopping_rounds": g.early_stopping_rounds, "seed": g.seeds[0],
                 "adapt_to_size": g.adapt_to_size},
        "metadata": dataclasses.asdict(cfg.metadata), "sample_selection": cfg.prototype.sample_selection,
        "data": data.hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def prepare(ctx: RunContext):
    """The study (created or loaded), the objective, the storage URL and the first trial's parameters."""
    cfg, t = ctx.config, ctx.config.tuning
    if t.metric not in tuning.METRICS:
        raise ValueError(f"tuning.metric must be one of {sorted(tuning.METRICS)}, got {t.metric!r}")
    if t.n_trials < 1:
        raise ValueError(f"tuning.n_trials must be at least 1, got {t.n_trials}")
    space = tuning.search_space(t.search_space)
    blocks = tuned_blocks(cfg)
    X, _, y, folds, stats, _ = load_member_data(ctx, blocks)
    fit_mask = sample_selection_mask(ctx, blocks, len(y))
    g = cfg.gbdt
    objective = tuning.lightgbm_objective(
        X, y, folds, space, g.params, metric=t.metric, target_stats=stats, fit_mask=fit_mask,
        num_boost_round=g.num_boost_round, early_stopping_rounds=g.early_stopping_rounds,
        num_threads=g.num_threads, seed=g.seeds[0], report_interval=t.report_interval, pruning=t.pruning,
        adapt_to_size=g.adapt_to_size)
    url = ctx.study_storage
    name = f"{t.study_name}-{objective_digest(cfg, blocks, X, y, folds)}"
    pruner = tuning.make_pruner(t.prune_startup_trials, t.prune_warmup_rounds, t.pruning, t.prune_percentile)
    study = tuning.open_study(url, name, t.metric, t.seed, t.startup_trials, pruner, t.heartbeat_s)
    study.set_user_attr("feature_set", t.feature_set)
    first = tuning.base_trial_params(g.params, space) if t.base_first else None
    n_trials = sizing.tuning_trials(t.n_trials, int((folds["fold"] >= 0).sum())) if t.adapt_to_size else t.n_trials
    if n_trials < t.n_trials:
        log.info("tuning: %d trials (tuning.n_trials %d is the cap; %d validated posts)", n_trials, t.n_trials,
                 int((folds["fold"] >= 0).sum()))
    return study, objective, url, first, n_trials


def wait_for_running(study: optuna.Study, poll_s: float = 2.0) -> None:
    """Wait until no trial is running (other workers' trials count toward the best)."""
    while tuning.count_trials(study, (optuna.trial.TrialState.RUNNING,)):
        tuning.fail_stale_trials(study)  # a dead worker's trial fails after the grace period
        time.sleep(poll_s)


def write_results(ctx: RunContext, study: optuna.Study, url: str, seconds: float, n_trials: int) -> dict:
    t = ctx.config.tuning
    summary = tuning.study_summary(study, t.metric)
    if "best_params" not in summary:
        raise RuntimeError(f"study {study.study_name}: no trial completed ({summary['counts']}); "
                           "see the log above for failed trials, or raise tuning.n_trials")
    summary.update({"storage": tuning.redact(url), "feature_set": t.feature_set, "n_trials": n_trials,
                    "tuning_seconds": round(seconds, 1), "workers": t.workers,
                    "trial_seconds_total": round(sum(r["seconds"] or 0.0 for r in summary["trials"]), 1)})
    write_json(ctx.tuning_summary, summary)
    # no timings here: this file is an input of train_gbdt, so it must not change when nothing else does
    write_json(ctx.best_params, {
        "params": summary["best_params"], "value": summary["best_value"], "metric": t.metric,
        "trial": summary["best_trial"], "scores": summary["best_scores"], "study_name": study.study_name,
        "feature_set": t.feature_set, "n_finished": sum(summary["counts"].get(s, 0) for s in ("COMPLETE", "PRUNED")),
    })
    log.info("tuning: best %s %.4f (trial %d) in %.1f s; %s", t.metric, summary["best_value"], summary["best_trial"],
             seconds, summary["counts"])
    return summary


# --- stage ----------------------------------------------------------------------------------
def quiet_optuna() -> None:
    """Optuna's own line per trial off: run_worker logs one line per trial (models/tuning.trial_line)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def run(ctx: RunContext) -> None:
    t = ctx.config.tuning
    quiet_optuna()
    started = time.perf_counter()
    # keys in their order: the order of tuning.search_space is the order of the draws, which must match
    write_text(worker_config_path(ctx.work_dir), yaml.safe_dump(ctx.config.to_dict(), sort_keys=False))
    write_json(worker_context_path(ctx.work_dir), {"shared_dir": os.path.relpath(ctx.shared_dir, ctx.work_dir),
                                                  "data_dir": str(ctx.data_dir), "dataset": ctx.dataset})
    study, objective, url, first, n_trials = prepare(ctx)
    log.info("tuning study %s in %s: %d trials over %d worker(s); more workers: python pipeline/tune.py "
             "--work-dir %s", study.study_name, tuning.redact(url), n_trials, t.workers, ctx.work_dir)
    extra = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--work-dir", str(ctx.work_dir),
                               "--worker", str(i)], cwd=REPO_ROOT) for i in range(1, t.workers)]
    try:
        tuning.run_worker(study, objective, n_trials, t.timeout_s, storage_url=url, worker="0",
                          first_params=first)
    finally:
        codes = [p.wait() for p in extra]
    if any(codes):
        raise RuntimeError(f"tuning worker process(es) failed with exit codes {codes}; rerun to resume the study")
    wait_for_running(study)
    write_results(ctx, study, url, time.perf_counter() - started, n_trials)


def inputs(ctx: RunContext) -> list[Path]:
    paths = [ctx.posts("train"), ctx.posts("test"), ctx.folds]
    return paths + [ctx.feature_block(b, s) for b in tuned_blocks(ctx.config) for s in ("train", "test")]


STAGE = Stage(
    name="tune",
    run=run,
    inputs=inputs,
    outputs=lambda ctx: [ctx.best_params, ctx.tuning_summary],
    sections=("tuning", "gbdt", "metadata", "prototype", "users"),
    modules=("models.tuning", "models.cv", "models.gbdt", "models.sizing", "features.target_stats", "features.blocks",
             "features.user_features"),
    enabled=lambda ctx: ctx.config.tuning.enabled,
    description="Optuna tuning of LightGBM (persistent study, pruning, shared trial budget)",
)


# --- extra worker -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True, help="the work folder the tune stage uses")
    parser.add_argument("--config", type=Path, help="config (default: <work-dir>/tuning/config.yaml, saved by the stage)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--worker", default=None, help="name of this worker in the trials (default: host:pid)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    work_dir = args.work_dir.resolve()
    config_path = args.config or worker_config_path(work_dir)
    if not config_path.is_file():
        print(f"error: {config_path} is missing: run the tune stage first "
              "(python pipeline/run_all.py --stages tune) or pass --config", file=sys.stderr)
        return 2
    cfg = load_config(config_path, args.overrides)
    where = worker_context_path(work_dir)
    context = read_json(where) if where.is_file() else {}
    shared_dir = (work_dir / context["shared_dir"]).resolve() if "shared_dir" in context else work_dir
    ctx = RunContext(config=cfg, data_dir=Path(context.get("data_dir", shared_dir)), work_dir=work_dir,
                     run_name="tune-worker", shared_dir=shared_dir, dataset=context.get("dataset", ""))
    quiet_optuna()
    worker = args.worker or f"{socket.gethostname()}:{os.getpid()}"
    study, objective, url, first, n_trials = prepare(ctx)
    log.info("worker %s joins study %s in %s", worker, study.study_name, tuning.redact(url))
    ran = tuning.run_worker(study, objective, n_trials, cfg.tuning.timeout_s,
                            storage_url=url, worker=worker, first_params=first)
    log.info("worker %s ran %d trial(s)", worker, ran)
    return 0


if __name__ == "__main__":
    sys.exit(main())
