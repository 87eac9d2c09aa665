#!/usr/bin/env bash
# Weak scaling of CPU ranks (`mpirun -np N fum run`, one thread per rank): PER_RANK neurons of
# benchmarks/gpu/scaling_model.py (1000 synapses each, STDP on E->E) per rank, on 1, 2, 4, 8 ...
# ranks up to the host's cores, with each partition (`--partition contiguous|metis`) and
# SHARDS_PER_RANK shards per rank, the stages timed (run.json's `timing.ranks`: the exchange's
# share of each rank's step, which includes waiting for the slowest rank).
# Needs fum built with `--features mpi` (README: Several processes).
#
#   BIN=target/release/fum OUT=ranks-cpu bash benchmarks/ranks_cpu.sh    # then:
#   python3 benchmarks/ranks_cpu_table.py ranks-cpu
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.carry/fum}
OUT=${OUT:-ranks-cpu}
PER_RANK=${PER_RANK:-20000}
SHARDS_PER_RANK=${SHARDS_PER_RANK:-4}
DURATION=${DURATION:-1s}
PARTITIONS=${PARTITIONS:-contiguous metis}
CORES=$(nproc)
COUNTS=${COUNTS:-$(python3 -c "print(' '.join(str(n) for n in [1, 2, 4, 8, 16] if n <= $CORES))")}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$OUT"
work=$(mktemp -d)
for np in $COUNTS; do
  python3 benchmarks/gpu/scaling_model.py $((PER_RANK * np)) "$work/w.toml" --record
  for partition in $PARTITIONS; do
    mpirun --bind-to core --oversubscribe -np "$np" "$BIN" run "$work/w.toml" --duration "$DURATION" --threads 1 \
      --shards $((SHARDS_PER_RANK * np)) --partition "$partition" --time-stages --quiet --out "$work/$np-$partition" \
      && cp "$work/$np-$partition/run.json" "$OUT/${partition}_$np.json"
    # The same spikes on every rank count and partition as on one rank is checked per size.
    if [ "$partition" != "contiguous" ]; then
      cmp -s "$work/$np-contiguous/spikes.h5" "$work/$np-$partition/spikes.h5" \
        && echo "$np ranks: $partition gives the spikes of contiguous" || echo "$np ranks: $partition: spikes DIFFERENT"
    fi
  done
  rm -rf "$work"/*-*
done | tee "$OUT/identity.txt"
python3 benchmarks/ranks_cpu_table.py "$OUT" | tee "$OUT/ranks_cpu.md"
