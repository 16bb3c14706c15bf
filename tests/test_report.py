"""The per-run report (stage `report`): written with its figures after every run, the
leaderboard position right, optional stages that are off named, every figure labelled."""
from __future__ import annotations

import base64
import io
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from common.io import read_json
from reporting import figures as rf
from reporting.report_page import ReportFigure, RunReport, latest_run, leaderboard_position, ranked_runs, render_report
from tests.tiny_demo import has_optional_stages, tiny_runs

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The submissions folder of the shared tiny demo runs `base` (optional stages off) and `full`."""
    return tiny_runs(tmp_path_factory)[0]


def figure_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def image_bytes(src: str, page_dir) -> bytes:
    """The image an <img src> shows: a data: URI's payload, or the file it names relative to the page."""
    if src.startswith("data:"):
        header, payload = src.split(",", 1)
        assert header == "data:image/png;base64", header
        return base64.b64decode(payload)
    assert not re.match(r"^(/|[a-z]+:)", src), f"{src[:80]} is neither relative nor data:"
    path = page_dir / src
    assert path.is_file(), f"{src} is linked but missing"
    return path.read_bytes()


@pytest.mark.parametrize("run", ["base", "full"])
def test_report_is_written_with_its_figures(runs, run):
    run_dir = runs / run
    page = (run_dir / "report.html").read_text()
    sources = figure_sources(page)
    # at least: predicted vs true, feature importance, error by category and time, label distribution,
    # train/test periods, leaderboard; with the optional stages: two embedding maps, training curves, confusion
    assert len(sources) >= (11 if run == "full" and has_optional_stages() else 7), len(sources)
    for i, src in enumerate(sources):
        with Image.open(io.BytesIO(image_bytes(src, run_dir))) as img:
            assert img.format == "PNG" and img.width >= 400 and img.height >= 250, (i, img.size)
            pixels = np.asarray(img.convert("L"), dtype=np.float64)
        assert pixels.std() > 5, f"figure {i} looks empty"
    assert "could not be drawn" not in page
    scores = read_json(run_dir / "scores.json")
    assert f"{scores['validation']['src']:.4f}" in page
    assert f"{scores['test']['mae']:.4f}" in page  # the demo has hidden test labels
    assert "n_train: 160" in page  # the config used


def test_the_report_page_shows_its_figures_when_copied_elsewhere(runs, tmp_path):
    """A run folder copied to another machine (or the page alone, mailed): every image still shows."""
    copied = tmp_path / "elsewhere" / "full"
    shutil.copytree(runs / "full", copied)
    page = (copied / "report.html").read_text()
    assert str(runs) not in page  # no absolute path to where it was made
    sources = figure_sources(page)
    assert sources
    for src in sources:
        image_bytes(src, copied)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(copied / "report.html", alone / "report.html")
    for src in figure_sources((alone / "report.html").read_text()):
        image_bytes(src, alone)


def test_report_says_which_optional_stages_are_off(runs):
    from pipeline.report import OPTIONAL_STAGES
    from pipeline.stage import load_stages
    page = (runs / "base" / "report.html").read_text()
    known = {s.name for s in load_stages()}
    for name in OPTIONAL_STAGES:
        if name in known:  # the demo config turns the optional stages off
            assert f"Stage {name} is off in this config" in page, name
    for name in known:
        assert f"<td>{name}</td>" in page, f"stage {name} missing from the stage table"


def test_leaderboard_position_of_each_run(runs):
    board = pd.read_csv(runs / "leaderboard.csv", dtype=str)
    assert board["run"].tolist() == ["base", "full"]
    base = (runs / "base" / "report.html").read_text()
    full = (runs / "full" / "report.html").read_text()
    assert "Leaderboard position: <b>1</b> of 1 runs" in base  # written before the second run existed
    # `full` has other folds (validation.n_folds=2): it is ranked alone, and lists `base` apart, unranked
    assert board["protocol"].notna().all() and board["folds_digest"].nunique() == 2
    assert leaderboard_position(board, "full", board["dataset"].iloc[-1]) == (1, 1)
    assert "Leaderboard position: <b>1</b> of 1 runs" in full and "among runs of protocol" in full
    others = full.split("Other protocols or folds (1 runs, not ranked against this one)")
    assert len(others) == 2 and "<td>base</td>" in others[1] and "<td>base</td>" not in others[0]


