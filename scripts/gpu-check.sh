#!/usr/bin/env bash
# The GPU test set and the GPU benchmarks, on a machine with a CUDA device. Builds nothing: it
# takes the release binary and the GPU test binary (tests/gpu.rs) carried there:
#
#   cargo test --release --features mpi --test gpu --no-run && cargo build --release --features mpi
#   mkdir -p .carry && cp target/release/fum .carry/ && cp <the gpu test binary> .carry/gpu-tests
#   (device) bash scripts/gpu-check.sh                                      # writes $OUT/gpu-check.md
#
# The binary needs the `mpi` feature for the test of ranks on GPUs (mpirun; it uses NCCL where
# the machine has a GPU a rank). benchmarks/gpu/ranks.sh measures several GPUs.
#
# SIZES chooses the scaling table's networks (default 10k 100k 1M 4M neurons, 1000 synapses
# each, STDP on E->E); PEER_MAX caps the sizes the PyTorch peer runs (its CSR matrix needs
# 12 B per synapse plus COO construction space). Brian2CUDA runs too where its wheels are in
# .whl (carry it; B2C_MAX caps its sizes, default 100k).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${FUM_BIN:-.carry/fum}
TESTS=${GPU_TESTS:-.carry/gpu-tests}
OUT=${OUT:-gpu-check-out}
SIZES=${SIZES:-10000 100000 1000000 4000000}
PEER_MAX=${PEER_MAX:-1000000}
FIT=${FIT-7000000}
DURATION=${DURATION:-1s}
export NCCL_NVLS_ENABLE=0
mkdir -p "$OUT/raw"
work=$(mktemp -d)

"$BIN" info --bandwidth | tee "$OUT/raw/info.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/raw/card.txt" 2>/dev/null

echo "== GPU tests"
FUM_BIN="$BIN" "$TESTS" --include-ignored --test-threads 1 --nocapture 2>&1 | tee "$OUT/raw/tests.txt"

echo "== scaling"
for n in $SIZES; do
  shards=$(( (n + 65535) / 65536 )); [ "$shards" -lt 16 ] && shards=16
  for variant in stdp static; do
    flag=""; [ "$variant" = static ] && flag="--no-stdp"
    python3 benchmarks/gpu/scaling_model.py "$n" "$work/model.toml" $flag
    "$BIN" run "$work/model.toml" --backend cuda --duration "$DURATION" --shards "$shards" --out "$work/run" --quiet \
      && cp "$work/run/run.json" "$OUT/raw/fum_${variant}_$n.json"
    rm -rf "$work/run"
  done
  # Hardware counters of the delivery and STDP kernels: DRAM and L2 bytes and time per
  # launch, 10 steps after 80 ms of biological time (3 kernels per step).
  if command -v ncu >/dev/null && [ "$n" -ge 1000000 ]; then
    python3 benchmarks/gpu/scaling_model.py "$n" "$work/model.toml"
    ncu --clock-control none --kernel-name regex:'deliver|post_spikes|pre_spikes' --launch-skip 2400 --launch-count 30 \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum --csv \
        "$BIN" run "$work/model.toml" --backend cuda --duration 100ms --shards "$shards" --quiet \
        > "$OUT/raw/ncu_$n.csv" 2>/dev/null
  fi
  if [ "$n" -le "$PEER_MAX" ] && python3 -c "import torch" 2>/dev/null; then
    python3 benchmarks/peers/torch_brunel.py "$n" "${DURATION%s}000" > "$OUT/raw/torch_$n.json" || true
  fi
  # Brian2CUDA (compiles a project with nvcc per run, ~26 s): only where its wheels were carried
  # in .whl (see benchmarks/peers/brian2cuda_brunel.py) and for sizes up to B2C_MAX.
  if [ "$n" -le "${B2C_MAX:-100000}" ] && ls .whl/brian2cuda-*.whl >/dev/null 2>&1; then
    [ -d /tmp/b2site ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/b2site .whl/*.whl
    for variant in static stdp; do
      flag=""; [ "$variant" = stdp ] && flag="--stdp"
      PYTHONPATH=/tmp/b2site timeout 300 python3 benchmarks/peers/brian2cuda_brunel.py "$n" "${DURATION%s}000" $flag \
        > "$OUT/raw/brian2cuda_${variant}_$n.json" 2>> "$OUT/raw/brian2cuda.log" || rm -f "$OUT/raw/brian2cuda_${variant}_$n.json"
    done
  fi
done
if [ -n "$FIT" ]; then
  echo "== fit: $FIT neurons, f16 weights, STDP"
  python3 benchmarks/gpu/scaling_model.py "$FIT" "$work/model.toml" --weights f16
  "$BIN" run "$work/model.toml" --backend cuda --duration "$DURATION" --shards $(( (FIT + 65535) / 65536 )) --out "$work/run" --quiet \
    && cp "$work/run/run.json" "$OUT/raw/fit_$FIT.json"
  rm -rf "$work/run"
fi
rm -rf "$work"
python3 benchmarks/gpu/table.py "$OUT/raw" | tee "$OUT/gpu-check.md"
# Several GPUs: a rank per GPU, spikes over NCCL (identity, weak and strong scaling).
if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ]; then
  echo "== ranks on $(nvidia-smi -L | wc -l) GPUs"
  OUT="$OUT/ranks" FUM_BIN="$BIN" bash benchmarks/gpu/ranks.sh && cat "$OUT/ranks/ranks.md" >> "$OUT/gpu-check.md"
fi
