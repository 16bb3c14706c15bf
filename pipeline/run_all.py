#!/usr/bin/env python
"""Run every stage of the pipeline in order, skipping the ones that are up to date.

    python pipeline/run_all.py                                       # built-in demo data set
    python pipeline/run_all.py --data-dir /data/smpd                 # the real SMPD (official layout)
    python pipeline/run_all.py --stages train_trees,blend,submit --force   # after a first run: redo the models
    python pipeline/run_all.py --set gbdt.num_boost_round=200 --run-name fewer-rounds
    python pipeline/run_all.py --list                                # the stages, in run order
    python pipeline/run_all.py --data-dir /data/smpd --plan          # each stage's estimated seconds; runs nothing

A stage is skipped when its lock entry matches (same config sections, input
contents and code); `--force` reruns the selected stages. Each config has its own
folder work/<data set>/config-<digest>/ beside the others (the encoder cache and the
posts tables are shared), so a run with --set or --config never overwrites another
config's results. The run starts with its plan (what runs, what is up to date, the
time the last runs took) and ends with one line: scores, run folder, leaderboard
position. On failure the exit code is 1 and the log names the stage; rerunning the
same command resumes.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import sys
import time

# OpenMP threads that spin while waiting slow LightGBM many times over on a busy machine;
# the policy must be set before LightGBM (or torch) is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import yaml  # noqa: E402

from common.io import read_json, write_text  # noqa: E402
from common.locks import FileLock  # noqa: E402
from pipeline.catalog import RunContext, add_context_arguments, make_context  # noqa: E402
from pipeline.config import ConfigError  # noqa: E402
from common.devices import DeviceError  # noqa: E402
from common.meter import Meter  # noqa: E402
from pipeline.plan import SHORTER, Estimator, append_record, stage_devices, stage_record  # noqa: E402
from pipeline.stage import Lock, Stage, load_stages, stage_key  # noqa: E402

log = logging.getLogger("smp")

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_context_arguments(parser)
    parser.add_argument("--stages", help="comma-separated stage names to run (default: all)")
    parser.add_argument("--force", action="store_true", help="rerun the selected stages even if up to date")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--plan", action="store_true",
                        help="print the plan (each stage's estimated seconds and peak memory, from earlier runs' "
                             "timings or a calibration of a few seconds; pipeline/plan.py) and exit; runs nothing")
    return parser.parse_args(argv)


def stage_locks(ctx: RunContext) -> dict[bool, Lock]:
    """The lock of the config's stages (False) and of the shared stages (True); one when the
    context keeps everything in one folder."""
    own = Lock(ctx.lock_file)
    return {False: own, True: own if ctx.shared_lock_file == ctx.lock_file else Lock(ctx.shared_lock_file)}


# --- the plan printed before anything runs -----------------------------------------------------
def plan(ctx: RunContext, stages: list[Stage], selected: set[str] | None, force: bool,
         locks: dict[bool, Lock], estimator: Estimator) -> list[dict]:
    """What each selected stage will do: `off`, `up to date` or `run`, with its estimated seconds (pipeline/plan.py).

    `up to date` is said only when the stage's key matches now and no stage before it runs;
    a stage listed as `run` may still find itself up to date once its inputs are rebuilt."""
    rows, produced = [], set()
    for stage in stages:
        if selected is not None and stage.name not in selected:
            continue
        if not stage.enabled(ctx):
            rows.append({"stage": stage.name, "status": "off"})
            continue
        lock = locks[stage.shared]
        try:
            inputs = stage.inputs(ctx)
            current = (not force and not produced.intersection(inputs) and all(p.exists() for p in inputs)
                       and lock.is_current(stage, ctx, stage_key(stage, ctx, lock.hashes)))
        except Exception:  # noqa: BLE001 - the run itself reports it, in its stage
            current = False
        if current:
            rows.append({"stage": stage.name, "status": "up to date"})
            continue
        try:
            produced.update(stage.outputs(ctx))
        except Exception:  # noqa: BLE001
            pass
        rows.append({"stage": stage.name, "status": "run", "estimate": estimator.stage(stage)})
    return rows


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _short(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else _duration(seconds)


def _units(n: float) -> str:
    return f"{n:,.0f}" if n < 1e6 else f"{n / 1e6:.3g}M"


def plan_text(ctx: RunContext, rows: list[dict], posts: int | None) -> str:
    """The plan, one line a stage: its status and, for one that runs, the estimated seconds and peak
    resident memory of the run's process, the stage's units and where the per-unit cost came from."""
    size = f"{posts} posts" if posts else "size unknown"
    lines = [f"plan for data set {ctx.dataset} ({size}), config folder {ctx.config_dir}:"]
    for row in rows:
        status, estimate = row["status"], row.get("estimate")
        if status == "run" and estimate is None:
            status += "   (no earlier timing)" if posts else "   (no estimate: the data set's size is unknown)"
        elif status == "run":  # a stage that does all its work: an upper bound where shared caches apply
            peak = f", peak ~{estimate.peak_mb:,.0f} MB" if estimate.peak_mb else ""
            status += (f"   ~{_short(estimate.seconds)}{peak} ({_units(estimate.units)} {estimate.unit} on "
                       f"{estimate.device}; {estimate.source}; CPU ~{_short(estimate.cpu_seconds)})")
        lines.append(f"  {row['stage']:16s} {status}")
    to_run = [r for r in rows if r["status"] == "run"]
    timed = [r["estimate"] for r in to_run if r["estimate"] is not None]
    if not to_run:
        lines.append("  nothing to run: every selected stage is up to date or off")
    elif timed:
        untimed = len(to_run) - len(timed)
        peak = max((e.peak_mb or 0.0) for e in timed)
        lines.append(f"  estimate: about {_duration(sum(e.seconds for e in timed))} for {len(to_run)} stage(s)"
                     + (f", peak ~{peak:,.0f} MB" if peak else "") + (f"; {untimed} never timed" if untimed else ""))
    else:
        lines.append(f"  {len(to_run)} stage(s) to run; no estimate (" + ("no earlier timing of them on this machine)"
                     if posts else "no posts tables, demo size or official image lists to count the posts of)"))
    for row in to_run:  # the CPU's hour: name the setting that shortens the stage
        estimate = row["estimate"]
        if estimate is not None and estimate.over_an_hour_on_cpu() and row["stage"] in SHORTER:
            lines.append(f"  ! {row['stage']} takes over an hour on the CPU (~{_duration(estimate.seconds)}); "
                         f"shorten it with {SHORTER[row['stage']](ctx.config)}")
    return "\n".join(lines)


# stages that are not Stage.shared but write into the data set's shared folder: the encoder
# cache (chunks merged into arrays), the prototype networks, the tuning study
WRITES_SHARED = {"encode", "prototype", "tune"}


def _holding(path, what: str) -> FileLock:
    """An flock on `path`, taken now; says in the log when it waits for another run."""
    lock = FileLock(path)
    lock.acquire(on_wait=lambda: log.info("waiting for another run (it holds %s, %s)", path, what))
    return lock


def run_stages(ctx: RunContext, stages: list[Stage], selected: set[str] | None, force: bool) -> None:
    """Run the stages; two runs on one data set take turns: one config folder is used by one run
    at a time, and a stage that writes the shared folder runs under the data set's shared lock
    (the lock entries are read again once it is held: the other run may have recorded them)."""
    ctx.config_dir.mkdir(parents=True, exist_ok=True)
    config_held = _holding(ctx.config_dir / ".run.lock", "the config folder")
    try:
        _run_stages(ctx, stages, selected, force)
    finally:
        config_held.release()


def _run_stages(ctx: RunContext, stages: list[Stage], selected: set[str] | None, force: bool) -> None:
    config_text = yaml.safe_dump(ctx.config.to_dict(), sort_keys=True)
    config_file = ctx.config_record
    if not config_file.is_file() or config_file.read_text() != config_text:
        write_text(config_file, config_text)
    locks = stage_locks(ctx)
    estimator = Estimator(ctx, calibrate=False)  # earlier runs' timings only: a run pays for no probe
    log.info("%s", plan_text(ctx, plan(ctx, stages, selected, force, locks, estimator), estimator.posts))
    for stage in stages:
        if selected is not None and stage.name not in selected:
            continue
        if not stage.enabled(ctx):
            log.info("[%s] off in this config", stage.name)
            continue
        missing = [p for p in stage.inputs(ctx) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"stage {stage.name}: input {missing[0]} is missing; "
                                    "run the stages before it first")
        shared_held = None
        if stage.shared or stage.name in WRITES_SHARED:
            shared_held = _holding(ctx.shared_dir / ".shared.lock", f"the shared folder, stage {stage.name}")
            locks[True].refresh()
        try:
            _run_stage(ctx, stage, locks[stage.shared], force, estimator.devices)
        finally:
            if shared_held is not None:
                shared_held.release()


def _run_stage(ctx: RunContext, stage: Stage, lock: Lock, force: bool, devices: dict[str, str]) -> None:
    key = stage_key(stage, ctx, lock.hashes)
    if not force and lock.is_current(stage, ctx, key):
        log.info("[%s] up to date, skipped", stage.name)
        return
    lock.forget(stage)
    log.info("[%s] running: %s", stage.name, stage.description)
    with Meter() as meter:
        stage.run(dataclasses.replace(ctx, force=True) if force else ctx)
    missing_out = [p for p in stage.outputs(ctx) if not p.exists()]
    if missing_out:
        raise RuntimeError(f"stage {stage.name} finished without writing {missing_out[0]}")
    seconds = meter.wall_s
    record = stage_record(ctx, stage, meter, devices)  # for the plans of later runs, on any data set
    if record is not None:
        append_record(record)
    # inputs may be outputs of this very run (demo data): hash them after the stage
    lock.record(stage, ctx, stage_key(stage, ctx, lock.hashes), seconds)
    log.info("[%s] done in %.1f s", stage.name, seconds)


# --- the last line -----------------------------------------------------------------------------
def run_summary(ctx: RunContext, seconds: float) -> str:
    """One line: the run's scores (validation, and test when labels were given), its leaderboard
    position among the runs of this data set, and its folder."""
    from reporting.report_page import leaderboard_position
    from reporting.submission_format import read_leaderboard
    parts = [f"done in {_duration(seconds)}"]
    scores_file = ctx.scores
    if scores_file.is_file():
        scores = read_json(scores_file)
        for name in ("validation", "test"):
            values = scores.get(name) or {}
            if values:
                parts.append(f"{name} SRC {values['src']:.4f} MAE {values['mae']:.4f}")
        if not scores.get("test"):
            parts.append("test: no labels")
        board = read_leaderboard(ctx.leaderboard)
        position = leaderboard_position(board, ctx.run_name, ctx.dataset) if board is not None else None
        parts.append(f"leaderboard {position[0]} of {position[1]} on {ctx.dataset}" if position
                     else "not on the leaderboard")
    else:
        parts.append("no scores (stage submit has not run for this run name)")
    report = ctx.report_page
    parts.append(f"run folder {ctx.run_dir}" + (" (report.html)" if report.is_file() else ""))
    return "; ".join(parts)


# stages renamed in 0.5 (issue 23), so that an old command line gets the new name
RENAMED_STAGES = {"train_gbdt": "train_trees", "gbdt": "train_trees", "reduce_embeddings": "embed_features"}


def unknown_stage_message(unknown: set[str], known: list[str]) -> str:
    hints = []
    for name in sorted(unknown):
        close = ([RENAMED_STAGES[name]] if name in RENAMED_STAGES else
                 difflib.get_close_matches(name, known, n=1, cutoff=0.5) or [k for k in known if name in k][:1])
        hints.append(f"{name!r}" + (f" (did you mean {close[0]}?)" if close else ""))
    return f"unknown stage(s) {', '.join(hints)}; known, in run order: {', '.join(known)}"


def selected_stages(arg: str | None, stages: list[Stage]) -> set[str] | None:
    """The stage names of --stages (None: every stage); ValueError names an unknown one."""
    if not arg:
        return None
    selected = {s.strip() for s in arg.split(",") if s.strip()}
    known = [s.name for s in stages]
    if selected - set(known):
        raise ValueError(unknown_stage_message(selected - set(known), known))
    return selected


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    stages = load_stages()
    if args.list:
        for stage in stages:
            print(f"{stage.name:16s} {stage.description}")
        return 0
    try:
        selected = selected_stages(args.stages, stages)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        ctx = make_context(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        estimator = Estimator(ctx, calibrate=True) if args.plan else None
    except DeviceError as err:  # `cuda` asked for without CUDA: before any work
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.plan:
        print(plan_text(ctx, plan(ctx, stages, selected, args.force, stage_locks(ctx), estimator), estimator.posts))
        if estimator.probes is not None:
            print(f"  (calibration: probes {', '.join(sorted(estimator.probes))} timed in "
                  f"{estimator.probe_seconds:.1f} s; reference {estimator.reference.get('about', 'none')})")
        return 0
    started = time.perf_counter()
    try:
        run_stages(ctx, stages, selected, args.force)
    except Exception as err:  # report which stage failed and how to resume, then exit non-zero
        log.exception("pipeline failed: %s", err)
        print(f"\nerror: {err}\nFinished stages are kept; rerun the same command to resume.", file=sys.stderr)
        return 1
    log.info("%s", run_summary(ctx, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
