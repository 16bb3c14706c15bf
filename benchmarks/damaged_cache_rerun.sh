#!/usr/bin/env bash
# Issue 24's finding, end to end: a small demo run, 16 bytes of its image cache overwritten (same
# size), the same command again; prints the warning and whether the two submissions are byte-identical.
#   bash benchmarks/damaged_cache_rerun.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/damaged-cache}
rm -rf "$out" && mkdir -p "$out"
args=(--work-dir "$out/work" --submissions-dir "$out/subs" --run-name damaged
      --set demo.n_train=400 --set demo.n_test=150 --set tuning.n_trials=3 --set prototype.train.epochs=1)
python pipeline/run_all.py "${args[@]}" > "$out/first.log" 2>&1
cp "$out/subs/damaged/submission.csv" "$out/first.csv"
array=$(find "$out/work" -name train_image.npy | head -1)
python - "$array" <<'PY'
import sys
path = sys.argv[1]
body = bytearray(open(path, "rb").read())
body[len(body) // 2:len(body) // 2 + 16] = b"\xde\xad\xbe\xef" * 4
open(path, "wb").write(body)
PY
python pipeline/run_all.py "${args[@]}" > "$out/second.log" 2>&1
grep -o "WARNING \[encode\] .*checksum.*" "$out/second.log" || echo "no checksum warning"
cmp "$out/subs/damaged/submission.csv" "$out/first.csv" && echo "submission byte-identical after one plain rerun"
