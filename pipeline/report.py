"""Stage `report`: submissions/<run>/report.html with the run's scores, leaderboard
position, key figures (PNG files in submissions/<run>/figures/) and config.

Optional stages (encode, prototype, tune) that are off or have not run are listed
as such and their figures left out. The loaders here are also what the notebooks
in notebooks/ call, so a notebook and the report show the same numbers.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from common.io import read_json, read_parquet, write_text
from pipeline.catalog import RunContext, add_context_arguments, make_context
from pipeline.stage import Stage, load_stages
from reporting.figures import wrap_titles
from reporting.report_page import ReportFigure, RunReport, latest_run, leaderboard_position, ranked_runs, render_report
from reporting.submission_format import read_leaderboard as read_leaderboard_file

log = logging.getLogger(__name__)

OPTIONAL_STAGES = ("encode", "prototype", "tune")
MAX_MAP_POINTS = 5000
FIGURES_DIR = "figures"


# --- which run, which files -----------------------------------------------------------------
def notebook_context(argv: list[str] | None = None) -> RunContext:
    """The run a notebook shows.

    argv: run_all.py's arguments (default: the environment variable SMP_ARGS, split like a
    shell; empty means the built-in demo). Without --run-name, the latest run of that data
    set on the leaderboard.
    """
    parser = argparse.ArgumentParser()
    add_context_arguments(parser)  # run_all.py's own options (--stages, ...) are ignored here
    args, _ = parser.parse_known_args(shlex.split(os.environ.get("SMP_ARGS", "")) if argv is None else argv)
    ctx = make_context(args)
    if args.run_name is None:
        latest = latest_run(read_leaderboard(ctx), dataset_name(ctx))
        if latest is not None:
            ctx.run_name = latest
    return ctx


def dataset_name(ctx: RunContext) -> str:
    """The data set's name as the leaderboard records it (RunContext.dataset)."""
    return ctx.dataset


def read_leaderboard(ctx: RunContext) -> pd.DataFrame | None:
    return read_leaderboard_file(ctx.leaderboard)


def stage_status(ctx: RunContext) -> list[dict]:
    """Every stage with its status: `off` (this config), `done` (outputs exist) or `not run`."""
    rows = []
    for stage in load_stages():
        if not stage.enabled(ctx):
            status = "off"
        else:
            try:
                status = "done" if all(p.exists() for p in stage.outputs(ctx)) else "not run"
            except Exception as err:  # a stage that cannot even name its outputs under this config
                status = f"not run ({err})"
        rows.append({"name": stage.name, "status": status, "description": stage.description})
    return rows


HOW_TO_TURN_ON = {
    "encode": "--set encoders.enabled=true",
    "prototype": "--set encoders.enabled=true --set prototype.enabled=true",
    "tune": "--set tuning.enabled=true",
}


def stage_done(ctx: RunContext, name: str, verbose: bool = True) -> bool:
    """True when stage `name` is on in this config and its outputs exist; otherwise say how to get them."""
    status = {s["name"]: s["status"] for s in stage_status(ctx)}.get(name, "unknown")
    if status != "done" and verbose:
        if status == "unknown":
            print(f"This pipeline has no stage {name} (pipeline/stage.py STAGE_MODULES): nothing to show here.")
        else:
            switch = HOW_TO_TURN_ON.get(name, "")
            print(f"Stage {name} is {status!r} for this config: nothing to show here.\n"
                  f"To see it: python pipeline/run_all.py {switch} (plus your usual arguments), then open the "
                  f"notebook with SMP_ARGS='{switch}' set.")
    return status == "done"


