"""The demo data set: official SMPD layout, determinism, realistic content, hidden test labels."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from features.demo import make_demo
from pipeline.config import Config, DemoConfig
from pipeline.make_demo import STAGE
from pipeline.run_all import run_stages
from pipeline.catalog import RunContext
from pipeline.stage import Lock

REPO_ROOT = Path(__file__).resolve().parent.parent

# Written out from docs/smpd-format.md, not taken from the generator, so the test can catch it.
FIELDS = {
    "category": ["Uid", "Pid", "Category", "Subcategory", "Concept"],
    "text": ["Uid", "Pid", "Title", "Mediatype", "Alltags"],
    "temporalspatial_information": ["Uid", "Pid", "Postdate", "Latitude", "Longitude", "Geoaccuracy"],
    "user_data": ["Uid", "Pid", "photo_firstdate", "photo_count", "ispro", "canbuypro", "timezone_offset",
                  "photo_firstdatetaken", "timezone_timezone_id", "user_description", "location_description"],
    "additional_information": ["Uid", "Pid", "Pathalias", "Ispublic", "Mediastatus"],
}
CATEGORIES = {"Whether&Season", "Travel&Active&Sports", "Social&People", "Holiday&Celebrations", "Fashion", "Food",
              "Entertainment", "Family", "Urban", "Animal", "Electronics"}
SMALL = dict(n_train=150, n_test=60, n_users=30, image_size=24)


def _read_split(data_dir: Path, split: str) -> dict:
    tables = {kind: json.loads((data_dir / f"{split}_{kind}.json").read_text(encoding="utf-8")) for kind in FIELDS}
    tables["img"] = (data_dir / f"{split}_img_filepath.txt").read_text().splitlines()
    return tables


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> tuple[Path, Path, dict]:
    """One default-size data set (about 8 s), shared by the content tests."""
    root = tmp_path_factory.mktemp("demo")
    summary = make_demo(root / "data", root / "hidden_test_labels.txt")
    return root / "data", root / "hidden_test_labels.txt", summary


def test_same_arguments_give_identical_bytes(tmp_path):
    make_demo(tmp_path / "a" / "data", tmp_path / "a" / "labels.txt", **SMALL)
    make_demo(tmp_path / "b" / "data", tmp_path / "b" / "labels.txt", **SMALL)
    first, second = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert list(first) == list(second)
    assert any(name.endswith(".jpg") for name in first)
    assert [name for name in first if first[name] != second[name]] == []
    make_demo(tmp_path / "c" / "data", tmp_path / "c" / "labels.txt", **{**SMALL, "seed": 1})
    assert (tmp_path / "c" / "labels.txt").read_bytes() != first["labels.txt"]


def test_layout_and_fields_are_the_official_ones(default_set):
    data_dir, hidden, _ = default_set
    top = sorted(p.name for p in data_dir.iterdir())
    expected = sorted([f"{s}_{k}.json" for s in ("train", "test") for k in FIELDS]
                      + ["train_img_filepath.txt", "test_img_filepath.txt", "train_label.txt", "train", "test",
                         ".smpd-demo"])
    assert top == expected  # no test_label.txt, nothing else but the demo's marker
    pids = {}
    for split in ("train", "test"):
        tables = _read_split(data_dir, split)
        n = len(tables["img"])
        order = [row["Pid"] for row in tables["category"]]
        uids = [row["Uid"] for row in tables["category"]]
        for kind, fields in FIELDS.items():
            rows = tables[kind]
            assert isinstance(rows, list) and len(rows) == n, kind
            for row in rows:
                assert list(row) == fields, (kind, row)
                assert all(isinstance(value, str) for value in row.values()), (kind, row)
            assert [row["Pid"] for row in rows] == order, f"{split}_{kind}.json: Pid order differs"
            assert [row["Uid"] for row in rows] == uids, f"{split}_{kind}.json: Uid differs"
        assert tables["img"] == [f"{split}/{u}/{p}.jpg" for u, p in zip(uids, order)]
        assert all(re.fullmatch(r"\d+@N\d\d", u) for u in uids)
        assert all(re.fullmatch(r"[1-9]\d*", p) for p in order)
        pids[split] = order
    assert len(pids["train"]) == 3000 and len(pids["test"]) == 1000
    assert len(set(pids["train"]) | set(pids["test"])) == 4000  # unique within and across splits
    labels = (data_dir / "train_label.txt").read_text().splitlines()
    assert len(labels) == 3000 and all(re.fullmatch(r"\d+\.\d\d", v) for v in labels)
    assert len(hidden.read_text().splitlines()) == 1000


def test_hierarchy_and_field_values_look_like_smpd(default_set):
    data_dir, _, _ = default_set
    train, test = _read_split(data_dir, "train"), _read_split(data_dir, "test")
    category = train["category"] + test["category"]
    assert {r["Category"] for r in category} == CATEGORIES
    sub_parent, concept_parent = {}, {}
    for r in category:  # category > subcategory > concept is a tree
        assert sub_parent.setdefault(r["Subcategory"], r["Category"]) == r["Category"]
        assert concept_parent.setdefault(r["Concept"], r["Subcategory"]) == r["Subcategory"]
    assert 60 <= len(sub_parent) <= 77 and len(concept_parent) > 300
    assert {"Health,Fitness", "Good,Morning", "Guys,Fashion", "StreetArt", "Babies"} <= set(sub_parent)

    users = train["user_data"] + test["user_data"]
    for r in users:
        assert re.fullmatch(r"1[0-4]\d{8}", r["photo_firstdate"]) and r["photo_count"].isdigit()
        assert r["ispro"] in ("0", "1") and r["canbuypro"] in ("0", "1")
        assert r["timezone_offset"] == "" or re.fullmatch(r"[+-]\d\d:\d\d", r["timezone_offset"])
        assert r["photo_firstdatetaken"] == "" or re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
                                                               r["photo_firstdatetaken"])
    geo = train["temporalspatial_information"] + test["temporalspatial_information"]
    for r in geo:
        if r["Latitude"] == "":
            assert r["Longitude"] == "" and r["Geoaccuracy"] in ("0", "")
        else:
            assert -90 <= float(r["Latitude"]) <= 90 and 1 <= int(r["Geoaccuracy"]) <= 16

    # the gaps real files have
    text = train["text"] + test["text"]
    assert 0.05 < np.mean([r["Title"] == "" for r in text]) < 0.5
    assert 0.03 < np.mean([r["Alltags"] == "" for r in text]) < 0.4
    assert 0.2 < np.mean([r["Latitude"] == "" for r in geo]) < 0.9
    assert {r["Geoaccuracy"] for r in geo if r["Latitude"] == ""} == {"0", ""}
    assert any(r["Pathalias"] == "None" for r in train["additional_information"])
    assert any(r["Pathalias"] != "None" for r in train["additional_information"])
    assert 0.003 < np.mean([r["Mediatype"] == "video" for r in text]) < 0.06
    assert any(r["user_description"] == "" for r in users) and any(r["user_description"] for r in users)
    assert any(r["location_description"] == "" for r in users)

    # users: heavy-tailed activity, shared between splits, some new in test
    train_uids = [r["Uid"] for r in train["category"]]
    counts = np.array(sorted(np.unique(train_uids, return_counts=True)[1]))
    assert counts[-1] >= 15 * np.median(counts) and (counts == 1).sum() >= 10
    test_uids = {r["Uid"] for r in test["category"]}
    assert len(test_uids & set(train_uids)) >= 50 and len(test_uids - set(train_uids)) >= 10


def test_test_period_follows_train_period(default_set):
    data_dir, _, _ = default_set
    times = {s: np.array([int(r["Postdate"]) for r in _read_split(data_dir, s)["temporalspatial_information"]])
             for s in ("train", "test")}
    assert times["train"].max() < times["test"].min()
    span_days = (times["test"].max() - times["train"].min()) / 86400
    assert 420 < span_days <= 490  # about 16 months


def test_labels_follow_the_real_distribution_and_drift(default_set):
    data_dir, hidden, summary = default_set
    train = np.loadtxt(data_dir / "train_label.txt")
    test = np.loadtxt(hidden)
    assert 6.1 < train.mean() < 6.7 and 2.2 < train.std() < 2.7
    assert train.min() >= 1.0 and train.max() <= 16.6 and test.min() >= 1.0 and test.max() <= 16.6
    assert 1.0 < np.quantile(train, 0.05) and np.quantile(train, 0.99) > 11.5
    assert test.mean() < train.mean() - 0.6  # later posts are less popular, as in SMPD (5.12 vs 6.41)
    assert summary["train_label_mean"] == pytest.approx(train.mean(), abs=1e-3)


def test_popularity_depends_on_user_content_and_image(default_set):
    data_dir, _, _ = default_set
    tables = _read_split(data_dir, "train")
    label = np.loadtxt(data_dir / "train_label.txt")
    uid = np.array([r["Uid"] for r in tables["category"]])
    _, inverse = np.unique(uid, return_inverse=True)
    user_mean = np.bincount(inverse, label) / np.bincount(inverse)
    assert 1 - np.mean((label - user_mean[inverse]) ** 2) / label.var() > 0.35  # user: the largest effect
    sub = np.array([r["Subcategory"] for r in tables["category"]])
    sub_means = [label[sub == s].mean() for s in np.unique(sub) if (sub == s).sum() >= 30]
    assert np.std(sub_means) > 0.3
    saturation, decoded = [], []
    for i, path in enumerate(tables["img"]):
        file = data_dir / path
        if not file.exists():
            continue
        try:
            with Image.open(file) as image:
                hsv = np.asarray(image.convert("HSV"), dtype=np.float32)
        except OSError:
            continue
        saturation.append(hsv[..., 1].mean())
        decoded.append(i)
    assert len(decoded) > 0.97 * len(tables["img"])  # a few missing or unreadable, as in real sets
    residual = label[decoded] - user_mean[inverse[decoded]]
    assert np.corrcoef(saturation, residual)[0, 1] > 0.1  # what the image shows matters beyond the user


def test_images_decode_and_a_few_are_missing_or_broken(default_set):
    data_dir, _, summary = default_set
    paths = [data_dir / p for s in ("train", "test") for p in _read_split(data_dir, s)["img"]]
    missing = [p for p in paths if not p.exists()]
    broken = 0
    for path in paths:
        if path.exists():
            try:
                with Image.open(path) as image:
                    image.load()
                    assert image.format == "JPEG" and max(image.size) == 64
            except OSError:
                broken += 1
    assert len(missing) == summary["n_missing_images"] and 0 < len(missing) < 0.02 * len(paths)
    assert broken == summary["n_unreadable_images"] and broken < 0.01 * len(paths)


def test_hidden_labels_must_lie_outside_the_data_dir(tmp_path):
    with pytest.raises(ValueError, match="outside the data folder"):
        make_demo(tmp_path / "data", tmp_path / "data" / "hidden.txt", **SMALL)
    make_demo(tmp_path / "data", tmp_path / "hidden.txt", **SMALL)
    hidden = (tmp_path / "hidden.txt").read_bytes()
    assert all(p.read_bytes() != hidden for p in (tmp_path / "data").rglob("*") if p.is_file())


def test_never_overwrites_a_folder_it_did_not_write(tmp_path):
    real = tmp_path / "smpd"
    (real / "train").mkdir(parents=True)
    (real / "train_label.txt").write_text("5.00\n")
    with pytest.raises(ValueError, match="not written by make_demo"):
        make_demo(real, tmp_path / "hidden.txt", **SMALL)
    assert (real / "train_label.txt").read_text() == "5.00\n" and list((real / "train").iterdir()) == []
    make_demo(tmp_path / "demo", tmp_path / "hidden.txt", **SMALL)  # a demo folder is replaced as a whole
    stale = tmp_path / "demo" / "train" / "1@N00" / "1.jpg"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    make_demo(tmp_path / "demo", tmp_path / "hidden.txt", **SMALL)
    assert not stale.exists()
    assert [p.name for p in (tmp_path / "demo").iterdir() if p.name.startswith(".") and p.is_dir()] == []


def test_stage_runs_through_the_pipeline_and_is_then_up_to_date(tmp_path):
    config = Config(demo=DemoConfig(**SMALL))
    ctx = RunContext(config=config, data_dir=tmp_path / "work" / "data", config_dir=tmp_path / "work",
                     run_name="t", test_labels=tmp_path / "work" / "hidden_test_labels.txt", is_demo=True)
    assert STAGE.enabled(ctx) and not STAGE.enabled(RunContext(config, tmp_path, tmp_path, "t"))
    assert STAGE.inputs(ctx) == [] and ctx.test_labels in STAGE.outputs(ctx)
    assert len(STAGE.outputs(ctx)) == 14  # 7 train files, 6 test files, the hidden labels
    run_stages(ctx, [STAGE], None, force=False)
    assert all(p.is_file() for p in STAGE.outputs(ctx))
    stamps = {p: p.stat().st_mtime_ns for p in STAGE.outputs(ctx)}
    run_stages(ctx, [STAGE], None, force=False)  # up to date: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in STAGE.outputs(ctx)} == stamps
    assert "make_demo" in Lock(ctx.lock_file).data["stages"]
    ctx.config.demo.n_test = 50  # a config change reruns it
    run_stages(ctx, [STAGE], None, force=False)
    assert len(ctx.test_labels.read_text().splitlines()) == 50


def test_command_line_writes_a_data_set(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipeline" / "make_demo.py"), "--out-dir", str(tmp_path / "d"),
         "--labels", str(tmp_path / "y.txt"), "--n-train", "40", "--n-test", "20", "--n-users", "8",
         "--image-size", "16", "--seed", "3"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n_test"] == 20
    assert len((tmp_path / "d" / "train_label.txt").read_text().splitlines()) == 40
    bad = subprocess.run([sys.executable, str(REPO_ROOT / "pipeline" / "make_demo.py"), "--out-dir",
                          str(tmp_path / "d"), "--labels", str(tmp_path / "d" / "y.txt")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "outside the data folder" in bad.stderr
