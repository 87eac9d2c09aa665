#!/usr/bin/env python3
"""The weak-scaling table of benchmarks/ranks_cpu.sh from its run.json files (PARTITION_N.json).
Usage: ranks_cpu_table.py OUT"""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
runs = {}
for path in out.glob("*_*.json"):
    partition, np = path.stem.rsplit("_", 1)
    runs[(partition, int(np))] = json.loads(path.read_text())

print("| partition | ranks | neurons | synapses | spikes | simulate s | efficiency | locality | imbalance | exchange share per rank (min-max) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for (partition, np), r in sorted(runs.items()):
    base = runs.get((partition, 1))
    t = r["timing"]["simulate_s"]
    efficiency = base["timing"]["simulate_s"] / t if base else float("nan")
    shares = []
    for rank in r["timing"].get("ranks") or [{"stages_s": r["timing"].get("stages_s") or {}}]:
        stages = rank.get("stages_s") or {}
        if sum(stages.values()) > 0:
            shares.append(100 * stages.get("exchange", 0.0) / sum(stages.values()))
    share = f"{min(shares):.1f}-{max(shares):.1f} %" if shares else "-"
    part = r.get("partition") or {"locality": 1.0, "imbalance": 1.0}
    print(f"| {partition} | {np} | {r['network']['neurons']:,} | {r['network']['synapses']:,} | {r['spikes_total']:,} | {t:.2f} |"
          f" {100 * efficiency:.0f} % | {part['locality']:.3f} | {part['imbalance']:.3f} | {share} |")