# --- predictions -----------------------------------------------------------------------------
def validation_frame(ctx: RunContext, preds_path: Path | None = None) -> pd.DataFrame:
    """Train posts that validate a model (fold >= 0) with their out-of-fold prediction.

    preds_path: a member's predictions (ctx.member_preds(m)); default the final blend.
    """
    preds = read_parquet(preds_path or ctx.final_preds)
    posts = read_parquet(ctx.posts("train"), columns=["Pid", "Uid", "Category", "Subcategory", "Postdate", "label"])
    train = preds[(preds["split"] == "train") & (preds["fold"] >= 0)][["Pid", "fold", "pred"]]
    frame = posts.merge(train, on="Pid", how="inner", validate="one_to_one")
    if len(frame) != len(train):
        raise ValueError(f"{preds_path or ctx.final_preds} lists posts that {ctx.posts('train')} does not have")
    return frame


def member_summaries(ctx: RunContext) -> dict[str, dict]:
    """The summary JSON of every member that train_trees wrote (scores, importance, ...)."""
    from pipeline.members import members_of
    return {m: read_json(ctx.member_summary(m)) for m in members_of(ctx.config)
            if ctx.member_summary(m).is_file()}


# --- prototype network ------------------------------------------------------------------------
def prototype_fold_dirs(ctx: RunContext) -> dict[int, Path]:
    """The folder of each fold's network of this config (work/<ds>/prototype/<run key>/fold_<k>/)."""
    feature_fold = read_parquet(ctx.folds, columns=["feature_fold"])["feature_fold"].to_numpy()
    folder = ctx.prototype_networks(read_json(ctx.prototype_summary)["run_key"])
    return {int(k): folder / f"fold_{k}" for k in np.unique(feature_fold)}


def _check_key(ctx: RunContext, path: Path, key: str) -> None:
    """Refuse a file another config (or other inputs, or older code) made."""
    if key != read_json(ctx.prototype_summary)["run_key"]:
        raise ValueError(f"{path} was made under another prototype config or other inputs: "
                         "rerun the prototype stage (python pipeline/run_all.py --stages prototype)")


def prototype_history(ctx: RunContext) -> pd.DataFrame:
    """Per-epoch mean losses of each fold's network (fold, epoch, loss, one column per loss term),
    read from the checkpoints the `prototype` stage keeps in each fold's folder."""
    from models.train_prototype import read_checkpoint
    rows = []
    for fold, folder in prototype_fold_dirs(ctx).items():
        state = read_checkpoint(folder / "last.pt")
        _check_key(ctx, folder / "last.pt", state["key"])
        rows += [{"fold": fold, **row} for row in state["history"]]
    return pd.DataFrame(rows)


def prototype_oof_outputs(ctx: RunContext) -> dict[str, np.ndarray]:
    """The networks' outputs for every train post from the network that did not train on it
    (`probs`, `probs_global`, `probs_local`, `probs_contrast_<level>`, `pretext_loss`, ...),
    read from each fold's `outputs.npz`."""
    feature_fold = read_parquet(ctx.folds, columns=["feature_fold"])["feature_fold"].to_numpy()
    out: dict[str, np.ndarray] = {}
    for fold, folder in prototype_fold_dirs(ctx).items():
        _check_key(ctx, folder / "outputs.npz", read_json(folder / "outputs.json")["key"])
        rows = np.flatnonzero(feature_fold == fold)
        with np.load(folder / "outputs.npz") as arrays:
            for key in (k for k in arrays.files if k.startswith("oof_")):
                value = arrays[key]
                if len(value) != len(rows):
                    raise ValueError(f"{folder / 'outputs.npz'}: {key} has {len(value)} rows for the {len(rows)} "
                                     f"posts of fold {fold}; rerun the prototype stage")
                name = key.removeprefix("oof_")
                if name not in out:
                    out[name] = np.full((len(feature_fold),) + value.shape[1:], np.nan, dtype=np.float32)
                out[name][rows] = value
    return out


