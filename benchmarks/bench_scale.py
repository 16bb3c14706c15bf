#!/usr/bin/env python
"""Scale benchmark: wall time and peak memory of every stage, from the files to the submission.

    python benchmarks/bench_scale.py                          # 1/4, 1/2 and full SMPD size
    python benchmarks/bench_scale.py --fractions 0.01 0.02    # a quick check
    python benchmarks/bench_scale.py --shipped --fractions 0.001 0.002 0.005 --out scale.json   # the shipped config
    python benchmarks/bench_scale.py --summarize --out scale.json   # its table again, from the JSON

`--shipped` runs configs/smpd.yaml as shipped, every stage, at each size: `pipeline/run_all.py --config
configs/smpd.yaml` with only SHIPPED_SETS changed (the offline encoders EfficientNet-Lite0 and MiniLM
standing in for CLIP, one DataLoader worker, the CPU; and the two small-data rules off, so the small
sizes validate and tune as the full size does). The synthetic SMPD gets a 500x375 photo-like JPEG per
post, so the image encoder decodes and embeds real files. Per stage (each in its own process): wall
seconds, CPU seconds (user + sys of the stage and its worker processes: on a shared machine less
sensitive to the load than wall time), peak memory, the load average; the growth exponent between
sizes; each stage extrapolated to the full 486,194 posts (a line a + b N through every size, and a
power law through the two largest: extrapolations, not measurements); and what `run_all.py --plan`
printed for each size (from the smaller sizes beside it) and for the full size (a folder holding only
full-size image lists, which is all the plan reads to size a data set).

Without `--shipped` (what follows) it measures a reduced pipeline, not the shipped config:

For each size it writes a synthetic SMPD-format data set (`benchmarks/synth_smpd.py`:
305,613 train and 180,581 test posts at full size, no images, 512-d float16
embeddings per modality standing in for the encoder output), then runs each
stage of `pipeline/run_all.py` in its own process (the real code path, the
stage lock's hashing included) and records its wall time and peak resident
memory (the child's VmHWM). Feature extraction is excluded; the embeddings reach
LightGBM as the `emb` block does: PCA to `encoders.pca_dim` per modality, fit on
train (the `embed_features` stage when the pipeline has one, else the
equivalent step defined here). LightGBM runs with fixed parameters
(configs/smpd.yaml) and `--rounds` boosting rounds at most.

Prints a table (stage, N, seconds, peak MiB), the growth exponent of each
stage's time between sizes (1.0 is linear; N log N is about 1.08 from half to
full size), and writes everything as JSON (`--out`). The stages run one after
another on the same folder, so a size needs about 3 GiB of free disk at full size.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from benchmarks.synth_smpd import EMB_DIM, make_synthetic_smpd, write_embeddings  # noqa: E402
from common.io import write_json, write_npy  # noqa: E402
from pipeline.stage import Stage  # noqa: E402

STAGE_ORDER = ["read_data", "make_folds", "build_metadata", "embed_features", "train_trees", "train_linear",
               "blend", "submit"]
MODALITIES = ("image", "title", "tags")
RUN_NAME = "bench"


def pipeline_stage(name: str) -> Stage:
    """A stage of the pipeline by its name in the table; only its module is imported (as a run imports it)."""
    import importlib
    return importlib.import_module(f"pipeline.{name}").STAGE


# --- one size: data, embeddings, config ---------------------------------------------------------
def bench_config(rounds: int) -> dict:
    """configs/smpd.yaml with CLIP-width stand-in embeddings on and a capped number of rounds."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "smpd.yaml").read_text())
    pca_dim = config.get("encoders", {}).get("pca_dim")  # the real run's; the encoder settings are the stand-in's
    config["encoders"] = {"enabled": True, "image": "clip", "text": "clip", "clip_model": "openai/clip-vit-base-patch32",
                          **({"pca_dim": pca_dim} if pca_dim else {})}
    config["prototype"] = {"enabled": False}
    config["tuning"] = {"enabled": False}
    config["users"] = {**config.get("users", {}), "text_dims": 0}  # no user features (the smpd config has texts on)
    config["gbdt"] = {**config.get("gbdt", {}), "num_boost_round": rounds, "feature_sets": {"meta_emb": ["meta", "emb"]}}
    return config


