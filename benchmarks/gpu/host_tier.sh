#!/usr/bin/env bash
# The GPU's host tier: the N-neuron x 1000-synapse network of benchmarks/gpu/scaling_model.py
# (STDP on E->E, and static) run whole in device memory, then with --device-memory at half of
# what it needs and at the least it can run with (every synapse block that may move in pinned
# host memory, read by the kernels over the bus, the device's row cache in what is left). Prints simulate time, RTF and its ratio to the
# whole run, the bytes mapped, the bus bandwidth fum measured in the same run, and whether the
# spike counts and rates are the same.
#
#   N=1000000 DURATION=1s bash benchmarks/gpu/host_tier.sh
#   MODEL_ARGS="--weights f16" bash benchmarks/gpu/host_tier.sh      # arguments for the generator
#   MODEL_ARGS="--drive 9200 --spread 0.1" RATES=1 bash benchmarks/gpu/host_tier.sh   # skewed rates, and their distribution
#   LIMITS=half bash benchmarks/gpu/host_tier.sh                      # only the half-memory runs
#   N=7000000 MODEL_ARGS="--weights f16" VARIANTS=stdp LIMITS=28000000000 bash benchmarks/gpu/host_tier.sh   # bytes
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${FUM_BIN:-.carry/fum}
N=${N:-1000000}
DURATION=${DURATION:-1s}
OUT=${OUT:-host-tier-out}
mkdir -p "$OUT/host_tier"
work=$(mktemp -d)
shards=$(( (N + 65535) / 65536 )); [ "$shards" -lt 16 ] && shards=16
for variant in ${VARIANTS:-stdp static}; do
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
  for limit in ${LIMITS:-half least}; do
    case $limit in half|least) bytes=${!limit} ;; *) bytes=$limit ;; esac
    "$BIN" run "$work/$variant.toml" --backend cuda --duration "$DURATION" --shards "$shards" --out "$work/run" --overwrite --quiet --device-memory "${bytes}B" || exit 1
    cp "$work/run/run.json" "$OUT/host_tier/${variant}_$limit.json"
  done
done
if [ "${RATES:-0}" = 1 ]; then
  # The firing-rate distribution of the network (STDP variant, all in device memory), from its
  # recorded spikes: how skewed the activity the row cache sees is.
  python3 benchmarks/gpu/scaling_model.py "$N" "$work/rec.toml" --record ${MODEL_ARGS:-}
  "$BIN" run "$work/rec.toml" --backend cuda --duration "$DURATION" --shards "$shards" --out "$work/rec" --overwrite --quiet || exit 1
  python3 - "$work/rec/spikes.h5" "$DURATION" "$N" <<'PY' | tee "$OUT/host_tier/rates.txt"
import sys
try:
    import h5py, numpy as np
except ImportError:
    sys.exit("h5py or numpy missing: no rate distribution")
f = h5py.File(sys.argv[1])
seconds = float(sys.argv[2].rstrip("s")) if not sys.argv[2].endswith("ms") else float(sys.argv[2][:-2]) / 1e3
n = int(sys.argv[3]); n_e = n * 4 // 5
ids = np.concatenate([f["spikes/E/node_ids"][:], f["spikes/I/node_ids"][:] + n_e])
r = np.sort(np.bincount(ids, minlength=n) / seconds)
p = np.percentile(r, [10, 25, 50, 75, 90, 99])
print(f"firing rates over {seconds:g} s: mean {r.mean():.2f} Hz; percentiles 10/25/50/75/90/99: " + " / ".join(f"{x:.2f}" for x in p) +
      f" Hz; silent {100 * (r == 0).mean():.1f} %; the most active 10 % of neurons fire {100 * r[-n // 10:].sum() / r.sum():.0f} % of the spikes, the most active half {100 * r[n // 2:].sum() / r.sum():.0f} %")
PY
fi
rm -rf "$work"
python3 - "$OUT/host_tier" <<'PY'
import json, os, sys
d = sys.argv[1]
print("| network | device memory | synapses in host memory | row cache hit rate | simulate s | RTF | vs whole | bus GB/s (measured) | synapse bytes read over the bus GB/s | same spikes and rates |")
print("|---|---|---|---|---|---|---|---|---|---|")
for v in ["stdp", "static"]:
    if not os.path.exists(f"{d}/{v}_whole.json"):
        continue
    whole = json.load(open(f"{d}/{v}_whole.json"))
    for limit in ["whole", "half", "least"] + sorted(f[len(v) + 1:-5] for f in os.listdir(d) if f.startswith(v + "_") and f[len(v) + 1].isdigit()):
        if not os.path.exists(f"{d}/{v}_{limit}.json"):
            continue
        j = json.load(open(f"{d}/{v}_{limit}.json"))
        t, g = j["timing"], j["gpu"]
        m = g.get("mapped_host")
        dev = sum(g["device_bytes"].values())
        share = f"{m['bytes'] / 1e9:.2f} GB ({100 * m['synapses'] / j['network']['synapses']:.0f} %)" if m else "none"
        bus = f"{m['link_bytes_per_s'] / 1e9:.1f}" if m else "-"
        # The delivery kernel counts the synapses it read from host memory (those of rows the
        # row cache does not hold); each is one synapse's bytes over the bus.
        n = j["network"]
        synapse_bytes = (n["bytes_static_synapses"] + n["bytes_plastic_synapses"]) / n["synapses"]
        cache = m["row_cache"] if m else None
        over_bus = f"{cache['synapses_from_host'] * synapse_bytes / t['simulate_s'] / 1e9:.1f}" if m else "-"
        hit = f"{100 * cache['hit_rate']:.1f} % ({cache['bytes'] / 1e9:.2f} GB; stall {cache['stall_s']:.2f} s)" if cache and cache["slots"] else "-"
        same = j["spikes_total"] == whole["spikes_total"] and j["rates_hz"] == whole["rates_hz"]
        print(f"| {v} | {dev / 1e9:.2f} GB ({limit}) | {share} | {hit} | {t['simulate_s']:.3f} | {t['real_time_factor']:.3f} | {whole['timing']['simulate_s'] / t['simulate_s']:.2f}x | {bus} | {over_bus} | {'yes' if same else 'NO'} |")
PY
