"""`run_all.py --plan`: every stage with its estimated seconds and peak memory, from earlier runs' timings
(on any data set) or, on a machine with none, a calibration of a few seconds; nothing run or written."""
import re
import time

import pytest
import torch

from common.io import read_json
from pipeline import plan as plan_module
from pipeline import run_all
from pipeline.stage import load_stages
from tiny_demo import TINY_DEMO

ESTIMATE = r"run   ~[\d.]+ (s|min), peak ~[\d,]+ MB \([\d,.M]+ [\w-]+ on cpu; {source}; CPU ~[\d.]+ (s|min)\)"


def main(work, *args) -> int:
    return run_all.main(["--work-dir", str(work), "--submissions-dir", str(work.parent / "subs"), *TINY_DEMO,
                         "--set", "tuning.n_trials=3", "--set", "prototype.train.epochs=1", *args])


def test_plan_on_an_untouched_set_estimates_every_stage_by_calibration_and_writes_nothing(tmp_path, capsys,
                                                                                          monkeypatch):
    monkeypatch.setenv("SMP_CACHE_DIR", str(tmp_path / "no-timings"))  # a machine with no earlier run
    started = time.perf_counter()
    assert main(tmp_path / "fresh", "--plan") == 0
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    assert "no earlier timing" not in out, out
    calibrated = ESTIMATE.format(source=r"calibration x[\d.e+-]+")
    for stage in load_stages():
        assert re.search(rf"^  {stage.name} +({calibrated}|off)$", out, re.M), (stage.name, out)
    assert re.search(r"^  estimate: about [\d.]+ (s|min) for \d+ stage\(s\), peak ~[\d,]+ MB$", out, re.M), out
    probes = float(re.search(r"probes cpu, image, lgbm, text timed in ([\d.]+) s", out).group(1))
    assert probes < 30 and seconds < 60, (probes, seconds)  # seconds, not minutes (on a loaded 2-core machine)
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "subs").exists()
    assert not (tmp_path / "no-timings").exists()


def test_a_run_records_each_stage_and_a_plan_on_another_set_uses_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SMP_CACHE_DIR", str(tmp_path / "timings"))
    assert main(tmp_path / "earlier", "--stages", "make_demo,read_data,make_folds") == 0
    records = plan_module.read_records(tmp_path / "timings" / "timings.jsonl")
    assert [r["stage"] for r in records] == ["make_demo", "read_data", "make_folds"]
    for r in records:
        assert r["units"] == 220 and r["unit"] == "posts" and r["wall_s"] > 0 and r["cpu_s"] >= 0
        assert r["peak_rss_mb"] >= r["rss_start_mb"] > 0
    lock = read_json(tmp_path / "earlier" / "stages.lock.json")["stages"]["read_data"]
    assert lock["seconds"] == pytest.approx(records[1]["wall_s"], abs=0.01)
    capsys.readouterr()
    # another data set (the demo at another size, another seed): the earlier run's per-post cost
    assert main(tmp_path / "bigger", "--plan", "--set", "demo.n_train=320", "--set", "demo.n_test=120",
                "--set", "demo.seed=5") == 0
    out = capsys.readouterr().out
    assert "(440 posts)" in out
    assert re.search(rf"^  read_data +{ESTIMATE.format(source='1 earlier run.s. on 1 data set.s..*')}$", out, re.M), out
    assert re.search(rf"^  make_folds +{ESTIMATE.format(source='1 earlier run.*')}$", out, re.M), out
    assert re.search(rf"^  tune +{ESTIMATE.format(source='calibration.*')}$", out, re.M), out  # never timed
    assert not (tmp_path / "bigger").exists()


def test_fit_tells_fixed_and_per_unit_cost_apart_from_two_sizes():
    rec = lambda units, s: {"stage": "x", "key": "k", "units": units, "wall_s": s, "rss_start_mb": 100,  # noqa: E731
                            "peak_rss_mb": 100 + units / 10}
    fit = plan_module.fit_records([rec(1000, 3.0), rec(4000, 9.0)])
    assert fit.spread and fit.fixed_s == pytest.approx(1.0) and fit.per_unit_s == pytest.approx(0.002)
    assert fit.peak_mb(2000) == pytest.approx(300)
    one = plan_module.fit_records([rec(1000, 3.0)])
    assert not one.spread and one.seconds(2000) == pytest.approx(6.0)


def test_a_cpu_stage_over_an_hour_is_named_with_the_setting_that_shortens_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SMP_CACHE_DIR", str(tmp_path / "no-timings"))
    assert main(tmp_path / "huge", "--plan", "--set", "demo.n_train=2000000", "--set", "demo.n_test=500000") == 0
    out = capsys.readouterr().out
    assert re.search(r"^  ! prototype takes over an hour on the CPU \(~[\d.]+ min\); shorten it with "
                     r"prototype\.train\.epochs", out, re.M), out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_cuda_asked_for_without_cuda_is_an_error_before_any_work(tmp_path, capsys):
    assert main(tmp_path / "w", "--plan", "--set", "encoders.device=cuda") == 2
    err = capsys.readouterr().err
    assert "encoders.device: cuda asked for, but torch sees no CUDA device" in err, err
    assert not (tmp_path / "w").exists()