def prepare(root: Path, fraction: float, seed: int, config: dict) -> dict:
    """Write the data set, the stand-in encoder arrays and the config of one size under `root`."""
    from features.encoders import array_path, manifest_paths, pid_digest
    from pipeline.catalog import encoder_cache
    from pipeline.config import load_config
    started = time.perf_counter()
    data_dir, work_dir = root / "data", root / "work"
    info = make_synthetic_smpd(data_dir, fraction, seed)
    config_path = root / "bench.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    enc = load_config(config_path).encoders
    n_train, n_test = info["n_train"], info["n_test"]
    paths = {m: {s: array_path(encoder_cache(work_dir), enc, s, m) for s in ("train", "test")} for m in MODALITIES}
    write_embeddings(paths, info["latent"], n_train, seed)
    manifest = {"model": "synthetic stand-in (benchmarks/synth_smpd.py)", "dtype": "float16", "dim": EMB_DIM,
                "splits": {}}
    for split, n in (("train", n_train), ("test", n_test)):
        pids = [r["Pid"] for r in json.loads((data_dir / f"{split}_category.json").read_text())]
        write_npy(array_path(encoder_cache(work_dir), enc, split, "has_image"), np.ones(n, dtype=bool))
        write_npy(array_path(encoder_cache(work_dir), enc, split, "tokens"), np.zeros((n, 1, 1), dtype=np.float16))
        write_npy(array_path(encoder_cache(work_dir), enc, split, "token_mask"), np.ones((n, 1), dtype=bool))
        manifest["splits"][split] = {"pid_digest": pid_digest(pids), "rows": n}
    for path in manifest_paths(encoder_cache(work_dir), enc):  # CLIP: image and text folders (their settings differ)
        write_json(path, manifest)
    (root / "hidden_test_labels.txt").write_text("".join(f"{v:.2f}\n" for v in info["test_labels"]))
    write_json(root / "run_args.json", ["--data-dir", str(data_dir), "--work-dir", str(work_dir),
                                        "--config", str(config_path), "--run-name", RUN_NAME,
                                        "--submissions-dir", str(root / "submissions"),
                                        "--test-labels", str(root / "hidden_test_labels.txt")])
    return {"n_train": n_train, "n_test": n_test, "n_users": info["n_users"],
            "generate_s": round(time.perf_counter() - started, 1)}


# --- timing one stage in its own process ----------------------------------------------------------
def run_stage_process(args_file: Path, stage: str, log_path: Path) -> dict:
    """Run one stage in a child process; its wall time, CPU time (user + sys, its own child processes
    included), peak RSS and the stage's own time from its log, with the load average before and after."""
    command = [sys.executable, str(Path(__file__).resolve()), "stage", stage, "--args-file", str(args_file)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"stage {stage} failed (exit {process.returncode}); log {log_path}:\n{tail}")
    text = log_path.read_text()
    found = re.findall(rf"\[{stage}\] done in ([0-9.]+) s", text[text.rfind(f"STAGE_START {stage}"):])
    peak_kib = re.findall(r"PEAK_RSS_KIB (\d+)", text)
    # ru_maxrss: the largest process of the stage's tree (DataLoader and tuning workers included); a
    # child started by vfork begins with this process's high-water mark, so at or below it, it says nothing
    tree_kib = usage.ru_maxrss if usage.ru_maxrss > peak_rss_kib() else None
    return {"wall_s": round(wall, 2), "stage_s": float(found[-1]) if found else None,
            "peak_mib": round(int(peak_kib[-1]) / 1024, 1),
            "peak_tree_mib": round(tree_kib / 1024, 1) if tree_kib else None,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "load_before": round(load_before, 2), "load_avg_1min": round(os.getloadavg()[0], 2)}


def peak_rss_kib() -> int:
    """This process's peak resident memory since its exec (VmHWM).

    Not ru_maxrss: on Linux that also counts the parent's memory copied at fork.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def stage_main(args: argparse.Namespace) -> int:
    """Child process: run one stage (forced) on the benchmark folder, through run_all's code path."""
    from pipeline.catalog import make_context
    from pipeline.run_all import parse_args, run_stages
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    print(f"STAGE_START {args.name}", flush=True)
    ctx = make_context(parse_args(json.loads(args.args_file.read_text())))
    stage = pipeline_stage(args.name)
    run_stages(ctx, [stage], None, force=True)
    print(f"PEAK_RSS_KIB {peak_rss_kib()}", flush=True)
    return 0


