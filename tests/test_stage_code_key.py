"""Stage keys digest what the code does: a comment or docstring edit reruns nothing, a changed
constant reruns the stage (pipeline/stage.py module_digest)."""
from __future__ import annotations

import importlib
import sys

import pytest

from pipeline.catalog import RunContext
from pipeline.config import Config
from pipeline.stage import Stage, module_digest, stage_key

SOURCE = '''"""A stage-like module."""
# the scale of the output
SCALE = 3


def run(ctx):
    """Write the scaled number."""
    return SCALE * 2  # doubled


class Helper:
    """Keeps state."""

    def method(self):
        """Says yes."""
        return True
'''

EDITS = {
    "comment": ("# doubled", "# twice over"),
    "module docstring": ('"""A stage-like module."""', '"""A module that looks like a stage, reworded."""'),
    "function docstring": ('"""Write the scaled number."""', '"""Writes it."""'),
    "method docstring": ('"""Says yes."""', '"""Answers yes, always."""'),
    "blank lines": ("\n\nclass Helper", "\n\n\n\nclass Helper"),
}


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A module `stage_code_probe` on sys.path; returns (its name, its file)."""
    name = "stage_code_probe"
    path = tmp_path / f"{name}.py"
    path.write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield name, path
    sys.modules.pop(name, None)


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_comment_or_docstring_edit_keeps_the_digest(module, edit):
    name, path = module
    before = module_digest((name,))
    old, new = EDITS[edit]
    assert old in SOURCE
    path.write_text(SOURCE.replace(old, new))
    assert module_digest((name,)) == before


@pytest.mark.parametrize("old,new", [("SCALE = 3", "SCALE = 4"), ("SCALE * 2", "SCALE * 3"),
                                     ("return True", "return False")])
def test_a_changed_line_of_code_changes_the_digest(module, old, new):
    name, path = module
    before = module_digest((name,))
    path.write_text(SOURCE.replace(old, new))  # same size, likely the same mtime: read afresh
    assert module_digest((name,)) != before


def test_stage_key_follows_the_code_not_the_comments(module, tmp_path):
    name, path = module
    probe = importlib.import_module(name)
    stage = Stage(name="probe", run=probe.run, inputs=lambda ctx: [], outputs=lambda ctx: [], sections=("validation",))
    ctx = RunContext(config=Config(), data_dir=tmp_path / "data", config_dir=tmp_path / "work", run_name="t")
    key = stage_key(stage, ctx, {})
    path.write_text(SOURCE.replace("# doubled", "# doubled, for the demo").replace('"""Keeps state."""', ""))
    assert stage_key(stage, ctx, {}) == key
    path.write_text(SOURCE.replace("SCALE = 3", "SCALE = 5"))
    assert stage_key(stage, ctx, {}) != key


# what every stage uses without it changing what a stage computes: the config, the paths, the lock, writes
PLUMBING = {"pipeline.config", "pipeline.catalog", "pipeline.stage", "common.io", "common.locks", "common.written",
            "common.devices"}


def project_imports(module: str) -> set[str]:
    """The project modules `module` imports itself (at the top or inside a function)."""
    import ast
    from pathlib import Path
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from models import sizing`: the module models.sizing
            names = [f"{node.module}.{a.name}" if importlib.util.find_spec(node.module).submodule_search_locations
                     else node.module for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n for n in names if n.split(".")[0] in {"common", "features", "models", "reporting", "pipeline"}}
    return found


def test_every_project_module_a_stage_imports_is_in_its_key():
    # a module left out of `modules` could change what the stage computes while its lock says up to date
    from pipeline.stage import load_stages
    missing = {s.name: sorted(project_imports(s.run.__module__) - set(s.modules) - PLUMBING - {s.run.__module__})
               for s in load_stages()}
    assert not {name: m for name, m in missing.items() if m}