# --- figures of one run ----------------------------------------------------------------------
class FigureWriter:
    """Saves figures as PNGs in the run folder and remembers them for the page.

    A figure that fails to draw becomes a note on the page (and a warning in the log)
    instead of failing the run whose submission is already written.
    """

    def __init__(self, run_dir: Path):
        self.dir = run_dir / FIGURES_DIR
        self.figures: list[ReportFigure] = []
        self.notes: list[str] = []

    def add(self, section: str, name: str, title: str, draw: Callable, caption: str = "") -> None:
        from common.io import atomic_path
        try:
            fig = draw()
            wrap_titles(fig)
            self.dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.dir / f"{name}.png") as tmp:
                fig.savefig(tmp, format="png")
        except Exception as err:  # noqa: BLE001 - reported on the page and in the log
            log.warning("report: figure %s failed: %s", name, err, exc_info=True)
            self.notes.append(f"Figure '{title}' could not be drawn: {type(err).__name__}: {err}")
            return
        self.figures.append(ReportFigure(section, title, f"{FIGURES_DIR}/{name}.png", caption))

    def link(self, section: str, path: Path, title: str, caption: str = "") -> None:
        """A PNG another stage wrote into the run folder (shown only when it exists)."""
        if path.is_file():
            self.figures.append(ReportFigure(section, title, path.relative_to(self.dir.parent).as_posix(), caption))


def data_figures(ctx: RunContext, out: FigureWriter) -> None:
    from reporting import figures as rf
    train = read_parquet(ctx.posts("train"), columns=["Postdate", "label"])
    test = read_parquet(ctx.posts("test"), columns=["Postdate"])
    out.add("Data", "label_distribution", "Label distribution", lambda: rf.label_histogram(train["label"]))
    out.add("Data", "post_period", "Train and test periods",
            lambda: rf.post_period(train["Postdate"], test["Postdate"], train["label"]),
            "The test period follows the training period; validation should too (validation.scheme).")


# PNGs of the `plots` stage (submissions/figures.py) in the run folder: file, section, title
MODEL_FIGURES = (
    ("predicted_vs_true.png", "Model", "Validation: predicted against true"),
    ("feature_importance.png", "Model", "Feature importance (gain)"),
    ("optimisation_history.png", "Tuning", "Optuna optimisation history"),
)


def model_figures(ctx: RunContext, out: FigureWriter) -> None:
    for name, section, title in MODEL_FIGURES:
        out.link(section, ctx.run_file(name), title)


def tuning_study(ctx: RunContext):
    """The Optuna study the `tune` stage ran (read from its storage)."""
    import optuna

    from models.tuning import open_storage
    summary = read_json(ctx.tuning_summary)
    return optuna.load_study(study_name=summary["study_name"], storage=open_storage(ctx.study_storage))


