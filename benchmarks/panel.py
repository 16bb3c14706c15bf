#!/usr/bin/env python
"""The panel: every default is judged by the rule, on these data sets, against the reference model.

    python benchmarks/panel.py --quick                # metadata only, small budgets, every switch the mode can run
    python benchmarks/panel.py                        # offline encoders, a cheap prototype network
    python benchmarks/panel.py --quick --only small-300-u60,small-500-u50 --switches no-tuning,no-tag-stats
    python benchmarks/panel.py --quick --switch trend users.trend=true   # a change of your own, judged

Data sets (generated on first use under --root, then reused):
- `demo-s0..2`: the built-in demo (3,000 train / 1,000 test posts, 400 users) with seeds 0, 1, 2;
- `synth-0.005`: `benchmarks/synth_smpd.py` at 0.5% of the real size (1,528 / 903 posts; no images);
- `small-*`: demo-generated small data sets of 100 to 500 train posts with different users-per-post
  mixes (a few heavy users, the issue's 200 posts of 20 users, mostly one post per user, ...).

Rows, on each data set (`pipeline/run_all.py --config configs/demo.yaml`, plus the mode's budget
overrides and your --set): the default; a seed control (the same config with another run `seed`:
how much the scores move by chance on the same data); and the switch rows (`SWITCHES`: every
default of configs/demo.yaml and configs/smpd.yaml that is not off, each toggled; --switch adds
your own). The default row is also compared with the reference model (`benchmarks/reference.py`)
on the hidden test labels. Writes <out>/panel.json and <out>/panel.md.

The rule (`verdict`): a setting stays on (a change is adopted) only if its benefit in the validation
score the run reports (scores.json: the report slice; SRC and MAE alike) is positive on most data
sets and on no data set worse than that set's seed-control noise. The verdict of the prototype
network is printed like the others; it stays on as the method this pipeline implements.
Steering (`steering`): how often a switch's change in validation score has the sign of its change
in hidden test score, the rank correlation of validation and test scores across rows, and the
validation-minus-test gap per data set: whether the validation score can be steered by at all.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO_ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.reference import reference_for_work_dir  # noqa: E402
from features.smpd import read_labels  # noqa: E402
from models.metrics import score_by_kind  # noqa: E402


@dataclass(frozen=True)
class PanelSet:
    name: str
    kind: str          # "demo" (features.demo) or "synth" (benchmarks/synth_smpd.py)
    n_train: int = 0
    n_test: int = 0
    n_users: int = 0
    seed: int = 0
    fraction: float = 0.0
    note: str = ""


PANEL = [
    PanelSet("demo-s0", "demo", 3000, 1000, 400, 0, note="the demo"),
    PanelSet("demo-s1", "demo", 3000, 1000, 400, 1, note="the demo, seed 1"),
    PanelSet("demo-s2", "demo", 3000, 1000, 400, 2, note="the demo, seed 2"),
    PanelSet("synth-0.005", "synth", fraction=0.005, seed=0, note="synth_smpd.py at 0.5% size"),
    PanelSet("small-100-u10", "demo", 100, 40, 10, 11, note="a few heavy users"),
    PanelSet("small-200-u20", "demo", 200, 80, 20, 12, note="the issue's shape: 200 posts of 20 users"),
    PanelSet("small-300-u60", "demo", 300, 100, 60, 13, note="about 5 posts a user"),
    PanelSet("small-400-u400", "demo", 400, 150, 400, 14, note="mostly one post a user"),
    PanelSet("small-500-u50", "demo", 500, 200, 50, 15, note="about 10 posts a user"),
    PanelSet("small-250-u150", "demo", 250, 100, 150, 16, note="1 to 2 posts a user"),
]

# what each mode changes from configs/demo.yaml (the 2-core machine cannot afford the full budgets ten times)
# validation.refit_check: the report slice predicted as the test is, the judge of the refit-only switches
QUICK = ["encoders.enabled=false", "tuning.n_trials=10", "validation.refit_check=true"]
FULL = ["validation.refit_check=true", "encoders.num_workers=0", "prototype.train.epochs=1", "prototype.model.width=64", "prototype.model.use_prompts_global=false",
        "prototype.model.use_prompts_local=false", "tuning.n_trials=15"]
IMAGE_SIZE = 32  # the demo's generated photos: small, they only need to carry colour, brightness and sharpness


def make_set(spec: PanelSet, root: Path) -> tuple[Path, Path]:
    """The data folder and hidden test-label file of a panel data set (generated once)."""
    folder = root / spec.name
    data_dir, labels = folder / "data", folder / "hidden_test_labels.txt"
    if labels.is_file():
        return data_dir, labels
    if spec.kind == "demo":
        from features.demo import make_demo
        make_demo(data_dir, labels, n_train=spec.n_train, n_test=spec.n_test, n_users=spec.n_users,
                  image_size=IMAGE_SIZE, seed=spec.seed)
    else:
        from benchmarks.synth_smpd import make_synthetic_smpd
        from common.io import write_text
        info = make_synthetic_smpd(data_dir, spec.fraction, spec.seed)
        write_text(labels, "".join(f"{v:.2f}\n" for v in info["test_labels"]))
    return data_dir, labels


def run_pipeline(spec: PanelSet, data_dir: Path, work_dir: Path, subs: Path, run_name: str,
                 overrides: list[str]) -> float:
    args = [sys.executable, str(REPO_ROOT / "pipeline" / "run_all.py"), "--config", str(REPO_ROOT / "configs" / "demo.yaml"),
            "--data-dir", str(data_dir), "--work-dir", str(work_dir), "--submissions-dir", str(subs),
            "--test-labels", str(data_dir.parent / "hidden_test_labels.txt"), "--run-name", run_name,
            *sum((["--set", o] for o in overrides), [])]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pipeline on {spec.name} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def _flat(prefix: str, scores: dict) -> dict:
    out = {}
    for part in ("all", "seen", "unseen"):
        for metric in ("src", "mae"):
            value = (scores.get(part) or {}).get(metric)
            out[f"{prefix}_{metric}" + ("" if part == "all" else f"_{part}")] = None if value is None else round(value, 4)
    return out


def run_config_folder(work_dir: Path, run_dir: Path) -> Path:
    """The config folder (config-<digest>) of the run in `run_dir`: variants of one data set share its
    work folder, each with a config folder of its own, named by the digest of the run's config."""
    from pipeline.config import load_config
    folder = work_dir / f"config-{load_config(run_dir / 'config.yaml').work_digest()}"
    if not (folder / "preds" / "final.parquet").is_file():
        raise FileNotFoundError(f"{folder}/preds/final.parquet is missing: did the pipeline run {run_dir.name} finish?")
    return folder


