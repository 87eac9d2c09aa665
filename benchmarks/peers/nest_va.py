#!/usr/bin/env python3
"""Vogels-Abbott benchmark network (CUBA / COBA) in NEST 3.x.

Same network as assets/models/vogels_abbott_{cuba,coba}.toml: 3200 E + 800 I neurons,
pairwise_bernoulli p = 0.02 without autapses, delay 0.1 ms, resolution 0.1 ms.
CUBA: iaf_psc_exp (exact integration). COBA: iaf_cond_exp (NEST integrates it with GSL's
adaptive RKF45, not exponential Euler).

Prints one JSON line to stdout:
  peer, model, threads, neurons, synapses, build_s, simulate_s, total_s, rate_e_hz, rate_i_hz
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
    StdoutToStderr,
    parse_args,
    rate_hz,
)


def main():
    args = parse_args(__doc__.splitlines()[1]).parse_args()

    with StdoutToStderr() as out:
        import nest

        try:
            nest.verbosity = nest.VerbosityLevel.ERROR
        except AttributeError:
            nest.set_verbosity("M_ERROR")

        t_build0 = time.perf_counter()
        nest.ResetKernel()
        nest.SetKernelStatus(
            {
                "resolution": DT_MS,
                "local_num_threads": args.threads,
                "rng_seed": args.seed,
                "print_time": False,
            }
        )

        if args.model == "cuba":
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
        nest.Connect(pop_e, pop, conn, {"synapse_model": "static_synapse", "weight": w_e, "delay": DELAY_MS})
        nest.Connect(pop_i, pop, conn, {"synapse_model": "static_synapse", "weight": w_i, "delay": DELAY_MS})

        rec_e = nest.Create("spike_recorder")
        rec_i = nest.Create("spike_recorder")
        nest.Connect(pop_e, rec_e)
        nest.Connect(pop_i, rec_i)
        t_build1 = time.perf_counter()

        nest.Prepare()
        t_prep = time.perf_counter()
        nest.Run(args.duration_ms)
        t_run = time.perf_counter()
        nest.Cleanup()
        t_sim1 = time.perf_counter()

        n_e = int(rec_e.get("n_events"))
        n_i = int(rec_i.get("n_events"))
        n_syn = int(nest.GetKernelStatus("num_connections")) - N  # minus the recorder links
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
                "simulate_s": t_sim1 - t_build1,
                "total_s": total_s,
                "rate_e_hz": rate_hz(n_e, N_E, args.duration_ms),
                "rate_i_hz": rate_hz(n_i, N_I, args.duration_ms),
                "detail": {
                    "prepare_s": t_prep - t_build1,
                    "run_s": t_run - t_prep,
                    "cleanup_s": t_sim1 - t_run,
                    "import_s": t_build0 - T0,
                    "neuron_model": "iaf_psc_exp" if args.model == "cuba" else "iaf_cond_exp",
                },
            }
        )


if __name__ == "__main__":
    main()
