#!/usr/bin/env python3
"""Brunel (2000) model A and the scaling network in NEST 3.x (iaf_psc_exp, exact integration).

--model brunel: assets/models/brunel.toml. 10,000 E + 2,500 I iaf_psc_exp neurons (tau_m 20 ms,
  C_m 250 pF, E_L 0, V_th 20 mV, V_reset 10 mV, t_ref 2 ms, tau_syn 0.5 ms, V_0 ~ U[0, 20] mV);
  fixed in-degree 1000 from E (+50 pA) and 250 from I (-250 pA), multapses allowed, no autapses;
  delay 1.5 ms; an independent 20 kHz Poisson train of 50 pA into every neuron; dt 0.1 ms.
--model scaling: assets/models/scaling.toml (benchmarks/gpu/scaling_model.py): the same neurons,
  in-degree 800 from E and 200 from I, 16 kHz drive, and additive all-to-all STDP on E->E
  (stdp_synapse: lambda = a+ = 0.001, alpha = a-/a+ = 1.05, mu+- = 0, Wmax 100 pA, tau+- 20 ms;
  NEST counts the delay as dendritic when pairing, fum pairs the spike times at the neurons).
--neurons N scales the populations as `fum bench` does (E = floor(0.8 N), I = N - E), keeping the
in-degrees. Default: the asset's 12,500 (brunel) or 10,000 (scaling).

Prints one JSON line to stdout:
  peer, version, model, threads, neurons, synapses, build_s, simulate_s, total_s, rate_e_hz,
  rate_i_hz, integrator, settings
plus a "detail" object; with --stats, the ISI CV of E neurons and population-count CVs in it (the
statistics of benchmarks/RESULTS.md's Brunel section, which used seed 5; spikes after 200 ms,
runs longer than 300 ms). Timing as in nest_va.py: build_s = ResetKernel .. Connect,
simulate_s = Prepare + Run + Cleanup (= Simulate); total_s includes --stats and --weight-stats
(GetConnections) when asked for.
"""

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

os.environ.setdefault("PYNEST_QUIET", "1")  # no banner on import

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import StdoutToStderr, nest_record_and_run, nest_start, nest_stdp_model, nest_weight_stats, rate_hz  # noqa: E402

DT_MS = 0.1
MODELS = {
    # neurons, K_E, K_I, Poisson rate (Hz), STDP on E->E, seed of the asset
    "brunel": {"neurons": 12500, "k_e": 1000, "k_i": 250, "poisson_hz": 20000.0, "stdp": None, "seed": 12345},
    "scaling": {
        "neurons": 10000,
        "k_e": 800,
        "k_i": 200,
        "poisson_hz": 16000.0,
        "stdp": {"tau_ms": 20.0, "a_plus": 0.001, "a_minus": 0.00105, "w_max": 100.0},
        "seed": 12345,
    },
}
W_E, W_I, W_POISSON = 50.0, -250.0, 50.0  # pA
DELAY_MS = 1.5


