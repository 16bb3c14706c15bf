"""The tiny demo runs the notebook and report tests share, built once per test session.

`base`: the demo config (optional stages off), `full`: the same work folder with the
encoders and the prototype network on (cheap settings), when the pipeline has those stages.
"""
from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY_DEMO = ["--set", "demo.n_train=160", "--set", "demo.n_test=60", "--set", "demo.n_users=25",
             "--set", "demo.image_size=16"]
# configs/demo.yaml turns every stage on; tests turn the slow ones off unless they test them
# ... and turn the ridge members on (off in the configs, by the panel): the tests of the blend, of
# determinism and of the bookkeeping need more than one member and a train_linear stage
OPTIONAL_OFF = ["--set", "encoders.enabled=false", "--set", "prototype.enabled=false",
                "--set", "tuning.enabled=false", "--set", "gbdt.seeds=[0]",
                "--set", "ensemble.linear_members={ridge_meta: [meta], ridge_emb: [meta, emb]}"]
# the prompt learners run the text backbone at every step (about 10x the cost of the rest): off here
FULL = ["--set", "encoders.enabled=true", "--set", "encoders.num_workers=0", "--set", "prototype.enabled=true",
        "--set", "prototype.train.epochs=2", "--set", "prototype.model.width=64", "--set", "validation.n_folds=2",
        "--set", "prototype.model.use_prompts_global=false", "--set", "prototype.model.use_prompts_local=false"]


def has_optional_stages() -> bool:
    from pipeline.stage import load_stages
    return {"encode", "prototype"} <= {s.name for s in load_stages()}


def run_all(args: list[str]) -> None:
    """run_all.py's `main` in this process: the shared runs are read, not the process (test_run_all.py
    tests the command itself); a failure's traceback is in the captured log."""
    from pipeline.run_all import main
    assert main(args) == 0, f"run_all.py {' '.join(args)} failed"


@lru_cache(maxsize=None)
def _build(base: Path) -> dict[str, list[str]]:
    common = ["--work-dir", str(base / "work"), "--submissions-dir", str(base / "submissions"), *TINY_DEMO,
              *OPTIONAL_OFF]
    runs = {"base": [*common], "full": [*common, *(FULL if has_optional_stages() else [])]}
    for name, args in runs.items():
        run_all([*args, "--run-name", name])
    return runs


def tiny_runs(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """(submissions folder, run_all.py arguments of the runs `base` and `full`, without --run-name)."""
    base = tmp_path_factory.getbasetemp() / "tiny_demo_runs"
    base.mkdir(exist_ok=True)
    return base / "submissions", _build(base)


def load_records(path: Path) -> list:
    """The records of an official JSON file."""
    return json.loads(Path(path).read_text())


def dump_records(path: Path, records: list) -> None:
    Path(path).write_text(json.dumps(records))


def set_line(path: Path, row: int, text: str) -> None:
    """Replace one line of a one-value-a-line file (labels, image paths)."""
    lines = Path(path).read_text().splitlines()
    lines[row] = text
    Path(path).write_text("\n".join(lines) + "\n")


def config_dir(work: Path) -> Path:
    """The one config folder (config-<digest>, beside the shared files) of a work folder a test run made."""
    found = sorted(Path(work).glob("config-*"))
    assert len(found) == 1, f"expected one config folder in {work}, found {found}"
    return found[0]


# --- degenerate variants of the demo data set (tests/test_degenerate.py) --------------------------
def _rewrite_records(data: Path, split: str, kind: str, change) -> None:
    path = data / f"{split}_{kind}.json"
    records = load_records(path)
    for record in records:
        change(record)
    dump_records(path, records)


def _no_images(data: Path) -> None:
    for split in ("train", "test"):  # the image lists stay; every file they name is gone
        shutil.rmtree(data / split)


def _no_text(data: Path) -> None:
    for split in ("train", "test"):
        _rewrite_records(data, split, "text", lambda r: r.update(Title="", Alltags=""))


def _one_category(data: Path) -> None:
    for split in ("train", "test"):
        _rewrite_records(data, split, "category",
                         lambda r: r.update(Category="Food", Subcategory="Coffee", Concept="coffee"))


def _unseen_users(data: Path) -> None:
    for kind in ("category", "text", "temporalspatial_information", "user_data", "additional_information"):
        _rewrite_records(data, "test", kind, lambda r: r.update(Uid=f"new-{r['Uid']}"))


def _all_video(data: Path) -> None:
    for split in ("train", "test"):
        _rewrite_records(data, split, "text", lambda r: r.update(Mediatype="video"))


DEGENERATE = {"no_images": _no_images, "no_text": _no_text, "one_category": _one_category,
              "unseen_users": _unseen_users, "all_video": _all_video, "tiny": lambda data: None}


def degenerate_data(root: Path, variant: str, n_train: int = 120, n_test: int = 40, seed: int = 5) -> Path:
    """A small demo data set changed into one of the DEGENERATE variants (`tiny`: 60 train posts), written
    as a user's own data set would be (no demo marker); the test labels go to root/test_labels.txt."""
    from features.demo import MARKER, make_demo
    data = Path(root) / "data"
    make_demo(data, Path(root) / "test_labels.txt", n_train=60 if variant == "tiny" else n_train, n_test=n_test,
              n_users=20, image_size=16, seed=seed)
    (data / MARKER).unlink()
    DEGENERATE[variant](data)
    return data
