"""The multi-machine tuning command of the README, `python pipeline/tune.py --data-dir D --config C`, run on a
tiny SMPD-format set beside the tune stage: --work-dir means the data set's folder in both scripts."""
import os
import subprocess
import sys

import optuna
import yaml

from features.demo import make_demo
from pipeline.config import load_config
from tiny_demo import OPTIONAL_OFF

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
N_TRIALS = 6
SETTINGS = [s for s in OPTIONAL_OFF if s != "--set"] + [
    "tuning.enabled=true", f"tuning.n_trials={N_TRIALS}", "tuning.startup_trials=3", "tuning.workers=2",
    "tuning.adapt_to_size=false", "gbdt.num_threads=1", "gbdt.num_boost_round=40", "gbdt.early_stopping_rounds=10",
    "tuning.prune_warmup_rounds=10", "tuning.report_interval=10"]


def command(script: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "pipeline" / script), *args]


def test_the_readme_worker_command_joins_the_stage_s_study(tmp_path):
    data, work, config = tmp_path / "smpd", tmp_path / "work", tmp_path / "tiny.yaml"
    make_demo(data, tmp_path / "labels.txt", n_train=160, n_test=40, n_users=20, image_size=8)
    config.write_text(yaml.safe_dump(load_config(ROOT / "configs" / "smpd.yaml", SETTINGS).to_dict(), sort_keys=False))
    where = ["--data-dir", str(data), "--work-dir", str(work), "--config", str(config)]
    # the stage's own extra worker (tuning.workers=2) is started with the same arguments
    stage = subprocess.run(command("run_all.py", *where, "--stages", "read_data,make_folds,build_metadata,tune"),
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert stage.returncode == 0, stage.stderr[-3000:]
    assert "more workers: python pipeline/tune.py --data-dir" in stage.stderr
    # the README's command, as written but for --work-dir (the test's data set folder is not work/<data set>)
    worker = subprocess.run(command("tune.py", *where, "--worker", "beside"), cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr[-3000:]
    (config_dir,) = work.glob("config-*")
    assert f" in {config_dir}" in worker.stderr and "joins the tuning of" in worker.stderr
    url = f"sqlite:///{work / 'tuning' / 'study.db'}"
    (summary,) = optuna.get_all_study_summaries(storage=url)
    trials = optuna.load_study(study_name=summary.study_name, storage=url).get_trials()
    assert len([t for t in trials if t.state.is_finished()]) == N_TRIALS  # the budget, shared, not doubled
    assert {t.user_attrs["worker"] for t in trials} <= {"0", "1", "beside"}


def test_a_worker_for_a_config_no_stage_started_is_one_line_of_error(tmp_path):
    data, config = tmp_path / "smpd", tmp_path / "tiny.yaml"
    make_demo(data, tmp_path / "labels.txt", n_train=40, n_test=10, n_users=5, image_size=8)
    config.write_text(yaml.safe_dump(load_config(ROOT / "configs" / "smpd.yaml", SETTINGS).to_dict()))
    done = subprocess.run(command("tune.py", "--data-dir", str(data), "--work-dir", str(tmp_path / "work"),
                                  "--config", str(config)), cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "no tune stage has started for this data set and config" in done.stderr
    assert "Traceback" not in done.stderr
