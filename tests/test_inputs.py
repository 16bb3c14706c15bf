"""Inputs that must be refused at load, before any stage runs (issue 24): run names, output folders,
config and data mistakes; and the leaderboard, which must stay text to a spreadsheet and never turn a
torn row into a valid-looking one. Everything runs in-process on the tiny demo data set."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.run_all import main
from pipeline.submit import add_leaderboard_row
from reporting.submission_format import LEADERBOARD_COLUMNS, read_leaderboard

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
