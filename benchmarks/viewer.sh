#!/usr/bin/env bash
# Viewer overhead (RESULTS.md, "Viewer"): one-thread runs of a 100k-neuron network, interleaved:
#   headless   fum run --threads 1
#   served     fum run --threads 1 --serve PORT, no viewer attached
#   attached   the same with `fum view --attach` drawing under Xvfb for most of the run
# Prints each run's simulate time and, for attached runs, the viewer's frames per second, then
# the medians. Needs `xvfb xauth libgl1-mesa-dri`.
# The viewer aims at 40 frames/s (`--fps 40`): the bar is 30, and on this machine's software
# renderer each frame costs CPU that the simulation's core should keep.
# Usage: benchmarks/viewer.sh [repeats, default 5] [duration, default 2s]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-5}
duration=${2:-2s}
fps_target=40
model=assets/models/brunel_100k.toml
fum=./target/release/fum
cargo build --release --bin fum
display=:${BENCH_DISPLAY:-92}
Xvfb "$display" -screen 0 1400x860x24 -nolisten tcp &
xvfb=$!
tmp=$(mktemp -d)
trap 'kill $xvfb 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 1

simulate_s() { sed -n 's/^simulate *\([0-9.]*\) s.*/\1/p' "$1"; }

serve_run() { # $1: label; stdout of the run goes to $tmp/$1.out
  $fum run $model --threads 1 --duration "$duration" --serve 0 >"$tmp/$1.out" 2>"$tmp/$1.err" &
  run=$!
  until grep -q "serving on" "$tmp/$1.err" 2>/dev/null; do sleep 0.05; done
  addr=$(sed -n 's/^serving on \([^ ]*\).*/\1/p' "$tmp/$1.err")
}

headless=() served=() attached=() fps=()
run_headless() {
  $fum run $model --threads 1 --duration "$duration" >"$tmp/h$i.out" 2>/dev/null
  headless+=("$(simulate_s "$tmp/h$i.out")")
}
run_served() {
  serve_run "s$i"; wait $run
  served+=("$(simulate_s "$tmp/s$i.out")")
}
run_attached() {
  serve_run "a$i"
  DISPLAY=$display $fum view --attach "$addr" --fps "$fps_target" --exit-after "$view_s" >"$tmp/v$i.out" 2>/dev/null
  wait $run
  attached+=("$(simulate_s "$tmp/a$i.out")")
  fps+=("$(sed -n 's/.*(\([0-9.]*\) frames\/s).*/\1/p' "$tmp/v$i.out")")
}
# The viewer draws for 80 % of a headless run's time (it starts while the run is live).
$fum run $model --threads 1 --duration "$duration" >"$tmp/first.out" 2>/dev/null
view_s=$(awk -v t="$(simulate_s "$tmp/first.out")" 'BEGIN { printf "%.1f", 0.8 * t }')
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
configs=(run_headless run_served run_attached)
for i in $(seq "$repeats"); do
  # Each repeat starts with another configuration, so that the order does not favour one.
  for k in 0 1 2; do ${configs[$(( (i + k) % 3 ))]}; done
  echo "run $i: headless ${headless[-1]} s, served ${served[-1]} s, attached ${attached[-1]} s, viewer ${fps[-1]} frames/s ($(cat "$tmp/v$i.out")), load $(cut -d' ' -f1 /proc/loadavg)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
h=$(median "${headless[@]}"); s=$(median "${served[@]}"); a=$(median "${attached[@]}"); f=$(median "${fps[@]}")
echo
echo "median simulate time over $repeats runs of $duration ($model, 1 thread):"
awk -v h="$h" -v s="$s" -v a="$a" -v f="$f" 'BEGIN {
  printf "headless            %.3f s\n", h
  printf "served, no viewer   %.3f s  (%.1f %% of headless speed)\n", s, 100 * h / s
  printf "viewer attached     %.3f s  (%.1f %% of headless speed), viewer %.1f frames/s\n", a, 100 * h / a, f
}'