def evaluate(spec: PanelSet, work_dir: Path, labels_path: Path, run_dir: Path, with_reference: bool = True) -> dict:
    """Test scores of one pipeline run (and of the reference on its work folder) plus the validation
    score the run reports (scores.json: the report slice, models/validation.py)."""
    posts_test = pd.read_parquet(work_dir / "posts_test.parquet", columns=["Pid"])
    y = read_labels(labels_path, len(posts_test))
    folder = run_config_folder(work_dir, run_dir)
    final = pd.read_parquet(folder / "preds" / "final.parquet")
    test = final[final["split"] == "test"]
    if not np.array_equal(test["Pid"].astype(str).to_numpy(), posts_test["Pid"].astype(str).to_numpy()):
        raise ValueError(f"{folder}/preds/final.parquet does not list the test posts in order")
    seen = np.isin(pd.read_parquet(work_dir / "posts_test.parquet", columns=["Uid"])["Uid"].to_numpy(),
                   pd.read_parquet(work_dir / "posts_train.parquet", columns=["Uid"])["Uid"].to_numpy())
    pipe = score_by_kind(y, test["pred"].to_numpy(dtype=np.float64), seen)
    row = {"data set": spec.name, "n_train": int((final["split"] == "train").sum()), "n_test": len(y),
           "test_unseen_share": round(pipe["unseen_share"], 3), **_flat("pipe", pipe)}
    if with_reference:
        ref_pred, _ = reference_for_work_dir(folder)
        row.update(_flat("ref", score_by_kind(y, ref_pred, seen)))
    scores = json.loads((run_dir / "scores.json").read_text())
    row["scheme"], row["protocol"] = scores.get("scheme"), scores.get("protocol")
    row["val_src"], row["val_mae"] = (round(scores["validation"][m], 4) for m in METRICS)
    check = scores.get("refit_check") or {}
    row["check_src"], row["check_mae"] = (None if m not in check else round(check[m], 4) for m in METRICS)
    share = (scores.get("validation_by_kind") or {}).get("unseen_share")
    row["val_unseen_share"] = None if share is None else round(share, 3)
    return row


