"""The run report: one self-contained HTML page per run (scores, leaderboard position,
figures, config), rendered from plain data by `render_report`.

The stage `report` (pipeline/report.py) gathers a run's outputs into a `RunReport`
and writes the figures as PNG files beside the page; the page embeds them (data:
URIs), so it shows the same wherever it is copied, alone or with its run folder.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ("src", "mae", "mse")


@dataclass
class ReportFigure:
    section: str
    title: str
    file: str          # path relative to the report page
    caption: str = ""


@dataclass
class RunReport:
    run: str
    dataset: str
    scores: dict                      # scores.json of the run: validation, test, members, weights, method
    position: tuple[int, int] | None  # (rank by validation SRC, runs of this data set, protocol and folds)
    stages: list[dict]                # name, status ("on", "off", "not run"), description
    figures: list[ReportFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # short key facts: posts, users, commit, time, ...
    config_yaml: str = ""
    leaderboard: pd.DataFrame | None = None    # ranked_runs: this run's protocol and folds best first, then the others


def runs_of(board: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The leaderboard rows of one data set, one per run (its latest row)."""
    if board is None or board.empty:
        return pd.DataFrame(columns=["run", "dataset", "val_src"])
    rows = board[board["dataset"].astype(str) == str(dataset)]
    return rows.drop_duplicates("run", keep="last")


UNRECORDED = "(unrecorded)"  # rows written before the leaderboard named protocol and folds


def comparison_group(rows: pd.DataFrame) -> pd.Series:
    """Per row: `protocol folds_digest` (models/validation.py); runs are ranked only within one group."""
    def column(name: str) -> pd.Series:
        values = rows[name] if name in rows else pd.Series(np.nan, index=rows.index)
        return values.astype(object).where(values.notna(), UNRECORDED).astype(str)
    return column("protocol") + " " + column("folds_digest")


def _group_of(rows: pd.DataFrame, run: str | None) -> str | None:
    """The comparison group of `run` (default: the last run listed)."""
    groups = comparison_group(rows)
    if run is None:
        return groups.iloc[-1] if len(groups) else None
    mine = groups[rows["run"].astype(str).to_numpy() == run]
    return None if mine.empty else mine.iloc[-1]


def leaderboard_position(board: pd.DataFrame, run: str, dataset: str) -> tuple[int, int] | None:
    """Rank of `run` by validation SRC among the runs of `dataset` with its protocol and folds
    (1 = best; ties share a rank), and how many such runs have a score."""
    rows = runs_of(board, dataset)
    group = _group_of(rows, run)
    if group is None:
        return None
    rows = rows[(comparison_group(rows) == group).to_numpy()]
    src = pd.to_numeric(rows["val_src"], errors="coerce")
    mine = src[rows["run"].astype(str).to_numpy() == run]
    if mine.empty or not np.isfinite(mine.iloc[-1]):
        return None
    return int((src > mine.iloc[-1]).sum()) + 1, int(src.notna().sum())


def ranked_runs(board: pd.DataFrame, dataset: str, run: str | None = None) -> pd.DataFrame:
    """The runs of `dataset` with `run`'s protocol and folds (default: the last run's), best validation
    SRC first, with a `rank` column; the runs of other protocols or folds follow, unranked (`rank` NA),
    grouped by protocol, flagged by `compared` False."""
    rows = runs_of(board, dataset).copy()
    rows["val_src"] = pd.to_numeric(rows["val_src"], errors="coerce")
    groups = comparison_group(rows)
    rows["compared"] = (groups == _group_of(rows, run)).to_numpy()
    rows["group"] = groups.to_numpy()
    rows["rank"] = pd.Series(pd.NA, index=rows.index, dtype="Int64")
    same = rows["compared"].to_numpy()
    rows.loc[same, "rank"] = rows.loc[same, "val_src"].rank(ascending=False, method="min").astype("Int64")
    rows = rows.sort_values(["compared", "group", "val_src", "run"], ascending=[False, True, False, True],
                            kind="stable", na_position="last")
    rows = pd.concat([rows[rows["compared"]].sort_values(["rank", "run"], kind="stable"), rows[~rows["compared"]]])
    return rows.drop(columns="group").reset_index(drop=True)


