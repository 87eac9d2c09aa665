"""Helpers shared by the peer benchmark scripts (brian2_va.py, nest_va.py, nest_brunel.py,
brian2cuda_brunel.py) and run_peer.py.

Each peer script prints exactly one JSON line to stdout. Simulators and compilers print
banners and progress to stdout, so the scripts move fd 1 onto stderr while they work and
write the JSON line to the saved original stdout at the end.
"""

import argparse
import json
import os

N_E = 3200
N_I = 800
N = N_E + N_I
P_CONN = 0.02
DT_MS = 0.1
DELAY_MS = 0.1


# Additive all-to-all STDP on E->E of assets/models/stdp_balanced.toml (weights in pA).
STDP_BALANCED = {
    "tau_plus_ms": 20.0,
    "tau_minus_ms": 20.0,
    "a_plus": 0.005,
    "a_minus": 0.00525,
    "w_min": 0.0,
    "w_max": 32.4,
}

# Integrators: "reference" is what the peer's own reference script for the model uses (for
# Brian2's COBA: forward Euler, as in R. Brette's benchmark-1 script), "matched" the scheme fum
# uses (lif_coba: exponential Euler). They differ only for the COBA model in Brian2.
INTEGRATORS = ("reference", "matched")


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--model",
        choices=["cuba", "coba", "stdp"],
        required=True,
        help="cuba / coba: assets/models/vogels_abbott_{cuba,coba}.toml; "
        "stdp: assets/models/stdp_balanced.toml (CUBA with STDP on E->E)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--duration-ms", type=float, default=1000.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--integrator",
        choices=INTEGRATORS,
        default="reference",
        help="COBA only: reference (the peer's reference scheme) or matched (fum's: exponential Euler)",
    )
    return p


class StdoutToStderr:
    """Redirect fd 1 to fd 2 (also for C/C++ code and subprocesses); emit() writes to the real stdout."""

    def __enter__(self):
        import sys

        sys.stdout.flush()
        self._saved = os.dup(1)
        os.dup2(2, 1)
        return self

    def __exit__(self, *exc):
        import sys

        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)
        return False

    def emit(self, obj):
        line = json.dumps(obj, sort_keys=False) + "\n"
        os.write(self._saved, line.encode())


def rate_hz(n_spikes, n_neurons, duration_ms):
    return float(n_spikes) / (n_neurons * duration_ms * 1e-3)


def nest_start(threads, seed):
    """Imports NEST quietly and resets its kernel (dt DT_MS, `threads` threads, `seed`).

    Returns (nest, t_build0): the module and the perf_counter reading where network
    construction starts (the reset is part of it, the import is not).
    """
    import time

    import nest

    try:
        nest.verbosity = nest.VerbosityLevel.ERROR
    except AttributeError:
        nest.set_verbosity("M_ERROR")
    t_build0 = time.perf_counter()
    nest.ResetKernel()
    nest.SetKernelStatus({"resolution": DT_MS, "local_num_threads": threads, "rng_seed": seed, "print_time": False})
    return nest, t_build0


def nest_stdp_model(nest, tau_plus_ms, a_plus, a_minus, w_max):
    """Defines "stdp_ee": NEST's stdp_synapse as fum's additive all-to-all rule (mu = 0,
    lambda = a_plus, alpha = a_minus / a_plus)."""
    nest.CopyModel(
        "stdp_synapse",
        "stdp_ee",
        {
            "tau_plus": tau_plus_ms,
            "lambda": a_plus,
            "alpha": a_minus / a_plus,
            "mu_plus": 0.0,
            "mu_minus": 0.0,
            "Wmax": w_max,
        },
    )


def nest_record_and_run(nest, pop_e, pop_i, duration_ms, sample=None):
    """Records both populations' spikes and runs NEST for duration_ms (Prepare, Run, Cleanup).
    With `sample`, only the first `sample` neurons of each population are recorded: NEST 3.10
    spends about 32 kB of memory per neuron connected to a spike_recorder (a connector block per
    source), 32 GB for a million neurons.

    Returns (build_end, times, n_spikes_e, n_spikes_i, recorder_e): build_end is the
    perf_counter reading after the recorders were connected (the end of network construction),
    times holds simulate_s (Prepare to Cleanup) and its parts prepare_s, run_s and cleanup_s.
    """
    import time

    rec_e = nest.Create("spike_recorder")
    rec_i = nest.Create("spike_recorder")
    nest.Connect(pop_e if sample is None else pop_e[:sample], rec_e)
    nest.Connect(pop_i if sample is None else pop_i[:sample], rec_i)
    t_build1 = time.perf_counter()
    nest.Prepare()
    t_prep = time.perf_counter()
    nest.Run(duration_ms)
    t_run = time.perf_counter()
    nest.Cleanup()
    t_sim1 = time.perf_counter()
    times = {"simulate_s": t_sim1 - t_build1, "prepare_s": t_prep - t_build1, "run_s": t_run - t_prep, "cleanup_s": t_sim1 - t_run}
    return t_build1, times, int(rec_e.get("n_events")), int(rec_i.get("n_events")), rec_e


def nest_weight_stats(nest, pop):
    """Mean and standard deviation of the weights of pop -> pop (slow: ~10 s per million synapses)."""
    import numpy as np

    w = np.asarray(nest.GetConnections(pop, pop).get("weight"), dtype=np.float64)
    return {"w_ee_mean_pa": float(w.mean()), "w_ee_std_pa": float(w.std())}
