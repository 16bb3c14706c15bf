"""End to end: `python pipeline/run_all.py` on a tiny demo set and on an SMPD-format directory."""
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from tiny_demo import OPTIONAL_OFF, config_dir

from pipeline.catalog import data_set_name, make_context
from pipeline.run_all import parse_args, selected_stages
from pipeline.stage import load_stages

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "demo.n_train=160", "--set", "demo.n_test=60", "--set", "demo.n_users=25",
        "--set", "demo.image_size=16", "--set", "gbdt.num_boost_round=60", *OPTIONAL_OFF]


def run_all(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "pipeline" / "run_all.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    # a machine no run has timed (pipeline/plan.py's timings file), for this module's runs and no other's
    session_timings, os.environ["SMP_CACHE_DIR"] = os.environ.get("SMP_CACHE_DIR"), str(tmp / "timings")
    args = ["--work-dir", str(tmp / "work"), "--submissions-dir", str(tmp / "subs"), "--run-name", "first", *TINY]
    result = run_all(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    yield tmp, args, result
    if session_timings is None:
        os.environ.pop("SMP_CACHE_DIR", None)
    else:
        os.environ["SMP_CACHE_DIR"] = session_timings


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_demo_run_writes_a_valid_submission_and_a_leaderboard_row(demo_run):
    tmp, _, _ = demo_run
    run_dir = tmp / "subs" / "first"
    test_pids = [str(r["Pid"]) for r in json.loads((tmp / "work" / "data" / "test_category.json").read_text())]
    sub = pd.read_csv(run_dir / "submission.csv", dtype={"post_id": str})
    assert sub["post_id"].tolist() == [f"post{p}" for p in test_pids]
    assert np.isfinite(sub["popularity_score"]).all()
    body = json.loads((run_dir / "submission.json").read_text())
    assert [r["post_id"] for r in body["result"]] == sub["post_id"].tolist()
    board = pd.read_csv(tmp / "subs" / "leaderboard.csv")
    assert board["run"].tolist() == ["first"]
    assert 0.0 < board["val_src"][0] <= 1.0 and np.isfinite(board["test_mae"][0])
    # the hidden test labels stay outside the data directory the pipeline reads
    assert (tmp / "work" / "hidden_test_labels.txt").is_file()
    assert not list((tmp / "work" / "data").glob("*label*test*")) and not (tmp / "work" / "data" / "test_label.txt").exists()


def test_the_console_starts_with_the_plan_and_ends_with_scores_folder_and_position(demo_run):
    tmp, args, result = demo_run
    text = result.stderr
    plan = text[text.index("plan for data set"):text.index("[make_demo] running")]
    for stage in load_stages():  # every stage is listed, in run order, each to run on a first run
        assert re.search(rf"^  {stage.name} +(run|off)", plan, re.M), stage.name
    assert "no estimate" in plan
    board = pd.read_csv(tmp / "subs" / "leaderboard.csv").iloc[0]
    run_dir = tmp / "subs" / "first"
    line = last_line(result)
    shown = re.search(r"validation SRC (\S+) MAE (\S+); test SRC (\S+) MAE (\S+); ", line)
    assert shown, line
    # four decimals of the run's scores (the leaderboard keeps six, so the last digit may round either way)
    assert [float(v) for v in shown.groups()] == pytest.approx(
        [board[k] for k in ("val_src", "val_mae", "test_src", "test_mae")], abs=1.01e-4)
    assert line.endswith(f"leaderboard 1 of 1 on {board['dataset']}; run folder {run_dir} (report.html)"), line
    assert re.match(r"demo-[0-9a-f]{8}$", board["dataset"])


def test_files_are_written_readable_by_the_group(demo_run):
    """Atomic writes give the mode a plain open() would (0666 less the umask), not mkstemp's 0600."""
    tmp, _, _ = demo_run
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    written = [p for root in (tmp / "subs", tmp / "work") for p in root.rglob("*") if p.is_file()]
    assert len(written) > 30
    modes = {p.relative_to(tmp).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in written}
    assert {k: m for k, m in modes.items() if m != oct(expected)} == {}


def test_rerun_skips_finished_stages_and_force_reruns(demo_run, run_all_here):
    tmp, args, _ = demo_run
    again = run_all_here(*[a if a != "first" else "second" for a in args])
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("make_demo", "read_data", "make_folds", "build_metadata", "train_trees", "blend"):
        assert f"[{stage}] up to date, skipped" in again.stderr
    assert "[submit] running" in again.stderr  # a new run name gets its own submission
    # the plan said so first, with the seconds of the last run
    plan = again.stderr[:again.stderr.index("[make_demo]")]
    assert re.search(r"^  read_data +up to date$", plan, re.M) and re.search(r"^  submit +run +~", plan, re.M)
    assert "estimate: about" in plan
    forced = run_all_here(*[a if a != "first" else "third" for a in args], "--stages", "make_folds", "--force")
    assert "[make_folds] running" in forced.stderr and "[read_data]" not in forced.stderr
    first = (tmp / "subs" / "first" / "submission.csv").read_bytes()
    assert (tmp / "subs" / "second" / "submission.csv").read_bytes() == first


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*")
            if p.is_file()}


def test_another_config_runs_beside_the_default_one_and_shares_the_data(demo_run, run_all_here):
    tmp, args, _ = demo_run
    default = config_dir(tmp / "work")
    before = snapshot(default)
    changed = run_all_here(*[a if a != "first" else "fourth" for a in args], "--set", "gbdt.num_boost_round=40")
    assert changed.returncode == 0, changed.stderr[-3000:]
    # the data and posts tables are shared; the config's stages run in a folder of their own
    assert "[make_demo] up to date, skipped" in changed.stderr and "[read_data] up to date, skipped" in changed.stderr
    assert "[build_metadata] running" in changed.stderr and "[train_trees] running" in changed.stderr
    folders = sorted((tmp / "work").glob("config-*"))
    assert len(folders) == 2 and default in folders
    other = next(f for f in folders if f != default)
    assert f"config folder {other}" in changed.stderr
    assert snapshot(default) == before  # not a byte, not a timestamp of the default run changed
    rounds = {f: yaml.safe_load((f / "config.yaml").read_text())["gbdt"]["num_boost_round"] for f in folders}
    assert rounds == {default: 60, other: 40}
    assert not pd.read_parquet(default / "preds" / "final.parquet").equals(pd.read_parquet(other / "preds" / "final.parquet"))
    # and the default config, run again, finds everything of its own up to date
    again = run_all_here(*[a if a != "first" else "fifth" for a in args])
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("make_folds", "build_metadata", "train_trees", "train_linear", "blend"):
        assert f"[{stage}] up to date, skipped" in again.stderr, stage
    board = pd.read_csv(tmp / "subs" / "leaderboard.csv").set_index("run")
    assert board.loc["fourth", "config_digest"] != board.loc["fifth", "config_digest"]
    assert board.loc["fourth", "dataset"] == board.loc["fifth", "dataset"]  # one data set, two configs


def test_real_layout_with_every_image_missing(demo_run, tmp_path, run_all_here):
    tmp, _, _ = demo_run
    data = tmp_path / "smpd"
    shutil.copytree(tmp / "work" / "data", data, ignore=shutil.ignore_patterns("*.jpg"))
    result = run_all_here("--data-dir", str(data), "--test-labels", str(tmp / "work" / "hidden_test_labels.txt"),
                     "--work-dir", str(tmp_path / "work"), "--submissions-dir", str(tmp_path / "subs"),
                     "--run-name", "noimg", "--config", str(ROOT / "configs" / "demo.yaml"), *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "image file missing" in result.stderr
    board = pd.read_csv(tmp_path / "subs" / "leaderboard.csv")
    assert np.isfinite(board["test_src"][0])
    assert board["dataset"][0] == data_set_name(data.resolve()) and board["dataset"][0].startswith("smpd-")


def test_two_data_sets_in_folders_of_the_same_name_never_share_a_work_dir(demo_dir, tmp_path):
    first, second, same = tmp_path / "a" / "data", tmp_path / "b" / "data", tmp_path / "c" / "data"
    for folder in (first, second, same):
        shutil.copytree(demo_dir, folder)
    labels = (second / "train_label.txt").read_text().splitlines()
    labels[3] = f"{float(labels[3]) + 1:.2f}"
    (second / "train_label.txt").write_text("\n".join(labels) + "\n")
    contexts = {f: make_context(parse_args(["--data-dir", str(f)])) for f in (first, second, same)}
    names = {f: ctx.dataset for f, ctx in contexts.items()}
    assert all(re.match(r"data-[0-9a-f]{8}$", n) for n in names.values()), names
    assert names[first] != names[second] and contexts[first].shared_dir != contexts[second].shared_dir
    assert names[first] == names[same]  # the same files: the same data set wherever they lie
    assert contexts[first].shared_dir.name == names[first]


def test_every_help_example_names_real_stages_and_options():
    from pipeline import run_all as module
    examples = [line.split("#")[0].strip() for line in module.__doc__.splitlines()
                if line.strip().startswith("python pipeline/run_all.py")]
    assert len(examples) >= 4
    stages = load_stages()
    for example in examples:
        args = parse_args(shlex.split(example)[2:])  # argparse exits on an unknown option
        selected_stages(args.stages, stages)  # raises on an unknown stage name
        if args.overrides:
            from pipeline.config import load_config
            load_config(ROOT / "configs" / "demo.yaml", args.overrides)


def test_bad_input_fails_with_a_message_and_nonzero_exit(tmp_path):
    data = tmp_path / "empty"
    data.mkdir()
    result = run_all("--data-dir", str(data), "--work-dir", str(tmp_path / "w"),
                     "--submissions-dir", str(tmp_path / "s"))
    assert result.returncode == 1
    assert "missing file(s)" in result.stderr and "train_category.json" in result.stderr


def test_unknown_stage_and_bad_override_are_refused(tmp_path, run_all_here):
    hint = run_all_here("--stages", "gbdt,submit")  # the example --help gave before
    assert hint.returncode == 2 and "'gbdt' (did you mean train_trees?)" in hint.stderr
    renamed = run_all_here("--stages", "reduce_embeddings,train_gbdt")  # the stage names before 0.5
    assert renamed.returncode == 2 and "'reduce_embeddings' (did you mean embed_features?)" in renamed.stderr
    assert "'train_gbdt' (did you mean train_trees?)" in renamed.stderr
    result = run_all_here("--set", "gbdt.no_such_key=1", "--work-dir", str(tmp_path))
    assert result.returncode == 2 and "unknown key 'no_such_key'" in result.stderr


def test_a_prototype_key_that_moved_names_its_new_place():
    """prototype.* is split into model, loss and train parts; an old flat key says where it went,
    and the network's arguments, losses and training settings are separate dataclasses."""
    from models.prototype import PrototypeArgs
    from pipeline.config import ConfigError, load_config
    with pytest.raises(ConfigError, match=r"prototype\.epochs has moved; it is now prototype\.train\.epochs"):
        load_config(None, ["prototype.epochs=3"])
    cfg = load_config(None, ["prototype.train.epochs=3", "prototype.model.use_attention=false"]).prototype
    assert cfg.train.epochs == 3 and cfg.model == PrototypeArgs(use_attention=False)
    assert load_config(None).prototype.with_fields(epochs=5, weight_aux=0.5, out_dim=4) == load_config(None, [
        "prototype.train.epochs=5", "prototype.loss.weight_aux=0.5", "prototype.out_dim=4",
        "prototype.model.use_attention=false"]).prototype.with_fields(use_attention=True)


def test_every_seed_derives_from_the_run_seed_unless_set():
    from pipeline.config import ConfigError, load_config
    derived = load_config(None, ["seed=7"])
    assert (derived.validation.seed, derived.tuning.seed, derived.gbdt.seeds, derived.catboost.seeds) == (7, 7, [7], [7])
    assert derived.demo.seed == 0  # the demo data set's draw is not a run's seed
    chosen = load_config(None, ["seed=7", "validation.seed=3", "gbdt.seeds=[1,2]"])
    assert (chosen.validation.seed, chosen.tuning.seed, chosen.gbdt.seeds) == (3, 7, [1, 2])
    # the folds follow the run seed, so their digest (the make_folds cache key) does too
    assert load_config(None, ["seed=7"]).digest("validation") != load_config(None).digest("validation")
    assert load_config(None, ["seed=7"]).digest("validation") == load_config(None, ["validation.seed=7"]).digest("validation")
    for bad in ("gbdt.seeds=[]", "tuning.seed=1.5", "validation.seed=true"):
        with pytest.raises(ConfigError, match="or null"):
            load_config(None, [bad])
