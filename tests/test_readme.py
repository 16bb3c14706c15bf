"""The README is a front door: short, and every command in it runs as written."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

from pipeline.run_all import parse_args, selected_stages
from pipeline.stage import load_stages

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def commands() -> list[list[str]]:
    """Every `python ...` line of the README's bash blocks, comments cut, split as a shell would."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if words and words[0] == "python":
                    found.append(words)
    return found


def test_the_readme_is_at_most_250_lines():
    assert len(README.splitlines()) <= 250


def test_every_command_names_a_real_script_and_its_arguments_parse():
    stages = load_stages()
    seen = set()
    for words in commands():
        if words[1:3] == ["-m", "pytest"]:
            seen.add("pytest")
            continue
        script = ROOT / words[1]
        assert script.is_file(), f"README names {words[1]}, which does not exist"
        seen.add(words[1])
        if words[1] == "pipeline/run_all.py":
            args = parse_args(words[2:])  # argparse exits (the test fails) on an unknown option
            selected_stages(args.stages, stages)  # ValueError on an unknown stage
    assert {"pytest", "pipeline/run_all.py"} <= seen


def test_the_test_command_is_the_one_ci_runs():
    assert "python -m pytest -q" in README
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()


def test_the_stage_table_lists_every_stage_in_run_order():
    listed = re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", README.split("## Stages", 1)[1].split("\n## ", 1)[0], flags=re.M)
    names = [n for pair in listed for n in pair if n]
    assert names == [s.name for s in load_stages()]
    listing = subprocess.run([sys.executable, "pipeline/run_all.py", "--list"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
    assert listing.returncode == 0
    assert all(name in listing.stdout + listing.stderr for name in names)


def test_every_link_to_a_document_and_its_section_exists():
    for target, anchor in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#([\w-]+))?\)", README):
        doc = ROOT / target
        assert doc.is_file(), f"README links {target}, which does not exist"
        if anchor:
            anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                       for h in re.findall(r"^#+ (.+)$", doc.read_text(), flags=re.M)}
            assert anchor in anchors, f"README links {target}#{anchor}; its sections: {sorted(anchors)}"
