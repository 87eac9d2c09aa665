#!/usr/bin/env python3
"""Means ± standard errors over seeds of what hpc_benchmark.py measured, per simulator, and
fum's difference from NEST with its t value: rates, ISI CV, the E->E drift read at the end,
and the E population's Fano factor and share of rate power at 80-140 Hz (1 ms bins, from
100 ms to the end), from pairs of `--dump X.npz` and the JSON line saved beside it as X.json.

  for s in $(seq 55 74); do for sim in nest fum; do
    python3 benchmarks/peers/hpc_benchmark.py --sim $sim --scale 1 --indegree 0.1 --seed $s [--no-stdp] \\
      --dump runs/${sim}_$s.npz > runs/${sim}_$s.json; done; done
  python3 benchmarks/peers/drift_seeds.py runs/*.npz
"""
import json
import sys

import numpy as np


def measures(path):
    d = np.load(path)
    j = json.loads(open(path[: -len(".npz")] + ".json").read().strip().splitlines()[-1])
    ne, t, s = int(d["ne"]), d["times"], d["senders"]
    keep = (t >= 100.0) & (s < ne)
    counts = np.histogram(t[keep], bins=np.arange(100.0, float(d["duration_ms"]) + 1e-9, 1.0))[0].astype(float)
    power = np.abs(np.fft.rfft(counts - counts.mean())) ** 2
    hz = np.fft.rfftfreq(len(counts), 1e-3)
    return str(d["sim"]), {
        "rate_e_hz": j["rate_e_hz"],
        "rate_i_hz": j["rate_i_hz"],
        "isi_cv_e": j["isi_cv_e"],
        "drift_pct": 100.0 * j["w_ee_drift"],
        "fano_e": counts.var() / counts.mean(),
        "power_80_140": power[(hz >= 80) & (hz <= 140)].sum() / power[hz > 0].sum(),
    }


def main():
    runs = {}
    for path in sys.argv[1:]:
        sim, m = measures(path)
        runs.setdefault(sim, []).append(m)
    mean = {sim: {k: np.mean([m[k] for m in ms]) for k in ms[0]} for sim, ms in runs.items()}
    se2 = {sim: {k: np.var([m[k] for m in ms], ddof=1) / len(ms) for k in ms[0]} for sim, ms in runs.items()}
    print("| | " + " | ".join(f"{sim} (n = {len(ms)})" for sim, ms in runs.items()) + (" | fum - nest (t) |" if len(runs) == 2 else " |"))
    print("|---" * (len(runs) + 1 + (len(runs) == 2)) + "|")
    for k in next(iter(runs.values()))[0]:
        cells = [f"{mean[sim][k]:.4g} ± {np.sqrt(se2[sim][k]):.2g}" for sim in runs]
        if {"fum", "nest"} <= runs.keys():
            d, se = mean["fum"][k] - mean["nest"][k], np.sqrt(se2["fum"][k] + se2["nest"][k])
            cells.append(f"{d:+.3g} ± {se:.2g} ({d / se:+.1f})" if se > 0 else f"{d:+.3g}")
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