def test_leaderboard_position_rules():
    board = pd.DataFrame({
        "run": ["a", "b", "c", "a", "d", "e"],
        "dataset": ["demo", "demo", "demo", "demo", "smpd", "demo"],
        "val_src": ["0.50", "0.70", "0.60", "0.80", "0.99", "0.60"],
    })
    # one row per run (its latest), only the same data set, ties share a rank
    assert leaderboard_position(board, "a", "demo") == (1, 4)
    assert leaderboard_position(board, "c", "demo") == (3, 4)
    assert leaderboard_position(board, "e", "demo") == (3, 4)
    assert leaderboard_position(board, "b", "demo") == (2, 4)
    assert leaderboard_position(board, "d", "demo") is None
    assert leaderboard_position(board, "d", "smpd") == (1, 1)
    assert latest_run(board, "demo") == "e"
    assert latest_run(None, "demo") is None
    assert ranked_runs(board, "demo")["run"].tolist()[:2] == ["a", "b"]


def test_runs_are_ranked_only_among_runs_of_their_protocol_and_folds():
    """A k-fold run (its score on other posts, by another protocol) never outranks a time-holdout run,
    nor does a run on other folds; rows written before the columns existed form a group of their own."""
    board = pd.DataFrame({
        "run": ["old", "hold1", "kfold", "hold2", "hold_other_folds"],
        "dataset": ["demo"] * 5,
        "protocol": [None, "time_holdout/report-slice", "kfold/report-slice", "time_holdout/report-slice",
                     "time_holdout/report-slice"],
        "folds_digest": [None, "aaa", "bbb", "aaa", "ccc"],
        "val_src": ["0.99", "0.70", "0.95", "0.75", "0.90"],
    })
    assert leaderboard_position(board, "hold1", "demo") == (2, 2)
    assert leaderboard_position(board, "hold2", "demo") == (1, 2)
    assert leaderboard_position(board, "kfold", "demo") == (1, 1)
    assert leaderboard_position(board, "old", "demo") == (1, 1)
    ranked = ranked_runs(board, "demo", "hold1")
    assert ranked["run"].tolist()[:2] == ["hold2", "hold1"] and ranked["rank"].tolist()[:2] == [1, 2]
    assert ranked["compared"].tolist() == [True, True, False, False, False] and ranked["rank"][2:].isna().all()
    page = render_report(RunReport(run="hold1", dataset="demo", scores={"protocol": "time_holdout/report-slice"},
                                   position=(2, 2), stages=[], leaderboard=ranked))
    ranked_part, apart = page.split("Other protocols or folds (3 runs, not ranked against this one)")
    assert "<td>hold2</td>" in ranked_part and "<td>kfold</td>" not in ranked_part
    assert all(f"<td>{r}</td>" in apart for r in ("kfold", "old", "hold_other_folds"))


def test_render_report_escapes_and_lists_everything():
    report = RunReport(
        run="<script>x</script>", dataset="demo",
        scores={"validation": {"src": 0.5, "mae": 1.0, "mse": 2.0}, "test": {}, "members": {"m": {"src": 0.5,
                "mae": 1.0, "mse": 2.0}}, "weights": {"m": 1.0}, "method": "best"},
        position=(2, 5), stages=[{"name": "tune", "status": "off", "description": "Optuna"}],
        figures=[ReportFigure("Errors", "Error & more", "figures/e.png", "caption <i>")],
        notes=["Stage tune is off in this config"], config_yaml="a: <b>\n")
    page = render_report(report)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Leaderboard position: <b>2</b> of 5 runs" in page
    assert '<img src="figures/e.png"' in page and "caption &lt;i&gt;" in page
    assert "test scores unknown" in page
    assert "a: &lt;b&gt;" in page


def _check_labelled(fig) -> None:
    """Every axes with something drawn has both axis labels and the figure saves as PNG."""
    drawn = [ax for ax in fig.axes if ax.has_data() and ax.get_label() != "<colorbar>"]
    assert drawn, "nothing drawn"
    for ax in drawn:
        assert ax.get_xlabel() or ax.get_shared_x_axes().get_siblings(ax) != [ax], ax
        assert ax.get_ylabel(), f"axes without a y label: {ax.get_title()!r}"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.tell() > 5000


