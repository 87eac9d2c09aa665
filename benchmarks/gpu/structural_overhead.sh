#!/usr/bin/env bash
# Overhead of structural plasticity on the GPU: the 1M-neuron x 1000-synapse STDP network of
# benchmarks/gpu/scaling_model.py (800 M plastic E->E synapses) with a plan on E->E every 1 s of
# biological time (committed 500 ms later), against the same network without [[structural]]:
# `noop` prunes nothing (the snapshot, planning and commit machinery only), `replace` replaces
# the lowest-priority 5 % and regrows to in-degree 800. Variants alternate within each repeat;
# prints the median simulate_s of REPEAT runs and what run.json reports of the plans.
#
#   N=1000000 DURATION=3s REPEAT=3 bash benchmarks/gpu/structural_overhead.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${FUM_BIN:-.carry/fum}
N=${N:-1000000}
DURATION=${DURATION:-3s}
REPEAT=${REPEAT:-3}
OUT=${OUT:-structural-out}
mkdir -p "$OUT/structural"
work=$(mktemp -d)
shards=$(( (N + 65535) / 65536 )); [ "$shards" -lt 16 ] && shards=16
for variant in without noop replace; do
  flag=""; [ "$variant" != without ] && flag="--structural $variant"
  python3 benchmarks/gpu/scaling_model.py "$N" "$work/$variant.toml" $flag
done
for r in $(seq "$REPEAT"); do
  for variant in without noop replace; do
    "$BIN" run "$work/$variant.toml" --backend cuda --duration "$DURATION" --shards "$shards" --out "$work/run" --overwrite --quiet || exit 1
    cp "$work/run/run.json" "$OUT/structural/${variant}_$r.json"
  done
done
rm -rf "$work"
python3 - "$OUT/structural" "$REPEAT" <<'PY'
import json, statistics, sys
d, repeat = sys.argv[1], int(sys.argv[2])
runs = {v: [json.load(open(f"{d}/{v}_{r}.json")) for r in range(1, repeat + 1)] for v in ["without", "noop", "replace"]}
base = statistics.median(j["timing"]["simulate_s"] for j in runs["without"])
# Synaptic events: a rewired network is another network, whose activity may differ.
events = statistics.median(j["synaptic_events"] for j in runs["without"])
print("| variant | simulate s (median, runs) | vs without | synaptic events vs without | planning s | snapshot s | waited s | commit s | pruned | grown | E->E bytes start -> end |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for v, js in runs.items():
    t = [j["timing"]["simulate_s"] for j in js]
    m = statistics.median(t)
    s = js[0].get("structural", {}).get("E_to_E")
    extra = f"{s['planning_s']:.2f} | {s['snapshot_s']:.3f} | {s['wait_s']:.3f} | {s['commit_s']:.3f} ({s.get('commit_device_s', 0):.3f} device) | {s['pruned']} | {s['grown']} | {s['bytes_at_start']} -> {s['bytes_now']}" if s else "- | - | - | - | - | - | -"
    ev = statistics.median(j["synaptic_events"] for j in js)
    print(f"| {v} | {m:.3f} ({' '.join(f'{x:.3f}' for x in t)}) | {100 * (m / base - 1):+.1f} % | {100 * (ev / events - 1):+.2f} % | {extra} |")
# Where the excess falls: each variant's wall time per 500 ms of biological time (run.json's
# timeline, medians over the runs) less the run without.
def halves(j):
    w, per = j["timing"]["timeline"]["wall_s"], round(500 / j["timing"]["timeline"]["bucket_ms"])
    return [sum(w[i:i + per]) for i in range(0, len(w), per)]
lanes = {v: [statistics.median(x) for x in zip(*(halves(j) for j in js))] for v, js in runs.items()}
print()
print("| variant | excess over without, ms, per 500 ms of biological time |")
print("|---|---|")
for v in ["noop", "replace"]:
    print(f"| {v} | {' '.join(f'{1e3 * (a - b):+.0f}' for a, b in zip(lanes[v], lanes['without']))} |")
PY
