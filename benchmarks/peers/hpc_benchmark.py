#!/usr/bin/env python3
"""NEST's hpc_benchmark network in NEST and in fum, measured the same way.

  hpc_benchmark.py --sim nest [--scale F] [--duration-ms T] [--threads N] [--seed S]
  hpc_benchmark.py --sim fum  [same options] [--backend cpu|cuda]
  hpc_benchmark.py --compare  [same options]       # both, one after the other, and a table

The network is benchmarks/models/hpc_benchmark.py's (NEST's pynest/examples/hpc_benchmark.py:
iaf_psc_alpha neurons, fixed in-degree 9000 E + 2250 I, stdp_pl_synapse_hom on E->E, Poisson
drive); fum runs the model file that script writes (assets/models/hpc_benchmark.toml at scale 1)
through its Python package (`pip install ./python`), NEST 3.x its own script's calls.

Each run prints one JSON line: build and simulation time, rates of E and I and the mean ISI CV
of E neurons over the spikes after --from-ms (default 100 ms, past the onset), and the E->E
weights at the end of the run: mean and standard deviation over the synapses into the first
--weight-targets E neurons (default 50: 450,000 synapses at any scale; NEST reads ~10 s per
million), and their drift relative to the initial weight JE. In both simulators a plastic weight
read at the end lacks the potentiation still pending since its source's last spike (both apply
it at the next presynaptic spike), so the two are read alike, but for one detail: NEST has not
yet delivered the spikes of its last min_delay slice (1 ms: the spike recorder's connection
sets min_delay), fum has (a 0.002 % difference in drift at scale 1, in-degree x 0.1). That
pending potentiation (~0.5 % of JE after 1 s at that size) depends on the last tens of ms, so
a drift read at one instant is noisy: compare over seeds, or with stdp_replay.py's complete
drift.

--dump PATH.npz also writes every spike (E and I, ids from 0 with E first) and the E->E synapses
into the first --weight-targets E neurons (source, target, delay, weight at the end; each starts
at JE), for benchmarks/peers/stdp_replay.py.
"""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "benchmarks", "models"))
import hpc_benchmark as net  # noqa: E402


def stats(senders, times, first_e, ne, ni, t_from, t_to):
    """Rates of E and I (Hz) and the mean ISI CV of E neurons with more than 3 spikes, from the
    spikes in [t_from, t_to); `senders` counted from `first_e` (E first, then I)."""
    import numpy as np

    ids = np.asarray(senders, dtype=np.int64) - first_e
    t = np.asarray(times, dtype=np.float64)
    keep = (t >= t_from) & (t < t_to)
    ids, t = ids[keep], t[keep]
    span_s = (t_to - t_from) / 1000.0
    is_e = ids < ne
    out = {"rate_e_hz": float(is_e.sum() / (ne * span_s)), "rate_i_hz": float((~is_e).sum() / (ni * span_s))}
    o = np.lexsort((t[is_e], ids[is_e]))
    te, ie = t[is_e][o], ids[is_e][o]
    cvs = []
    if len(ie):
        starts = np.flatnonzero(np.r_[True, ie[1:] != ie[:-1]])
        for s in np.split(te, starts[1:]):
            if len(s) > 3:
                d = np.diff(s)
                cvs.append(d.std() / d.mean())
    out["isi_cv_e"] = float(np.mean(cvs)) if cvs else None
    return out


def weight_stats(w, je_pa):
    import numpy as np

    w = np.asarray(w, dtype=np.float64)
    return {"w_ee_n": int(w.size), "w_ee_mean_pa": float(w.mean()), "w_ee_std_pa": float(w.std()), "w_ee_drift": float(w.mean() / je_pa - 1.0)}


