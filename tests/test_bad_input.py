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


def run_all(data: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    """The real command on an SMPD-format folder, with a small fixed config (metadata models only)."""
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({
        "encoders": {"enabled": False}, "prototype": {"enabled": False}, "tuning": {"enabled": False},
        "gbdt": {"num_boost_round": 30, "seeds": [0], "feature_sets": {"meta": ["meta"]}},
        "ensemble": {"method": "nnls", "linear_members": {"ridge_meta": ["meta"]}},
    }))
    return subprocess.run([sys.executable, str(ROOT / "pipeline" / "run_all.py"), "--data-dir", str(data),
                           "--work-dir", str(tmp / "work"), "--submissions-dir", str(tmp / "subs"),
                           "--run-name", "run", "--config", str(config), "--stages",
                           "read_data,make_folds,build_metadata,train_gbdt,train_linear,blend,submit", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


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
def test_bad_test_file_stops_the_run_before_any_work(data, tmp_path):
    path = data / "test_temporalspatial_information.json"
    edit(path, lambda i, r: r.update(Postdate="soon") if i == 17 else None)
    result = run_all(data, tmp_path)
    assert result.returncode == 1
    assert "test_temporalspatial_information.json, row 17, field 'Postdate': expected a number, got 'soon'" \
        in result.stderr
    assert not list((tmp_path / "work").glob("*.parquet"))  # no table written, not even the good train split
    lock = tmp_path / "work" / "stages.lock.json"
    assert not lock.exists() or not json.loads(lock.read_text())["stages"]


def test_unseen_categories_and_users_in_test_run_end_to_end_and_are_counted(data, demo_dir, tmp_path):
    hidden = demo_dir.parent / "hidden_test_labels.txt"
    new_user = "99999@N99"

    def unseen(i, record):
        if i < 6:
            record["Uid"] = new_user
    for kind in ("category", "text", "temporalspatial_information", "user_data", "additional_information"):
        edit(data / f"test_{kind}.json", unseen)
    edit(data / "test_category.json", lambda i, r: r.update(Category="Brand&New", Subcategory="Unheard",
                                                             Concept="novelty") if i % 4 == 0 else None)
    result = run_all(data, tmp_path, "--test-labels", str(hidden))
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
