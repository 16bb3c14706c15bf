#!/usr/bin/env bash
# The blend of runs against each run alone on the demo (pipeline/blend_runs.py; docs/notes/blendruns.md).
#
#   bash benchmarks/blend_runs_demo.sh [WORK_DIR] [SUBMISSIONS_DIR]     # defaults /tmp/blendruns-w /tmp/blendruns-s
#
# Three runs of the demo on one work folder: `a` (configs/demo.yaml), `b` (the run's seed 1: other
# LightGBM, prototype, tuning and inner-fold seeds; the time holdout and its report slice do not
# depend on the seed, so the folds digest is a's), `c` (tuning off). Then the blends a+b, a+c and
# a+b+c, and a table of validation (report slice) and hidden-test SRC/MAE of every run and blend,
# read from their scores.json. A first run takes minutes (the encoders, the prototype networks);
# rerun, it finds every stage up to date. BLENDS_ONLY=1 skips the runs (they exist). Run from the
# repository root.
set -euo pipefail
W=${1:-/tmp/blendruns-w}
S=${2:-/tmp/blendruns-s}
PY=${PYTHON:-python}

if [ -z "${BLENDS_ONLY:-}" ]; then
  "$PY" pipeline/run_all.py --work-dir "$W" --submissions-dir "$S" --run-name a
  "$PY" pipeline/run_all.py --work-dir "$W" --submissions-dir "$S" --run-name b --set seed=1
  "$PY" pipeline/run_all.py --work-dir "$W" --submissions-dir "$S" --run-name c --set tuning.enabled=false
fi
"$PY" pipeline/blend_runs.py "$S/a" "$S/b" --submissions-dir "$S" --run-name blend-ab
"$PY" pipeline/blend_runs.py "$S/a" "$S/c" --submissions-dir "$S" --run-name blend-ac
"$PY" pipeline/blend_runs.py "$S/a" "$S/b" "$S/c" --submissions-dir "$S" --run-name blend-abc

"$PY" - "$S" <<'EOF'
import json
import sys
from pathlib import Path

root = Path(sys.argv[1])
print("| run | weights | val SRC | val MAE | test SRC | test MAE |")
print("| --- | --- | --- | --- | --- | --- |")
for name in ("a", "b", "c", "blend-ab", "blend-ac", "blend-abc"):
    s = json.loads((root / name / "scores.json").read_text())
    v, t = s["validation"], s.get("test") or {}
    weights = ", ".join(f"{k} {w:.3f}" for k, w in s["weights"].items()) if "runs" in s else "(members)"
    print(f"| {name} | {weights} | {v['src']:.4f} | {v['mae']:.4f} | {t.get('src', float('nan')):.4f} "
          f"| {t.get('mae', float('nan')):.4f} |")
print(f"\nvalidation on the {s['scored_on']} ({s['n_scored']} posts), protocol {s['protocol']}, "
      f"folds {s['folds_digest']}")
EOF