def dump(path, sim, a, p, senders, times, source, target, delay_ms, weight, min_delay_ms=0.0):
    """Writes what stdp_replay.py replays: spikes (ids from 0, E first) and sampled E->E synapses;
    NEST's min_delay (its communication interval, which decides the spikes still undelivered at
    the end; the recorder's connection's 1 ms sets it here), 0 for fum."""
    import numpy as np

    np.savez_compressed(
        path, sim=sim, seed=a.seed, scale=a.scale, indegree=a.indegree, duration_ms=a.duration_ms, dt_ms=net.DT_MS,
        ne=p["ne"], ni=p["ni"], je_pa=p["je_pa"], stdp=np.array([net.STDP[k] for k in ("lambda", "alpha", "mu", "tau_plus", "tau_minus")]),
        senders=np.asarray(senders, dtype=np.int64), times=np.asarray(times, dtype=np.float64),
        source=np.asarray(source, dtype=np.int64), target=np.asarray(target, dtype=np.int64),
        delay_ms=np.asarray(delay_ms, dtype=np.float64), weight=np.asarray(weight, dtype=np.float64), min_delay_ms=min_delay_ms)


def run_nest(a):
    os.environ.setdefault("PYNEST_QUIET", "1")
    saved = os.dup(1)
    os.dup2(2, 1)  # NEST prints to stdout; the JSON line goes to the real one
    import nest

    p = net.parameters(a.scale, a.indegree)
    t0 = time.perf_counter()
    nest.ResetKernel()
    nest.verbosity = nest.VerbosityLevel.ERROR
    nest.SetKernelStatus({"resolution": net.DT_MS, "local_num_threads": a.threads, "rng_seed": a.seed, "print_time": False})
    params = dict(net.NEURON, tau_syn_ex=net.TAU_SYN_MS, tau_syn_in=net.TAU_SYN_MS, tau_minus=net.STDP["tau_minus"], V_m=net.V_MEAN_MV)
    e = nest.Create("iaf_psc_alpha", p["ne"], params=params)
    i = nest.Create("iaf_psc_alpha", p["ni"], params=params)
    vm = nest.random.normal(net.V_MEAN_MV, net.V_STD_MV)
    e.V_m = vm
    i.V_m = vm
    stim = nest.Create("poisson_generator", 1, {"rate": p["poisson_hz"]})
    nest.SetDefaults("static_synapse_hpc", {"delay": net.DELAY_MS})
    nest.CopyModel("static_synapse_hpc", "syn_ex", {"weight": p["je_pa"]})
    nest.CopyModel("static_synapse_hpc", "syn_in", {"weight": p["ji_pa"]})
    nest.SetDefaults("stdp_pl_synapse_hom_hpc", {k: v for k, v in net.STDP.items() if k != "tau_minus"} | {"delay": net.DELAY_MS, "weight": p["je_pa"]})
    nest.Connect(stim, e, "all_to_all", {"synapse_model": "syn_ex"})
    nest.Connect(stim, i, "all_to_all", {"synapse_model": "syn_ex"})
    indeg = lambda k: {"rule": "fixed_indegree", "indegree": k, "allow_autapses": False, "allow_multapses": True}  # noqa: E731
    nest.Connect(e, e, indeg(p["ce"]), {"synapse_model": "syn_ex" if a.no_stdp else "stdp_pl_synapse_hom_hpc"})
    nest.Connect(i, e, indeg(p["ci"]), {"synapse_model": "syn_in"})
    nest.Connect(e, i, indeg(p["ce"]), {"synapse_model": "syn_ex"})
    nest.Connect(i, i, indeg(p["ci"]), {"synapse_model": "syn_in"})
    rec = nest.Create("spike_recorder")
    nest.Connect(e + i, rec)
    t1 = time.perf_counter()
    nest.Simulate(a.duration_ms)
    t2 = time.perf_counter()
    ev = rec.get("events")
    out = {"sim": "nest", "version": nest.__version__, "build_s": t1 - t0, "simulate_s": t2 - t1}
    out |= stats(ev["senders"], ev["times"], e[0].global_id, p["ne"], p["ni"], a.from_ms, a.duration_ms)
    conns = nest.GetConnections(e, e[: a.weight_targets])
    out |= weight_stats(conns.get("weight"), p["je_pa"])
    if a.dump:
        c = conns.get(["source", "target", "delay", "weight"])
        first = e[0].global_id
        dump(a.dump, "nest", a, p, ev["senders"] - first, ev["times"], [s - first for s in c["source"]], [t - first for t in c["target"]], c["delay"], c["weight"], nest.GetKernelStatus("min_delay"))
    os.dup2(saved, 1)
    return out


