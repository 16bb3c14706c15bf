#!/usr/bin/env python
"""Run every stage of the pipeline in order, skipping the ones that are up to date.

    python pipeline/run_all.py                           # built-in demo data set
    python pipeline/run_all.py --data-dir /data/smpd     # the real SMPD (official layout)
    python pipeline/run_all.py --stages gbdt,submit --force

A stage is skipped when its lock entry matches (same config sections, input
contents and code); `--force` reruns the selected stages. On failure the exit
code is 1 and the log names the stage and the command that resumes.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

# OpenMP threads that spin while waiting slow LightGBM many times over on a busy machine;
# the policy must be set before LightGBM (or torch) is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pipeline.config import ConfigError, load_config  # noqa: E402
from pipeline.stage import Lock, RunContext, Stage, stage_key  # noqa: E402

log = logging.getLogger("smp")

# Stage modules in run order; each defines `STAGE`. A new stage is one module here.
STAGE_MODULES = [
    "pipeline.make_demo",
    "pipeline.read_data",
    "pipeline.make_folds",
    "pipeline.build_metadata",
    "pipeline.encode",
    "pipeline.reduce_embeddings",
    "pipeline.user_features",
    "pipeline.prototype",
    "pipeline.tune",
    "pipeline.train_gbdt",
    "pipeline.train_linear",
    "pipeline.blend",
    "pipeline.submit",
    "pipeline.plots",
    "pipeline.report",
]


def load_stages() -> list[Stage]:
    import importlib
    return [importlib.import_module(name).STAGE for name in STAGE_MODULES]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="SMPD directory in the official layout (default: the built-in demo)")
    parser.add_argument("--work-dir", type=Path, help="where derived data goes (default: work/<data set name>)")
    parser.add_argument("--run-name", help="name of the run folder under submissions/ (default: <data set>-<UTC time>)")
    parser.add_argument("--config", type=Path, help="YAML config (default: configs/demo.yaml or configs/smpd.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set gbdt.num_boost_round=200")
    parser.add_argument("--test-labels", type=Path, help="hidden test labels (one float a line) to score the run")
    parser.add_argument("--submissions-dir", type=Path, default=REPO_ROOT / "submissions")
    parser.add_argument("--stages", help="comma-separated stage names to run (default: all)")
    parser.add_argument("--force", action="store_true", help="rerun the selected stages even if up to date")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    return parser.parse_args(argv)


def make_context(args: argparse.Namespace) -> RunContext:
    is_demo = args.data_dir is None
    default_config = REPO_ROOT / "configs" / ("demo.yaml" if is_demo else "smpd.yaml")
    config = load_config(args.config or default_config, args.overrides)
    if is_demo:
        work_dir = args.work_dir or REPO_ROOT / "work" / "demo"
        data_dir = work_dir / "data"
        test_labels = args.test_labels or work_dir / "hidden_test_labels.txt"
        dataset = "demo"
    else:
        data_dir = args.data_dir.resolve()
        if not data_dir.is_dir():
            raise ConfigError(f"--data-dir {data_dir} is not a directory")
        dataset = data_dir.name
        work_dir = args.work_dir or REPO_ROOT / "work" / dataset
        test_labels = args.test_labels
    if test_labels is not None and not is_demo and not Path(test_labels).is_file():
        raise ConfigError(f"--test-labels {test_labels} is not a file")
    run_name = args.run_name or f"{dataset}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    return RunContext(config=config, data_dir=data_dir, work_dir=Path(work_dir).resolve(), run_name=run_name,
                      submissions_dir=args.submissions_dir.resolve(),
                      test_labels=Path(test_labels).resolve() if test_labels else None, is_demo=is_demo)


def run_stages(ctx: RunContext, stages: list[Stage], selected: set[str] | None, force: bool) -> None:
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    lock = Lock(ctx.lock_file)
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
        key = stage_key(stage, ctx, lock.hashes)
        if not force and lock.is_current(stage, ctx, key):
            log.info("[%s] up to date, skipped", stage.name)
            continue
        lock.forget(stage)
        started = time.perf_counter()
        log.info("[%s] running: %s", stage.name, stage.description)
        stage.run(ctx)
        missing_out = [p for p in stage.outputs(ctx) if not p.exists()]
        if missing_out:
            raise RuntimeError(f"stage {stage.name} finished without writing {missing_out[0]}")
        seconds = time.perf_counter() - started
        # inputs may be outputs of this very run (demo data): hash them after the stage
        lock.record(stage, ctx, stage_key(stage, ctx, lock.hashes), seconds)
        log.info("[%s] done in %.1f s", stage.name, seconds)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    stages = load_stages()
    if args.list:
        for stage in stages:
            print(f"{stage.name:16s} {stage.description}")
        return 0
    selected = None
    if args.stages:
        selected = {s.strip() for s in args.stages.split(",") if s.strip()}
        unknown = selected - {s.name for s in stages}
        if unknown:
            print(f"error: unknown stage(s) {sorted(unknown)}; known: {[s.name for s in stages]}", file=sys.stderr)
            return 2
    try:
        ctx = make_context(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        run_stages(ctx, stages, selected, args.force)
    except Exception as err:  # report which stage failed and how to resume, then exit non-zero
        log.exception("pipeline failed: %s", err)
        print(f"\nerror: {err}\nFinished stages are kept; rerun the same command to resume.", file=sys.stderr)
        return 1
    log.info("all stages done in %.1f s; run folder %s", time.perf_counter() - started, ctx.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
