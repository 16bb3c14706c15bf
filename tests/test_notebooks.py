"""The notebooks in notebooks/: each runs top to bottom on a tiny demo run, and the
committed files carry no outputs and no machine paths."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.tiny_demo import has_optional_stages, tiny_runs

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# absolute paths of a machine: home folders, temp folders, Windows drives
MACHINE_PATH = re.compile(r"(/home/|/Users/|/tmp/|/work/|/private/var/|[A-Za-z]:\\\\)")


def test_notebooks_exist_in_stage_order():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 5, names
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(1, len(names) + 1)], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean(path):
    """No outputs, no execution counts, no absolute machine paths (strip with notebooks/strip_outputs.py)."""
    text = path.read_text()
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: run notebooks/strip_outputs.py"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    found = MACHINE_PATH.search(text)
    assert found is None, f"{path.name} holds a machine path near {text[max(0, found.start() - 40):found.end() + 40]!r}"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, f"{path.name} metadata {sorted(nb.metadata)}"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """run_all.py's arguments of the tiny demo run the notebooks show (`full`: every stage there is)."""
    return tiny_runs(tmp_path_factory)[1]["full"]


def kernel_manager(tmp_path: Path):
    """A kernel of this very interpreter, whatever kernel specs the machine has installed."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    spec_dir = tmp_path / "kernels"
    if not (spec_dir / "smp-test-python" / "kernel.json").is_file():
        write_kernel_spec(spec_dir / "smp-test-python")
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return KernelManager(kernel_name="smp-test-python", kernel_spec_manager=specs)


def execute_notebook(path: Path, smp_args: list[str], tmp_path: Path, monkeypatch, timeout: int = 240):
    """Run a notebook as Jupyter would (cwd notebooks/), the run named by SMP_ARGS; returns it executed."""
    from nbclient import NotebookClient
    monkeypatch.setenv("SMP_ARGS", shlex.join(smp_args))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=kernel_manager(tmp_path), timeout=timeout,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return nb


def outputs_of(nb) -> tuple[int, str]:
    """(number of PNG outputs, all text output) of an executed notebook."""
    images, text = 0, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            images += "image/png" in out.get("data", {})
            text.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
    return images, "\n".join(text)


# figures each notebook must draw on the tiny demo run (02 and 03 only where the pipeline has their stages)
MIN_FIGURES = {"01": 7, "04": 5, "05": 2}
if has_optional_stages():
    MIN_FIGURES.update({"02": 5, "03": 7})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_tiny_demo(path, tiny_run, tmp_path, monkeypatch):
    nb = execute_notebook(path, tiny_run, tmp_path, monkeypatch)
    images, text = outputs_of(nb)
    assert images >= MIN_FIGURES.get(path.name[:2], 0), f"{path.name}: {images} figures\n{text[-2000:]}"
    if images == 0:  # a notebook of an optional stage that is off says so instead of drawing nothing
        assert "nothing to show here" in text, text[-2000:]


def test_strip_outputs_script(tmp_path):
    """notebooks/strip_outputs.py removes outputs and execution counts in place."""
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="/home/someone/x\n")]
    code.execution_count = 3
    nb.metadata["widgets"] = {"state": {}}
    dirty = tmp_path / "dirty.ipynb"
    nbformat.write(nb, dirty)
    script = [sys.executable, str(ROOT / "notebooks" / "strip_outputs.py")]
    assert subprocess.run([*script, "--check", str(dirty)], capture_output=True).returncode == 1
    done = subprocess.run([sys.executable, str(ROOT / "notebooks" / "strip_outputs.py"), str(dirty)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    clean = json.loads(dirty.read_text())
    cells = [c for c in clean["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells)
    assert "widgets" not in clean["metadata"]
    check = subprocess.run([*script, "--check", str(dirty)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
