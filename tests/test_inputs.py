"""Inputs that must be refused at load, before any stage runs (issue 24): run names, output folders,
config and data mistakes; and the leaderboard, which must stay text to a spreadsheet and never turn a
torn row into a valid-looking one. Everything runs in-process on the tiny demo data set."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from pipeline.run_all import main
from reporting.submission_format import LEADERBOARD_COLUMNS, add_leaderboard_row, read_leaderboard

ROOT = Path(__file__).resolve().parent.parent


def run_all(data: Path, tmp: Path, *extra: str) -> int:
    return main(["--data-dir", str(data), "--work-dir", str(tmp / "work"), "--submissions-dir", str(tmp / "subs"),
                 "--set", "encoders.enabled=false", "--set", "prototype.enabled=false", *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


# --- run names -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "/abs/path", "a/b", ".hidden", "..", "two\nlines", "", "a b"])
def test_a_run_name_that_is_not_one_folder_name_is_refused_at_parsing(data, tmp_path, capsys, name):
    with pytest.raises(SystemExit) as exit_:
        run_all(data, tmp_path, "--run-name", name)
    assert exit_.value.code == 2
    assert "is not a run name" in one_error_line(capsys)
    assert not (tmp_path / "work").exists() and not (tmp_path / "subs").exists()


def test_a_run_folder_of_another_config_is_never_overwritten(data, tmp_path, capsys):
    run_dir = tmp_path / "subs" / "mine"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 7\n")  # another config's run
    (run_dir / "submission.csv").write_text("theirs\n")
    assert run_all(data, tmp_path, "--run-name", "mine") == 2
    line = one_error_line(capsys)
    assert f"run folder {run_dir} holds a run of another config; choose another --run-name" in line
    assert (run_dir / "submission.csv").read_text() == "theirs\n"
    assert not (tmp_path / "work").exists()  # refused before any stage


# --- output folders --------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["--work-dir", "--submissions-dir"])
def test_an_output_folder_inside_the_data_folder_is_refused(data, tmp_path, capsys, option):
    inside = data / "out"
    args = ["--data-dir", str(data), "--work-dir", str(tmp_path / "work"), "--submissions-dir", str(tmp_path / "s")]
    args[args.index(option) + 1] = str(inside)
    assert main(args + ["--run-name", "r"]) == 2
    assert f"{option} {inside} is inside the data folder {data.resolve()}" in one_error_line(capsys)
    assert not inside.exists()


# --- the leaderboard -------------------------------------------------------------------------------
def test_leaderboard_text_cells_that_a_spreadsheet_would_run_are_escaped(tmp_path):
    path = tmp_path / "leaderboard.csv"
    formula = '=HYPERLINK("http://x","y")'
    add_leaderboard_row(path, {"run": "r", "dataset": formula, "member": "+cmd|x", "scheme": "@x", "commit": "'q",
                               "val_src": -0.25})
    text = path.read_text()
    assert "'=HYPERLINK" in text and ",'+cmd|x," in text and ",'@x," in text and ",''q," in text
    assert ",-0.25," in text  # a negative score stays a number
    row = read_leaderboard(path).iloc[0]
    assert (row["dataset"], row["member"], row["scheme"], row["commit"]) == (formula, "+cmd|x", "@x", "'q")


def test_a_torn_leaderboard_row_is_named_and_left_out(tmp_path, caplog):
    path = tmp_path / "leaderboard.csv"
    add_leaderboard_row(path, {"run": "first", "dataset": "d", "val_src": 0.5})
    whole = path.read_text()
    torn = "second,2026-01-01T00:00:00Z,abc,12ab"  # a row cut mid-way
    path.write_text(whole + torn)
    with caplog.at_level(logging.WARNING):
        add_leaderboard_row(path, {"run": "third", "dataset": "d", "val_src": 0.6})
    assert "line 3: torn row (4 of" in caplog.text
    board = read_leaderboard(path)
    assert board["run"].tolist() == ["first", "third"]
    assert list(board.columns) == LEADERBOARD_COLUMNS
    assert "second" not in path.read_text()


# --- config mistakes: one line at load -------------------------------------------------------------
def test_a_feature_set_naming_no_block_is_a_config_error_at_load(data, tmp_path, capsys):
    assert run_all(data, tmp_path, "--set", "gbdt.feature_sets.x=[nosuchblock]", "--run-name", "r") == 2
    assert "gbdt.feature_sets.x: unknown block(s) ['nosuchblock']" in one_error_line(capsys)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("text, problem", [
    ("seed: 0\ngbdt: !!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
    ("seed: 0\ngbdt: [1, 2\n", "expected ',' or ']'"),
])
def test_a_yaml_that_safe_load_refuses_is_one_line_naming_file_and_line(data, tmp_path, capsys, text, problem):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert run_all(data, tmp_path, "--config", str(config), "--run-name", "r") == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {config}, line ") and problem in line


# --- data mistakes: named by the reader ------------------------------------------------------------
@pytest.mark.parametrize("label", ["-0.5", "1e308", "31"])
def test_a_label_outside_the_scores_range_is_located(data, label):
    from features.smpd import SMPDFormatError, read_split
    from tiny_demo import set_line
    set_line(data / "train_label.txt", 12, label)
    with pytest.raises(SMPDFormatError, match=rf"train_label.txt, row 12, field 'label': label '{label}' is "
                                              r"outside 0\.\.30"):
        read_split(data, "train")


def test_a_train_split_too_small_for_the_folds_stops_the_run_in_read_data(data, tmp_path, capsys):
    assert run_all(data, tmp_path, "--set", "validation.n_folds=20", "--run-name", "r") == 1
    err = capsys.readouterr().err
    assert "train_category.json: 80 train posts are too few for 20 validation folds" in err
    assert not list((tmp_path / "work").glob("config-*/folds.parquet"))


def test_a_key_given_twice_in_an_official_object_is_located(data):
    from features.smpd import SMPDFormatError, read_split
    path = data / "train_text.json"
    text = path.read_text()
    first_title = text.index('"Title"')
    second = text.index('"Title"', first_title + 1)  # row 1's Title, given twice
    path.write_text(text[:second] + '"Title": "again", ' + text[second:])
    with pytest.raises(SMPDFormatError, match=r"train_text.json, row 1, field 'Title': key given twice"):
        read_split(data, "train")


def test_a_key_given_twice_in_a_derived_json_file_is_named(tmp_path):
    from common.io import read_json
    path = tmp_path / "best_params.json"
    path.write_text('{"num_leaves": 7, "num_leaves": 255}')
    with pytest.raises(ValueError, match=re.escape(f"cannot read {path} (key 'num_leaves' given twice")):
        read_json(path)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_an_official_file_that_is_not_a_regular_file_is_named_never_a_hang(data, tmp_path, capsys, kind):
    import os
    path = data / "test_text.json"
    path.unlink()
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    if kind == "fifo":  # code that opens the FIFO would wait for a writer: one comes after 30 s, so it fails
        import threading
        unblock = threading.Timer(30, lambda: os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK)))
        unblock.daemon = True
        unblock.start()
    try:
        assert run_all(data, tmp_path, "--run-name", "r") == 1
    finally:
        if kind == "fifo":
            unblock.cancel()
    expected = "a directory" if kind == "directory" else "a FIFO, device or socket"
    assert f"{path}: is {expected}, not a regular file" in capsys.readouterr().err
