#!/usr/bin/env bash
# Ranks on the GPUs of one host (`mpirun -np N fum run --backend cuda`, a rank per GPU, spikes
# over NCCL): identical spikes on 1, 2, 4 ... GPUs, weak scaling (PER_GPU neurons per GPU,
# 1000 synapses each, STDP on E->E), strong scaling of the cortical microcircuit, and with
# LARGEST=N the RTF and memory of an N-neuron plastic network with f16 weights on all GPUs.
# Builds nothing: takes .carry/fum built with `--features mpi` (README: Several processes).
#
#   (device) bash benchmarks/gpu/ranks.sh          # writes $OUT/ranks.md and $OUT/raw/*.json
#
# STEPS picks the parts (default "identity weak strong"; add "largest" with LARGEST set).
# SHARDS_PER_GPU sets the shards of a GPU's neurons in identity, weak and largest (default: one
# per 65,536 neurons, 2-byte targets; fewer, larger shards store 4-byte targets and give each
# spike fewer, longer rows).
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${FUM_BIN:-.carry/fum}
OUT=${OUT:-ranks-out}
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
PER_GPU=${PER_GPU:-1000000}
DURATION=${DURATION:-2s}
STEPS=${STEPS:-identity weak strong}
LARGEST=${LARGEST:-0}
SHARDS_PER_GPU=${SHARDS_PER_GPU:-0}
# Shards for N neurons per GPU on NP GPUs.
shards_for() { local per=$SHARDS_PER_GPU; [ "$per" -gt 0 ] || per=$(( ($1 + 65535) / 65536 )); echo $(( per * $2 )); }
CORES=$(nproc)
# NVLink multicast stays off (a rule of the lending machines); ranks may run as root there.
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$OUT/raw"
work=$(mktemp -d)
counts=$(python3 -c "print(' '.join(str(n) for n in [1, 2, 4, 8] if n <= $GPUS))")

# fum on NP ranks (a GPU each), the host's cores shared among them; the rest are fum's arguments.
on() {
  local np=$1; shift
  timeout 150 mpirun --bind-to none -x NCCL_NVLS_ENABLE -np "$np" "$BIN" "$@" --threads $((CORES / np))
}
same() { cmp -s "$1" "$2" && echo identical || echo DIFFERENT; }

for step in $STEPS; do case $step in
identity)
  echo "== identity: 1M neurons with STDP, 200 ms, spikes recorded"
  python3 benchmarks/gpu/scaling_model.py 1000000 "$work/m1.toml" --record
  for np in $counts; do
    on "$np" run "$work/m1.toml" --backend cuda --duration 200ms --shards "$(shards_for $((1000000 / np)) "$np")" --out "$work/id$np" --quiet
    cp "$work/id$np/run.json" "$OUT/raw/identity_$np.json"
    echo "1M STDP on $np GPUs: $(same "$work/id1/spikes.h5" "$work/id$np/spikes.h5") to 1 GPU" | tee -a "$OUT/raw/identity.txt"
  done ;;
weak)
  echo "== weak scaling: $PER_GPU neurons per GPU, STDP, $DURATION"
  for np in $counts; do
    n=$((PER_GPU * np)); shards=$(shards_for "$PER_GPU" "$np")
    python3 benchmarks/gpu/scaling_model.py "$n" "$work/w.toml"
    on "$np" run "$work/w.toml" --backend cuda --duration "$DURATION" --shards "$shards" --out "$work/w$np" --quiet \
      && cp "$work/w$np/run.json" "$OUT/raw/weak_$np.json"
    # The same for 500 ms with the stages timed (each step waits for the device: slower, but
    # the exchange's share of a step is measured on every rank).
    on "$np" run "$work/w.toml" --backend cuda --duration 500ms --shards "$shards" --out "$work/t$np" --quiet --time-stages \
      && cp "$work/t$np/run.json" "$OUT/raw/weak_stages_$np.json"
    rm -rf "$work/w$np" "$work/t$np"
  done ;;
strong)
  echo "== strong scaling: the microcircuit, 10 s, spikes recorded"
  sed '/\[\[recording.probes\]\]/,$d' assets/models/microcircuit.toml > "$work/mc.toml"
  for np in $counts; do
    on "$np" run "$work/mc.toml" --backend cuda --duration 10s --shards 16 --out "$work/mc$np" --quiet \
      && cp "$work/mc$np/run.json" "$OUT/raw/strong_$np.json"
    echo "microcircuit on $np GPUs: $(same "$work/mc1/spikes.h5" "$work/mc$np/spikes.h5") to 1 GPU" | tee -a "$OUT/raw/identity.txt"
  done ;;
largest)
  echo "== largest: $LARGEST neurons, STDP, f16 weights, on $GPUS GPUs, $DURATION"
  python3 benchmarks/gpu/scaling_model.py "$LARGEST" "$work/l.toml" --weights f16
  shards=$(shards_for $((LARGEST / GPUS)) "$GPUS")
  mpirun --bind-to none -x NCCL_NVLS_ENABLE -np "$GPUS" "$BIN" run "$work/l.toml" --backend cuda \
    --duration "$DURATION" --shards "$shards" --out "$work/l" --quiet --threads $((CORES / GPUS)) \
    && cp "$work/l/run.json" "$OUT/raw/largest.json"
  nvidia-smi --query-gpu=memory.total --format=csv,noheader | head -1 > "$OUT/raw/card_memory.txt" ;;
esac; done

python3 benchmarks/gpu/ranks_table.py "$OUT/raw" | tee "$OUT/ranks.md"
rm -rf "$work"
