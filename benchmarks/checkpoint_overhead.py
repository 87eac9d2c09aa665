"""Checkpoint overhead: simulate time of `fum run` with a checkpoint every 1 s of biological
time against the same run without checkpoints, interleaved, median of REPEATS each.

    python3 benchmarks/checkpoint_overhead.py [--repeats 3] [--cpu 0] [--threads 1]

Runs are pinned with taskset (--cpu) so that a measurement can share the machine with other
work on other cores; the checkpoint writer thread shares the simulation's cores.
"""
import argparse
import json
import statistics
import subprocess
import tempfile

MODELS = [("brunel", "assets/models/brunel.toml", "3s"), ("stdp_balanced", "assets/models/stdp_balanced.toml", "20s")]

ap = argparse.ArgumentParser()
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--cpu", default="0")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--fum", default="target/release/fum")
args = ap.parse_args()

print(f"| model | biological time | checkpoints | simulate without (s) | simulate with (s) | overhead | pause for snapshots (s) | checkpoint size |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, path, duration in MODELS:
    plain, with_ckpt, pauses, written, sizes = [], [], [], [], []
    for _ in range(args.repeats):
        for checkpoint in (False, True):
            with tempfile.TemporaryDirectory() as out:
                cmd = ["taskset", "-c", args.cpu, args.fum, "run", path, "--out", out, "--duration", duration, "--threads", str(args.threads), "--quiet"]
                if checkpoint:
                    cmd += ["--checkpoint-every", "1s", "--keep-checkpoints", "100"]
                subprocess.run(cmd, check=True)
                report = json.load(open(f"{out}/run.json"))
                t = report["timing"]
                if checkpoint:
                    with_ckpt.append(t["simulate_s"])
                    pauses.append(t["checkpoint_pause_s"])
                    written.append(t["checkpoints_written"])
                    import os
                    files = [f for f in os.listdir(f"{out}/checkpoints") if f.startswith("ckpt-")]
                    sizes.append(max(os.path.getsize(f"{out}/checkpoints/{f}") for f in files))
                else:
                    plain.append(t["simulate_s"])
    a, b = statistics.median(plain), statistics.median(with_ckpt)
    print(f"| {name} | {duration} | {written[0]} | {a:.3f} | {b:.3f} | {100 * (b - a) / a:+.1f} % | {statistics.median(pauses):.4f} | {max(sizes) / 1e6:.2f} MB |")