# --- the whole benchmark ---------------------------------------------------------------------------
def growth_exponents(results: list[dict]) -> dict[str, list[dict]]:
    """log(t2/t1) / log(n2/n1) between consecutive sizes, per stage and for the total."""
    out: dict[str, list[dict]] = {}
    sizes = sorted({r["n"] for r in results})
    for stage in dict.fromkeys(r["stage"] for r in results):  # in run order, the total last
        rows = {r["n"]: r for r in results if r["stage"] == stage}
        for a, b in zip(sizes, sizes[1:]):
            if a in rows and b in rows:
                entry = {"from_n": a, "to_n": b}
                for key in ("wall_s", "stage_s", "cpu_s"):
                    t1, t2 = rows[a].get(key), rows[b].get(key)
                    if t1 and t2 and t1 > 0.05:
                        entry[key] = round(math.log(t2 / t1) / math.log(b / a), 2)
                out.setdefault(stage, []).append(entry)
    return out


def print_table(results: list[dict], growth: dict) -> None:
    print(f"\n{'stage':18s} {'N posts':>9s} {'wall s':>8s} {'stage s':>8s} {'peak MiB':>9s}")
    for r in results:
        stage_s = "" if r.get("stage_s") is None else f"{r['stage_s']:.1f}"
        print(f"{r['stage']:18s} {r['n']:9d} {r['wall_s']:8.1f} {stage_s:>8s} {r['peak_mib']:9.0f}")
    nlogn = None
    sizes = sorted({r["n"] for r in results})
    if len(sizes) > 1:
        a, b = sizes[-2], sizes[-1]
        nlogn = math.log((b * math.log(b)) / (a * math.log(a))) / math.log(b / a)
        print(f"\ngrowth exponent of time, log(t2/t1)/log(n2/n1) (linear 1.00, N log N {nlogn:.2f}):")
        for stage, entries in growth.items():
            text = "  ".join(f"{e['from_n']}->{e['to_n']}: wall {e.get('wall_s', '-')} stage {e.get('stage_s', '-')}"
                             for e in entries)
            print(f"  {stage:18s} {text}")


GIB_PER_FULL_SIZE = 3.0  # data files, stand-in embeddings and work folder of the full size, with margin


def bench_main(args: argparse.Namespace) -> int:
    root = args.root
    root.mkdir(parents=True, exist_ok=True)
    need = GIB_PER_FULL_SIZE * max(args.fractions)
    free = shutil.disk_usage(root).free / 2**30
    if free < need:
        print(f"error: {root} has {free:.1f} GiB free; the largest size needs about {need:.1f} GiB", file=sys.stderr)
        return 2
    config = bench_config(args.rounds)
    results, sizes = [], []
    for fraction in args.fractions:
        size_root = root / f"f{fraction:g}"
        if size_root.exists():
            shutil.rmtree(size_root)
        size_root.mkdir(parents=True)
        info = prepare(size_root, fraction, args.seed, config)
        n = info["n_train"] + info["n_test"]
        sizes.append({"fraction": fraction, **info})
        print(f"size {fraction:g}: {info['n_train']} train + {info['n_test']} test posts, {info['n_users']} users "
              f"(generated in {info['generate_s']} s)", flush=True)
        total = {"stage": "total", "n": n, "wall_s": 0.0, "stage_s": 0.0, "peak_mib": 0.0, "cpu_s": 0.0}
        for stage in STAGE_ORDER:
            row = {"stage": stage, "n": n,
                   **run_stage_process(size_root / "run_args.json", stage, size_root / "bench.log")}
            results.append(row)
            for key in ("wall_s", "stage_s", "cpu_s"):
                total[key] = round(total[key] + (row[key] or 0.0), 2)
            total["peak_mib"] = max(total["peak_mib"], row["peak_mib"])
            print(f"  {stage:18s} {row['wall_s']:8.1f} s  peak {row['peak_mib']:7.0f} MiB", flush=True)
        results.append(total)
        member = json.loads(next((size_root / "work").glob("config-*/preds/meta_emb.json")).read_text())
        sizes[-1]["best_iterations"] = member["best_iterations"]
        sizes[-1]["val_score"] = member["score"]
        if not args.keep:
            shutil.rmtree(size_root)
    growth = growth_exponents(results)
    print_table(results, growth)
    emb_stage = pipeline_stage("embed_features")
    report = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "rounds_cap": args.rounds, "emb_step": f"{emb_stage.run.__module__} ({emb_stage.name})",
              "config": config, "sizes": sizes, "results": results, "growth": growth}
    if args.out:
        write_json(args.out, report)
        print(f"\nwrote {args.out}")
    return 0


