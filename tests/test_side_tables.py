"""Side tables (--side-table, config side_tables): the reader's rules on small tables, and the block
`side` through run_all.py on a tiny demo data set (joined to every member, keyed into the stage
locks by content, nothing changed without a table, hostile data)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.side_tables import build_side_block, read_side_table
from features.smpd import SMPDFormatError
from tests.tiny_demo import dump_records, load_records

ROOT = Path(__file__).resolve().parent.parent


def posts(pids, uids, aliases=None, labels=None) -> pd.DataFrame:
    frame = pd.DataFrame({"Pid": [str(p) for p in pids], "Uid": list(uids)})
    frame["Pathalias"] = pd.array(aliases if aliases is not None else [None] * len(frame), dtype="string")
    if labels is not None:
        frame["label"] = np.asarray(labels, dtype=float)
    return frame


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


TRAIN = posts([1, 2, 3, 4], ["u1", "u1", "u2", "u3"], ["al1", "al1", None, "al3"], [1.0, 2.0, 3.0, 4.0])
TEST = posts([5, 6], ["u2", "new"], [None, "alnew"])


# --- the reader's rules ----------------------------------------------------------------------------
def test_user_table_joins_by_uid_and_posts_without_a_row_get_gaps(tmp_path):
    table = write(tmp_path / "crawl.csv", "Uid,followers,views\nu1,10,100\nu2,,200\nghost,5,5\n")
    train, test, report = build_side_block([table], TRAIN, TEST)
    assert list(train.columns) == ["Pid", "side_crawl_followers", "side_crawl_views"]
    assert train["Pid"].tolist() == TRAIN["Pid"].tolist() and test["Pid"].tolist() == TEST["Pid"].tolist()
    np.testing.assert_array_equal(train["side_crawl_followers"], [10, 10, np.nan, np.nan])
    np.testing.assert_array_equal(test["side_crawl_views"], [200, np.nan])  # a new user: a gap, not 0
    entry = report["tables"][0]
    assert entry["key"] == "Uid" and entry["rows"] == 3
    assert entry["rows matching no post"] == 1 and "'ghost' matches no post" in " ".join(entry["notes"])
    assert entry["train posts without a row"] == 1 and entry["test posts without a row"] == 1
    assert entry["followers missing"] == 1


def test_pathalias_key_and_a_parquet_table(tmp_path):
    table = tmp_path / "aliases.parquet"
    pd.DataFrame({"Pathalias": ["al1", "al3", "alnew"], "following": [3, 4, 5],
                  "active": [True, False, True]}).to_parquet(table)
    train, test, _ = build_side_block([table], TRAIN, TEST)
    np.testing.assert_array_equal(train["side_aliases_following"], [3, 3, np.nan, 4])  # Pathalias None: no row
    np.testing.assert_array_equal(test["side_aliases_active"], [np.nan, 1.0])


def test_duplicate_key_is_an_error_naming_both_rows(tmp_path):
    table = write(tmp_path / "dup.csv", "Uid,followers\nu1,1\nu2,2\nu1,3\n")
    with pytest.raises(SMPDFormatError, match=r"dup.csv, row 2, field 'Uid': Uid 'u1' listed twice \(rows 0 and 2\)"):
        build_side_block([table], TRAIN, TEST)


@pytest.mark.parametrize("header, expected", [
    ("user,followers", r"no key column in columns \['user', 'followers'\]; expected exactly one of"),
    ("Uid,Pathalias,followers", r"2 key columns \['Uid', 'Pathalias'\] \(which one is meant"),
])
def test_key_column_missing_or_ambiguous(tmp_path, header, expected):
    table = write(tmp_path / "t.csv", f"{header}\n" + ",".join(["x"] * len(header.split(","))) + "\n")
    with pytest.raises(SMPDFormatError, match=expected):
        read_side_table(table)


def test_gaps_absurd_values_and_text_columns(tmp_path):
    table = write(tmp_path / "t.csv", "Uid,follower_count,score,name,flag\n"
                                      "u1,-5,inf,alice,true\nu2,NaN,-2.5,bob,false\nu3,7,1e400,carol,\n")
    read = read_side_table(table)
    np.testing.assert_array_equal(read.columns["side_t_follower_count"], [np.nan, np.nan, 7])  # a negative count
    np.testing.assert_array_equal(read.columns["side_t_score"], [np.nan, -2.5, np.nan])  # negative allowed here
    np.testing.assert_array_equal(read.columns["side_t_flag"], [1.0, 0.0, np.nan])
    assert read.left_out == {"name": "no value is a number (text)"}
    counts = read.report.counts
    assert counts["follower_count negative or not finite (a count or an age) (set missing)"] == 1
    assert counts["score not finite (set missing)"] == 2
    assert "t.csv, row 0, field 'follower_count': '-5'" in read.report.notes[0]


@pytest.mark.parametrize("text, expected", [
    ("Uid,followers\nu1,12\nu2,1.2k\n", r"row 1, field 'followers': '1.2k' is not a number, in a column of numbers"),
    ("Uid,followers\nu1,1\nu2,2,3\n", r"row 1: 3 cells for the header's 2"),
    ("Uid,followers\n,1\n", r"row 0, field 'Uid': empty key"),
    ("Uid,followers,followers\nu1,1,2\n", r"column 'followers' given twice"),
    ("Uid\nu1\n", r"no value columns beside the key Uid"),
    ("Uid,followers\n", r"no rows"),
    ("", r"empty file"),
])
def test_malformed_tables_are_errors_naming_file_and_row(tmp_path, text, expected):
    with pytest.raises(SMPDFormatError, match=expected) as err:
        read_side_table(write(tmp_path / "t.csv", text))
    assert str(tmp_path / "t.csv") in str(err.value)


def test_not_utf8_and_unknown_suffix(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"Uid,followers\nu\xe9,1\n")
    with pytest.raises(SMPDFormatError, match=r"not UTF-8 text: byte b'\\xe9' in line 2"):
        read_side_table(tmp_path / "t.csv")
    with pytest.raises(SMPDFormatError, match=r"suffix '.xlsx': expected .csv or .parquet"):
        read_side_table(write(tmp_path / "t.xlsx", "Uid,followers\n"))
    with pytest.raises(SMPDFormatError, match="not a parquet file"):
        read_side_table(write(tmp_path / "t.parquet", "Uid,followers\n"))


def test_same_feature_name_from_two_tables_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write(tmp_path / "a" / "users.csv", "Uid,followers\nu1,1\n")
    two = write(tmp_path / "b" / "users.csv", "Uid,followers\nu2,1\n")
    with pytest.raises(SMPDFormatError, match="'side_users_followers' is also made by"):
        build_side_block([one, two], TRAIN, TEST)


def test_a_column_without_a_train_value_is_left_out(tmp_path):
    table = write(tmp_path / "t.csv", "Uid,followers,only_test\nu1,1,\nnew,2,9\n")
    train, test, report = build_side_block([table], TRAIN, TEST)
    assert "side_t_only_test" not in train.columns and "side_t_only_test" not in test.columns
    assert report["tables"][0]["left out"] == {"side_t_only_test": "no value on any train post"}


def test_a_per_post_column_that_is_the_label_is_named(tmp_path):
    table = write(tmp_path / "posts.csv", "Pid,views\n1,10\n2,20\n3,30\n4,40\n6,1\n")
    train, test, report = build_side_block([table], TRAIN, TEST)
    np.testing.assert_array_equal(test["side_posts_views"], [np.nan, 1])
    assert any("ranks the train posts as their labels do" in n for n in report["tables"][0]["notes"])


# --- through run_all.py --------------------------------------------------------------------------------
OFF = [f"--set={item}" for item in ("encoders.enabled=false", "prototype.enabled=false", "tuning.enabled=false",
                                    "gbdt.seeds=[0]", "validation.n_folds=2", "gbdt.num_boost_round=40",
                                    "ensemble.linear_members={ridge_meta: [meta]}")]  # a ridge member too (off in the configs)


def pipeline_args(root: Path, data: Path, *extra) -> list:
    return ["--data-dir", data, "--test-labels", root / "hidden_test_labels.txt", "--work-dir", root / "work",
            "--submissions-dir", root / "subs", *OFF, *extra]


@pytest.fixture
def data(demo_dir, tmp_path):
    """conftest's copy of the demo data set, with its hidden test labels beside it (for --test-labels)."""
    import shutil
    shutil.copytree(demo_dir, tmp_path / "data")
    shutil.copy(demo_dir.parent / "hidden_test_labels.txt", tmp_path / "hidden_test_labels.txt")
    return tmp_path / "data"


