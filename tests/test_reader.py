"""The SMPD reader: typed tables from the official files, clear errors on bad input."""
import shutil

import numpy as np
import pytest
from tiny_demo import dump_records, load_records, set_line

from features.smpd import SMPDFormatError, read_labels, read_smpd, read_split




def test_reads_both_splits_into_typed_tables(data):
    train, test, report = read_smpd(data)
    assert len(train) == 80 and len(test) == 30
    assert train["row"].tolist() == list(range(80))
    assert train["Postdate"].dtype == np.int64 and train["label"].dtype == np.float64
    assert train["Pid"].tolist() == [str(r["Pid"]) for r in load_records(data / "train_category.json")]
    assert train["img_exists"].all()
    assert "label" not in test.columns
    assert report["train"]["rows"] == 80


def test_numbers_as_numbers_are_accepted(data):
    path = data / "train_temporalspatial_information.json"
    records = load_records(path)
    for r in records:
        r["Postdate"] = int(r["Postdate"])
    dump_records(path, records)
    numeric = [r for r in load_records(data / "train_category.json")]
    for r in numeric:
        r["Pid"] = int(r["Pid"])
    dump_records(data / "train_category.json", numeric)
    train, _ = read_split(data, "train")
    assert train["Postdate"].dtype == np.int64


def test_missing_file_is_named(data):
    (data / "test_text.json").unlink()
    with pytest.raises(SMPDFormatError, match="test_text.json"):
        read_smpd(data)


def test_only_the_test_split_is_refused_before_any_work(data):
    for path in data.glob("train_*"):
        path.unlink()
    with pytest.raises(SMPDFormatError, match="no train split"):
        read_smpd(data)


def test_pid_sets_that_disagree_are_refused(data):
    path = data / "train_text.json"
    records = load_records(path)
    records[5]["Pid"] = "999999999"
    dump_records(path, records)
    with pytest.raises(SMPDFormatError, match="train_text.json.*other posts"):
        read_split(data, "train")


def test_another_row_order_is_aligned_on_pid(data):
    path = data / "train_user_data.json"
    records = load_records(path)
    dump_records(path, records[::-1])
    train, report = read_split(data, "train")
    reference, _ = read_split(data, "test")  # untouched split still reads
    assert any("another order" in note for note in report.notes)
    original = {str(r["Pid"]): r["photo_count"] for r in records}
    assert np.allclose(train["photo_count"], [float(original[p]) for p in train["Pid"]])
    assert len(reference) == 30


def test_duplicate_pid_names_both_rows(data):
    path = data / "train_category.json"
    records = load_records(path)
    records[7]["Pid"] = records[2]["Pid"]
    dump_records(path, records)
    with pytest.raises(SMPDFormatError, match=r"row 7.*duplicate Pid.*first at row 2"):
        read_split(data, "train")


def test_malformed_json_gives_line_and_column(data):
    path = data / "train_text.json"
    path.write_text(path.read_text()[:-40])  # truncated
    with pytest.raises(SMPDFormatError, match=r"train_text.json: malformed JSON at line \d+ column \d+"):
        read_split(data, "train")


def test_non_numeric_label_is_located(data):
    set_line(data / "train_label.txt", 4, "popular")
    with pytest.raises(SMPDFormatError, match=r"train_label.txt, row 4: label 'popular' is not a number"):
        read_split(data, "train")


def test_nan_label_is_refused(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("1.0\nnan\n")
    with pytest.raises(SMPDFormatError, match="row 1.*not a finite number"):
        read_labels(path)


def test_label_count_must_match_rows(data):
    path = data / "train_label.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-3]) + "\n")
    with pytest.raises(SMPDFormatError, match="77 labels for 80 posts"):
        read_split(data, "train")


def test_non_numeric_postdate_is_located(data):
    path = data / "test_temporalspatial_information.json"
    records = load_records(path)
    records[3]["Postdate"] = "yesterday"
    dump_records(path, records)
    with pytest.raises(SMPDFormatError, match=r"row 3, field 'Postdate'"):
        read_split(data, "test")


def test_recoverable_gaps_become_missing_values_and_are_counted(data):
    text = load_records(data / "train_text.json")
    text[0]["Title"] = ""
    text[0]["Alltags"] = ""
    dump_records(data / "train_text.json", text)
    geo = load_records(data / "train_temporalspatial_information.json")
    geo[1].update(Latitude="", Longitude="", Geoaccuracy="")
    dump_records(data / "train_temporalspatial_information.json", geo)
    extra = load_records(data / "train_additional_information.json")
    extra[2]["Pathalias"] = "None"
    dump_records(data / "train_additional_information.json", extra)
    image = data / (data / "train_img_filepath.txt").read_text().splitlines()[3]
    image.unlink()
    train, report = read_split(data, "train")
    assert train["Title"][0] == "" and train["Alltags"][0] == ""
    assert np.isnan(train["Latitude"][1]) and np.isnan(train["Geoaccuracy"][1])
    assert train["Pathalias"].isna()[2]
    assert not train["img_exists"][3]
    for what in ("empty title", "empty tags", "no geo", "Pathalias None", "image file missing"):
        assert report.counts[what] >= 1


def test_every_image_missing_still_reads(data):
    for folder in ("train", "test"):
        shutil.rmtree(data / folder)
    train, test, report = read_smpd(data)
    assert not train["img_exists"].any() and not test["img_exists"].any()
    assert report["train"]["image file missing"] == 80


def test_uid_that_disagrees_between_files_is_refused(data):
    path = data / "train_user_data.json"
    records = load_records(path)
    records[6]["Uid"] = "1@N00-not-this-user"
    dump_records(path, records)
    with pytest.raises(SMPDFormatError, match=r"row 6, field 'Uid'"):
        read_split(data, "train")
