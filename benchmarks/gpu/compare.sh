#!/usr/bin/env bash
# Two fum binaries side by side on one GPU: the scaling networks (benchmarks/gpu/scaling_model.py,
# 1000 synapses per neuron, STDP on E->E or static, nothing recorded), each run REPEAT times per
# binary with the binaries alternating; both must count the same spikes per population. Then the
# recorded asset models on the GPU: spikes.h5 and probes.h5 of both binaries must be
# byte-identical.
#
#   OLD=.carry/fum-old NEW=.carry/fum SIZES="100000 1000000" bash benchmarks/gpu/compare.sh
#
# Prints one Markdown row per network: median simulate time (s) of each binary, their ratio,
# and whether the spike counts were identical. Raw run.json files go to $OUT/compare/.
set -uo pipefail
cd "$(dirname "$0")/../.."
OLD=${OLD:?the baseline binary}
NEW=${NEW:-.carry/fum}
SIZES=${SIZES:-100000 1000000}
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-1s}
OUT=${OUT:-gpu-compare-out}
mkdir -p "$OUT/compare"
work=$(mktemp -d)
median() { python3 -c 'import sys, statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
simulate_s() { python3 -c 'import json, sys; print("%.3f" % json.load(open(sys.argv[1]))["timing"]["simulate_s"])' "$1"; }
counts() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["spikes_total"], sorted(d["rates_hz"].items()))' "$1"; }

echo "| neurons | network | old simulate s | new simulate s | new / old | spike counts |"
echo "|---|---|---|---|---|---|"
for n in $SIZES; do
  shards=$(( (n + 65535) / 65536 )); [ "$shards" -lt 16 ] && shards=16
  for variant in stdp static; do
    flag=""; [ "$variant" = static ] && flag="--no-stdp"
    python3 benchmarks/gpu/scaling_model.py "$n" "$work/model.toml" $flag
    old=(); new=()
    for r in $(seq "$REPEAT"); do
      for which in old new; do
        bin=$OLD; [ "$which" = new ] && bin=$NEW
        rm -rf "$work/$which"   # a run refuses an output folder that holds another run
        "$bin" run "$work/model.toml" --backend cuda --duration "$DURATION" --shards "$shards" --out "$work/$which" --quiet || exit 1
        cp "$work/$which/run.json" "$OUT/compare/${which}_${variant}_${n}_$r.json"
        t=$(simulate_s "$work/$which/run.json")
        if [ "$which" = old ]; then old+=("$t"); else new+=("$t"); fi
      done
      same=different; [ "$(counts "$work/old/run.json")" = "$(counts "$work/new/run.json")" ] && same=identical
    done
    mo=$(median "${old[@]}"); mn=$(median "${new[@]}")
    echo "| $n | $variant | $mo (${old[*]}) | $mn (${new[*]}) | $(python3 -c "print(f'{$mn / $mo:.3f}')") | $same |"
    rm -rf "$work/old" "$work/new"
  done
done
echo
for m in brunel vogels_abbott_cuba stdp_balanced; do
  for which in old new; do
    bin=$OLD; [ "$which" = new ] && bin=$NEW
    "$bin" run "assets/models/$m.toml" --backend cuda --out "$work/$m-$which" --quiet || exit 1
  done
  for f in spikes.h5 probes.h5; do
    [ -f "$work/$m-old/$f" ] || continue
    if cmp -s "$work/$m-old/$f" "$work/$m-new/$f"; then echo "$m $f: identical"; else echo "$m $f: DIFFERENT"; fi
  done
done
rm -rf "$work"