def user_table(data: Path, path: Path, drop_every: int = 3) -> Path:
    """followers per user of the data set, every `drop_every`-th user left out (a crawl that missed some)."""
    uids = sorted({r["Uid"] for split in ("train", "test") for r in load_records(data / f"{split}_category.json")})
    rows = [f"{u},{10 * i}" for i, u in enumerate(uids) if i % drop_every]
    return write(path, "Uid,followers\n" + "\n".join(rows) + "\n")


def stage_lines(text: str, stage: str) -> list[str]:
    return [line for line in text.splitlines() if f"[{stage}]" in line]


def test_side_block_joins_every_member_and_reruns_only_when_the_table_changes(data, tmp_path, run_all_here):
    tables = tmp_path / "mine"
    tables.mkdir()
    table = user_table(data, tables / "crawl.csv")
    before = sorted(os.listdir(tables))
    args = pipeline_args(tmp_path, data, "--side-table", table, "--run-name", "side")
    first = run_all_here(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(os.listdir(tables)) == before  # read where it is, nothing written beside it
    config_dir = next((tmp_path / "work").glob("config-*"))
    for member in ("meta", "ridge_meta"):
        summary = pd.read_json(config_dir / "preds" / f"{member}.json", typ="series")
        assert summary["blocks"][-1] == "side", member
    side_test = pd.read_parquet(config_dir / "features" / "side_test.parquet")
    test_pids = [str(r["Pid"]) for r in load_records(data / "test_category.json")]
    assert side_test["Pid"].tolist() == test_pids
    report = pd.read_json(config_dir / "side_report.json", typ="series")["tables"][0]
    assert report["test posts without a row"] == int(side_test["side_crawl_followers"].isna().sum()) > 0
    page = (tmp_path / "subs" / "side" / "report.html").read_text()
    assert f"Side table {table} (key Uid): {report['rows']} rows, 1 feature(s)" in page

    again = run_all_here(*args[:-2], "--run-name", "side2")
    assert again.returncode == 0
    assert "up to date" in stage_lines(again.stderr, "side_tables")[0]
    assert "up to date" in stage_lines(again.stderr, "train_trees")[0]

    user_table(data, table, drop_every=2)  # the same path, another content
    changed = run_all_here(*args[:-2], "--run-name", "side3")
    assert changed.returncode == 0
    assert "running" in stage_lines(changed.stderr, "side_tables")[0]
    assert "running" in stage_lines(changed.stderr, "train_trees")[0]
    assert next((tmp_path / "work").glob("config-*")) == config_dir  # the same config folder


def test_without_a_side_table_nothing_changes(data, tmp_path, run_all_here):
    from pipeline.config import load_config
    config = load_config(ROOT / "configs" / "smpd.yaml")
    assert "side_tables" not in config.to_dict()  # so no digest (config folder, leaderboard) moves
    done = run_all_here(*pipeline_args(tmp_path, data, "--run-name", "plain"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[side_tables] off in this config" in done.stderr
    config_dir = next((tmp_path / "work").glob("config-*"))
    assert not (config_dir / "features" / "side_train.parquet").exists()
    summary = pd.read_json(config_dir / "preds" / "meta.json", typ="series")
    assert summary["blocks"] == ["meta"]


def one_user(data: Path) -> None:
    for split in ("train", "test"):
        for kind in ("category", "text", "temporalspatial_information", "user_data", "additional_information"):
            records = load_records(data / f"{split}_{kind}.json")
            dump_records(data / f"{split}_{kind}.json", [{**r, "Uid": "only@N01"} for r in records])


def test_hostile_data_one_user_no_images_no_text_missing_rows(data, tmp_path, run_all_here):
    import shutil
    one_user(data)
    for split in ("train", "test"):
        shutil.rmtree(data / split)  # no images
        dump_records(data / f"{split}_text.json", [{**r, "Title": "", "Alltags": ""}
                                                   for r in load_records(data / f"{split}_text.json")])
    pids = [str(r["Pid"]) for r in load_records(data / "train_category.json")]
    table = write(tmp_path / "per_post.csv", "Pid,comments\n" + "".join(f"{p},{i % 7}\n" for i, p in
                                                                        enumerate(pids[::2])))
    done = run_all_here(*pipeline_args(tmp_path, data, "--side-table", table, "--run-name", "hostile"))
    assert done.returncode == 0, done.stderr[-3000:]
    config_dir = next((tmp_path / "work").glob("config-*"))
    side_test = pd.read_parquet(config_dir / "features" / "side_test.parquet")
    assert side_test["side_per_post_comments"].isna().all()  # no test post has a row: gaps, never zeros
    sub = pd.read_csv(tmp_path / "subs" / "hostile" / "submission.csv")
    assert len(sub) == len(load_records(data / "test_category.json"))

    dup = write(tmp_path / "dup.csv", "Uid,followers\nonly@N01,1\nonly@N01,2\n")
    failed = run_all_here(*pipeline_args(tmp_path, data, "--side-table", dup, "--run-name", "dup"))
    assert failed.returncode == 1
    assert "dup.csv, row 1, field 'Uid': Uid 'only@N01' listed twice (rows 0 and 1)" in failed.stderr


def test_config_list_and_load_errors(data, tmp_path, run_all_here):
    from pipeline.catalog import add_context_arguments, make_context
    import argparse
    table = user_table(data, tmp_path / "users.csv")
    parser = argparse.ArgumentParser()
    add_context_arguments(parser)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # a relative path is from the current folder, made absolute for the workers
    try:
        ctx = make_context(parser.parse_args(["--data-dir", str(data), "--work-dir", str(tmp_path / "work"),
                                              "--set", "side_tables=[users.csv]"]))
    finally:
        os.chdir(cwd)
    assert ctx.config.side_tables == [str(table)]

    missing = run_all_here(*pipeline_args(tmp_path, data, "--side-table", tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "nope.csv is not a file" in missing.stderr
    ctx = make_context(parser.parse_args(["--data-dir", str(data), "--work-dir", str(tmp_path / "work"),
                                          "--side-table", str(table), "--set", f"side_tables=[{table}]"]))
    assert ctx.config.side_tables == [str(table)]  # a worker's saved config plus the flag again: read once
    wrong = run_all_here(*pipeline_args(tmp_path, data, "--set", "side_tables=[3]"))
    assert wrong.returncode == 2 and "side_tables[0]: expected the path of a CSV or parquet file" in wrong.stderr
