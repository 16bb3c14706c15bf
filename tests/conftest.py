import os

# as pipeline/run_all.py does: idle OpenMP threads must not spin (set before lightgbm is imported)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil  # noqa: E402

import pytest  # noqa: E402


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
