"""Stage `plots` (per run): the model-side figures and summaries, saved in the run folder.

submissions/<run>/
  predicted_vs_true.png      out-of-fold blend prediction against the label (validation posts)
  feature_importance.png     gain importance of the LightGBM member that carries the blend (largest weight)
  optimisation_history.png   Optuna trials and best-so-far (when tuning is on)
  blend.json                 blend method, weights, scores, members, level recalibration
  tuning_best_params.json, tuning_study_summary.json   (when tuning is on)
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from common.io import atomic_path, read_json, read_parquet
from pipeline.catalog import RunContext
from pipeline.stage import Stage
from pipeline.members import lightgbm_members
from reporting import figures

log = logging.getLogger(__name__)


def save(fig, path: Path) -> None:
    figures.wrap_titles(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def importance_member(ctx: RunContext) -> str:
    """The LightGBM member that carries the blend: the largest blend weight among the LightGBM
    members (ridge members have no gain importance); ties and all-zero weights go to the best
    validation SRC."""
    weights = read_json(ctx.final_summary)["weights"]
    members = list(lightgbm_members(ctx.config))
    scores = {m: read_json(ctx.member_summary(m))["score"]["src"] for m in members}
    return max(members, key=lambda m: (weights.get(m, 0.0), np.nan_to_num(scores[m], nan=-np.inf)))


def run(ctx: RunContext) -> None:
    run_dir = ctx.run_dir
    final = read_parquet(ctx.final_preds)
    labels = read_parquet(ctx.posts("train"), columns=["Pid", "label"])
    val = final[(final["split"] == "train") & (final["fold"] >= 0)].merge(labels, on="Pid", validate="one_to_one")
    blend = read_json(ctx.final_summary)
    save(figures.predicted_vs_true(val["label"], val["pred"], f"Validation: blend ({blend['method']}) against true"),
         ctx.run_file("predicted_vs_true.png"))

    member = importance_member(ctx)
    gain = read_json(ctx.member_summary(member)).get("feature_importance_gain", {})
    title = f"Feature importance (gain): {member}, blend weight {blend['weights'].get(member, 0.0):.2f}"
    save(figures.feature_importance(pd.Series(gain, dtype=np.float64), title=title), ctx.run_file("feature_importance.png"))
    copy(ctx.final_summary, ctx.run_file("blend.json"))

    if ctx.config.tuning.enabled:
        summary = read_json(ctx.tuning_summary)
        save(figures.optimisation_history(pd.DataFrame(summary["trials"]), summary["metric"], summary["direction"]),
             ctx.run_file("optimisation_history.png"))
        copy(ctx.best_params, ctx.run_file("tuning_best_params.json"))
        copy(ctx.tuning_summary, ctx.run_file("tuning_study_summary.json"))
    log.info("plots: wrote figures to %s", run_dir)


def inputs(ctx: RunContext) -> list[Path]:
    paths = [ctx.posts("train"), ctx.final_preds, ctx.final_summary]
    paths += [ctx.member_summary(m) for m in lightgbm_members(ctx.config)]
    if ctx.config.tuning.enabled:
        paths += [ctx.best_params, ctx.tuning_summary]
    return paths


def outputs(ctx: RunContext) -> list[Path]:
    names = ["predicted_vs_true.png", "feature_importance.png", "blend.json"]
    if ctx.config.tuning.enabled:
        names += ["optimisation_history.png", "tuning_best_params.json", "tuning_study_summary.json"]
    return [ctx.run_file(n) for n in names]


STAGE = Stage(
    name="plots",
    run=run,
    inputs=inputs,
    outputs=outputs,
    per_run=True,
    modules=("reporting.figures", "pipeline.members"),
    description="optimisation history, feature importance and predicted-vs-true PNGs in the run folder",
)
