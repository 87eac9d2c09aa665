#!/usr/bin/env bash
# Two fum binaries side by side on the CPU: each model run REPEAT times per binary at THREADS
# threads, the binaries alternating; both must write byte-identical spikes.h5 (and probes.h5).
#
#   OLD=/path/to/fum-old NEW=target/release/fum THREADS=1 REPEAT=5 bash benchmarks/compare_binaries_cpu.sh
#
# Prints one Markdown row per model: median simulate time (s) of each binary (all runs in
# brackets), their ratio, and whether the recorded output was identical.
set -uo pipefail
cd "$(dirname "$0")/.."
OLD=${OLD:?the baseline binary}
NEW=${NEW:-target/release/fum}
THREADS=${THREADS:-1}
REPEAT=${REPEAT:-5}
MODELS=${MODELS:-"vogels_abbott_cuba:1s vogels_abbott_coba:1s stdp_balanced:1s brunel:1s brunel_100k:200ms"}
work=$(mktemp -d)
median() { python3 -c 'import sys, statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
simulate_s() { python3 -c 'import json, sys; print("%.3f" % json.load(open(sys.argv[1]))["timing"]["simulate_s"])' "$1"; }

echo "| model | duration | threads | old simulate s | new simulate s | new / old | recorded output |"
echo "|---|---|---|---|---|---|---|"
for entry in $MODELS; do
  m=${entry%%:*}; d=${entry#*:}
  old=(); new=(); same=identical
  for r in $(seq "$REPEAT"); do
    for which in old new; do
      bin=$OLD; [ "$which" = new ] && bin=$NEW
      rm -rf "$work/$which"
      "$bin" run "assets/models/$m.toml" --duration "$d" --threads "$THREADS" --out "$work/$which" --quiet || exit 1
      t=$(simulate_s "$work/$which/run.json")
      if [ "$which" = old ]; then old+=("$t"); else new+=("$t"); fi
    done
    for f in spikes.h5 probes.h5; do
      [ -f "$work/old/$f" ] || continue
      cmp -s "$work/old/$f" "$work/new/$f" || same=DIFFERENT
    done
  done
  mo=$(median "${old[@]}"); mn=$(median "${new[@]}")
  echo "| $m | $d | $THREADS | $mo (${old[*]}) | $mn (${new[*]}) | $(python3 -c "print(f'{$mn / $mo:.3f}')") | $same |"
done
rm -rf "$work"