def latest_run(board: pd.DataFrame | None, dataset: str) -> str | None:
    """The last run of `dataset` in the leaderboard (rows are appended in run order)."""
    rows = runs_of(board, dataset)
    return None if rows.empty else str(rows["run"].iloc[-1])


# --- HTML ---------------------------------------------------------------------------------
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.this { background: #fff3cd; font-weight: bold; }
.big { font-size: 1.25em; } .muted { color: #777; } .note { background: #f4f8ff; border-left: 4px solid #7aa7e0;
padding: 0.4em 0.8em; margin: 0.3em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, digits: int = 4) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if not np.isfinite(value) else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset(), highlight: int | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="num">{_e(c)}</td>' if j in numeric else f"<td>{_e(c)}</td>"
                        for j, c in enumerate(row))
        body.append(f'<tr class="this">{cells}</tr>' if i == highlight else f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _scores_section(report: RunReport) -> str:
    scores = report.scores
    rows = []
    for name in ("validation", "test"):
        values = scores.get(name) or {}
        if values:
            rows.append([name] + [_num(values.get(m)) for m in METRICS])
    parts = ["<h2>Scores</h2>"]
    if report.position:
        rank, total = report.position
        protocol = report.scores.get("protocol")
        parts.append(f'<p class="big">Leaderboard position: <b>{rank}</b> of {total} runs on '
                     f"<b>{_e(report.dataset)}</b> (by validation SRC"
                     + (f", among runs of protocol {_e(protocol)} on the same folds" if protocol else "") + ")</p>")
    else:
        parts.append('<p class="muted">Not on the leaderboard.</p>')
    parts.append(_table(["", "SRC", "MAE", "MSE"], rows, numeric={1, 2, 3}))
    if not scores.get("test"):
        parts.append('<p class="muted">No test labels given (--test-labels): test scores unknown.</p>')
    parts.append(_by_kind_section(scores))
    members = scores.get("members") or {}
    if members:
        weights = scores.get("weights") or {}
        parts.append(f"<h3>Ensemble members (blend: {_e(scores.get('method', ''))})</h3>")
        parts.append(_table(["member", "weight", "SRC", "MAE", "MSE"],
                            [[m, _num(weights.get(m), 3)] + [_num(s.get(k)) for k in METRICS]
                             for m, s in members.items()], numeric={1, 2, 3, 4}))
    return "\n".join(parts)


def _by_kind_section(scores: dict) -> str:
    """Scores split by posts of users seen in the fit part (train, for test) and unseen ones."""
    rows = []
    for name in ("validation", "test"):
        by_kind = scores.get(f"{name}_by_kind") or {}
        for kind in ("seen", "unseen"):
            if f"n_{kind}" not in by_kind:
                continue
            values = by_kind.get(kind) or {}
            share = by_kind["unseen_share"] if kind == "unseen" else 1.0 - by_kind["unseen_share"]
            rows.append([name, f"{kind} users", by_kind[f"n_{kind}"], f"{100 * share:.1f}%"]
                        + [_num(values.get(m)) for m in METRICS])
    if not rows:
        return ""
    scheme = scores.get("scheme", "")
    return ("<h3>By kind of post</h3>"
            f'<p class="muted">Seen: the post\'s user has posts in the part its model was fit on (validation: '
            f"the other folds, scheme {_e(scheme)}; test: train). The validation part should hold about the "
            "test's share of unseen users.</p>"
            + _table(["part", "posts of", "posts", "share", "SRC", "MAE", "MSE"], rows, numeric={2, 3, 4, 5, 6}))


LEADERBOARD_COLUMNS = ("rank", "run", "member", "protocol", "folds_digest", "val_src", "val_mae", "val_src_unseen",
                       "test_src", "test_mae", "test_src_seen", "test_src_unseen", "commit")


def _board_table(rows: pd.DataFrame, run: str) -> str:
    columns = [c for c in LEADERBOARD_COLUMNS if c in rows.columns]
    cells, highlight = [], None
    for i in range(len(rows)):
        row = rows.iloc[i]
        if str(row["run"]) == run:
            highlight = len(cells)
        cells.append([_num(row[c], 4) if c.startswith(("val_", "test_")) else
                      (int(row[c]) if c == "rank" and pd.notna(row[c]) else ("" if pd.isna(row[c]) else row[c]))
                      for c in columns])
    numeric = {j for j, c in enumerate(columns) if c == "rank" or c.startswith(("val_", "test_"))}
    return _table(columns, cells, numeric=numeric, highlight=highlight)


def _leaderboard_section(report: RunReport, max_rows: int = 15) -> str:
    """The runs ranked with this one (same protocol and folds), then the others apart, unranked."""
    board = report.leaderboard
    if board is None or board.empty:
        return ""
    board = board.reset_index(drop=True)
    compared = board["compared"].to_numpy(dtype=bool) if "compared" in board else np.ones(len(board), dtype=bool)
    same, others = board[compared].reset_index(drop=True), board[~compared].reset_index(drop=True)
    runs = same["run"].astype(str).tolist()
    keep = list(range(min(max_rows, len(same))))
    if report.run in runs and runs.index(report.run) >= max_rows:
        keep.append(runs.index(report.run))
    parts = [f"<h2>Leaderboard ({_e(report.dataset)}, best {len(keep)} of {len(same)} runs with this run's "
             "protocol and folds)</h2>", _board_table(same.iloc[keep], report.run)]
    if len(others):
        parts.append(f"<h3>Other protocols or folds ({len(others)} runs, not ranked against this one)</h3>"
                     '<p class="muted">Their validation scores come from other posts or another protocol '
                     "(models/validation.py): comparing them with this run's says nothing.</p>")
        parts.append(_board_table(others.head(max_rows), report.run))
    return "\n".join(parts)


def image_src(file: str, base_dir: Path | None) -> str:
    """The <img> source of a figure: its PNG embedded as a data: URI when `base_dir` (the page's
    folder) holds it, else its path relative to the page."""
    path = Path(base_dir) / file if base_dir is not None else None
    if path is None or not path.is_file():
        return file
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


ADVERSARIAL = "Adversarial validation"  # the section of scores.json's `adversarial` and its figure


def _figure_html(fig: ReportFigure, base_dir: Path | None) -> str:
    return (f'<figure><img src="{_e(image_src(fig.file, base_dir))}" alt="{_e(fig.title)}">'
            f"<figcaption><b>{_e(fig.title)}</b>{'. ' + _e(fig.caption) if fig.caption else ''}"
            "</figcaption></figure>")


def _adversarial_section(report: RunReport, base_dir: Path | None) -> str:
    """The train-versus-test classifier (stage `adversarial`): its AUC, figure, the most shifted
    features and the train posts that look most like test posts."""
    adv = report.scores.get("adversarial")
    if not adv:
        return ""
    parts = [f"<h2>{ADVERSARIAL}</h2>"]
    time_auc = adv.get("time_auc")
    timing = f" The post date alone separates them with AUC {_num(time_auc, 3)} (left out of the classifier)." \
        if time_auc is not None else ""
    if adv.get("auc") is None:
        parts.append(f'<p class="muted">No classifier: {_e(adv.get("reason", ""))}.{_e(timing)}</p>')
    else:
        folds = ", ".join(_num(a, 3) for a in adv.get("fold_aucs", []))
        parts.append(f'<p class="big">Train vs test AUC: <b>{_num(adv["auc"], 3)}</b> '
                     f'<span class="muted">({adv.get("n_folds")} folds: {_e(folds)}; blocks '
                     f'{_e(", ".join(adv.get("blocks", [])))})</span></p>'
                     f'<p class="muted">0.5: the classifier cannot tell a train post from a test post; near 1: the '
                     f"splits differ and validation on train posts may flatter the test score.{_e(timing)}</p>")
    parts += [_figure_html(f, base_dir) for f in report.figures if f.section == ADVERSARIAL]
    top = adv.get("top_shifted_features") or []
    if top:
        parts.append("<h3>Most shifted features</h3>")
        parts.append('<p class="muted">Univariate AUC: the feature alone as a score for "is a test post" (a '
                     "categorical by its category's out-of-fold test share). Correlation with the post date (Spearman): "
                     "a feature that follows it (|Spearman| 0.5 or more) shifts because the test period follows the train period, "
                     "and is kept out of the classifier, as the post date is.</p>")
        parts.append(_table(["feature", "univariate AUC", "share of the classifier's gain", "corr. with post date",
                             "in the classifier"],
                            [[f["feature"], _num(f["univariate_auc"], 3), _num(f["gain_share"], 3),
                              _num(f.get("time_corr"), 2),
                              "yes" if f.get("in_classifier", True) else "no: follows the post date"] for f in top],
                            numeric={1, 2, 3}))
    like = adv.get("most_test_like") or []
    if like:
        parts.append("<h3>Train posts that look most like test posts</h3>")
        parts.append(_table(["Pid", "Uid", "post date", "test-likeness", "weight"],
                            [[r["Pid"], r["Uid"], r["Postdate"], _num(r["test_likeness"], 3), _num(r["weight"], 2)]
                             for r in like], numeric={3, 4}))
    weights = adv.get("weights") or {}
    if weights:
        parts.append(f'<p class="muted">Train-post weights from test-likeness: {_num(weights.get("min"), 2)} to '
                     f'{_num(weights.get("max"), 2)}, worth {_num(weights.get("effective_posts"), 0)} equally weighted '
                     "posts; " + ("used by the LightGBM members' fits (validation.adversarial_weights)."
                                  if weights.get("used") else "not used (validation.adversarial_weights off).")
                     + "</p>")
    excluded = adv.get("excluded") or {}
    if excluded:
        parts.append('<p class="muted">Left out of the classifier: '
                     + "; ".join(f"{_e(c)} ({_e(why)})" for c, why in excluded.items()) + "</p>")
    return "\n".join(parts)


def render_report(report: RunReport, base_dir: Path | None = None) -> str:
    """The report page as HTML text; figures embedded from `base_dir` (the folder of the page),
    or linked by their relative paths without one."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Run {_e(report.run)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Run {_e(report.run)}</h1>",
             '<p class="muted">' + " · ".join(f"{_e(k)}: {_e(v)}" for k, v in report.facts.items()) + "</p>"]
    parts.append(_scores_section(report))
    parts.append(_leaderboard_section(report))
    parts.append("<h2>Stages</h2>")
    parts.append(_table(["stage", "status", "what it does"],
                        [[s["name"], s["status"], s.get("description", "")] for s in report.stages]))
    for note in report.notes:
        parts.append(f'<div class="note">{_e(note)}</div>')
    parts.append(_adversarial_section(report, base_dir))
    sections = list(dict.fromkeys(f.section for f in report.figures if f.section != ADVERSARIAL))
    for section in sections:
        parts.append(f"<h2>{_e(section)}</h2>")
        parts += [_figure_html(fig, base_dir) for fig in report.figures if fig.section == section]
    if report.config_yaml:
        parts.append("<h2>Config</h2>")
        parts.append(f"<pre>{_e(report.config_yaml)}</pre>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p) + "\n"
