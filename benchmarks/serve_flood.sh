#!/usr/bin/env bash
# What a hostile client without the token costs a served run (RESULTS.md, "Serving under a
# request flood"): one-thread runs of the same model, interleaved,
#   unserved   fum run --threads 1
#   idle       fum run --threads 1 --serve 0, nobody attached
#   flooded    the same, with benchmarks/serve_flood.py attached from the start: 4 connections
#              sending every kind of read and refused command as fast as the server takes them,
#              and 50 connections that never finish their Hello
# Prints each run's simulate time, then the medians and each one's share of the unserved speed.
# Run it when nothing else compiles: `--threads 1` leaves the other core to the flood client
# (whose own CPU, reading frames in Python, competes with the run here as it would not from
# another machine).
# Usage: benchmarks/serve_flood.sh [repeats, default 5] [model, default stdp_balanced] [duration, default 2s]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-5}
model=${2:-assets/models/stdp_balanced.toml}
duration=${3:-2s}
fum=./target/release/fum
cargo build --release --bin fum
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

simulate_s() { sed -n 's/^simulate *\([0-9.]*\) s.*/\1/p' "$1"; }

serve_run() { # $1: label; the run's stdout goes to $tmp/$1.out
  $fum run "$model" --threads 1 --duration "$duration" --serve 0 >"$tmp/$1.out" 2>"$tmp/$1.err" &
  run=$!
  until grep -q "serving on" "$tmp/$1.err" 2>/dev/null; do sleep 0.02; done
  addr=$(sed -n 's/^serving on \([^ ]*\).*/\1/p' "$tmp/$1.err")
}

unserved=() idle=() flooded=()
run_unserved() {
  $fum run "$model" --threads 1 --duration "$duration" >"$tmp/u$i.out" 2>/dev/null
  unserved+=("$(simulate_s "$tmp/u$i.out")")
}
run_idle() {
  serve_run "i$i"; wait $run
  idle+=("$(simulate_s "$tmp/i$i.out")")
}
run_flooded() {
  serve_run "f$i"
  python3 benchmarks/serve_flood.py "$addr" 4 50 >"$tmp/flood$i.out" &
  flood=$!
  wait $run
  wait $flood
  flooded+=("$(simulate_s "$tmp/f$i.out")")
}
echo "model $model, $duration, 1 thread; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
configs=(run_unserved run_idle run_flooded)
for i in $(seq "$repeats"); do
  # Each repeat starts with another configuration, so that the order does not favour one.
  for k in 0 1 2; do ${configs[$(( (i + k) % 3 ))]}; done
  echo "run $i: unserved ${unserved[-1]} s, served idle ${idle[-1]} s, flooded ${flooded[-1]} s ($(cat "$tmp/flood$i.out"); $(grep -c refused "$tmp/f$i.err" || true) refusal lines), load $(cut -d' ' -f1 /proc/loadavg)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
u=$(median "${unserved[@]}"); s=$(median "${idle[@]}"); f=$(median "${flooded[@]}")
echo
echo "median simulate time over $repeats runs:"
awk -v u="$u" -v s="$s" -v f="$f" 'BEGIN {
  printf "unserved            %.3f s\n", u
  printf "served, idle        %.3f s  (%.1f %% of unserved speed)\n", s, 100 * u / s
  printf "served, flooded     %.3f s  (%.1f %% of unserved speed)\n", f, 100 * u / f
}'
