#!/usr/bin/env python3
"""Brunel (2000) model A, the scaling network and the Poisson-driven network in NEST 3.x
(iaf_psc_exp, exact integration).

--model brunel: assets/models/brunel.toml. 10,000 E + 2,500 I iaf_psc_exp neurons (tau_m 20 ms,
  C_m 250 pF, E_L 0, V_th 20 mV, V_reset 10 mV, t_ref 2 ms, tau_syn 0.5 ms, V_0 ~ U[0, 20] mV);
  fixed in-degree 1000 from E (+50 pA) and 250 from I (-250 pA), multapses allowed, no autapses;
  delay 1.5 ms; an independent 20 kHz Poisson train of 50 pA into every neuron; dt 0.1 ms.
--model scaling: assets/models/scaling.toml (benchmarks/gpu/scaling_model.py): the same neurons,
  in-degree 800 from E and 200 from I, 16 kHz drive, and additive all-to-all STDP on E->E
  (stdp_synapse: lambda = a+ = 0.001, alpha = a-/a+ = 1.05, mu+- = 0, Wmax 100 pA, tau+- 20 ms;
  NEST counts the delay as dendritic when pairing, fum pairs the spike times at the neurons).
--model poisson_drive: assets/models/poisson_drive.toml (`fum bench --suite poisson`): the same
  neurons, in-degree 80 from E (+300 pA) and 20 from I (-1500 pA), an independent 1500 Hz
  Poisson train of 300 pA into every neuron, no plasticity.
--neurons N scales the populations as `fum bench` does (E = floor(0.8 N), I = N - E), keeping the
in-degrees. Default: the asset's 12,500 (brunel) or 10,000 (scaling, poisson_drive).

Spikes are recorded from the first 10,000 neurons of each population (all of them at the assets'
sizes; --record-max): NEST 3.10 spends ~32 kB per neuron connected to a spike_recorder, which at
1M neurons would not fit in memory. rate_e_hz and rate_i_hz are the recorded neurons' rates;
detail.rate_all_hz is every neuron's, from the kernel's local_spike_counter.

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
# Weights in pA: E (w_e), I (w_i, negative) and the Poisson drive's (w_poisson).
_BRUNEL_W = {"w_e": 50.0, "w_i": -250.0, "w_poisson": 50.0}
MODELS = {
    # neurons, K_E, K_I, Poisson rate (Hz), weights, STDP on E->E, seed of the asset
    "brunel": {"neurons": 12500, "k_e": 1000, "k_i": 250, "poisson_hz": 20000.0, **_BRUNEL_W, "stdp": None, "seed": 12345},
    "scaling": {
        "neurons": 10000,
        "k_e": 800,
        "k_i": 200,
        "poisson_hz": 16000.0,
        **_BRUNEL_W,
        "stdp": {"tau_ms": 20.0, "a_plus": 0.001, "a_minus": 0.00105, "w_max": 100.0},
        "seed": 12345,
    },
    "poisson_drive": {
        "neurons": 10000,
        "k_e": 80,
        "k_i": 20,
        "poisson_hz": 1500.0,
        "w_e": 300.0,
        "w_i": -1500.0,
        "w_poisson": 300.0,
        "stdp": None,
        "seed": 12345,
    },
}
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
    ap.add_argument("--record-max", type=int, default=10000,
                    help="record the spikes of at most this many neurons per population (0: all)")
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
        nest.Connect(pg, E + I, syn_spec={"weight": spec["w_poisson"], "delay": DT_MS})
        conn_e = {"rule": "fixed_indegree", "indegree": spec["k_e"], "allow_autapses": False, "allow_multapses": True}
        conn_i = {"rule": "fixed_indegree", "indegree": spec["k_i"], "allow_autapses": False, "allow_multapses": True}
        static_e = {"synapse_model": "static_synapse", "weight": spec["w_e"], "delay": DELAY_MS}
        if stdp:
            nest_stdp_model(nest, stdp["tau_ms"], stdp["a_plus"], stdp["a_minus"], stdp["w_max"])
            nest.Connect(E, E, conn_e, {"synapse_model": "stdp_ee", "weight": spec["w_e"], "delay": DELAY_MS})
        else:
            nest.Connect(E, E, conn_e, static_e)
        nest.Connect(E, I, conn_e, static_e)
        nest.Connect(I, E + I, conn_i, {"synapse_model": "static_synapse", "weight": spec["w_i"], "delay": DELAY_MS})
        sample = args.record_max if 0 < args.record_max < max(n_e, n_i) else None
        t_build1, times, n_spk_e, n_spk_i, rec_e = nest_record_and_run(nest, E, I, args.duration_ms, sample)
        spikes_all = int(nest.GetKernelStatus("local_spike_counter"))
        rec_n_e, rec_n_i = (n_e, n_i) if sample is None else (min(sample, n_e), min(sample, n_i))
        n_syn = int(nest.GetKernelStatus("num_connections")) - n - rec_n_e - rec_n_i  # minus drive and recorder links
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
                "rate_e_hz": rate_hz(n_spk_e, rec_n_e, args.duration_ms),
                "rate_i_hz": rate_hz(n_spk_i, rec_n_i, args.duration_ms),
                **extra,
                "integrator": "exact (iaf_psc_exp propagators)",
                "settings": f"NEST {nest.__version__} (PyPI wheel), local_num_threads {args.threads}, "
                f"resolution {DT_MS} ms, iaf_psc_exp, poisson_generator"
                + (", stdp_synapse on E->E" if stdp else ""),
                "detail": {
                    **{k: v for k, v in times.items() if k != "simulate_s"},
                    "import_s": t_build0 - T0,
                    "recorded_e": rec_n_e,
                    "recorded_i": rec_n_i,
                    "rate_all_hz": rate_hz(spikes_all, n, args.duration_ms),
                    **detail_stats,
                },
            }
        )


if __name__ == "__main__":
    main()
