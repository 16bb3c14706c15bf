#!/usr/bin/env python
"""The panel's rule on a blend of runs: on each data set, the default run blended with a second run of
the same folds (pipeline/blend_runs.py), judged against the default run alone.

    python benchmarks/panel.py --quick --root /tmp/blendruns-panel --label blendruns \\
        --only synth-0.005,small-500-u50 --switches none --switch samefolds-seed1 seed=1 validation.seed=0
    python benchmarks/blend_runs_panel.py --root /tmp/blendruns-panel --label blendruns --partner samefolds-seed1

The second run is the run seed 1 with the folds of seed 0 (validation.seed=0): on a small data set the
folds are k-fold and follow validation.seed, and runs of other folds do not blend. The seed control
(seed-1, the panel's noise row) gives each data set's noise; `judge` and `verdict` of benchmarks/panel.py
give the verdict, as for a switch turned on (the blend row against the default row).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.panel import BASE, METRICS, Switch, judge, markdown, switch_scores, verdict_table
from pipeline.blend_runs import main as blend_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="the panel's --root")
    parser.add_argument("--label", required=True, help="the panel's --label")
    parser.add_argument("--partner", default="samefolds-seed1", help="the panel row blended with the default row")
    parser.add_argument("--control", default="seed-1", help="the panel's seed-control row (the noise)")
    parser.add_argument("--method", default="nnls")
    args = parser.parse_args(argv)
    panel = json.loads((args.root / "results" / f"quick-{args.label}" / "panel.json").read_text())
    mode = panel["mode"]
    scores = switch_scores(panel["rows"])
    subs = args.root / "submissions"
    blended: dict = {}
    for data_set in scores[BASE]:
        if data_set not in scores.get(args.partner, {}):
            continue
        runs = [subs / f"panel-{mode}-{args.label}-{row}-{data_set}" for row in (BASE, args.partner)]
        name = f"blend-runs-{args.label}-{data_set}"
        if blend_runs([*map(str, runs), "--submissions-dir", str(args.root / "blends"), "--run-name", name,
                       "--method", args.method,
                       "--test-labels", str(args.root / "data" / data_set / "hidden_test_labels.txt")]) != 0:
            return 1
        s = json.loads((args.root / "blends" / name / "scores.json").read_text())
        blended[data_set] = {f"{kind}_{m}": round(s[part][m], 4) for kind, part in (("val", "validation"),
                                                                                     ("test", "test")) for m in METRICS}
        blended[data_set]["weights"] = {k: round(w, 3) for k, w in s["weights"].items()}
    scores["blend-runs"] = blended
    table = [{"data set": d, "row": row, **{k: v for k, v in scores[row][d].items() if k != "weights"},
              "weights": scores[row][d].get("weights", "")}
             for d in blended for row in (BASE, args.partner, args.control, "blend-runs") if d in scores.get(row, {})]
    lines, noise = judge(scores, [Switch("blend-runs", (), f"blend of {BASE} and {args.partner}", turns="on")],
                         args.control)
    print(markdown(table, ["data set", "row", "val_src", "val_mae", "test_src", "test_mae", "weights"]))
    print("\n" + verdict_table(lines, noise))
    return 0


if __name__ == "__main__":
    sys.exit(main())
