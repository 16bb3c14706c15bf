import os

# as pipeline/run_all.py does: idle OpenMP threads must not spin (set before lightgbm is imported)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging  # noqa: E402
import shutil  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _session_timings(tmp_path_factory):
    """Runs in tests record their stages' timings (pipeline/plan.py) in a folder of the session's, not the
    user's cache, where they would become the estimates of real runs."""
    os.environ["SMP_CACHE_DIR"] = str(tmp_path_factory.mktemp("smp-cache"))


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """A small demo data set in the official SMPD layout, made once per session (never modified)."""
    from features.demo import make_demo
    root = tmp_path_factory.mktemp("smpd")
    make_demo(root / "data", root / "hidden_test_labels.txt", n_train=80, n_test=30, n_users=12, image_size=16, seed=3)
    return root / "data"


@pytest.fixture
def data(demo_dir, tmp_path):
    """A private copy of the demo data set, for a test to damage."""
    copy = tmp_path / "data"
    shutil.copytree(demo_dir, copy)
    return copy


@dataclass
class Finished:
    """What a call of `pipeline/run_all.py` left: its exit code and its console (the log, then stderr)."""
    returncode: int
    stderr: str


@pytest.fixture
def run_all_here(caplog, capsys):
    """`pipeline/run_all.py ARGS` called in this process (its `main`): the command's code path without the
    seconds a fresh interpreter spends importing torch and LightGBM. For what a run does; the tests of the
    process itself (its console, its exit, a kill) start `run_all.py`."""
    from pipeline.run_all import main

    def run(*argv) -> Finished:
        caplog.clear()
        capsys.readouterr()
        with caplog.at_level(logging.INFO):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as stop:  # argparse refusing an option
                code = stop.code
        return Finished(code, caplog.text + capsys.readouterr().err)
    return run