def stats(times, senders, t_from, t_to):
    """Mean ISI CV over (up to 3000) E neurons with more than 3 spikes, and the CV of the E
    population's spike count in 1 and 5 ms bins, from the spikes after t_from."""
    import numpy as np

    m = times > t_from
    tt, nn = times[m], senders[m]
    o = np.lexsort((tt, nn))
    tt, nn = tt[o], nn[o]
    cvs = []
    if len(nn):
        starts = np.flatnonzero(np.r_[True, nn[1:] != nn[:-1]])
        for s in np.split(tt, starts[1:])[:3000]:
            if len(s) > 3:
                d = np.diff(s)
                cvs.append(d.std() / d.mean())
    out = {"isi_cv_e": float(np.mean(cvs)) if cvs else None}
    for b in (1, 5):
        h, _ = np.histogram(tt, bins=np.arange(t_from, t_to + 1e-9, b))
        out[f"pop_count_cv_{b}ms_e"] = float(h.std() / h.mean()) if h.mean() > 0 else None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="brunel")
    ap.add_argument("--neurons", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--duration-ms", type=float, default=1000.0)
    ap.add_argument("--seed", type=int, default=None, help="default: the asset's (12345)")
    ap.add_argument("--stats", action="store_true",
                    help="ISI CV and population-count CV of E in detail (RESULTS.md's Brunel section: --stats --seed 5)")
    ap.add_argument("--weight-stats", action="store_true",
                    help="scaling: report the E->E weights' mean and std (GetConnections is slow: ~10 s per million)")
    args = ap.parse_args()
    spec = MODELS[args.model]
    n = args.neurons or spec["neurons"]
    n_e = n * 4 // 5
    n_i = n - n_e
    seed = spec["seed"] if args.seed is None else args.seed

    with StdoutToStderr() as out:
        import numpy as np

        nest, t_build0 = nest_start(args.threads, seed)
        params = {
            "C_m": 250.0,
            "tau_m": 20.0,
            "E_L": 0.0,
            "V_th": 20.0,
            "V_reset": 10.0,
            "t_ref": 2.0,
            "tau_syn_ex": 0.5,
            "tau_syn_in": 0.5,
            "I_e": 0.0,
        }
        stdp = spec["stdp"]
        if stdp:
            params["tau_minus"] = stdp["tau_ms"]
        E = nest.Create("iaf_psc_exp", n_e, params=params)
        I = nest.Create("iaf_psc_exp", n_i, params=params)
        for pop in (E, I):
            pop.V_m = nest.random.uniform(0.0, 20.0)
        pg = nest.Create("poisson_generator", params={"rate": spec["poisson_hz"]})
        # One generator, connected to every neuron: each target gets its own train.
        nest.Connect(pg, E + I, syn_spec={"weight": W_POISSON, "delay": DT_MS})
        conn_e = {"rule": "fixed_indegree", "indegree": spec["k_e"], "allow_autapses": False, "allow_multapses": True}
        conn_i = {"rule": "fixed_indegree", "indegree": spec["k_i"], "allow_autapses": False, "allow_multapses": True}
        static_e = {"synapse_model": "static_synapse", "weight": W_E, "delay": DELAY_MS}
        if stdp:
            nest_stdp_model(nest, stdp["tau_ms"], stdp["a_plus"], stdp["a_minus"], stdp["w_max"])
            nest.Connect(E, E, conn_e, {"synapse_model": "stdp_ee", "weight": W_E, "delay": DELAY_MS})
        else:
            nest.Connect(E, E, conn_e, static_e)
        nest.Connect(E, I, conn_e, static_e)
        nest.Connect(I, E + I, conn_i, {"synapse_model": "static_synapse", "weight": W_I, "delay": DELAY_MS})
        t_build1, times, n_spk_e, n_spk_i, rec_e = nest_record_and_run(nest, E, I, args.duration_ms)
        n_syn = int(nest.GetKernelStatus("num_connections")) - 2 * n  # minus drive and recorder links
        detail_stats = {}
        if args.stats and args.duration_ms > 300.0:
            ev = rec_e.get("events")
            detail_stats = stats(np.asarray(ev["times"]), np.asarray(ev["senders"]), 200.0, args.duration_ms)
        extra = nest_weight_stats(nest, E) if stdp and args.weight_stats else {}
        total_s = time.perf_counter() - T0

        out.emit(
            {
                "peer": "nest",
                "version": nest.__version__,
                "model": args.model,
                "threads": args.threads,
                "neurons": n,
                "synapses": n_syn,
                "duration_ms": args.duration_ms,
                "seed": seed,
                "build_s": t_build1 - t_build0,
                "simulate_s": times["simulate_s"],
                "total_s": total_s,
                "rate_e_hz": rate_hz(n_spk_e, n_e, args.duration_ms),
                "rate_i_hz": rate_hz(n_spk_i, n_i, args.duration_ms),
                **extra,
                "integrator": "exact (iaf_psc_exp propagators)",
                "settings": f"NEST {nest.__version__} (PyPI wheel), local_num_threads {args.threads}, "
                f"resolution {DT_MS} ms, iaf_psc_exp, poisson_generator"
                + (", stdp_synapse on E->E" if stdp else ""),
                "detail": {
                    **{k: v for k, v in times.items() if k != "simulate_s"},
                    "import_s": t_build0 - T0,
                    **detail_stats,
                },
            }
        )


if __name__ == "__main__":
    main()
