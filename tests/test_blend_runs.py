"""pipeline/blend_runs.py: blending finished runs, on tiny demo runs (seconds each) made by run_all.py."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from tiny_demo import OPTIONAL_OFF, TINY_DEMO, run_all

from common.io import read_json, read_parquet, write_json, write_parquet
from pipeline.blend_runs import blend_runs, load_run, main
from reporting.run_predictions import validation_by_kind
from reporting.submission_format import read_leaderboard, read_submission_csv


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders of one tiny demo data set: `a`, `b` (another LightGBM seed: same folds, other predictions),
    `folds` (other folds: validation.seed), `ta`, `tb` (as a and b on a time holdout) and `other` (another demo
    data set), under one submissions folder."""
    root = tmp_path_factory.mktemp("blend_runs")
    common = ["--work-dir", str(root / "work"), "--submissions-dir", str(root / "submissions"), *TINY_DEMO,
              *OPTIONAL_OFF]
    holdout = ["--set", "validation.min_holdout_posts=0"]  # a time holdout of 32 posts, not k-fold
    for name, extra in {"a": [], "b": ["--set", "gbdt.seeds=[1]"], "folds": ["--set", "validation.seed=1"],
                        "ta": holdout, "tb": [*holdout, "--set", "gbdt.seeds=[1]"]}.items():
        run_all([*common, *extra, "--run-name", name])
    run_all(["--work-dir", str(root / "work-other"), "--submissions-dir", str(root / "submissions"), *TINY_DEMO,
             *OPTIONAL_OFF, "--set", "demo.seed=1", "--run-name", "other"])
    return root / "submissions"


