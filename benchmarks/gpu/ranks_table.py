#!/usr/bin/env python3
"""The tables of benchmarks/gpu/ranks.sh from its run.json files (RAW: its $OUT/raw).
Usage: ranks_table.py RAW"""
import json
import pathlib
import sys

raw = pathlib.Path(sys.argv[1])


def load(name):
    path = raw / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def gb(b):
    return f"{b / 1e9:.2f}"


def counts(prefix):
    """The GPU counts N of the files PREFIX_N.json."""
    return sorted(int(p.stem[len(prefix) + 1:]) for p in raw.glob(f"{prefix}_*.json") if p.stem[len(prefix) + 1:].isdigit())


if (raw / "identity.txt").exists():
    print("### Identical spikes\n")
    for line in (raw / "identity.txt").read_text().splitlines():
        print(f"- {line}")
    print()

weak = counts("weak")
if weak:
    base = load("weak_1")
    print("### Weak scaling (same network per GPU)\n")
    print("| GPUs | neurons | synapses | spikes path | simulate s | RTF | efficiency | exchange share (mean / max over ranks) | GPU memory (rank 0) GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for np in weak:
        r = load(f"weak_{np}")
        t = r["timing"]["simulate_s"]
        eff = base["timing"]["simulate_s"] / t if base else float("nan")
        shares = []
        staged = load(f"weak_stages_{np}")
        if staged:
            ranks = staged["timing"].get("ranks") or [{"stages_s": staged["timing"].get("stages_s")}]
            for rank in ranks:
                stages = rank.get("stages_s") or {}
                total = sum(stages.values())
                if total > 0:
                    shares.append(stages.get("exchange", 0.0) / total)
        share = f"{100 * sum(shares) / len(shares):.1f} % / {100 * max(shares):.1f} %" if shares else "-"
        gpu = r.get("gpu", {})
        print(f"| {np} | {r['network']['neurons']:,} | {r['network']['synapses']:,} | {gpu.get('ranks_exchange', 'one GPU')} | {t:.2f} | {r['timing']['real_time_factor']:.3f} | {100 * eff:.1f} % | {share} | {gb(gpu.get('device_bytes_total', 0))} |")
    print()

strong = counts("strong")
if strong:
    base = load("strong_1")
    print("### Strong scaling: the cortical microcircuit\n")
    print("| GPUs | spikes path | simulate s | RTF | speed-up |")
    print("|---|---|---|---|---|")
    for np in strong:
        r = load(f"strong_{np}")
        t = r["timing"]["simulate_s"]
        print(f"| {np} | {r.get('gpu', {}).get('ranks_exchange', 'one GPU')} | {t:.2f} | {r['timing']['real_time_factor']:.3f} | {base['timing']['simulate_s'] / t:.2f}x |")
    print()

largest = load("largest")
if largest:
    gpu = largest.get("gpu", {})
    print("### The largest plastic network (f16 weights)\n")
    print(f"- {largest['network']['neurons']:,} neurons, {largest['network']['synapses']:,} synapses on {largest.get('ranks', 1)} GPUs;"
          f" RTF {largest['timing']['real_time_factor']:.3f}; build {largest['timing']['build_s']:.1f} s;"
          f" GPU memory of rank 0: {gb(gpu.get('device_bytes_total', 0))} GB allocated, {gb(gpu.get('device_bytes_peak_measured', 0))} GB measured")
