"""`run_all.py --plan`: every stage with its estimated seconds (earlier runs' seconds per post times this
data set's posts) or `no earlier timing`, and nothing run or written."""
import re

from common.io import read_json
from pipeline import run_all
from pipeline.stage import load_stages
from tiny_demo import TINY_DEMO


def main(work, *args) -> int:
    return run_all.main(["--work-dir", str(work), "--submissions-dir", str(work.parent / "subs"), *TINY_DEMO,
                         "--set", "encoders.enabled=false", "--set", "prototype.enabled=false", *args])


def test_plan_lists_every_stage_writes_nothing_and_scales_earlier_timings_by_posts(tmp_path, capsys):
    assert main(tmp_path / "fresh", "--plan") == 0
    plan = capsys.readouterr().out
    for stage in load_stages():
        assert re.search(rf"^  {stage.name} +(run   \(no earlier timing\)|off)$", plan, re.M), (stage.name, plan)
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "subs").exists()

    # an earlier run on another data set beside it (the demo at another size): its seconds per post
    assert main(tmp_path / "earlier", "--stages", "make_demo,read_data") == 0
    seconds = read_json(tmp_path / "earlier" / "stages.lock.json")["stages"]["read_data"]["seconds"]
    capsys.readouterr()
    assert main(tmp_path / "bigger", "--plan", "--set", "demo.n_train=320", "--set", "demo.n_test=120") == 0
    plan = capsys.readouterr().out
    assert "(440 posts)" in plan
    shown = re.search(r"^  read_data +run +~\S+ s \((\S+) ms/post, timed in earlier\)$", plan, re.M)
    assert shown, plan
    assert float(shown.group(1)) == float(f"{seconds / 220 * 1000:.2g}")  # the earlier demo: 160 + 60 posts
    assert re.search(r"^  make_folds +run   \(no earlier timing\)$", plan, re.M)
    assert not (tmp_path / "bigger").exists()
