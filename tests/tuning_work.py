"""A synthetic work folder for the tuning stage: posts, folds, a `meta` block and the config its workers read."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from common.io import write_parquet, write_text
from models.validation import make_folds
from pipeline.config import load_config
from pipeline.catalog import RunContext

# small and single-threaded: a busy 2-core machine makes OpenMP threads spin
TINY = {
    "seed": 0,
    "validation": {"scheme": "time_holdout", "holdout_frac": 0.25},
    "metadata": {"target_stat_keys": ["Uid"], "tag_target_stats": False},
    "encoders": {"enabled": False},
    "prototype": {"enabled": False},
    "gbdt": {"params": {"learning_rate": 0.1}, "num_boost_round": 120, "early_stopping_rounds": 20,
             "num_threads": 1, "feature_sets": {"meta": ["meta"]}},
    "tuning": {"enabled": True, "n_trials": 6, "startup_trials": 3, "prune_startup_trials": 2,
               "prune_warmup_rounds": 20, "report_interval": 10,
               "search_space": {"num_leaves": [4, 32, "log"], "min_data_in_leaf": [5, 60, "log"],
                                "feature_fraction": [0.5, 1.0]}},
}


def config_folder(work: Path) -> Path:
    """The config folder make_work_dir made in the data set's folder `work` (work/config-<digest>)."""
    (folder,) = work.glob("config-*")
    return folder


def make_work_dir(work: Path, n: int = 800, seed: int = 0, overrides: dict | None = None) -> Path:
    """A data set's folder `work` as the stages leave it for tuning: its posts, and in its config folder
    config-<digest> the folds, a `meta` feature block and the config the workers read (whose path is returned)."""
    config = {**TINY, **(overrides or {})}
    draft = work / "tiny.yaml"
    write_text(draft, yaml.safe_dump(config))
    cfg = load_config(draft)
    config_dir = work / f"config-{cfg.work_digest()}"
    cfg_path = config_dir / "tuning" / "config.yaml"
    cfg_path.parent.mkdir(parents=True)
    draft.rename(cfg_path)
    rng = np.random.default_rng(seed)
    n_test = 50
    total = n + n_test
    X = rng.normal(size=(total, 6))
    uid = rng.integers(0, 40, total).astype(str)
    label = 2 * X[:, 0] + np.sin(2 * X[:, 1]) + X[:, 2] * X[:, 3] + rng.normal(0, 0.7, total)
    posts = pd.DataFrame({"Pid": [str(i) for i in range(total)], "Uid": uid, "Alltags": "",
                          "Postdate": np.arange(total, dtype=np.int64), "label": label})
    for split, rows in (("train", slice(0, n)), ("test", slice(n, total))):
        part = posts.iloc[rows].reset_index(drop=True)
        write_parquet(work / f"posts_{split}.parquet", part if split == "train" else part.drop(columns="label"))
        meta = pd.DataFrame(X[rows], columns=[f"meta_x{j}" for j in range(X.shape[1])])
        write_parquet(config_dir / "features" / f"meta_{split}.parquet", pd.concat([part[["Pid"]], meta], axis=1))
    v = cfg.validation
    write_parquet(config_dir / "folds.parquet", make_folds(posts.iloc[:n], v.scheme, v.n_folds, v.seed, v.holdout_frac))
    return cfg_path


def context(work: Path, *overrides: str) -> RunContext:
    config_dir = config_folder(work)
    cfg = load_config(config_dir / "tuning" / "config.yaml", list(overrides))
    return RunContext(config=cfg, data_dir=work / "data", config_dir=config_dir, run_name="test", shared_dir=work)


def worker_command(work: Path, name: str, *extra: str) -> list[str]:
    """A `pipeline/tune.py` worker on the data set's folder `work` and the config make_work_dir saved."""
    root = Path(__file__).resolve().parent.parent
    return [sys.executable, str(root / "pipeline" / "tune.py"), "--work-dir", str(work),
            "--config", str(config_folder(work) / "tuning" / "config.yaml"), "--worker", name, *extra]


def run_tune_workers(work: Path, names: tuple[str, ...], *extra: str, timeout: float = 400) -> list[str]:
    """`pipeline/tune.py` workers on one config folder, side by side, as on several machines; their logs."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    workers = [subprocess.Popen(worker_command(work, name, *extra), cwd=root, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for name in names]
    logs = [w.communicate(timeout=timeout)[0] for w in workers]
    for w, log in zip(workers, logs):
        assert w.returncode == 0, log[-3000:]
    return logs
