#!/usr/bin/env bash
# Overhead of structural plasticity on the CPU: assets/models/stdp_structural.toml (10 s of the
# STDP balanced network) without its [[structural]] section, with a rule that changes nothing
# (weight_below = 0: snapshot, planning and commit machinery only; lowest_priority_fraction = 0:
# the same plus the per-step spike counts co-activity reads), and as written (5 % of E->E
# replaced every 500 ms, which also changes the activity). Median of REPEAT (default 3) runs' simulate_s from
# run.json (variants interleaved), --threads 1 and 2, plus the planning, waiting and commit seconds it reports.
set -euo pipefail
fum=${FUM:-target/release/fum}
REPEAT=${REPEAT:-3}   # runs per variant (odd: the median is one of them)
model=assets/models/stdp_structural.toml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed '/^\[\[structural\]\]/,$d' "$model" > "$tmp/without.toml"
sed 's/^prune = .*/prune = { weight_below = 0.0 }/; /^regrow/d' "$model" > "$tmp/noop.toml"
# As noop, with the rule that reads co-activity: every step also counts each neuron's spikes.
sed 's/^prune = .*/prune = { lowest_priority_fraction = 0.0 }/; /^regrow/d' "$model" > "$tmp/noop_counting.toml"
cp "$model" "$tmp/with.toml"
# Variants alternate within each repeat, so that drift of the machine's speed hits them alike.
for threads in 1 2; do
  declare -A times=()
  for i in $(seq "$REPEAT"); do
    for variant in without noop noop_counting with; do
      "$fum" run "$tmp/$variant.toml" --out "$tmp/$variant" --overwrite --threads "$threads" --quiet 2>/dev/null
      times[$variant]+="$(python3 -c "import json; print(json.load(open('$tmp/$variant/run.json'))['timing']['simulate_s'])") "
    done
  done
  for variant in without noop noop_counting with; do
    median=$(printf '%s\n' ${times[$variant]} | sort -g | sed -n "$(( (REPEAT + 1) / 2 ))p")
    extra=$(python3 -c "
import json; r = json.load(open('$tmp/$variant/run.json')); s = r.get('structural', {}).get('E_to_E')
rate = r['rates_hz']['E']
print(f'rate E {rate:.2f} Hz' + (f', planning {s[\"planning_s\"]:.3f} s, snapshots {s[\"snapshot_s\"]:.3f} s, waiting {s[\"wait_s\"]:.3f} s, commit {s[\"commit_s\"]:.3f} s, pruned {s[\"pruned\"]}, grown {s[\"grown\"]}' if s else ''))")
    echo "threads $threads  $variant  simulate_s median $median (runs ${times[$variant]}); $extra"
  done
done