def blend(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse refusing an option
        code = stop.code
    return code, capsys.readouterr().err


def test_a_blend_of_two_runs_writes_a_valid_submission_and_a_leaderboard_row(runs, tmp_path, capsys):
    out_dir = tmp_path / "subs"
    code, err = blend(capsys, runs / "a", runs / "b", "--submissions-dir", out_dir, "--run-name", "ab")
    assert code == 0, err
    out = out_dir / "ab"
    submission = read_submission_csv((out / "submission.csv").read_text())
    alone = read_submission_csv((runs / "a" / "submission.csv").read_text())
    assert submission["post_id"].tolist() == alone["post_id"].tolist()  # every test post, in test file order
    assert np.isfinite(submission["popularity_score"]).all()
    assert read_json(out / "submission.json")["result"][0]["post_id"] == alone["post_id"].iloc[0]
    scores = read_json(out / "scores.json")
    a, b = read_json(runs / "a" / "scores.json"), read_json(runs / "b" / "scores.json")
    assert set(scores["weights"]) == {"a", "b"} and sum(scores["weights"].values()) == pytest.approx(1.0)
    assert scores["protocol"] == a["protocol"] == "kfold/report-slice" and scores["folds_digest"] == a["folds_digest"]
    assert scores["scored_on"] == "report slice" and scores["test"]
    assert scores["runs"]["b"]["validation"] == b["validation"]
    # the blend's test prediction is the weighted runs' (weights sum to one: no level shift of its own)
    w = scores["weights"]
    expected = w["a"] * alone["popularity_score"] + w["b"] * read_submission_csv(
        (runs / "b" / "submission.csv").read_text())["popularity_score"]
    np.testing.assert_allclose(submission["popularity_score"], expected, atol=2e-6)
    # the run folders' tables carry the protocol: their report slice's score is the one the run reported
    assert validation_by_kind(read_parquet(runs / "a" / "predictions.parquet"))["all"] == pytest.approx(a["validation"])
    row = read_leaderboard(out_dir / "leaderboard.csv").iloc[-1]
    assert (row["run"], row["member"], row["protocol"], row["folds_digest"]) == (
        "ab", "blend-runs:nnls", a["protocol"], a["folds_digest"])
    assert float(row["val_src"]) == pytest.approx(scores["validation"]["src"], abs=1e-5)
    # the same command again: the same folder, the same bytes; another blend may not take the folder
    first = (out / "submission.csv").read_bytes()
    assert blend(capsys, runs / "a", runs / "b", "--submissions-dir", out_dir, "--run-name", "ab")[0] == 0
    assert (out / "submission.csv").read_bytes() == first
    code, err = blend(capsys, runs / "a", runs / "b", "--submissions-dir", out_dir, "--run-name", "ab",
                      "--method", "best")
    assert code == 2 and "holds another run" in err


@pytest.mark.parametrize("which, message", [
    ("other", "differ in data set"),
    ("folds", "differ in folds (digest)"),
])
def test_runs_of_other_data_sets_or_folds_are_refused(runs, tmp_path, capsys, which, message):
    code, err = blend(capsys, runs / "a", runs / which, "--submissions-dir", tmp_path)
    assert code == 2 and message in err, err
    assert not any(tmp_path.iterdir())  # nothing written


def test_posts_that_differ_under_the_same_names_are_refused(runs, tmp_path, capsys):
    """A folder whose table lists other labels (a data set changed in place) fails the posts digest."""
    copy = tmp_path / "b2"
    shutil.copytree(runs / "b", copy)
    table = read_parquet(copy / "predictions.parquet")
    table.loc[0, "label"] += 1.0
    write_parquet(copy / "predictions.parquet", table)
    code, err = blend(capsys, runs / "a", copy, "--submissions-dir", tmp_path / "s")
    assert code == 2 and "predict different posts or train labels" in err, err


def test_what_is_not_a_pair_of_finished_runs_is_one_line_of_error(runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    older = tmp_path / "older"
    shutil.copytree(runs / "b", older)
    (older / "predictions.parquet").unlink()
    cases = {(runs / "a",): "at least 2 run folders",
             (runs / "a", runs / "a"): "is given twice",
             (runs / "a", empty): "is not a finished run: no scores.json",
             (runs / "a", tmp_path / "nowhere"): "is not a run folder",
             (runs / "a", older): "written before run folders kept what blending needs (no predictions.parquet)"}
    for folders, message in cases.items():
        code, err = blend(capsys, *folders, "--submissions-dir", tmp_path / "s")
        assert code == 2 and message in err and "Traceback" not in err, (folders, err)
        assert len(err.strip().splitlines()) == 1
    code, err = blend(capsys, runs / "a", runs / "b", "--submissions-dir", tmp_path / "s", "--test-labels",
                      tmp_path / "none.txt")
    assert code == 2 and "--test-labels" in err and "is not a file" in err
    code, err = blend(capsys, runs / "a", runs / "b", "--submissions-dir", tmp_path / "s", "--run-name", "../up")
    assert code == 2 and "is not a run name" in err
    assert not (tmp_path / "s").exists()


def _with_labels(src, dst, rows, labels) -> None:
    """A copy of run folder `src` at `dst` whose train labels on `rows` are `labels` there."""
    shutil.copytree(src, dst)
    table = read_parquet(dst / "predictions.parquet")
    table.loc[rows, "label"] = labels[rows]
    write_parquet(dst / "predictions.parquet", table)


@pytest.mark.parametrize("a, b", [("a", "b"), ("ta", "tb")])
def test_blend_weights_come_from_the_selection_posts_only(runs, tmp_path, a, b):
    """Labels of the report slice replaced by run b's predictions leave the weights as they are (and
    move the reported score); the same on the selection posts moves the weights to b: the test can fail."""
    base = blend_runs([load_run(runs / a), load_run(runs / b)], "nnls", 5)[1]
    table = read_parquet(runs / b / "predictions.parquet")
    train = table["split"] == "train"
    parts = {"report": train & table["report"], "selection": train & (table["fold"] >= 0) & ~table["report"]}
    changed = {}
    for name, rows in parts.items():
        for run in (a, b):  # both runs: one data set, its labels changed
            _with_labels(runs / run, tmp_path / name / run, rows.to_numpy(), table["pred"].to_numpy())
        changed[name] = blend_runs([load_run(tmp_path / name / a), load_run(tmp_path / name / b)], "nnls", 5)[1]
    assert base["weights"][b] < 0.99  # b would fit the changed labels exactly: a change of weights shows
    assert changed["report"]["weights"] == base["weights"]
    assert changed["report"]["score"] != base["score"]
    assert changed["selection"]["weights"][b] == pytest.approx(1.0)


def test_runs_on_a_time_holdout_blend_and_keep_the_posts_that_never_validate(runs, tmp_path, capsys):
    code, err = blend(capsys, runs / "ta", runs / "tb", "--submissions-dir", tmp_path, "--run-name", "t")
    assert code == 0, err
    scores = read_json(tmp_path / "t" / "scores.json")
    assert scores["protocol"] == "time_holdout/report-slice" and "recalibration" in scores
    blended = read_parquet(tmp_path / "t" / "predictions.parquet")
    alone = read_parquet(runs / "ta" / "predictions.parquet")
    assert blended[["Pid", "split", "fold", "report"]].equals(alone[["Pid", "split", "fold", "report"]])
    fit_only = (blended["split"] == "train") & (blended["fold"] < 0)  # the posts before the holdout: no prediction
    assert fit_only.sum() > 0 and blended.loc[fit_only, "pred"].isna().all()
    assert np.isfinite(blended.loc[~fit_only, "pred"]).all()
    # and the blend of runs is itself a run folder that blends
    code, err = blend(capsys, tmp_path / "t", runs / "ta", "--submissions-dir", tmp_path, "--run-name", "t2")
    assert code == 0, err


def test_a_folder_whose_table_and_scores_disagree_on_the_folds_is_refused(runs, tmp_path, capsys):
    copy = tmp_path / "b3"
    shutil.copytree(runs / "b", copy)
    scores = read_json(copy / "scores.json")
    scores["folds_digest"] = "0" * 12
    write_json(copy / "scores.json", scores)
    code, err = blend(capsys, runs / "a", copy, "--submissions-dir", tmp_path / "s")
    assert code == 2 and "the folder mixes two runs" in err, err