# --- the shipped config (--shipped) ----------------------------------------------------------------
# the only changes to configs/smpd.yaml: what a CPU machine without hub access needs, and one that
# keeps the small sizes on the full size's validation scheme
SHIPPED_SETS = ["encoders.image=efficientnet-lite0", "encoders.text=minilm",  # offline stand-ins for CLIP
                "encoders.num_workers=1",  # one decoding worker beside the model: 2 cores
                "encoders.device=cpu", "prototype.train.device=cpu",
                # two rules that make small data sets cheaper, off so that the small sizes cost what the full
                # size does per post: a time holdout below 500 posts becomes 5-fold cross-fitting, and a study
                # validated on fewer than 60 x 20 posts runs fewer than 60 trials (models/sizing.py). At full
                # size (a 61k-post holdout) neither applies, so turning them off changes nothing there.
                "validation.min_holdout_posts=0", "tuning.adapt_to_size=false"]
IMAGE_SIZE = (500, 375)  # the photo-like JPEGs of benchmarks/bench_encode.py
PLAN_LINE = re.compile(r"^\s+(\w+)\s+run\s+~([0-9.]+) (s|min)\b")


def shipped_command(root: Path, name: str, labels: bool = True) -> list[str]:
    """run_all.py's arguments for the size `name`: configs/smpd.yaml as shipped plus SHIPPED_SETS."""
    return ["--data-dir", str(root / "data" / name), "--work-dir", str(root / "work" / name),
            "--config", str(REPO_ROOT / "configs" / "smpd.yaml"), *[a for s in SHIPPED_SETS for a in ("--set", s)],
            "--run-name", f"{RUN_NAME}-{name}", "--submissions-dir", str(root / "submissions"),
            *(["--test-labels", str(root / "labels" / f"{name}.txt")] if labels else [])]


