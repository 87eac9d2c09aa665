#!/usr/bin/env python3
"""Turns the raw results of scripts/gpu-check.sh into the Markdown tables of RESULTS.md."""
import csv
import glob
import json
import os
import re
import sys

raw = sys.argv[1]
info = open(os.path.join(raw, "info.txt")).read()
m = re.search(r"copy bandwidth (\d+) GB/s", info)
copy_gbs = float(m.group(1)) if m else float("nan")
card = open(os.path.join(raw, "card.txt")).read().strip() if os.path.exists(os.path.join(raw, "card.txt")) else "?"
tests = open(os.path.join(raw, "tests.txt")).read()
t = re.search(r"test result: (\w+)\. (\d+) passed; (\d+) failed", tests)
print(f"Card: {card}; copy bandwidth {copy_gbs:.0f} GB/s (read + write, `fum info --bandwidth`)\n")
print(f"GPU tests (tests/gpu.rs): {t.group(0) if t else 'no result'}\n")

def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None

def ncu(n):
    """Per kernel, and for all three together: DRAM and L2 bytes / time over the profiled
    launches (GB/s), and that time."""
    path = os.path.join(raw, f"ncu_{n}.csv")
    if not os.path.exists(path):
        return {}
    scale = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0,
             "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0}
    acc = {}
    lines = [l for l in open(path) if l.startswith('"')]
    for row in csv.DictReader(lines):
        name = row["Kernel Name"].split("(")[0]
        value = float(row["Metric Value"].replace(",", "")) * scale.get(row["Metric Unit"], 1.0)
        for k in (acc.setdefault(name, {}), acc.setdefault("all three", {})):
            metric = row["Metric Name"].split("__")[0] if not row["Metric Name"].startswith("gpu__time") else "time"
            k[metric] = k.get(metric, 0.0) + value
    per_s = lambda v, m: v.get(m, 0.0) / v["time"] / 1e9 if v.get("time") else float("nan")
    return {name: (per_s(v, "dram"), per_s(v, "lts"), v.get("time", 0.0)) for name, v in acc.items()}

sizes = sorted({int(re.search(r"_(\d+)\.json", p).group(1)) for p in glob.glob(os.path.join(raw, "fum_*_*.json"))})
print("| neurons | synapses | STDP | build s | simulate s | real-time factor | rate Hz | synaptic events/s | device GB | B/synapse | PyTorch simulate s | PyTorch / fum |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for n in sizes:
    peer = load(os.path.join(raw, f"torch_{n}.json"))
    for variant in ["stdp", "static"]:
        r = load(os.path.join(raw, f"fum_{variant}_{n}.json"))
        if not r:
            print(f"| {n:,} | | {variant} | failed |")
            continue
        net, tm, g = r["network"], r["timing"], r.get("gpu") or {}
        rate = sum(r["rates_hz"].values()) / len(r["rates_hz"])
        events = r["spikes_total"] * net["synapses"] / max(net["neurons"], 1) / tm["simulate_s"]
        ratio = f"{peer['simulate_s'] / tm['simulate_s']:.1f}x" if peer and variant == "static" else ""
        psim = f"{peer['simulate_s']:.2f}" if peer and variant == "static" else ""
        print(f"| {n:,} | {net['synapses']:,} | {variant} | {tm['build_s']:.1f} | {tm['simulate_s']:.3f} | {tm['real_time_factor']:.3f} | {rate:.1f} | {events:.3g} | {g.get('device_bytes_total', 0) / 1e9:.2f} | {g.get('bytes_per_synapse', 0):.2f} | {psim} | {ratio} |")

peers = []
for n in sizes:
    for variant in ["static", "stdp"]:
        b, r = load(os.path.join(raw, f"brian2cuda_{variant}_{n}.json")), load(os.path.join(raw, f"fum_{variant}_{n}.json"))
        if b and r:
            peers.append(f"| {n:,} | {variant} | {r['timing']['simulate_s']:.3f} | {b['simulate_s']:.3f} | {b['simulate_s'] / r['timing']['simulate_s']:.1f}x "
                         f"| {r['timing']['build_s']:.1f} | {b['build_no_compile_s']:.1f} + {b['detail']['compile_s']:.0f} compile | "
                         f"{sum(r['rates_hz'].values()) / len(r['rates_hz']):.1f} / {b['rate_hz']:.1f} |")
if peers:
    print("\nBrian2CUDA (benchmarks/peers/brian2cuda_brunel.py, cuda_standalone, float32, same GPU):\n")
    print("| neurons | STDP | fum simulate s | Brian2CUDA simulate s | Brian2CUDA / fum | fum build s | Brian2CUDA build s | rate Hz fum / Brian2CUDA |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(peers))

for path in sorted(glob.glob(os.path.join(raw, "fit_*.json"))):
    r = load(path)
    net, tm, g = r["network"], r["timing"], r["gpu"]
    print(f"\nFit: {net['neurons']:,} neurons, {net['synapses']:,} synapses, f16 weights, STDP on E->E: "
          f"build {tm['build_s']:.1f} s (upload {g['upload_s']:.1f} s), simulate {tm['simulate_s']:.1f} s for {r['duration_ms'] / 1e3:g} s, "
          f"copy back {tm['copy_back_s']:.1f} s; device memory {g['device_bytes_total'] / 1e9:.2f} GB allocated, "
          f"{g['device_bytes_peak_measured'] / 1e9:.2f} GB measured peak; {g['bytes_per_synapse']:.2f} B per synapse for the synapses, "
          f"{g['device_bytes_total'] / net['synapses']:.2f} B per synapse everything included; rate {sum(r['rates_hz'].values()) / len(r['rates_hz']):.1f} Hz, "
          f"{r['stdp_history_overflows']} history overflows")

print("\nDelivery and STDP kernels (Nsight Compute counters, STDP networks, 10 steps after 80 ms):\n")
print("| neurons | kernel | DRAM GB/s | % of copy bandwidth | L2 GB/s | profiled time s |")
print("|---|---|---|---|---|---|")
for n in sizes:
    for name, (dram, l2, secs) in sorted(ncu(n).items()):
        print(f"| {n:,} | {name} | {dram:.0f} | {100 * dram / copy_gbs:.0f} % | {l2:.0f} | {secs:.4f} |")
