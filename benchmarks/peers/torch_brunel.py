#!/usr/bin/env python3
"""The GPU peer for `scripts/gpu-check.sh`: the Brunel-style network of
benchmarks/gpu/scaling_model.py (without STDP) written the straightforward way in PyTorch:
LIF (iaf_psc_exp, exact propagators) on dense state vectors and synaptic input as a
torch.sparse CSR matrix-vector product per step, delayed through a ring of input vectors.
Prints one JSON line: build and simulate seconds and the mean rate.
Usage: torch_brunel.py N [duration_ms]"""
import json
import math
import sys
import time

import torch

n = int(sys.argv[1])
duration_ms = float(sys.argv[2]) if len(sys.argv) > 2 else 1000.0
dt, tau_m, c_m, tau_s, v_th, v_reset, t_ref = 0.1, 20.0, 250.0, 0.5, 20.0, 10.0, 2.0
delay = 15
n_e = n * 4 // 5
dev = torch.device("cuda")
torch.manual_seed(12345)

t0 = time.perf_counter()
# Fixed in-degree: 800 excitatory and 200 inhibitory sources per neuron.
rows = torch.arange(n, device=dev).repeat_interleave(1000)
src_e = torch.randint(0, n_e, (n, 800), device=dev)
src_i = torch.randint(n_e, n, (n, 200), device=dev)
cols = torch.cat([src_e, src_i], dim=1).reshape(-1)
vals = torch.cat([torch.full((n, 800), 50.0, device=dev), torch.full((n, 200), -250.0, device=dev)], dim=1).reshape(-1)
w = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n)).coalesce().to_sparse_csr()
del rows, cols, vals, src_e, src_i
p22 = math.exp(-dt / tau_m)
p11 = math.exp(-dt / tau_s)
p21 = tau_s * tau_m / (c_m * (tau_m - tau_s)) * (math.exp(-dt / tau_m) - math.exp(-dt / tau_s))
v = torch.rand(n, device=dev) * 20.0
syn = torch.zeros(n, device=dev)
refractory = torch.zeros(n, device=dev, dtype=torch.int32)
ring = torch.zeros(delay + 1, n, device=dev)
lam = torch.full((n,), 16000.0 * dt * 1e-3, device=dev)
ref_steps = int(round(t_ref / dt))
torch.cuda.synchronize()
build_s = time.perf_counter() - t0

steps = int(round(duration_ms / dt))
spikes_total = torch.zeros((), device=dev, dtype=torch.int64)
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
    spikes_total += fired.sum()
    ring[(step + delay) % (delay + 1)] += torch.mv(w, fired.float())
torch.cuda.synchronize()
simulate_s = time.perf_counter() - t1
rate = spikes_total.item() / (n * duration_ms * 1e-3)
print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "neurons": n, "synapses": n * 1000, "build_s": build_s, "simulate_s": simulate_s, "rate_hz": rate}))
