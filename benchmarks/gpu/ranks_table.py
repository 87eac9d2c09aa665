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

def runs(prefix):
    """Each run PREFIX_N.json with its GPU count, simulate seconds, the 1-GPU run's seconds over
    them (efficiency for weak scaling, speed-up for strong) and its spikes' path (and how often
    the ranks gather them: every step, or once per epoch)."""
    base = load(f"{prefix}_1")
    for np in counts(prefix):
        r = load(f"{prefix}_{np}")
        t = r["timing"]["simulate_s"]
        ratio = base["timing"]["simulate_s"] / t if base else float("nan")
        path = r.get("gpu", {}).get("ranks_exchange", "one GPU")
        every = (r.get("partition") or {}).get("exchange_every_steps", 1)
        yield np, r, t, ratio, path if np == 1 else f"{path}, every {every} step{'s' if every > 1 else ''}"


def exchange_share(np):
    """The exchange's share of each rank's timed stages (weak_stages_N.json): mean and max."""
    staged = load(f"weak_stages_{np}")
    if not staged:
        return "-"
    shares = []
    for rank in staged["timing"].get("ranks") or [{"stages_s": staged["timing"].get("stages_s")}]:
        stages = rank.get("stages_s") or {}
        if sum(stages.values()) > 0:
            shares.append(stages.get("exchange", 0.0) / sum(stages.values()))
    return f"{100 * sum(shares) / len(shares):.1f} % / {100 * max(shares):.1f} %" if shares else "-"


if counts("weak"):
    print("### Weak scaling (same network per GPU)\n")
    print("| GPUs | neurons | synapses | spikes path | simulate s | RTF | efficiency | exchange share (mean / max over ranks) | GPU memory (rank 0) GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for np, r, t, eff, path in runs("weak"):
        memory = gb(r.get("gpu", {}).get("device_bytes_total", 0))
        print(f"| {np} | {r['network']['neurons']:,} | {r['network']['synapses']:,} | {path} | {t:.2f} | {r['timing']['real_time_factor']:.3f} | {100 * eff:.1f} % | {exchange_share(np)} | {memory} |")
    print()

if counts("strong"):
    print("### Strong scaling: the cortical microcircuit\n")
    print("| GPUs | spikes path | simulate s | RTF | speed-up |")
    print("|---|---|---|---|---|")
    for np, r, t, speedup, path in runs("strong"):
        print(f"| {np} | {path} | {t:.2f} | {r['timing']['real_time_factor']:.3f} | {speedup:.2f}x |")
    print()

largest = load("largest")
if largest:
    gpu = largest.get("gpu", {})
    print("### The largest plastic network (f16 weights)\n")
    print(f"- {largest['network']['neurons']:,} neurons, {largest['network']['synapses']:,} synapses on {largest.get('ranks', 1)} GPUs;"
          f" RTF {largest['timing']['real_time_factor']:.3f}; build {largest['timing']['build_s']:.1f} s;"
          f" GPU memory of rank 0: {gb(gpu.get('device_bytes_total', 0))} GB allocated, {gb(gpu.get('device_bytes_peak_measured', 0))} GB measured")