def run_fum(a):
    import tempfile

    import fum
    import numpy as np

    p = net.parameters(a.scale, a.indegree)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "hpc_benchmark.toml")
        with open(path, "w") as f:
            f.write(net.model_toml(a.scale, a.duration_ms, a.seed, a.indegree, stdp=not a.no_stdp))
        run = fum.Model.from_toml(path).run(backend=a.backend, threads=a.threads, progress=False)
    timing = run.run_json["timing"]
    out = {"sim": "fum", "version": run.run_json["fum_version"], "backend": run.run_json["backend"], "build_s": timing["build_s"], "simulate_s": timing["simulate_s"]}
    ids, times, first = [], [], 0
    for pop, size in (("E", p["ne"]), ("I", p["ni"])):
        n, t = run.spikes(pop)
        ids.append(np.asarray(n, dtype=np.int64) + first)
        times.append(np.asarray(t))
        first += size
    out |= stats(np.concatenate(ids), np.concatenate(times), 0, p["ne"], p["ni"], a.from_ms, a.duration_ms)
    syn = run.weights("E_to_E")
    sampled = np.asarray(syn.post) < a.weight_targets
    out |= weight_stats(np.asarray(syn.weight)[sampled], p["je_pa"])
    if a.dump:  # fum's E->E delays are the model's one delay
        senders, times = np.concatenate(ids), np.concatenate(times)
        dump(a.dump, "fum", a, p, senders, times, np.asarray(syn.pre)[sampled], np.asarray(syn.post)[sampled], np.full(sampled.sum(), net.DELAY_MS), np.asarray(syn.weight)[sampled])
    return out


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", choices=["nest", "fum"])
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--duration-ms", type=float, default=1000.0)
    ap.add_argument("--indegree", type=float, default=1.0, help="in-degrees times this (NEST's script: 1)")
    ap.add_argument("--no-stdp", action="store_true", help="E->E static at JE (to tell the plasticity's part in a difference)")
    ap.add_argument("--from-ms", type=float, default=100.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=net.SEED)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--weight-targets", type=int, default=50)
    ap.add_argument("--dump", metavar="PATH.npz", help="write spikes and the sampled E->E synapses (for stdp_replay.py)")
    a = ap.parse_args()
    if a.compare and a.dump:
        ap.error("--dump with --sim nest or --sim fum, one file each")
    if a.compare:
        rows = []
        for sim in ("nest", "fum"):
            cmd = [sys.executable, __file__, "--sim", sim] + [x for x in sys.argv[1:] if x != "--compare"]
            print("$", " ".join(cmd), file=sys.stderr, flush=True)
            rows.append(json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]))
        keys = ["build_s", "simulate_s", "rate_e_hz", "rate_i_hz", "isi_cv_e", "w_ee_mean_pa", "w_ee_std_pa", "w_ee_drift"]
        print("| | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for r in rows:
            print(f"| {r['sim']} {r['version']} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |")
        nest_row, fum_row = rows
        print("fum / NEST: " + ", ".join(f"{k} {fum_row[k] / nest_row[k]:.3f}" for k in keys[2:] if nest_row[k]))
        return
    if a.sim is None:
        ap.error("--sim nest|fum or --compare")
    print(json.dumps(run_nest(a) if a.sim == "nest" else run_fum(a)), flush=True)


if __name__ == "__main__":
    main()
