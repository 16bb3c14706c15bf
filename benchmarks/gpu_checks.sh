#!/usr/bin/env bash
# Issue 12's GPU measurements in one prepared run, for a session that is lent a GPU (device time is
# scarce: about 15 minutes for all tries, so this runs every benchmark once, in order of value).
#
#   bash benchmarks/gpu_checks.sh                  # on the GPU machine; JSON lines into $OUT (default gpu_results/)
#   SIZE=tiny DEVICE=cpu bash benchmarks/gpu_checks.sh   # smoke test of the same commands on a CPU
#
# Prototype network (batch 128, ViT-B/32 widths): eager (fused prompt passes, shared prefix) and with
# torch.compile's CUDA graphs. Image pass (ViT-B/32 and ViT-L/14 shapes, 20,000 real 500x375 JPEGs):
# the Pillow decoder against nvJPEG, with the embeddings' cosine agreement. nvJPEG needs torchvision
# built for the installed torch (the GPU machine's image has it; requirements-gpu.txt elsewhere).
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-full}
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
if [ "$SIZE" = tiny ]; then
  PROTO=(--steps 2 --warmup 1 --batch-size 16 --layers 2 --hidden 64 --heads 2 --vocab 1000 --concepts 20)
  ENCODE=(--n-images 48 --batch-size 16 --workers 1 --arch vit-b-32)
  COMPILE=off  # compiling on a CPU is off by design (the config falls back to eager)
else
  PROTO=()
  ENCODE=(--n-images 20000 --arch vit-b-32,vit-l-14)
  COMPILE=reduce-overhead
fi
DECODERS=pillow
if python -c "import torch, torchvision.io; assert torch.cuda.is_available()" 2>/dev/null; then
  DECODERS=pillow,nvjpeg
else
  echo "note: no CUDA torchvision here: the image pass is timed with the pillow decoder only" >&2
fi
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" \
  | tee "$OUT/device.txt"
status=0
run() {  # name, command...: one JSON line to $OUT/name.json, stderr beside it; a failure does not stop the rest
  local name=$1; shift
  echo "== $name: $*" >&2
  local started=$SECONDS
  if "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"; then
    echo "   done in $((SECONDS - started)) s: $(tail -c 400 "$OUT/$name.json")" >&2
  else
    echo "   FAILED after $((SECONDS - started)) s (see $OUT/$name.err)" >&2; status=1
  fi
}
run prototype_eager python benchmarks/bench_prototype.py --device "$DEVICE" "${PROTO[@]}"
run prototype_compiled python benchmarks/bench_prototype.py --device "$DEVICE" "${PROTO[@]}" --set compile=$COMPILE
run encode_images python benchmarks/bench_encode.py --device "$DEVICE" "${ENCODE[@]}" --decoders "$DECODERS"
exit $status
