"""Damaged bookkeeping is named and rebuilt; two runs on one data set both finish (issue 24)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_demo import OPTIONAL_OFF, TINY_DEMO, config_dir

ROOT = Path(__file__).resolve().parent.parent
TINY = [*TINY_DEMO, "--set", "gbdt.num_boost_round=30", *OPTIONAL_OFF]


def arguments(tmp: Path, work: str, run: str, *extra: str) -> list[str]:
    return ["--work-dir", str(tmp / work), "--submissions-dir", str(tmp / f"subs-{work}"), "--run-name", run,
            *TINY, *extra]


def command(tmp: Path, work: str, run: str, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "pipeline" / "run_all.py"), *arguments(tmp, work, run, *extra)]


def test_an_unreadable_lock_is_named_once_and_every_stage_reruns(tmp_path, run_all_here):
    first = run_all_here(*arguments(tmp_path, "work", "a"))
    assert first.returncode == 0, first.stderr[-3000:]
    own = config_dir(tmp_path / "work") / "stages.lock.json"
    shared = tmp_path / "work" / "stages.lock.json"
    text = own.read_text()
    own.write_text(text[: len(text) // 2])  # truncated mid-write
    shared.write_text("{}")  # valid JSON, not a lock
    again = run_all_here(*arguments(tmp_path, "work", "a"))
    assert again.returncode == 0, again.stderr[-3000:]
    for path in (own, shared):
        named = [line for line in again.stderr.splitlines() if f"cannot read {path} (" in line]
        assert len(named) == 1 and named[0].endswith("treating every stage as out of date"), again.stderr[-3000:]
    assert "up to date, skipped" not in again.stderr  # nothing it described is trusted
    # the rebuilt locks are whole again: a plain rerun is quiet and skips everything
    third = run_all_here(*arguments(tmp_path, "work", "a"))
    assert third.returncode == 0 and "cannot read" not in third.stderr, third.stderr[-3000:]
    assert "[train_linear] up to date, skipped" in third.stderr


def test_two_runs_started_together_on_one_data_set_both_finish_as_if_run_in_turn(tmp_path, run_all_here):
    # the encoders on: both runs encode into the data set's one encoder cache
    other = ["--set", "encoders.enabled=true", "--set", "encoders.num_workers=0", "--set", "gbdt.num_boost_round=20"]
    together = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for cmd in (command(tmp_path, "work", "a", *other[:4]), command(tmp_path, "work", "b", *other))]
    outputs = [p.communicate(timeout=600) for p in together]
    for proc, (_, err) in zip(together, outputs):
        assert proc.returncode == 0, err[-3000:]
    assert any("waiting for another run" in err for _, err in outputs)  # they took turns, and said so
    alone = run_all_here(*arguments(tmp_path, "alone", "b", *other))
    assert alone.returncode == 0, alone.stderr[-3000:]
    side_by_side = (tmp_path / "subs-work" / "b" / "submission.csv").read_bytes()
    assert side_by_side == (tmp_path / "subs-alone" / "b" / "submission.csv").read_bytes()


# --- the prototype stage's per-fold outputs -----------------------------------------------------
def tiny_networks(out_dir):
    """fit(): the out-of-fold prototype networks of a 90-post split, 2 folds, 1 epoch, under out_dir."""
    import torch
    from test_prototype import CPU, make_split, small_cfg

    from models import train_prototype as tp
    _, train, vocab = make_split(90, 0)
    _, test, _ = make_split(30, 1, vocab, with_label=False)
    cfg = small_cfg(epochs=1, use_prompts_global=False, use_prompts_local=False)
    feature_fold = np.arange(len(train)) % 2
    torch.set_num_threads(1)
    return lambda: tp.fit_oof(cfg, train, test, feature_fold, vocab, None, 0, CPU, out_dir, "k", False)


@pytest.mark.parametrize("damage", ["truncated", "same size, other bytes"])
def test_a_damaged_fold_output_is_named_and_embedded_again(tmp_path, caplog, damage):
    fit = tiny_networks(tmp_path)
    first, first_test = fit()
    npz = tmp_path / "fold_1" / "outputs.npz"
    body = npz.read_bytes()
    npz.write_bytes(body[: len(body) // 2] if damage == "truncated"
                    else body[:-64] + bytes(64 - 1) + b"x")  # the zip's tail: its directory
    caplog.set_level("WARNING")
    again, again_test = fit()
    named = [r.getMessage() for r in caplog.records if str(npz) in r.getMessage()]
    assert len(named) == 1 and named[0].startswith(f"cannot read {npz} (") and "rebuilding" in named[0], named
    for name in first:
        np.testing.assert_array_equal(again[name], first[name])
        np.testing.assert_array_equal(again_test[name], first_test[name])
    assert np.load(npz).files  # rewritten whole


# --- the tuning study -----------------------------------------------------------------------------
def test_a_damaged_study_file_is_named_moved_aside_and_rebuilt(tmp_path, run_all_here):
    tuned = ["--set", "tuning.enabled=true", "--set", "tuning.n_trials=1"]
    first = run_all_here(*arguments(tmp_path, "work", "a", *tuned))
    assert first.returncode == 0, first.stderr[-3000:]
    study = tmp_path / "work" / "tuning" / "study.db"
    body = study.read_bytes()
    study.write_bytes(body[: len(body) // 3])
    again = run_all_here(*arguments(tmp_path, "work", "a", *tuned, "--stages", "tune", "--force"))
    assert again.returncode == 0, again.stderr[-3000:]
    named = [line for line in again.stderr.splitlines() if f"cannot read {study} (" in line]
    assert len(named) == 1 and "moved aside" in named[0] and "rebuilding the study" in named[0], again.stderr[-3000:]
    assert len(list(study.parent.glob("study.db.unreadable-*"))) == 1 and study.is_file()
    plain = run_all_here(*arguments(tmp_path, "work", "a", *tuned))
    assert plain.returncode == 0 and "cannot read" not in plain.stderr, plain.stderr[-3000:]


def test_a_truncated_checkpoint_is_named_and_the_network_trained_again(tmp_path, caplog):
    fit = tiny_networks(tmp_path)
    first, _ = fit()
    ckpt = tmp_path / "fold_0" / "last.pt"
    (tmp_path / "fold_0" / "outputs.npz").unlink()  # the fold is not finished: its checkpoint is read
    body = ckpt.read_bytes()
    ckpt.write_bytes(body[: len(body) // 2])
    caplog.set_level("WARNING")
    again, _ = fit()
    named = [r.getMessage() for r in caplog.records if str(ckpt) in r.getMessage()]
    assert len(named) == 1 and named[0].startswith(f"cannot read {ckpt} (") and "training" in named[0], named
    for name in first:
        np.testing.assert_array_equal(again[name], first[name])


def test_a_truncated_json_file_is_named_in_one_line(tmp_path):
    from common.io import read_json, write_json
    path = tmp_path / "scores.json"
    write_json(path, {"validation": {"src": 0.5, "mae": 1.0}})
    path.write_text(path.read_text()[:20])
    with pytest.raises(ValueError) as caught:
        read_json(path)
    assert str(caught.value).startswith(f"cannot read {path} (") and "\n" not in str(caught.value)