# --- the rule and the steering figures (pure: numbers in, numbers out) ----------------------------
METRICS = ("src", "mae")


def benefit(on: dict, off: dict) -> dict:
    """How much better the run with a switch on scores than the run with it off, per metric:
    SRC up and MAE down both count positive."""
    return {"src": on["src"] - off["src"], "mae": off["mae"] - on["mae"]}


def verdict(rows: list[dict], noise: dict) -> str:
    """The keep rule: "keep" if the switch's validation benefit is positive on most data sets (more
    than half) and on no data set below minus that set's seed-control noise, for SRC and for MAE
    alike; else "drop". Data sets where the switch changed nothing at all (`"inert": True`: no score
    moved, validation or test) are left out; "no effect" when that is every data set.

    rows: one per data set, {"data set": name, "src": benefit, "mae": benefit} (`benefit`);
    noise: data set -> {"src": n, "mae": n}, the absolute change a seed-control row made there.
    """
    if not rows:
        raise ValueError("verdict: no data set rows to judge")
    rows = [r for r in rows if not r.get("inert")]
    if not rows:
        return "no effect"
    for metric in METRICS:
        gains = [float(r[metric]) for r in rows]
        if 2 * sum(g > 0 for g in gains) <= len(gains):
            return "drop"
        if any(float(r[metric]) < -float(noise[r["data set"]][metric]) for r in rows):
            return "drop"
    return "keep"


def sign_agreement(changes: list[tuple[float, float]]) -> tuple[float | None, int]:
    """(share of (validation change, test change) pairs with the same sign, pairs counted). Pairs where
    neither score moved are left out: there was nothing to steer by."""
    pairs = [(v, t) for v, t in changes if not (v == 0 and t == 0)]
    if not pairs:
        return None, 0
    return sum(np.sign(v) == np.sign(t) for v, t in pairs) / len(pairs), len(pairs)


def rank_correlation(validation: list[float], test: list[float]) -> float | None:
    """Spearman's rank correlation of validation and test scores across runs (None: under 3 runs,
    or one of them constant)."""
    from scipy.stats import spearmanr
    if len(validation) != len(test):
        raise ValueError(f"rank correlation: {len(validation)} validation and {len(test)} test scores")
    if len(validation) < 3 or np.ptp(validation) == 0 or np.ptp(test) == 0:
        return None
    return float(spearmanr(validation, test).statistic)


