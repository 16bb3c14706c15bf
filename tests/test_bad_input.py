"""Bad and unusual input, the cases test_reader.py does not cover: each either reads (the gap counted)
or stops before any work with a message naming file, row and field.

Image files (missing, empty, truncated, not an image, CMYK, grayscale, huge) are the
encode stage's cases, tested in test_encoders.py.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_demo import dump_records, load_records, set_line
import yaml

from features.smpd import SMPDFormatError, read_smpd, read_split

ROOT = Path(__file__).resolve().parent.parent
NUMERIC = {"Postdate", "Latitude", "Longitude", "Geoaccuracy", "photo_firstdate", "photo_count", "ispro",
           "canbuypro", "Ispublic"}




def edit(path, change):
    records = load_records(path)
    for i, record in enumerate(records):
        change(i, record)
    dump_records(path, records)


def run_all(run_all_here, data: Path, tmp: Path, *extra: str):
    """The command (in this process) on an SMPD-format folder, with a small fixed config (metadata models only)."""
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({
        "encoders": {"enabled": False}, "prototype": {"enabled": False}, "tuning": {"enabled": False},
        "gbdt": {"num_boost_round": 30, "seeds": [0], "feature_sets": {"meta": ["meta"]}},
        "ensemble": {"method": "nnls", "linear_members": {"ridge_meta": ["meta"]}},
    }))
    return run_all_here("--data-dir", data, "--work-dir", tmp / "work", "--submissions-dir", tmp / "subs",
                        "--run-name", "run", "--config", config, "--stages",
                        "read_data,make_folds,build_metadata,adversarial,train_trees,train_linear,blend,submit", *extra)


# --- values: numbers as strings or numbers, padding, encodings, line endings ---------------------
def test_numbers_as_numbers_and_padded_strings_read_exactly_like_the_official_strings(data, tmp_path):
    reference = shutil.copytree(data, tmp_path / "reference")
    for path in data.glob("*.json"):
        def to_numbers(i, record):
            record["Pid"] = int(record["Pid"])
            for name in NUMERIC & record.keys():
                value = record[name].strip()
                if value:
                    number = float(value)
                    record[name] = int(number) if number.is_integer() and i % 2 else number
            if i % 3 == 0:
                record["Uid"] = f"  {record['Uid']} "
        edit(path, to_numbers)
    for split in ("train", "test"):
        expected, expected_report = read_split(reference, split)
        table, report = read_split(data, split)
        pd.testing.assert_frame_equal(table, expected, check_exact=True)
        assert report.counts == expected_report.counts


def test_windows_line_endings_and_a_utf8_byte_order_mark_are_read(data, tmp_path):
    reference = shutil.copytree(data, tmp_path / "reference")
    for path in [*data.glob("*.txt")]:
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    for path in data.glob("*.json"):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    train, test, _ = read_smpd(data)
    expected_train, expected_test, _ = read_smpd(reference)
    pd.testing.assert_frame_equal(train, expected_train, check_exact=True)
    pd.testing.assert_frame_equal(test, expected_test, check_exact=True)


def test_text_that_is_not_utf8_is_named(data):
    path = data / "train_text.json"
    path.write_bytes(path.read_bytes().replace(b'"Title": "', b'"Title": "\xe9t\xe9 ', 1))
    with pytest.raises(SMPDFormatError, match=r"train_text.json: not UTF-8 text"):
        read_split(data, "train")


# --- structure -----------------------------------------------------------------------------------
def test_a_json_object_instead_of_an_array_is_named(data):
    path = data / "test_category.json"
    path.write_text(json.dumps({"posts": load_records(path)}))
    with pytest.raises(SMPDFormatError, match=r"test_category.json: expected a JSON array of objects, got a dict"):
        read_split(data, "test")


def test_a_row_that_is_not_an_object_is_located(data):
    path = data / "train_user_data.json"
    records = load_records(path)
    records[5] = "Pid 123"
    dump_records(path, records)
    with pytest.raises(SMPDFormatError, match=r"train_user_data.json, row 5: expected an object, got str"):
        read_split(data, "train")


def test_a_missing_required_field_is_located(data):
    edit(data / "test_temporalspatial_information.json", lambda i, r: r.pop("Postdate") if i == 4 else None)
    with pytest.raises(SMPDFormatError, match=r"test_temporalspatial_information.json, row 4, field 'Postdate': "
                                              r"required field is missing"):
        read_split(data, "test")


def test_a_missing_optional_field_is_counted(data):
    edit(data / "train_user_data.json", lambda i, r: r.pop("photo_count") if i < 7 else None)
    train, report = read_split(data, "train")
    assert train["photo_count"].isna().sum() == 7
    assert report.counts["field photo_count absent from train_user_data.json (set missing)"] == 7


def test_an_empty_post_list_is_refused(data):
    (data / "test_text.json").write_text("[]")
    with pytest.raises(SMPDFormatError, match="test_category.json|test_text.json"):
        read_split(data, "test")


def test_a_missing_pid_is_located(data):
    edit(data / "train_text.json", lambda i, r: r.update(Pid="") if i == 9 else None)
    with pytest.raises(SMPDFormatError, match=r"train_text.json, row 9, field 'Pid': missing Pid"):
        read_split(data, "train")


def test_fewer_image_paths_than_posts_is_named(data):
    path = data / "test_img_filepath.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-2]) + "\n")
    with pytest.raises(SMPDFormatError, match=r"test_img_filepath.txt: 28 image paths for 30 posts"):
        read_split(data, "test")


def test_a_pid_in_both_splits_is_refused(data):
    train_pid = load_records(data / "train_category.json")[0]["Pid"]
    for kind in ("category", "text", "temporalspatial_information", "user_data", "additional_information"):
        edit(data / f"test_{kind}.json", lambda i, r: r.update(Pid=train_pid) if i == 0 else None)
    with pytest.raises(SMPDFormatError, match=rf"1 Pids appear in both train and test.*{train_pid}"):
        read_smpd(data)


def test_an_infinite_label_is_located(data):
    set_line(data / "train_label.txt", 11, "inf")
    with pytest.raises(SMPDFormatError, match=r"train_label.txt, row 11: label 'inf' is not a finite number"):
        read_split(data, "train")


# --- through the real command ------------------------------------------------------------------------
def test_bad_test_file_stops_the_run_before_any_work(data, tmp_path, run_all_here):
    path = data / "test_temporalspatial_information.json"
    edit(path, lambda i, r: r.update(Postdate="soon") if i == 17 else None)
    result = run_all(run_all_here, data, tmp_path)
    assert result.returncode == 1
    assert "test_temporalspatial_information.json, row 17, field 'Postdate': expected a number, got 'soon'" \
        in result.stderr
    assert not list((tmp_path / "work").glob("*.parquet"))  # no table written, not even the good train split
    lock = tmp_path / "work" / "stages.lock.json"
    assert not lock.exists() or not json.loads(lock.read_text())["stages"]


def test_unseen_categories_and_users_in_test_run_end_to_end_and_are_counted(data, demo_dir, tmp_path, run_all_here):
    hidden = demo_dir.parent / "hidden_test_labels.txt"
    new_user = "99999@N99"

    def unseen(i, record):
        if i < 6:
            record["Uid"] = new_user
    for kind in ("category", "text", "temporalspatial_information", "user_data", "additional_information"):
        edit(data / f"test_{kind}.json", unseen)
    edit(data / "test_category.json", lambda i, r: r.update(Category="Brand&New", Subcategory="Unheard",
                                                             Concept="novelty") if i % 4 == 0 else None)
    result = run_all(run_all_here, data, tmp_path, "--test-labels", str(hidden))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "work" / "read_report.json").read_text())
    assert "Unheard" in report["test subcategories unseen in train"]
    assert report["test users unseen in train"] >= 6
    assert f"test posts by users unseen in train: {report['test users unseen in train']}" in result.stderr
    assert "filled gaps" in result.stderr and "'empty title'" in result.stderr  # the gaps are counted in the log
    submission = pd.read_csv(tmp_path / "subs" / "run" / "submission.csv", dtype={"post_id": str})
    test_pids = [str(r["Pid"]) for r in load_records(data / "test_category.json")]
    assert submission["post_id"].tolist() == [f"post{p}" for p in test_pids]
    assert np.isfinite(submission["popularity_score"]).all()
    # a post of the unseen class and user gets a prediction like any other, not a constant fallback
    assert submission["popularity_score"].iloc[:6].std() > 0


# --- values present but absurd: each a gap (filled, counted, named) or an error, never silent -----------
@pytest.mark.parametrize("split", ["train", "test"])
def test_far_future_and_overflowing_postdates_take_the_splits_median_and_are_named(data, split):
    path = data / f"{split}_temporalspatial_information.json"
    before = [int(r["Postdate"]) for r in load_records(path)]
    edit(path, lambda i, r: r.update(Postdate={2: "99999999999", 5: "1e30", 7: 1e300}.get(i, r["Postdate"])))
    table, report = read_split(data, split)
    others = np.delete(np.array(before), [2, 5, 7])
    assert table["Postdate"].dtype == np.int64 and len(table) == len(before)  # no post dropped
    assert (table["Postdate"][[2, 5, 7]] == int(np.floor(np.median(others)))).all()
    assert table["Postdate"].min() > 946684800  # never INT64_MIN
    [(what, n)] = [(k, v) for k, v in report.counts.items() if k.startswith("Postdate")]
    assert n == 3 and "2000-01-01.." in what and "median" in what
    assert any(f"{path.name}, row 2, field 'Postdate': '99999999999'" in note for note in report.notes)


def test_far_future_date_report_figure_draws_quickly(data):
    """Finding: one Postdate in the year 5138 made the weekly histogram of the report run for minutes."""
    import time
    from reporting.figures import post_period
    edit(data / "train_temporalspatial_information.json",
         lambda i, r: r.update(Postdate="99999999999") if i == 0 else None)
    train, test, _ = read_smpd(data)
    started = time.perf_counter()
    post_period(train["Postdate"], test["Postdate"], train["label"])
    assert time.perf_counter() - started < 20


def test_no_plausible_postdate_at_all_is_an_error(data):
    edit(data / "test_temporalspatial_information.json", lambda i, r: r.update(Postdate="-5"))
    with pytest.raises(SMPDFormatError, match=r"test_temporalspatial_information.json, row 0, field 'Postdate': "
                                              r"no Postdate in 2000-01-01\.\."):
        read_split(data, "test")


def test_non_finite_and_out_of_range_numbers_become_missing_and_the_metadata_builds(data):
    from features.metadata import build_metadata
    edit(data / "train_user_data.json", lambda i, r: r.update(
        {0: {"timezone_offset": "1e400"}, 1: {"timezone_offset": "+99:00"}, 2: {"photo_count": "-inf"},
         3: {"photo_firstdate": "1e30"}, 4: {"ispro": "7"}, 5: {"photo_firstdatetaken": "0000-00-00 00:00:00"},
         6: {"photo_firstdatetaken": "1850-01-01 00:00:00"}}.get(i, {})))
    edit(data / "train_temporalspatial_information.json", lambda i, r: r.update(
        {0: {"Latitude": "9999", "Geoaccuracy": "16"}, 1: {"Longitude": "-inf", "Geoaccuracy": "16"}}.get(i, {})))
    train, report = read_split(data, "train")
    assert train["timezone_offset"][[0, 1]].isna().all() and np.isnan(train["photo_count"][2])
    assert np.isnan(train["photo_firstdate"][3]) and np.isnan(train["ispro"][4])
    assert train["photo_firstdatetaken"][[5, 6]].isna().all()
    assert counts_of(report, "photo_firstdatetaken") == 2
    assert train[["Latitude", "Longitude"]].iloc[:2].isna().all().all()  # both coordinates go: no location
    counts = report.counts
    assert counts["timezone_offset outside -14..14 or not finite (set missing)"] == 2
    assert counts["Latitude outside -90..90 or not finite (set missing)"] == 1
    assert counts["Longitude outside -180..180 or not finite (set missing)"] == 1
    assert counts["photo_count outside 0..inf or not finite (set missing)"] == 1
    assert any("row 0, field 'Latitude': '9999' is outside -90..90" in note for note in report.notes)
    test, _ = read_split(data, "test")
    meta, _ = build_metadata(train, test)
    assert len(meta) == len(train) and np.isfinite(meta["meta_hour_local"]).all()


def counts_of(report, field: str) -> int:
    return sum(n for what, n in report.counts.items() if what.startswith(f"{field} "))


def test_a_lone_surrogate_in_a_title_is_replaced_and_counted(data, tmp_path):
    from common.io import write_parquet
    path = data / "train_text.json"
    path.write_text(path.read_text().replace('"Title": "', '"Title": "\\ud83d broken \\ud83d\\ude00 ', 2))
    train, report = read_split(data, "train")
    assert train["Title"][0].startswith("\ufffd broken \U0001F600 ")  # lone -> U+FFFD, a pair -> its emoji
    assert report.counts["Title with characters that are not valid Unicode (replaced by U+FFFD)"] == 2
    write_parquet(tmp_path / "posts.parquet", train)  # storable, unlike the raw string
    assert pd.read_parquet(tmp_path / "posts.parquet")["Title"][0] == train["Title"][0]


def test_a_surrogate_written_as_utf8_bytes_is_replaced_too(data):
    path = data / "test_text.json"
    path.write_bytes(path.read_bytes().replace(b'"Title": "', b'"Title": "\xed\xa0\xbd', 1))
    test, report = read_split(data, "test")
    assert test["Title"][0].startswith("\ufffd")
    assert report.counts["Title with characters that are not valid Unicode (replaced by U+FFFD)"] == 1


@pytest.mark.parametrize("name", ["train_label.txt", "train_img_filepath.txt"])
def test_a_byte_that_is_not_utf8_in_a_line_file_is_located(data, name):
    path = data / name
    lines = path.read_bytes().split(b"\n")
    lines[6] = lines[6] + b"\xff"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(SMPDFormatError, match=rf"{name}, row 6: not UTF-8 text: byte b'\\xff'"):
        read_split(data, "train")


def test_a_byte_order_mark_before_the_first_image_path_is_dropped(data):
    path = data / "train_img_filepath.txt"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    train, report = read_split(data, "train")
    assert train["img_exists"].all() and "image file missing" not in report.counts
    assert not train["img_path"][0].startswith("\ufeff")


def test_image_paths_outside_the_data_folder_are_counted_and_never_looked_at(data, tmp_path):
    outside = tmp_path / "outside.jpg"
    shutil.copy(data / (data / "train_img_filepath.txt").read_text().splitlines()[0], outside)
    set_line(data / "train_img_filepath.txt", 3, "../outside.jpg")
    set_line(data / "train_img_filepath.txt", 4, str(outside))
    train, report = read_split(data, "train")
    assert not train["img_exists"][3] and not train["img_exists"][4] and train["img_exists"].sum() == 78
    assert report.counts["image path outside the data folder (not opened, no image)"] == 2
    assert any("train_img_filepath.txt, row 3, field 'image path': '../outside.jpg'" in n for n in report.notes)


def test_a_write_that_fails_names_the_file(tmp_path):
    """A full disk (here: a file-size limit, which fails the same write call) names the file being written."""
    script = (
        "import resource, signal, sys\n"
        "import numpy as np, pandas as pd\n"
        "from common.io import write_parquet\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "write_parquet(sys.argv[2], pd.DataFrame({'x': np.random.default_rng(0).random(100000)}))\n")
    target = tmp_path / "features" / "meta_train.parquet"
    done = subprocess.run([sys.executable, "-c", script, str(ROOT), str(target)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode != 0
    assert f"cannot write {target}" in done.stderr and "File too large" in done.stderr
    assert not target.exists() and not list(target.parent.glob("*.tmp"))  # no half-written file left


def test_absurd_values_everywhere_still_give_a_valid_submission_and_report(data, demo_dir, tmp_path, run_all_here):
    """The real command, report included, on a data set with one of each absurd value: a far-future and an
    overflowing date (the report's weekly histogram once ran for minutes on them), an infinite timezone,
    an impossible latitude, a lone surrogate, a byte order mark and paths leaving the data folder."""
    edit(data / "train_temporalspatial_information.json", lambda i, r: r.update(
        {0: {"Postdate": "99999999999"}, 1: {"Postdate": "1e30"}, 2: {"Latitude": "9999", "Geoaccuracy": "16"}}
        .get(i, {})))
    edit(data / "test_temporalspatial_information.json",
         lambda i, r: r.update(Postdate="99999999999") if i == 0 else None)
    edit(data / "test_user_data.json", lambda i, r: r.update(timezone_offset="1e400") if i < 3 else None)
    path = data / "test_text.json"
    path.write_text(path.read_text().replace('"Title": "', '"Title": "\\ud83d', 1))
    set_line(data / "test_img_filepath.txt", 1, "../../../etc/passwd")
    listing = data / "train_img_filepath.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + listing.read_bytes())
    result = run_all_here(
        "--data-dir", data, "--work-dir", tmp_path / "work", "--submissions-dir", tmp_path / "subs", "--run-name", "run",
        "--test-labels", demo_dir.parent / "hidden_test_labels.txt",
        "--set", "encoders.enabled=false", "--set", "prototype.enabled=false", "--set", "tuning.enabled=false",
        "--set", "gbdt.seeds=[0]", "--set", "gbdt.num_boost_round=30")
    assert result.returncode == 0, result.stderr[-3000:]
    submission = pd.read_csv(tmp_path / "subs" / "run" / "submission.csv", dtype={"post_id": str})
    test_pids = [str(r["Pid"]) for r in load_records(data / "test_category.json")]
    assert submission["post_id"].tolist() == [f"post{p}" for p in test_pids]
    assert np.isfinite(submission["popularity_score"]).all()
    assert (tmp_path / "subs" / "run" / "report.html").is_file()
    report = json.loads((tmp_path / "work" / "read_report.json").read_text())
    assert sum(v for k, v in report["train"].items() if k.startswith("Postdate outside")) == 2
    assert report["test"]["image path outside the data folder (not opened, no image)"] == 1
    assert "image file missing" not in report["train"]  # the byte order mark did not hide the first image
    assert "field 'Postdate': '99999999999' is outside" in result.stderr  # named in the log
