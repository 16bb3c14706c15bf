#!/usr/bin/env python
"""Is the plan right? `run_all.py --plan` on a fresh SMPD-format set no run has touched, then the run,
each stage's estimate against its measured seconds.

    nice -n 10 python benchmarks/bench_plan.py --root /tmp/plan-bench                     # the check
    nice -n 10 python benchmarks/bench_plan.py --root /tmp/plan-bench --write-reference   # and refresh
                                                         # pipeline/plan_reference.json from its reference runs
    nice -n 10 python benchmarks/bench_plan.py --root /tmp/plan-bench --replan   # the plans again, same measured run

Steps: (1) the reference runs: two demo-generated sets (features/demo.py, seeds 11 and 12, 1,100 and
4,000 posts) run with configs/demo.yaml into their own timings file; with --write-reference their records
and the calibration probes timed right after become pipeline/plan_reference.json. (2) a third set (seed
21, 2,700 posts), never run: `--plan` twice, once with the reference runs' timings file (estimates from
earlier runs on other data sets) and once with an empty one (the calibration). (3) the run on that set,
with a timings file of its own: each stage's measured wall seconds. (4) the table: estimate / measured
per stage, and whether each is within 2x (a stage whose estimate and measurement are both under a second
is listed apart: there a tenth of a second of noise is a factor of 2). One JSON line at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# as run_all.py sets it, before LightGBM is imported: the probes must be timed as the plan times them
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from features.demo import make_demo  # noqa: E402
from pipeline import plan  # noqa: E402

REFERENCE_SETS = {"ref-small": dict(n_train=800, n_test=300, n_users=100, seed=11),
                  "ref-demo": dict(n_train=3000, n_test=1000, n_users=400, seed=12)}
FRESH_SET = dict(n_train=2000, n_test=700, n_users=250, seed=21)
CONFIG = REPO_ROOT / "configs" / "demo.yaml"
PLAN_LINE = re.compile(r"^  (\w+) +run +~([\d.]+) (s|min)(?:, peak ~([\d,]+) MB)? \((.*); CPU ~([\d.]+) (s|min)\)$",
                       re.M)
SMALL_S = 1.0


def make_set(root: Path, name: str, sizes: dict) -> Path:
    data = root / name / "data"
    if not data.is_dir():
        make_demo(data, root / name / "hidden_test_labels.txt", image_size=64, **sizes)
    return data


def time_make_demo(folder: Path, name: str, sizes: dict) -> dict:
    """A record of stage make_demo (the demo.yaml image size) as run_all.py writes one."""
    from common.meter import Meter
    shutil.rmtree(folder, ignore_errors=True)
    with Meter() as meter:
        make_demo(folder / "data", folder / "labels.txt", image_size=64, **sizes)
    posts = sizes["n_train"] + sizes["n_test"]
    return {"stage": "make_demo", "key": "", "device": "cpu", "units": float(posts), "unit": "posts", "posts": posts,
            "dataset": name, "wall_s": round(meter.wall_s, 3), "cpu_s": round(meter.cpu_s, 3),
            "rss_start_mb": round(meter.rss_start_mb, 1), "peak_rss_mb": round(meter.peak_rss_mb, 1)}


def run_all(data: Path, work: Path, cache: Path, *args: str, log: Path | None = None) -> str:
    env = {**os.environ, "SMP_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, str(REPO_ROOT / "pipeline" / "run_all.py"), "--data-dir", str(data), "--config",
           str(CONFIG), "--work-dir", str(work), "--submissions-dir", str(work.parent / "subs"), "--run-name",
           work.name, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def plan_estimates(text: str) -> dict[str, dict]:
    out = {}
    for name, value, unit, peak, about, cpu, cpu_unit in PLAN_LINE.findall(text):
        out[name] = {"s": float(value) * (60 if unit == "min" else 1),
                     "cpu_s": float(cpu) * (60 if cpu_unit == "min" else 1),
                     "peak_mb": float(peak.replace(",", "")) if peak else None, "about": about}
    return out


def mark(estimate: float, measured: float) -> tuple[float, str]:
    """estimate / measured, and `ok` (within 2x), `small` (off, but both under a second) or `off`."""
    ratio = estimate / max(measured, 1e-3)
    if 0.5 <= ratio <= 2.0:
        return ratio, "ok"
    return ratio, "small" if estimate < SMALL_S and measured < SMALL_S else "off"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="scratch folder (sets, work folders, timings)")
    parser.add_argument("--write-reference", action="store_true", help="rewrite pipeline/plan_reference.json")
    parser.add_argument("--replan", action="store_true",
                        help="keep the fresh set's measured run; plan it again (a new work folder, the data folder "
                             "untouched: runs never write there) and compare: after a change of the plan's code")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    load = {"before": os.getloadavg()}

    ref_cache = root / "cache-reference"
    if not plan.read_records(ref_cache / "timings.jsonl"):
        for name, sizes in REFERENCE_SETS.items():
            started = time.perf_counter()
            run_all(make_set(root, name, sizes), root / f"work-{name}", ref_cache, log=root / f"{name}.log")
            print(f"reference run {name}: {time.perf_counter() - started:.0f} s", flush=True)
    if args.write_reference:
        from pipeline.config import load_config
        if not any(r["stage"] == "make_demo" for r in plan.read_records(ref_cache / "timings.jsonl")):
            for name, sizes in REFERENCE_SETS.items():  # the stage the --data-dir runs skip, timed alone
                plan.append_record(time_make_demo(root / name / "timed", name, sizes), ref_cache / "timings.jsonl")
        cfg = load_config(CONFIG)
        probes = plan.run_probes(cfg, plan.stage_devices(cfg), set(plan.PROBE_FUNCTIONS))
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True).stdout.strip()
        plan.write_reference(plan.read_records(ref_cache / "timings.jsonl"), probes,
                             f"benchmarks/bench_plan.py at {commit}, {time.strftime('%Y-%m-%d', time.gmtime())}, "
                             f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        print(f"wrote {plan.REFERENCE} (probes {json.dumps({k: round(v, 4) for k, v in probes.items()})})")

    fresh = root / "fresh"
    if not args.replan:
        shutil.rmtree(fresh, ignore_errors=True)  # a set no run has touched
    data = make_set(fresh, "set", FRESH_SET)
    work = fresh / ("work-replan" if args.replan else "work")
    shutil.rmtree(work if args.replan else fresh / "none", ignore_errors=True)
    before = sorted(p.relative_to(data).as_posix() for p in data.rglob("*"))
    started = time.perf_counter()
    from_runs = run_all(data, work, ref_cache, "--plan")
    plan_s = {"earlier runs": time.perf_counter() - started}
    started = time.perf_counter()
    calibrated = run_all(data, work, fresh / "cache-empty", "--plan")
    plan_s["calibration"] = time.perf_counter() - started
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*")) == before, "--plan wrote into the data"
    assert not work.exists(), "--plan wrote a work folder"
    assert not (fresh / "cache-empty").exists(), "--plan wrote a timings file"
    (fresh / "plan-earlier-runs.txt").write_text(from_runs)
    (fresh / "plan-calibration.txt").write_text(calibrated)
    print(calibrated)
    estimates = {"earlier runs": plan_estimates(from_runs), "calibration": plan_estimates(calibrated)}

    started = time.perf_counter()
    if not args.replan:
        run_all(data, work, fresh / "cache-run", log=fresh / "run.log")
    run_s = time.perf_counter() - started
    load["after"] = os.getloadavg()
    measured = {r["stage"]: r for r in plan.read_records(fresh / "cache-run" / "timings.jsonl")}

    verdict: dict[str, dict[str, list]] = {}
    print("\n| stage | measured wall s / CPU s / peak MB | "
          + " | ".join(f"{k}: wall s (ratio) / CPU s (ratio) / MB" for k in estimates) + " |")
    print("|---|---|" + "---|" * len(estimates))
    for stage, rec in measured.items():
        cells = [stage, f"{rec['wall_s']:.1f} / {rec['cpu_s']:.1f} / {rec['peak_rss_mb']:.0f}"]
        for source, est in estimates.items():
            e = est.get(stage)
            marks = verdict.setdefault(source, {"wall": [], "cpu": []})
            if e is None:
                cells.append("none")
                marks["wall"].append((stage, "none"))
                marks["cpu"].append((stage, "none"))
                continue
            wall_ratio, wall_mark = mark(e["s"], rec["wall_s"])
            cpu_ratio, cpu_mark = mark(e["cpu_s"], rec["cpu_s"])
            marks["wall"].append((stage, wall_mark))
            marks["cpu"].append((stage, cpu_mark))
            cells.append(f"{e['s']:.1f} ({wall_ratio:.2f}) / {e['cpu_s']:.1f} ({cpu_ratio:.2f}) / "
                         + (f"{e['peak_mb']:.0f}" if e["peak_mb"] else ""))
        print("| " + " | ".join(cells) + " |")
    total = {"wall": sum(r["wall_s"] for r in measured.values()), "cpu": sum(r["cpu_s"] for r in measured.values())}
    summary = {"measured_stages_s": round(total["wall"], 1), "measured_cpu_s": round(total["cpu"], 1),
               "run_s": round(run_s, 1), "plan_s": plan_s, "load": load,
               "sets": {"reference": REFERENCE_SETS, "fresh": FRESH_SET}}
    for source, by_kind in verdict.items():
        summary[source] = {}
        for kind, marks in by_kind.items():
            field = "s" if kind == "wall" else "cpu_s"
            est_total = sum(estimates[source][s][field] for s in measured if s in estimates[source])
            summary[source][kind] = {"total_estimate_s": round(est_total, 1),
                                     "within_2x": [s for s, m in marks if m == "ok"],
                                     "off_but_under_1s": [s for s, m in marks if m == "small"],
                                     "off": [s for s, m in marks if m in ("off", "none")]}
            got = summary[source][kind]
            print(f"{source}, {kind}: total estimate {est_total:.0f} s against {total[kind]:.0f} s measured; "
                  f"{len(got['within_2x'])}/{len(marks)} stages within 2x; under 1 s and off: "
                  f"{got['off_but_under_1s']}; off: {got['off']}")
    print(json.dumps(summary))
    return 0 if all(not summary[k]["wall"]["off"] for k in estimates) else 1


if __name__ == "__main__":
    sys.exit(main())