def plan_estimates(command: list[str]) -> dict:
    """What `run_all.py --plan` prints for the command: its text and each stage's estimated seconds."""
    done = subprocess.run([sys.executable, str(REPO_ROOT / "pipeline" / "run_all.py"), *command, "--plan"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    seconds = {}
    for line in done.stdout.splitlines():
        found = PLAN_LINE.match(line)
        if found:
            seconds[found[1]] = float(found[2]) * (60 if found[3] == "min" else 1)
    return {"text": done.stdout.strip() or done.stderr.strip()[-2000:], "seconds": seconds}


def plan_only_data(data_dir: Path, n_train: int, n_test: int) -> None:
    """The official files with empty records and full-size image lists: all `--plan` reads to size a data set."""
    from features.smpd import official_file_names
    for split, n in (("train", n_train), ("test", n_test)):
        for key, name in official_file_names(split).items():
            path = data_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = n if key == "img_filepath" else 0
            path.write_text("".join(f"{split}/u/{i}.jpg\n" for i in range(lines)) if lines else
                            ("" if name.endswith(".txt") else "[]"))


def extrapolate(results: list[dict], full_n: int) -> dict[str, dict]:
    """Each stage's CPU seconds, wall seconds and peak memory at `full_n` posts, two ways: a straight line
    a + b N fit over every size (never below the largest size's figure), and a power law through the two
    largest sizes (its growth exponent). Memory only as a line, and that only where memory grows per post."""
    out = {}
    for stage in dict.fromkeys(r["stage"] for r in results):
        rows = sorted((r for r in results if r["stage"] == stage), key=lambda r: r["n"])
        if len(rows) < 2:
            continue
        n = np.array([r["n"] for r in rows], dtype=float)
        entry = {"from_sizes": [int(v) for v in n]}
        for key in ("cpu_s", "wall_s", "peak_mib"):
            y = np.array([r.get(key) or 0.0 for r in rows], dtype=float)
            slope, intercept = np.polyfit(n, y, 1)
            # a stage whose cost the sizes do not move (start-up only) has a slope of noise: never below its last
            entry[f"{key}_linear"] = round(float(max(intercept + slope * full_n, y[-1])), 1)
            if key != "peak_mib" and y[-2] > 0.05 and y[-1] > 0:
                exponent = math.log(y[-1] / y[-2]) / math.log(n[-1] / n[-2])
                entry[f"{key}_exponent"] = round(exponent, 2)
                entry[f"{key}_power"] = round(float(y[-1] * (full_n / n[-1]) ** exponent), 1)
        out[stage] = entry
    return out


def lightgbm_rounds(work_dir: Path) -> dict:
    """The boosting rounds LightGBM ran at a size: each member's mean best iteration (over its seeds) and
    the tuning trials' mean last round; at full size they may be more (up to gbdt.num_boost_round)."""
    members = {p.stem: float(np.mean(json.loads(p.read_text())["best_iterations"]))
               for p in work_dir.glob("config-*/preds/*.json")
               if "best_iterations" in json.loads(p.read_text())}
    trials = [t.get("last_step") for p in work_dir.glob("config-*/tuning/study_summary.json")
              for t in json.loads(p.read_text()).get("trials", []) if t.get("last_step") is not None]
    return {"members": {k: round(v, 1) for k, v in sorted(members.items())},
            "tuning_trial_rounds": round(float(np.mean(trials)), 1) if trials else None}


def _hours(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def shipped_summary(report: dict) -> str:
    """Adds the growth exponents and the full-size extrapolation to `report`; returns them as a markdown
    table: CPU seconds per stage and size (measured), and at full size (extrapolated) beside the plan's."""
    from benchmarks.synth_smpd import FULL_TEST, FULL_TRAIN
    results = report["results"]
    report["growth"] = growth_exponents(results)
    report["extrapolation"] = extrapolate(results, FULL_TRAIN + FULL_TEST)  # peak_mib: the stage's own process
    sizes = sorted({r["n"] for r in results})
    plan = report.get("full_size_plan", {}).get("seconds", {})
    # no memory extrapolation: at these sizes a stage's peak is its fixed part (model weights, batches,
    # prototypes of at most `shots` posts a class), whose growth says nothing of the full size's arrays
    lines = ["| stage | " + " | ".join(f"CPU s at {n:,}" for n in sizes) + " | growth exponent (CPU, last two) "
             "| peak MiB at each size | full size, extrapolated: CPU (line a+bN / power law) "
             "| plan's estimate at full size |", "|" + " --- |" * (len(sizes) + 5)]
    for stage in dict.fromkeys(r["stage"] for r in results):
        rows = {r["n"]: r for r in results if r["stage"] == stage}
        extra = report["extrapolation"].get(stage, {})
        peaks = " / ".join(f"{rows[n]['peak_mib']:.0f}" for n in sizes if n in rows)
        plan_s = sum(plan.values()) if stage == "total" and plan else plan.get(stage)
        lines.append(f"| {stage} | " + " | ".join(f"{rows[n]['cpu_s']:.1f}" if n in rows else "" for n in sizes)
                     + f" | {extra.get('cpu_s_exponent', '')} | {peaks} | {_hours(extra.get('cpu_s_linear'))} / "
                     f"{_hours(extra.get('cpu_s_power'))} | {_hours(plan_s)} |")
    wall = {r["n"]: r["wall_s"] for r in results if r["stage"] == "total"}
    loads = {n: [v for r in results if r["n"] == n and r["stage"] != "total"
                 for v in (r.get("load_before"), r.get("load_avg_1min")) if v is not None] for n in sizes}
    lines.append("")
    lines += [f"- {n:,} posts: wall {_hours(wall.get(n))} in all, load average {min(loads[n]):.1f} to "
              f"{max(loads[n]):.1f}" for n in sizes if loads[n]]
    rounds = [(size["n"], size["rounds"]) for size in report.get("sizes", []) if size.get("rounds")]
    lines += [f"- {n:,} posts: LightGBM rounds, members' mean best iteration "
              + ", ".join(f"{k} {v:g}" for k, v in r["members"].items() if not k.startswith("ridge"))
              + f"; tuning trials' mean last round {r['tuning_trial_rounds']}" for n, r in rounds]
    return "\n".join(lines)


def shipped_main(args: argparse.Namespace) -> int:
    """Every stage of configs/smpd.yaml as shipped (SHIPPED_SETS aside) at each size, in its own process."""
    from benchmarks.synth_smpd import FULL_TEST, FULL_TRAIN
    from pipeline.stage import load_stages
    root = args.root
    if root.exists() and not args.append:
        shutil.rmtree(root)
    for folder in ("data", "work", "labels", "args", "logs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    stages = [s.name for s in load_stages() if s.name != "make_demo"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True).stdout.strip()
    report = {"mode": "shipped", "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "command": ["python", "pipeline/run_all.py", "--config", "configs/smpd.yaml",
                          *[a for s in SHIPPED_SETS for a in ("--set", s)]],
              "image_size": list(IMAGE_SIZE), "sizes": [], "results": []}
    if args.append and args.out and args.out.is_file():  # the sizes measured before, in the same --root
        report = {**json.loads(args.out.read_text()), "commit": commit}
    for fraction in args.fractions:
        name = f"f{fraction:g}"
        for folder in (root / "data" / name, root / "work" / name):
            if folder.exists():
                shutil.rmtree(folder)
        started = time.perf_counter()
        info = make_synthetic_smpd(root / "data" / name, fraction, args.seed, image_size=IMAGE_SIZE)
        (root / "labels" / f"{name}.txt").write_text("".join(f"{v:.2f}\n" for v in info["test_labels"]))
        command = shipped_command(root, name)
        write_json(root / "args" / f"{name}.json", command)
        n = info["n_train"] + info["n_test"]
        plan = plan_estimates(command)  # from the smaller sizes' runs beside it (none for the first)
        report["sizes"].append({"fraction": fraction, "n": n, "n_train": info["n_train"], "n_test": info["n_test"],
                                "n_users": info["n_users"], "generate_s": round(time.perf_counter() - started, 1),
                                "plan": plan["text"]})
        print(f"size {fraction:g}: {info['n_train']} train + {info['n_test']} test posts with images, "
              f"{info['n_users']} users", flush=True)
        for stage in stages:
            row = {"stage": stage, "n": n, "plan_s": plan["seconds"].get(stage),
                   **run_stage_process(root / "args" / f"{name}.json", stage, root / "logs" / f"{name}.log")}
            report["results"].append(row)
            if args.out:
                write_json(args.out, report)  # after every stage: a run stopped later keeps what it measured
            print(f"  {stage:16s} cpu {row['cpu_s']:8.1f} s  wall {row['wall_s']:8.1f} s  peak "
                  f"{max(row['peak_mib'], row['peak_tree_mib'] or 0):6.0f} MiB  "
                  f"load {row['load_before']:.1f}-{row['load_avg_1min']:.1f}"
                  + (f"  plan {row['plan_s']:.0f} s" if row["plan_s"] is not None else ""), flush=True)
        total = {k: round(sum(r[k] or 0.0 for r in report["results"] if r["n"] == n and r["stage"] != "total"), 1)
                 for k in ("cpu_s", "wall_s")}
        report["sizes"][-1]["rounds"] = lightgbm_rounds(root / "work" / name)
        report["results"].append({"stage": "total", "n": n, **total, "peak_mib": max(
            max(r["peak_mib"], r["peak_tree_mib"] or 0) for r in report["results"]
            if r["n"] == n and r["stage"] != "total")})
        if args.out:
            write_json(args.out, report)
    plan_only_data(root / "data" / "full", FULL_TRAIN, FULL_TEST)
    report["full_size_plan"] = plan_estimates(shipped_command(root, "full", labels=False))
    print(report["full_size_plan"]["text"])
    print(shipped_summary(report))
    if args.out:
        write_json(args.out, report)
        print(f"\nwrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    stage = sub.add_parser("stage", help="(internal) run one stage in this process")
    stage.add_argument("name")
    stage.add_argument("--args-file", type=Path, required=True, help="JSON list of run_all.py's arguments")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                        help="sizes as fractions of the real SMPD (default: 0.25 0.5 1)")
    parser.add_argument("--root", type=Path, default=Path("/tmp/smpd_bench"),
                        help="scratch folder for the data sets (deleted per size unless --keep)")
    parser.add_argument("--rounds", type=int, default=300, help="LightGBM boosting rounds at most (fixed parameters)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the generated data and work folders")
    parser.add_argument("--shipped", action="store_true",
                        help="every stage of configs/smpd.yaml as shipped (offline encoders, CPU), with images")
    parser.add_argument("--append", action="store_true",
                        help="--shipped: keep --root and the sizes in --out; run the new --fractions beside them")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "work" / "bench_scale.json",
                        help="the results as JSON (default: work/bench_scale.json)")
    parser.add_argument("--summarize", action="store_true",
                        help="--shipped: print the table of --out's measurements (growth, extrapolation); runs nothing")
    args = parser.parse_args(argv)
    if args.summarize:
        report = json.loads(args.out.read_text())
        print(shipped_summary(report))
        write_json(args.out, report)
        return 0
    if args.command == "stage":
        return stage_main(args)
    return shipped_main(args) if args.shipped else bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