def steering(scores: dict, base: str, switches: list[str], noise: dict | None = None) -> dict:
    """How far the validation score can steer, over the switch rows.

    scores: row label -> data set -> {"val_src", "val_mae", "test_src", "test_mae"} (a missing data set:
    the row did not run there). Returns, per metric, the sign agreement of each switch row's change
    against `base` (validation vs test) over every (row, data set), and per data set the rank
    correlation of validation and test scores across `base` and the switch rows and the gap
    (validation minus test) of `base`. noise (data set -> {"src", "mae"}: the seed control's validation
    change): also the agreement over the pairs whose validation change is beyond that noise, and
    within it, which says how much of the disagreement is changes smaller than chance.
    """
    sets = list(scores[base])
    out: dict = {"agreement": {}, "pairs": {}, "blind": {}, "rank_correlation": {}, "gap": {}}
    for metric in METRICS:
        changes = [(scores[row][s][f"val_{metric}"] - scores[base][s][f"val_{metric}"],
                    scores[row][s][f"test_{metric}"] - scores[base][s][f"test_{metric}"])
                   for row in switches for s in sets if s in scores[row]]
        out["agreement"][metric], out["pairs"][metric] = sign_agreement(changes)
        if noise:
            where = [s for row in switches for s in sets if s in scores[row]]
            for part, keep in (("beyond_noise", lambda v, s: abs(v) > noise[s][metric]),
                               ("within_noise", lambda v, s: abs(v) <= noise[s][metric])):
                picked = [c for c, s in zip(changes, where) if s in noise and keep(c[0], s)]
                share, n = sign_agreement(picked)
                out.setdefault(part, {})[metric] = {"agreement": share, "pairs": n}
        # the validation score did not move but the test score did: a setting only the refits see
        out["blind"][metric] = sum(v == 0 and t != 0 for v, t in changes)
        # the same for the refit check (validation.refit_check), where the rows have it
        checked = [(scores[row][s][f"check_{metric}"] - scores[base][s][f"check_{metric}"],
                    scores[row][s][f"test_{metric}"] - scores[base][s][f"test_{metric}"])
                   for row in switches for s in sets if s in scores[row]
                   and None not in (scores[row][s].get(f"check_{metric}"), scores[base][s].get(f"check_{metric}"))]
        out.setdefault("check_agreement", {})[metric], out.setdefault("check_pairs", {})[metric] = sign_agreement(checked)
    for s in sets:
        rows = [r for r in [base, *switches] if s in scores[r]]
        out["rank_correlation"][s] = {m: rank_correlation([scores[r][s][f"val_{m}"] for r in rows],
                                                          [scores[r][s][f"test_{m}"] for r in rows]) for m in METRICS}
        out["gap"][s] = {m: scores[base][s][f"val_{m}"] - scores[base][s][f"test_{m}"] for m in METRICS}
    return out


def markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (f"{v:.4f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


TABLE = ["data set", "n_train", "test_unseen_share", "val_unseen_share", "scheme", "protocol", "val_src", "pipe_src",
         "ref_src", "val_mae", "pipe_mae", "ref_mae", "pipe_src_seen", "ref_src_seen", "pipe_src_unseen",
         "ref_src_unseen", "pipe_mae_seen", "ref_mae_seen", "pipe_mae_unseen", "ref_mae_unseen"]


@dataclass(frozen=True)
class Switch:
    """A panel row: `overrides` on top of the mode's config. turns "off": the row turns a default off,
    and the verdict judges the default (keep: it stays on); "on": the row turns a change on, and the
    verdict judges the change (keep: adopt it). refit_only: the setting acts on the step that predicts
    the test (the refits), which the reported score never sees: the verdict reads the refit check
    (validation.refit_check: the report slice predicted as the test is) instead."""
    label: str
    overrides: tuple[str, ...]
    judged: str                  # the setting the verdict is about
    turns: str = "off"
    needs_encoders: bool = False  # a no-op under --quick (encoders off): not run there
    refit_only: bool = False


# every default of configs/demo.yaml and configs/smpd.yaml that is not "off" (the panel runs demo.yaml:
# the settings only smpd.yaml turns on are rows that turn them on). Not here: budgets and sizes
# (n_trials, epochs, n_folds, holdout_frac, gbdt.params, encoder choice), which are not switches.
SWITCHES = [
    Switch("no-prototype", ("prototype.enabled=false",), "prototype.enabled (the method: stays on whatever the verdict)",
           needs_encoders=True),
    Switch("no-encoders", ("encoders.enabled=false",), "encoders.enabled", needs_encoders=True),
    Switch("no-user-texts", ("users.text_dims=0",), "users.text_dims=4", needs_encoders=True),
    Switch("no-tuning", ("tuning.enabled=false",), "tuning.enabled (the mission's Optuna tuning: stays on whatever the verdict)"),
    Switch("blend-best", ("ensemble.method=best",), "ensemble.method=nnls"),
    # off since the panel of 2026-12-04b (docs/results.md): rows that turn them back on, judged as changes
    Switch("tag-stats", ("metadata.tag_target_stats=true",), "metadata.tag_target_stats", turns="on"),
    Switch("auto-smoothing", ("metadata.target_stat_smoothing=auto",), "metadata.target_stat_smoothing=auto",
           turns="on"),
    Switch("size-adapt", ("gbdt.adapt_to_size=true", "tuning.adapt_to_size=true"),
           "gbdt.adapt_to_size, tuning.adapt_to_size (scales the refit's rounds)", turns="on", refit_only=True),
    Switch("kfold-refit", ("gbdt.refit_kfold=true",), "gbdt.refit_kfold (k-fold runs only)", turns="on",
           refit_only=True),
    Switch("ridge", ("ensemble.linear_members={ridge_meta: [meta], ridge_emb: [meta, emb]}",),
           "ensemble.linear_members (ridge members)", turns="on"),
    # this session's new switches, off by their helpers' panels
    Switch("adversarial-weights", ("validation.adversarial_weights=true",), "validation.adversarial_weights",
           turns="on"),
    Switch("challenge-stop", ("gbdt.stop_metric=challenge",), "gbdt.stop_metric=challenge", turns="on"),
    Switch("mlp", ("mlp.enabled=true",), "mlp.enabled (on meta_emb)", turns="on", needs_encoders=True),
    Switch("sample-selection", ("prototype.sample_selection=0.77",), "prototype.sample_selection=0.77 (smpd.yaml)",
           turns="on", needs_encoders=True),
    Switch("three-seeds", ("gbdt.seeds=[0,1,2]",), "gbdt.seeds=[0,1,2] (smpd.yaml)", turns="on"),
]
BASE = "default"


def seed_control(seed: int) -> Switch:
    """The same config with another run seed: how much the validation score moves on the same data by chance."""
    return Switch(f"seed-{seed}", (f"seed={seed}",), f"noise: run seed {seed}")


def switch_scores(rows: list[dict]) -> dict:
    """row label -> data set -> validation and test SRC and MAE (for `steering` and the verdicts)."""
    out: dict = {}
    for r in rows:
        out.setdefault(r["row"], {})[r["data set"]] = {"val_src": r["val_src"], "val_mae": r["val_mae"],
                                                        "test_src": r["pipe_src"], "test_mae": r["pipe_mae"],
                                                        "check_src": r.get("check_src"), "check_mae": r.get("check_mae")}
    return out


def judge(scores: dict, switches: list[Switch], control: str) -> tuple[list[dict], dict]:
    """(one line per switch: its verdict and per data set benefit on validation and test, the noise per
    data set). A data set without the seed control or the base run is left out of every verdict. A
    refit-only switch is judged on the refit check (its noise the seed control's there); without the
    check on every data set its verdict is "blind": the reported score cannot see it."""
    base = scores[BASE]
    sets = [s for s in base if s in scores.get(control, {})]

    def noise_of(kind: str) -> dict:
        return {s: {m: abs(scores[control][s][f"{kind}_{m}"] - base[s][f"{kind}_{m}"]) for m in METRICS}
                for s in sets if all(scores[r][s].get(f"{kind}_{m}") is not None for r in (BASE, control) for m in METRICS)}
    noise = {kind: noise_of(kind) for kind in ("val", "check")}
    lines = []
    for sw in switches:
        row = scores.get(sw.label, {})
        judged_sets = [s for s in sets if s in row]
        if not judged_sets:
            continue
        on, off = (base, row) if sw.turns == "off" else (row, base)

        def gains(kind: str) -> list[dict]:
            return [{"data set": s, **benefit({m: on[s][f"{kind}_{m}"] for m in METRICS},
                                              {m: off[s][f"{kind}_{m}"] for m in METRICS}),
                     "inert": all(on[s][f"{k}_{m}"] == off[s][f"{k}_{m}"] for k in ("val", "test") for m in METRICS)}
                    for s in judged_sets if all(r[s].get(f"{kind}_{m}") is not None for r in (on, off) for m in METRICS)]
        kind = "check" if sw.refit_only else "val"
        judged_rows = gains(kind)
        if len(judged_rows) < len(judged_sets) or any(s not in noise[kind] for s in judged_sets):
            decision = "blind"  # a refit-only switch on a panel run without validation.refit_check
        else:
            decision = verdict(judged_rows, noise[kind])
        lines.append({"switch": sw.label, "judged": sw.judged, "verdict": decision, "judged_on": kind,
                      "validation_benefit": gains("val"), "test_benefit": gains("test"),
                      **({"check_benefit": judged_rows} if sw.refit_only else {})})
    return lines, noise["val"]


def verdict_table(lines: list[dict], noise: dict) -> str:
    sets = list(noise)
    columns = ["switch", "judged", "verdict", "judged_on"] + [f"{s} val {m}" for s in sets for m in ("dSRC", "dMAE")] + \
              [f"{s} test {m}" for s in sets for m in ("dSRC", "dMAE")]
    rows = []
    for line in lines:
        r = {"switch": line["switch"], "judged": line["judged"], "verdict": line["verdict"],
             "judged_on": {"val": "validation", "check": "refit check"}[line.get("judged_on", "val")]}
        for kind, key in (("val", "validation_benefit"), ("test", "test_benefit")):
            for b in line[key]:
                r[f"{b['data set']} {kind} dSRC"], r[f"{b['data set']} {kind} dMAE"] = b["src"], b["mae"]
        rows.append(r)
    noise_row = {"switch": "noise", "judged": "abs(seed control - default), validation", "verdict": ""}
    for s in sets:
        noise_row[f"{s} val dSRC"], noise_row[f"{s} val dMAE"] = noise[s]["src"], noise[s]["mae"]
    return markdown(rows + [noise_row], columns)


def verdict_summary(lines: list[dict]) -> str:
    """The verdicts in short (the README's table): per switch, on how many data sets the judged score
    (validation, or the refit check) improved in SRC and in MAE, and the mean test benefit."""
    rows = []
    for line in lines:
        judged = line.get("check_benefit") or line["validation_benefit"]
        counted = [b for b in judged if not b.get("inert")]
        test = [b for b in line["test_benefit"] if not b.get("inert")]
        rows.append({"switch": line["switch"], "judged": line["judged"], "verdict": line["verdict"],
                     "judged on": {"val": "validation", "check": "refit check"}[line.get("judged_on", "val")],
                     "SRC up on": f"{sum(b['src'] > 0 for b in counted)}/{len(counted)}",
                     "MAE down on": f"{sum(b['mae'] > 0 for b in counted)}/{len(counted)}",
                     "mean test dSRC": float(np.mean([b["src"] for b in test])) if test else None,
                     "mean test dMAE": float(np.mean([b["mae"] for b in test])) if test else None})
    return markdown(rows, ["switch", "judged", "verdict", "judged on", "SRC up on", "MAE down on", "mean test dSRC",
                           "mean test dMAE"])


def steering_lines(steer: dict) -> list[str]:
    def num(v):
        return "n/a" if v is None else f"{v:.3f}"
    lines = [f"sign agreement of validation and test changes over the switch rows: SRC {num(steer['agreement']['src'])} "
             f"({steer['pairs']['src']} row x data set pairs), MAE {num(steer['agreement']['mae'])} ({steer['pairs']['mae']}); "
             f"pairs where only the test score moved (validation blind to the switch): SRC {steer['blind']['src']}, "
             f"MAE {steer['blind']['mae']}"]
    if "beyond_noise" in steer:
        b, w = steer["beyond_noise"], steer["within_noise"]
        lines.append(f"where the validation change is beyond the data set's seed-control noise: SRC "
                     f"{num(b['src']['agreement'])} ({b['src']['pairs']} pairs), MAE {num(b['mae']['agreement'])} "
                     f"({b['mae']['pairs']}); within it: SRC {num(w['src']['agreement'])} ({w['src']['pairs']}), "
                     f"MAE {num(w['mae']['agreement'])} ({w['mae']['pairs']})")
    if steer.get("check_pairs", {}).get("src"):
        lines.append(f"the same for the refit check (the report slice predicted as the test is): SRC "
                     f"{num(steer['check_agreement']['src'])} ({steer['check_pairs']['src']} pairs), MAE "
                     f"{num(steer['check_agreement']['mae'])} ({steer['check_pairs']['mae']})")
    for s, rho in steer["rank_correlation"].items():
        gap = steer["gap"][s]
        lines.append(f"{s}: Spearman of validation and test scores across the default and switch rows: SRC "
                     f"{num(rho['src'])}, MAE {num(rho['mae'])}; validation minus test (default): SRC {gap['src']:+.4f}, "
                     f"MAE {gap['mae']:+.4f}")
    return lines


def summary_lines(rows: list[dict]) -> list[str]:
    rows = [r for r in rows if r.get("ref_src") is not None]
    wins_src = sum(r["pipe_src"] >= r["ref_src"] for r in rows)
    wins_mae = sum(r["pipe_mae"] <= r["ref_mae"] for r in rows)
    return [f"pipeline at least as good as the reference on test: SRC on {wins_src}/{len(rows)}, "
            f"MAE on {wins_mae}/{len(rows)} data sets"]


def custom_switch(values: list[str]) -> Switch:
    if len(values) < 2:
        raise SystemExit(f"--switch {' '.join(values)}: expected a label and at least one SECTION.KEY=VALUE")
    return Switch(values[0], tuple(values[1:]), " ".join(values[1:]), turns="on")


def merged_rows(paths: list[Path], switches: list[Switch]):
    """(rows, switch rows, overrides, skipped, no data sets to run) of `--merge`: every data set's rows
    from the last panel.json that has the data set, and the switches those rows hold."""
    by_set: dict[str, list[dict]] = {}
    overrides = []
    for path in paths:
        panel = json.loads(path.read_text())
        overrides.append(f"{path}: {panel['mode']} ({' '.join(panel['overrides'])})")
        for name in dict.fromkeys(r["data set"] for r in panel["rows"]):
            by_set[name] = [r for r in panel["rows"] if r["data set"] == name]
    rows = [r for name_rows in by_set.values() for r in name_rows]
    present = {r["row"] for r in rows}
    known = [sw for sw in switches if sw.label in present]
    known += [Switch(label, (), label, turns="on") for label in present
              if label not in {sw.label for sw in known} and label != BASE and not label.startswith("seed-")]
    return rows, known, ["merged:", *overrides], [], []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO_ROOT / "work" / "panel", help="data sets and work folders")
    parser.add_argument("--quick", action="store_true", help="metadata only (encoders off), 10 tuning trials")
    parser.add_argument("--label", default="default", help="name of this panel (its run names and output folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override for every pipeline run (the panel's default row included)")
    parser.add_argument("--only", help="comma-separated data set names")
    parser.add_argument("--switches", help="comma-separated labels of built-in switch rows (default: all that "
                                           "the mode can run; 'none': only the default and seed-control rows)")
    parser.add_argument("--switch", dest="custom", action="append", nargs="+", default=[],
                        metavar="LABEL SECTION.KEY=VALUE", help="a switch row of your own: a change to judge")
    parser.add_argument("--control-seed", type=int, default=1, help="run seed of the seed-control row")
    parser.add_argument("--baseline", type=Path, help="a panel.json to compare the default row against")
    parser.add_argument("--out", type=Path, help="output folder (default: <root>/results/<mode>-<label>)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="PANEL_JSON",
                        help="run nothing: judge the rows of these panel.json files together (a data set's rows "
                             "from the last file that has them), e.g. a full panel on some sets and --quick on others")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: the rows of the runs a panel with these options already finished "
                             "(a killed panel's rows; the rows it did not reach are listed as not run)")
    args = parser.parse_args(argv)
    mode = "merged" if args.merge else "quick" if args.quick else "full"
    specs = [s for s in PANEL if not args.only or s.name in args.only.split(",")]
    wanted = None if args.switches is None else set(args.switches.split(",")) - {"none"}
    unknown = (wanted or set()) - {sw.label for sw in SWITCHES}
    if unknown:
        raise SystemExit(f"--switches: unknown {sorted(unknown)}; known: {', '.join(sw.label for sw in SWITCHES)}")
    switches = [sw for sw in SWITCHES if (wanted is None or sw.label in wanted)
                and not (args.quick and sw.needs_encoders)] + [custom_switch(v) for v in args.custom]
    skipped = [sw.label for sw in SWITCHES if args.quick and sw.needs_encoders and (wanted is None or sw.label in wanted)]
    control = seed_control(args.control_seed)
    out = args.out or args.root / "results" / f"{mode}-{args.label}"
    out.mkdir(parents=True, exist_ok=True)
    mode_overrides = (QUICK if args.quick else FULL) + args.overrides
    rows, failed = [], []
    if args.merge:
        rows, switches, mode_overrides, skipped, specs = merged_rows(args.merge, switches)
    for spec in specs:
        data_dir, labels = make_set(spec, args.root / "data")
        work_dir = args.root / "work" / mode / spec.name
        subs = args.root / "submissions"
        for sw in [Switch(BASE, (), "the default"), control, *switches]:
            run_name = f"panel-{mode}-{args.label}-{sw.label}-{spec.name}"
            if args.collect:  # the rows an earlier (maybe killed) panel finished, as they are
                if not (subs / run_name / "scores.json").is_file():
                    print(f"not run: {sw.label} on {spec.name}", flush=True)
                    continue
                seconds = float("nan")
            try:
                if not args.collect:
                    seconds = run_pipeline(spec, data_dir, work_dir, subs, run_name, mode_overrides + list(sw.overrides))
            except RuntimeError as err:  # one failed row must not lose the others
                failed.append(f"{sw.label} on {spec.name}: {str(err).splitlines()[-1]}")
                print(f"FAILED {failed[-1]}", flush=True)
                continue
            row = {"row": sw.label, **evaluate(spec, work_dir, labels, subs / run_name, with_reference=sw.label == BASE),
                   "seconds": round(seconds, 1)}
            rows.append(row)
            ref = f" | reference SRC {row['ref_src']:.4f} MAE {row['ref_mae']:.4f}" if "ref_src" in row else ""
            print(f"{spec.name} {sw.label}: validation SRC {row['val_src']:.4f} MAE {row['val_mae']:.4f} | test SRC "
                  f"{row['pipe_src']:.4f} MAE {row['pipe_mae']:.4f}{ref} ({seconds:.0f} s)", flush=True)
    base_rows = [r for r in rows if r["row"] == BASE]
    table = markdown(base_rows, [c for c in TABLE if any(c in r for r in base_rows)])
    text = (f"Panel ({mode}, {args.label}; overrides of every row: {' '.join(mode_overrides)}; seed control: "
            f"{control.label})\n\nThe default row against the reference (test scores; val_*: the reported "
            f"validation score):\n\n{table}\n" + "\n".join(summary_lines(base_rows)) + "\n")
    scores = switch_scores(rows)
    verdicts, noise, steer = [], {}, None
    if BASE in scores:
        verdicts, noise = judge(scores, switches, control.label)
        judged = [sw.label for sw in switches if sw.label in scores]
        if verdicts:
            text += ("\nVerdicts (the rule, `verdict`: keep if the validation benefit is positive on most data sets "
                     "and on none below minus that set's seed-control noise, SRC and MAE alike; d*: the benefit of the "
                     "judged setting being on, SRC up and MAE down positive):\n\n" + verdict_summary(verdicts) +
                     "\nPer data set:\n\n" + verdict_table(verdicts, noise))
        if judged:
            steer = steering(scores, BASE, judged, noise)
            text += "\nSteering:\n\n" + "\n".join(f"- {line}" for line in steering_lines(steer)) + "\n"
    if skipped:
        text += f"\nNot run under --quick (encoders off, so they change nothing): {', '.join(skipped)}\n"
    if failed:
        text += "\nFailed rows:\n" + "".join(f"- {f}\n" for f in failed)
    if args.baseline:
        base = {r["data set"]: r for r in json.loads(args.baseline.read_text())["rows"] if r.get("row", BASE) == BASE}
        delta = [{"data set": r["data set"], **{f"d_{k}": round(r[k] - base[r["data set"]][k], 4)
                                              for k in ("pipe_src", "pipe_mae", "pipe_src_unseen", "pipe_mae_unseen")
                                              if r.get(k) is not None and base.get(r["data set"], {}).get(k) is not None}}
                 for r in base_rows if r["data set"] in base]
        text += f"\nChange against {args.baseline}:\n\n" + markdown(delta, ["data set", "d_pipe_src", "d_pipe_mae",
                                                                              "d_pipe_src_unseen", "d_pipe_mae_unseen"])
    print("\n" + text)
    (out / "panel.json").write_text(json.dumps({"mode": mode, "label": args.label, "overrides": mode_overrides,
                                                "control": control.label, "rows": rows, "verdicts": verdicts,
                                                "noise": noise, "steering": steer, "failed": failed}, indent=1))
    (out / "panel.md").write_text(text)
    print(f"wrote {out / 'panel.json'} and {out / 'panel.md'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