def test_every_figure_is_labelled():
    rng = np.random.default_rng(0)
    n = 300
    labels = rng.normal(6, 2, n)
    preds = labels + rng.normal(0, 1, n)
    cats = rng.choice(["Food", "Urban", "Animal"], n)
    dates = 1_450_000_000 + np.sort(rng.integers(0, 3e7, n))
    xy = rng.normal(size=(n, 2))
    board = pd.DataFrame({"run": ["a", "b"], "val_src": ["0.5", "0.6"], "test_src": [None, "0.55"]})
    history = pd.DataFrame({"fold": [0, 0, 1, 1], "epoch": [1, 2, 1, 2], "loss": [3, 2, 3.1, 2.2],
                            "contrast": [1, 0.5, 1.1, 0.6]})
    figures = [
        rf.label_histogram(labels),
        rf.popularity_by(labels, cats, "category"),
        rf.popularity_by(labels, rng.integers(0, 24, n), "hour", ordered=True),
        rf.user_share(rng.choice(40, n)),
        rf.post_period(dates[:200], dates[200:], labels[:200]),
        rf.missing_values({"train": pd.DataFrame({"a": [1.0, np.nan], "b": ["", "x"]}),
                           "test": pd.DataFrame({"a": [np.nan, np.nan], "b": ["y", "x"]})}),
        rf.embedding_map(xy, cats, "map", "category"),
        rf.embedding_map(xy, labels, "map", "popularity", overlay=xy[:3], overlay_names=["p", "q", "r"]),
        rf.training_curves(history),
        rf.confusion(rng.integers(0, 3, n), rng.integers(0, 3, n), ["x", "y", "z"]),
        rf.param_importance({"num_leaves": 0.6, "lambda_l2": 0.4}),
        rf.error_by_group(labels, preds, cats, "category"),
        rf.error_over_time(labels, preds, dates),
        rf.prediction_histogram(labels, preds),
        rf.leaderboard_history(board, "b"),
    ]
    for fig in figures:
        _check_labelled(fig)


def test_figures_of_empty_inputs_say_so():
    empty = np.array([])
    for fig in (rf.label_histogram(empty), rf.error_by_group(empty, empty, empty, "category"),
                rf.error_over_time(empty, empty, empty), rf.prediction_histogram(empty, empty),
                rf.param_importance({}), rf.training_curves(pd.DataFrame(columns=["epoch"]))):
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert any(t.startswith("no ") for t in texts), texts


def test_post_period_bounds_its_bins_for_absurd_dates_and_skips_missing_ones():
    """A post dated in the year 5138 (Postdate 99999999999) once asked for 160,000 weekly bins and
    hung the report; a date stored as INT64_MIN (NaT) broke the figure."""
    rng = np.random.default_rng(0)
    train = 1_450_000_000 + rng.integers(0, 3e7, 200)
    far_future, missing = 99_999_999_999, np.iinfo(np.int64).min
    fig = rf.post_period(np.r_[train, far_future, missing], train[:50] + 40_000_000, rng.normal(6, 2, 202))
    ax = fig.axes[0]
    assert len(ax.patches) <= 2 * rf.MAX_TIME_BINS  # train and test bars
    assert sum(p.get_height() for p in ax.patches) == 251  # every dated post counted once, the undated one not
    assert "1 posts without a date left out" in ax.get_title() and "weeks" in ax.get_xlabel()
    edges, weeks = rf.time_bin_edges(rf._dates(np.r_[train, far_future]))
    assert len(edges) - 1 <= rf.MAX_TIME_BINS and edges[0] <= rf._dates(train).min()
    assert edges[-1] > rf._dates([far_future])[0]
    weekly = rf.post_period(train, train[:10] + 3_000_000)
    assert weekly.axes[0].get_xlabel() == "post date (bins of one week)"
    texts = [t.get_text() for t in rf.post_period([missing], [missing]).axes[0].texts]
    assert texts == ["no dated posts"]


def test_scores_leaderboard_and_report_split_seen_and_unseen_users(runs):
    """The tiny demo (160 train posts): k-fold instead of a 32-post holdout, scores by kind of post,
    on the posts the run reports (its report slice: the latest 16 posts, models/validation.py)."""
    scores = read_json(runs / "base" / "scores.json")
    assert scores["scheme"] == "kfold" and scores["folds"]["configured"] == "time_holdout"  # adapted to the size
    assert scores["protocol"] == "kfold/report-slice" and scores["folds"]["n_report"] == 16
    val, test = scores["validation_by_kind"], scores["test_by_kind"]
    assert val["n_seen"] + val["n_unseen"] == 16 and test["n_seen"] + test["n_unseen"] == 60
    assert test["unseen_share"] > 0 and 0 <= val["unseen_share"] < 1  # both parts' shares of unseen users
    assert set(test["seen"]) == {"src", "mae", "mse"} and set(test["unseen"]) == {"src", "mae", "mse"}
    # a part of fewer than two posts has no scores rather than a made-up one
    assert (val["unseen"] is None) == (val["n_unseen"] < 2) and set(val["seen"]) == {"src", "mae", "mse"}
    board = pd.read_csv(runs / "leaderboard.csv")
    row = board[board["run"] == "base"].iloc[-1]
    assert row["scheme"] == "kfold" and row["val_unseen_share"] == pytest.approx(val["unseen_share"], abs=1e-4)
    for column in ("val_src_seen", "test_src_seen", "test_src_unseen", "test_mae_unseen"):
        assert np.isfinite(row[column]), column
    assert row["test_mae_unseen"] == pytest.approx(test["unseen"]["mae"], abs=1e-5)
    page = (runs / "base" / "report.html").read_text()
    assert "By kind of post" in page and f"{test['unseen']['mae']:.4f}" in page and "unseen users" in page
