#!/usr/bin/env python3
"""The GPU peer for `scripts/gpu-check.sh`: the Brunel-style network of
benchmarks/gpu/scaling_model.py (without STDP) written the straightforward way in PyTorch:
LIF (iaf_psc_exp, exact propagators) on dense state vectors and synaptic input as a
torch.sparse CSR matrix-vector product per step, delayed through a ring of input vectors.
`--brunel`: assets/models/brunel.toml instead (in-degree 1000 from E and 250 from I, 20 kHz
drive; N = 12500 there). Sources are drawn with replacement (multapses) and without autapses,
as fum draws them. Poisson drive: torch.poisson(rate dt) events of 50 pA per neuron and step.
Prints one JSON line: build and simulate seconds and the mean rates (all, E, I).
Usage: torch_brunel.py N [duration_ms] [--brunel] [--seed S] [--device cuda]"""
import argparse
import json
import math
import time

import torch

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("n", type=int)
ap.add_argument("duration_ms", type=float, nargs="?", default=1000.0)
ap.add_argument("--brunel", action="store_true", help="assets/models/brunel.toml: in-degree 1000/250, 20 kHz drive")
ap.add_argument("--seed", type=int, default=12345)
ap.add_argument("--device", default="cuda", help="torch device (cpu only to test the script)")
args = ap.parse_args()

n = args.n
duration_ms = args.duration_ms
dt, tau_m, c_m, tau_s, v_th, v_reset, t_ref = 0.1, 20.0, 250.0, 0.5, 20.0, 10.0, 2.0
k_e, k_i, drive_hz = (1000, 250, 20000.0) if args.brunel else (800, 200, 16000.0)
delay = 15
n_e = n * 4 // 5
n_i = n - n_e
dev = torch.device(args.device)
torch.manual_seed(args.seed)


def draw(first, size, k):
    """k sources per target from [first, first + size), with replacement, skipping the target."""
    tgt = torch.arange(n, device=dev).unsqueeze(1)
    inside = ((tgt >= first) & (tgt < first + size)).long()  # 1 where the target is in the source population
    r = (torch.rand(n, k, device=dev) * (size - inside)).long()
    return first + (inside * (tgt - first + 1) + r) % size


t0 = time.perf_counter()
# Fixed in-degree: k_e excitatory and k_i inhibitory sources per neuron.
rows = torch.arange(n, device=dev).repeat_interleave(k_e + k_i)
cols = torch.cat([draw(0, n_e, k_e), draw(n_e, n_i, k_i)], dim=1).reshape(-1)
vals = torch.cat([torch.full((n, k_e), 50.0, device=dev), torch.full((n, k_i), -250.0, device=dev)], dim=1).reshape(-1)
w = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n)).coalesce().to_sparse_csr()
del rows, cols, vals
p22 = math.exp(-dt / tau_m)
p11 = math.exp(-dt / tau_s)
p21 = tau_s * tau_m / (c_m * (tau_m - tau_s)) * (math.exp(-dt / tau_m) - math.exp(-dt / tau_s))
v = torch.rand(n, device=dev) * 20.0
syn = torch.zeros(n, device=dev)
refractory = torch.zeros(n, device=dev, dtype=torch.int32)
ring = torch.zeros(delay + 1, n, device=dev)
lam = torch.full((n,), drive_hz * dt * 1e-3, device=dev)
ref_steps = int(round(t_ref / dt))
if dev.type == "cuda":
    torch.cuda.synchronize()
build_s = time.perf_counter() - t0

steps = int(round(duration_ms / dt))
spikes = torch.zeros(n, device=dev, dtype=torch.int64)
t1 = time.perf_counter()
for step in range(steps):
    slot = step % (delay + 1)
    arriving = ring[slot] + torch.poisson(lam) * 50.0
    ring[slot].zero_()
    v_new = v * p22 + syn * p21
    v = torch.where(refractory == 0, v_new, v)
    syn = syn * p11 + arriving
    fired = v >= v_th
    v = torch.where(fired, torch.full_like(v, v_reset), v)
    refractory = torch.where(fired, torch.full_like(refractory, ref_steps), (refractory - 1).clamp(min=0))
    spikes += fired
    ring[(step + delay) % (delay + 1)] += torch.mv(w, fired.float())
if dev.type == "cuda":
    torch.cuda.synchronize()
simulate_s = time.perf_counter() - t1
dur_s = duration_ms * 1e-3
s_e = int(spikes[:n_e].sum().item())
s_i = int(spikes[n_e:].sum().item())
print(json.dumps({
    "peer": "pytorch",
    "torch": torch.__version__,
    "model": "brunel" if args.brunel else "scaling_static",
    "neurons": n,
    "synapses": n * (k_e + k_i),
    "duration_ms": duration_ms,
    "build_s": build_s,
    "simulate_s": simulate_s,
    "rate_hz": (s_e + s_i) / (n * dur_s),
    "rate_e_hz": s_e / (n_e * dur_s),
    "rate_i_hz": s_i / (n_i * dur_s),
    "integrator": "exact (iaf_psc_exp propagators)",
    "settings": f"PyTorch {torch.__version__} eager, float32, torch.sparse CSR mv per step, device {dev}",
}))