def param_importances(study) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) over the complete trials of a study."""
    import optuna
    return optuna.importance.get_param_importances(study)


def tuning_figures(ctx: RunContext, out: FigureWriter) -> None:
    from reporting import figures as rf
    out.add("Tuning", "param_importance", "Optuna parameter importance",
            lambda: rf.param_importance(param_importances(tuning_study(ctx))))


def error_figures(ctx: RunContext, out: FigureWriter) -> None:
    from reporting import figures as rf
    val = validation_frame(ctx)
    caption = f"{len(val):,} validation posts, out-of-fold predictions of the final blend."
    out.add("Errors", "error_by_category", "Validation error by category",
            lambda: rf.error_by_group(val["label"], val["pred"], val["Category"], "category"), caption)
    out.add("Errors", "error_over_time", "Validation error over time",
            lambda: rf.error_over_time(val["label"], val["pred"], val["Postdate"]), caption)


def embedding_figures(ctx: RunContext, out: FigureWriter) -> None:
    from features.encoders import load_encoded
    from reporting import figures as rf
    encoded = load_encoded(ctx.encoder_cache, ctx.config.encoders, "train")
    posts = read_parquet(ctx.posts("train"), columns=["Category", "label"])
    rows = sample_rows(np.flatnonzero(np.asarray(encoded.has_image, bool)), MAX_MAP_POINTS, ctx.config.seed)
    if len(rows) < 2:
        out.notes.append(f"{len(rows)} train posts have a usable image: the image embedding maps are left out.")
        return
    xy, pca = rf.project_2d(np.asarray(encoded.image[rows], dtype=np.float32))
    title = f"Image embeddings ({encoded.image_encoder}), {len(rows):,} train posts"
    out.add("Features", "embedding_by_category", f"{title}, by category",
            lambda: rf.embedding_map(xy, posts["Category"].to_numpy()[rows], title, "category", pca))
    out.add("Features", "embedding_by_popularity", f"{title}, by popularity",
            lambda: rf.embedding_map(xy, posts["label"].to_numpy()[rows], title, "popularity", pca))


def prototype_figures(ctx: RunContext, out: FigureWriter) -> None:
    from models.train_prototype import ClassVocab
    from reporting import figures as rf
    if "skipped" in read_json(ctx.prototype_summary):
        return  # no network was trained; skipped_blocks says why
    out.add("Prototype network", "prototype_training", "Prototype network: training losses",
            lambda: rf.training_curves(prototype_history(ctx)))
    posts = read_parquet(ctx.posts("train"), columns=["Category", "Subcategory", "Concept"])
    vocab = ClassVocab.from_posts(posts)
    true = vocab.encode(posts)
    pred_sub = prototype_oof_outputs(ctx)["probs"].argmax(axis=1)
    out.add("Prototype network", "prototype_confusion", "Pretext task: category confusion",
            lambda: rf.confusion(true["cat"], vocab.sub_to_cat[pred_sub], vocab.names["cat"],
                                 "Pretext task, category of the predicted subcategory"),
            "Out-of-fold: each train post classified by the network that did not train on it.")


def adversarial_frame(ctx: RunContext) -> tuple[dict, pd.DataFrame]:
    """The adversarial stage's summary and its posts table (Pid, split, test_likeness, weight)."""
    return read_json(ctx.adversarial_summary), read_parquet(ctx.adversarial_posts)


def adversarial_figures(ctx: RunContext, out: FigureWriter) -> None:
    from reporting import figures as rf
    from reporting.report_page import ADVERSARIAL
    summary, posts = adversarial_frame(ctx)
    likeness = {s: posts.loc[posts["split"] == s, "test_likeness"].to_numpy() for s in ("train", "test")}
    out.add(ADVERSARIAL, "adversarial_validation", "Train vs test classifier: test-likeness and shifted features",
            lambda: rf.adversarial_validation(likeness["train"], likeness["test"], pd.DataFrame(summary["features"]),
                                              summary["auc"], summary.get("time_auc")),
            "Out-of-fold: each post scored by the classifier that did not see it (stage adversarial). A "
            "categorical feature's bar: the AUC of its category's out-of-fold test share. Grey: follows the post "
            "date, kept out of the classifier.")


def skipped_blocks(ctx: RunContext) -> list[str]:
    """One line per feature block part that the data left empty (and the stage skipped), with why."""
    from common.io import read_skipped
    lines = []
    for path in sorted(ctx.features_dir.glob("*_train.parquet")):
        block = path.name.removesuffix("_train.parquet")
        for part, reason in read_skipped(path).items():
            what = f"Feature block {block}" + (f", part {part}," if part != block else "")
            lines.append(f"{what} is empty and was skipped: {reason}.")
    return lines


