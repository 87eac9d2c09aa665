#!/usr/bin/env bash
# The GPU's host tier: the N-neuron x 1000-synapse network of benchmarks/gpu/scaling_model.py
# (STDP on E->E, and static) run whole in device memory, then with --device-memory at half of
# what it needs and at the least it can run with (every synapse block that may move in pinned
# host memory, read by the kernels over the bus). Prints simulate time, RTF and its ratio to the
# whole run, the bytes mapped, the bus bandwidth fum measured in the same run, and whether the
# spike counts and rates are the same.
#
#   N=1000000 DURATION=1s bash benchmarks/gpu/host_tier.sh
#   MODEL_ARGS="--weights f16" bash benchmarks/gpu/host_tier.sh      # arguments for the generator
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${FUM_BIN:-.carry/fum}
N=${N:-1000000}
DURATION=${DURATION:-1s}
OUT=${OUT:-host-tier-out}
mkdir -p "$OUT/host_tier"
work=$(mktemp -d)
shards=$(( (N + 65535) / 65536 )); [ "$shards" -lt 16 ] && shards=16
for variant in stdp static; do
  flag=""; [ "$variant" = static ] && flag="--no-stdp"
  python3 benchmarks/gpu/scaling_model.py "$N" "$work/$variant.toml" $flag ${MODEL_ARGS:-}
  "$BIN" run "$work/$variant.toml" --backend cuda --duration "$DURATION" --shards "$shards" --out "$work/run" --overwrite --quiet || exit 1
  cp "$work/run/run.json" "$OUT/host_tier/${variant}_whole.json"
  limits=$(python3 - "$work/run/run.json" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))["gpu"]["device_bytes"]
total = sum(g.values())
least = total - g["synapse_bytes"] + (64 << 20)
print(total // 2, least)
PY
)
  read -r half least <<< "$limits"
  for limit in half least; do
    bytes=${!limit}
    "$BIN" run "$work/$variant.toml" --backend cuda --duration "$DURATION" --shards "$shards" --out "$work/run" --overwrite --quiet --device-memory "${bytes}B" || exit 1
    cp "$work/run/run.json" "$OUT/host_tier/${variant}_$limit.json"
  done
done
rm -rf "$work"
python3 - "$OUT/host_tier" <<'PY'
import json, sys
d = sys.argv[1]
print("| network | device memory | synapses in host memory | simulate s | RTF | vs whole | bus GB/s (measured) | synapse bytes read over the bus GB/s | same spikes and rates |")
print("|---|---|---|---|---|---|---|---|---|")
for v in ["stdp", "static"]:
    whole = json.load(open(f"{d}/{v}_whole.json"))
    for limit in ["whole", "half", "least"]:
        j = json.load(open(f"{d}/{v}_{limit}.json"))
        t, g = j["timing"], j["gpu"]
        m = g.get("mapped_host")
        dev = sum(g["device_bytes"].values())
        share = f"{m['bytes'] / 1e9:.2f} GB ({100 * m['synapses'] / j['network']['synapses']:.0f} %)" if m else "none"
        bus = f"{m['link_bytes_per_s'] / 1e9:.1f}" if m else "-"
        # Each synaptic event reads its synapse once; the share of events whose synapse is mapped
        # is taken as the share of synapses mapped.
        n = j["network"]
        synapse_bytes = (n["bytes_static_synapses"] + n["bytes_plastic_synapses"]) / n["synapses"]
        over_bus = f"{j['synaptic_events'] * (m['synapses'] / n['synapses']) * synapse_bytes / t['simulate_s'] / 1e9:.1f}" if m else "-"
        same = j["spikes_total"] == whole["spikes_total"] and j["rates_hz"] == whole["rates_hz"]
        print(f"| {v} | {dev / 1e9:.2f} GB ({limit}) | {share} | {t['simulate_s']:.3f} | {t['real_time_factor']:.3f} | {whole['timing']['simulate_s'] / t['simulate_s']:.2f}x | {bus} | {over_bus} | {'yes' if same else 'NO'} |")
PY
