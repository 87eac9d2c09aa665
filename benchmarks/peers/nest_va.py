#!/usr/bin/env python3
"""Vogels-Abbott benchmark network (CUBA / COBA / CUBA with STDP) in NEST 3.x.

Same network as assets/models/vogels_abbott_{cuba,coba}.toml: 3200 E + 800 I neurons,
pairwise_bernoulli p = 0.02 without autapses, delay 0.1 ms, resolution 0.1 ms.
CUBA: iaf_psc_exp (exact integration). COBA: iaf_cond_exp (NEST integrates it with GSL's
adaptive RKF45, not exponential Euler; NEST has no other integrator for it, so --integrator
matched runs the same and says so). --model stdp is assets/models/stdp_balanced.toml: the CUBA
network with stdp_synapse on E->E, additive (mu_plus = mu_minus = 0), lambda = a+ = 0.005,
alpha = a-/a+ = 1.05, Wmax 32.4 pA, tau_plus = tau_minus = 20 ms (NEST pairs the spikes with
the delay counted as dendritic; fum pairs the spike times at the neurons).

Prints one JSON line to stdout:
  peer, version, model, threads, neurons, synapses, build_s, simulate_s, total_s, rate_e_hz,
  rate_i_hz, integrator, settings
plus a "detail" object.

Timing:
  build_s     wall time of ResetKernel + SetKernelStatus + Create + initial values + Connect.
  simulate_s  wall time of nest.Simulate(duration), measured as Prepare() + Run() + Cleanup(),
              which is exactly what Simulate() does; detail.prepare_s / run_s / cleanup_s give
              the parts (Prepare() builds NEST's presynaptic connection infrastructure).
  total_s     wall time of the whole script, imports included.
"""

import time

T0 = time.perf_counter()

import os  # noqa: E402
import sys  # noqa: E402

os.environ.setdefault("PYNEST_QUIET", "1")  # no banner on import

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    DELAY_MS,
    DT_MS,
    N_E,
    N_I,
    N,
    P_CONN,
    STDP_BALANCED,
    StdoutToStderr,
    nest_record_and_run,
    nest_start,
    nest_stdp_model,
    nest_weight_stats,
    parse_args,
    rate_hz,
)


def main():
    ap = parse_args(__doc__.splitlines()[1])
    ap.add_argument("--weight-stats", action="store_true",
                    help="stdp: report the E->E weights' mean and std (GetConnections: ~1 s per 100k synapses)")
    args = ap.parse_args()

    with StdoutToStderr() as out:
        nest, t_build0 = nest_start(args.threads, args.seed)

        if args.model in ("cuba", "stdp"):
            # Brian2's voltage-valued currents times g_L = C_m / tau_m = 10 nS.
            params = {
                "C_m": 200.0,
                "tau_m": 20.0,
                "E_L": -49.0,
                "V_th": -50.0,
                "V_reset": -60.0,
                "t_ref": 5.0,
                "tau_syn_ex": 5.0,
                "tau_syn_in": 10.0,
                "I_e": 0.0,
            }
            w_e, w_i = 16.2, -90.0  # pA
            if args.model == "stdp":
                params["tau_minus"] = STDP_BALANCED["tau_minus_ms"]  # the postsynaptic trace
            pop = nest.Create("iaf_psc_exp", N, params=params)
            pop.V_m = nest.random.uniform(min=-60.0, max=-50.0)
        else:
            params = {
                "C_m": 200.0,
                "g_L": 10.0,
                "E_L": -60.0,
                "E_ex": 0.0,
                "E_in": -80.0,
                "V_th": -50.0,
                "V_reset": -60.0,
                "t_ref": 5.0,
                "tau_syn_ex": 5.0,
                "tau_syn_in": 10.0,
                "I_e": 0.0,
            }
            # iaf_cond_exp routes a spike by the sign of its weight: positive -> g_ex,
            # negative -> g_in (incremented by |w|). So the inhibitory weight is -67 nS.
            w_e, w_i = 6.0, -67.0  # nS
            pop = nest.Create("iaf_cond_exp", N, params=params)
            pop.V_m = nest.random.normal(mean=-65.0, std=5.0)
            # NEST accepts negative initial conductances, as Brian2 does: no clipping.
            pop.g_ex = nest.random.normal(mean=40.0, std=15.0)
            pop.g_in = nest.random.normal(mean=200.0, std=120.0)

        pop_e = pop[:N_E]
        pop_i = pop[N_E:]
        conn = {"rule": "pairwise_bernoulli", "p": P_CONN, "allow_autapses": False}
        if args.model == "stdp":
            st = STDP_BALANCED
            nest_stdp_model(nest, st["tau_plus_ms"], st["a_plus"], st["a_minus"], st["w_max"])
            nest.Connect(pop_e, pop_e, conn, {"synapse_model": "stdp_ee", "weight": w_e, "delay": DELAY_MS})
            nest.Connect(pop_e, pop_i, conn, {"synapse_model": "static_synapse", "weight": w_e, "delay": DELAY_MS})
        else:
            nest.Connect(pop_e, pop, conn, {"synapse_model": "static_synapse", "weight": w_e, "delay": DELAY_MS})
        nest.Connect(pop_i, pop, conn, {"synapse_model": "static_synapse", "weight": w_i, "delay": DELAY_MS})

        t_build1, times, n_e, n_i, _ = nest_record_and_run(nest, pop_e, pop_i, args.duration_ms)
        n_syn = int(nest.GetKernelStatus("num_connections")) - N  # minus the recorder links
        extra = nest_weight_stats(nest, pop_e) if args.model == "stdp" and args.weight_stats else {}
        if args.model == "coba":
            integrator = "rkf45 (GSL, adaptive; iaf_cond_exp)"
        else:
            integrator = "exact (iaf_psc_exp propagators)"
        settings = (
            f"NEST {nest.__version__} (PyPI wheel), local_num_threads {args.threads}, "
            f"resolution {DT_MS} ms, {'iaf_psc_exp' if args.model != 'coba' else 'iaf_cond_exp'}"
            + (", stdp_synapse on E->E" if args.model == "stdp" else "")
        )
        total_s = time.perf_counter() - T0

        out.emit(
            {
                "peer": "nest",
                "version": nest.__version__,
                "model": args.model,
                "threads": args.threads,
                "neurons": N,
                "synapses": n_syn,
                "duration_ms": args.duration_ms,
                "build_s": t_build1 - t_build0,
                "simulate_s": times["simulate_s"],
                "total_s": total_s,
                "rate_e_hz": rate_hz(n_e, N_E, args.duration_ms),
                "rate_i_hz": rate_hz(n_i, N_I, args.duration_ms),
                **extra,
                "integrator": integrator,
                "settings": settings,
                "detail": {
                    **{k: v for k, v in times.items() if k != "simulate_s"},
                    "import_s": t_build0 - T0,
                    "neuron_model": "iaf_cond_exp" if args.model == "coba" else "iaf_psc_exp",
                    "integrator_requested": args.integrator,
                },
            }
        )


if __name__ == "__main__":
    main()
