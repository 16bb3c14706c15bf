"""The shape of the house: imports run one way, no module imports one that imports it back, no stage
imports another stage, and no file edits sys.path (the project is installed: pyproject.toml)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "features", "models", "reporting", "pipeline")
# a package may import only the packages before it in this order
LAYER = {name: i for i, name in enumerate(PACKAGES)}


def project_imports(path: Path) -> set[str]:
    """The project modules a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
        for name in names:
            if name.split(".")[0] in PACKAGES:
                if isinstance(node, ast.ImportFrom) and (ROOT / name.replace(".", "/")).is_dir():
                    # `from reporting import figures`: the module imported is reporting.figures
                    found.update(f"{name}.{a.name}" for a in node.names)
                else:
                    found.add(name)
    return found


def modules() -> dict[str, set[str]]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): project_imports(p)
            for package in PACKAGES for p in sorted((ROOT / package).glob("*.py")) if p.name != "__init__.py"}


def test_imports_run_one_way_and_never_in_a_circle():
    graph = modules()
    upward = [(m, i) for m, imports in graph.items() for i in imports
              if LAYER[i.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert not upward, f"imports that climb a layer ({' <- '.join(PACKAGES)}): {upward}"

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == target or (nxt not in seen and not seen.add(nxt) and reaches(nxt, target, seen)):
                return True
        return False
    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert not circles, f"modules that import themselves through others: {circles}"


def test_no_stage_imports_another_stage():
    from pipeline.stage import STAGE_MODULES
    stages = set(STAGE_MODULES)
    graph = modules()
    crossing = {m: sorted(graph[m] & stages - {m}) for m in stages if graph[m] & stages - {m}}
    assert not crossing, f"stages importing stages: {crossing}"


def test_only_runners_reach_the_stages():
    """Stages are the top of pipeline/: no other module imports one (tools such as pipeline/ablate.py
    share code with a stage through a module below it, e.g. pipeline/prototype_block.py). Runners load
    stages by name, not by import: pipeline/stage.py (load_stages, for run_all.py) and
    benchmarks/bench_scale.py. Tests and the notebooks (views of a finished run that use the report
    stage's loaders, so they show the report's numbers) sit above the stages and may import them."""
    from pipeline.stage import STAGE_MODULES
    stages = set(STAGE_MODULES)
    files = [p for package in (*PACKAGES, "benchmarks") for p in sorted((ROOT / package).rglob("*.py"))]
    names = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in files}
    reaching = {name: sorted(project_imports(path) & stages) for name, path in names.items()
                if name not in stages and project_imports(path) & stages}
    assert not reaching, f"modules other than stages importing stages: {reaching}"


def test_no_file_edits_sys_path():
    folders = (*PACKAGES, "benchmarks", "notebooks", "tests")
    files = [p for folder in folders for p in (ROOT / folder).rglob("*")
             if p.suffix in (".py", ".ipynb") and p.name != Path(__file__).name]
    editing = [str(p.relative_to(ROOT)) for p in files if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()]
    assert not editing, f"files that edit sys.path: {editing}"