def sample_rows(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most n of `rows`, drawn with a fixed seed, in their original order."""
    if len(rows) <= n:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))


def leaderboard_figures(ctx: RunContext, out: FigureWriter, board: pd.DataFrame | None) -> None:
    from reporting import figures as rf
    if board is None:
        return
    rows = board[board["dataset"].astype(str) == dataset_name(ctx)]
    out.add("Leaderboard", "leaderboard", "SRC of every run on this data set",
            lambda: rf.leaderboard_history(rows, ctx.run_name, dataset_name(ctx)))


def build_report(ctx: RunContext) -> RunReport:
    """Gather the run's outputs, write its figures, and return the page's content."""
    run_dir = ctx.run_dir
    scores = read_json(ctx.scores)
    board = read_leaderboard(ctx)
    dataset = dataset_name(ctx)
    stages = [{**s, "status": "this page"} if s["name"] == STAGE.name else s for s in stage_status(ctx)]
    status = {s["name"]: s["status"] for s in stages}
    out = FigureWriter(run_dir)
    notes = []
    for name in OPTIONAL_STAGES:
        if status.get(name) == "off":
            notes.append(f"Stage {name} is off in this config: its figures are left out.")
        elif name in status and status[name] != "done":
            notes.append(f"Stage {name} is on but has not run (its outputs are missing): its figures are left out.")

    skipped = skipped_blocks(ctx)
    for line in skipped:
        log.warning("report: %s", line)
    groups = [(model_figures, ()), (error_figures, ())]
    groups += [(group, ()) for stage, group in (("adversarial", adversarial_figures), ("tune", tuning_figures),
                                                ("encode", embedding_figures), ("prototype", prototype_figures))
               if status.get(stage) == "done"]
    groups += [(data_figures, ()), (leaderboard_figures, (board,))]
    for group, args in groups:
        try:
            group(ctx, out, *args)
        except Exception as err:  # noqa: BLE001 - as for one figure: a note, not a failed run
            log.warning("report: figures of %s failed: %s", group.__name__, err, exc_info=True)
            out.notes.append(f"The figures of {group.__name__} could not be made: {type(err).__name__}: {err}")

    posts = read_parquet(ctx.posts("train"), columns=["Uid"])
    n_test = len(read_parquet(ctx.posts("test"), columns=["Pid"]))
    row = {}
    if board is not None and (board["run"].astype(str) == ctx.run_name).any():
        row = board[board["run"].astype(str) == ctx.run_name].iloc[-1].to_dict()
    facts = {"data set": dataset, "train posts": f"{len(posts):,}", "test posts": f"{n_test:,}",
             "users (train)": f"{posts['Uid'].nunique():,}", "validation": ctx.config.validation.scheme,
             "config digest": ctx.config.digest()}
    facts.update({k: row[k] for k in ("time", "commit") if isinstance(row.get(k), str)})
    config_file = ctx.run_file("config.yaml")
    return RunReport(
        run=ctx.run_name, dataset=dataset, scores=scores,
        position=leaderboard_position(board, ctx.run_name, dataset) if board is not None else None,
        stages=stages, figures=out.figures, notes=skipped + notes + out.notes, facts=facts,
        config_yaml=config_file.read_text() if config_file.is_file() else "",
        leaderboard=ranked_runs(board, dataset, ctx.run_name) if board is not None else None)


def report_path(ctx: RunContext) -> Path:
    return ctx.report_page


def run(ctx: RunContext) -> None:
    report = build_report(ctx)
    write_text(report_path(ctx), render_report(report, ctx.run_dir))
    position = f"{report.position[0]} of {report.position[1]}" if report.position else "not ranked"
    log.info("report: %s (%d figures; leaderboard position %s)", report_path(ctx), len(report.figures), position)


STAGE = Stage(
    name="report",
    run=run,
    inputs=lambda ctx: [ctx.posts("train"), ctx.posts("test"), ctx.final_preds, ctx.scores,
                        ctx.leaderboard],
    outputs=lambda ctx: [report_path(ctx)],
    per_run=True,
    modules=("reporting.report_page", "reporting.figures", "reporting.submission_format", "pipeline.members",
             "features.encoders", "models.train_prototype", "models.tuning"),
    description="write the run's report page (scores, leaderboard position, figures, config)",
)
