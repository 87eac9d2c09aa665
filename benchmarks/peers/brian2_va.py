#!/usr/bin/env python3
"""Vogels-Abbott benchmark network (CUBA / COBA / CUBA with STDP) in Brian2, C++ standalone mode.

Same network as assets/models/vogels_abbott_{cuba,coba}.toml: 3200 E + 800 I LIF neurons,
fixed connection probability 0.02 without autapses, homogeneous delay 0.1 ms, dt 0.1 ms.
--model stdp is assets/models/stdp_balanced.toml: the CUBA network with additive all-to-all
STDP on E->E (tau+- 20 ms, a+ 0.005, a- 0.00525 of w_max, w in [0, 32.4 pA] from 16.2 pA), the
traces kept in the neurons and paired at the neurons' spike times (a zero-delay plasticity
pathway; the current still arrives after 0.1 ms), as in fum and brian2cuda_brunel.py.

Integrators (--integrator): CUBA and STDP are linear, integrated exactly ("exact", Brian2's CUBA
example uses the same). COBA: "reference" is forward Euler (method='euler', as R. Brette's
Brian benchmark-1 script), "matched" is exponential Euler (method='exponential_euler', fum's
lif_coba scheme).

Prints one JSON line to stdout:
  peer, version, model, threads, neurons, synapses, build_s, simulate_s, total_s, rate_e_hz,
  rate_i_hz, integrator, dtype, settings
plus a "detail" object with the parts of build_s.

Timing:
  simulate_s  Brian2's own timer around the simulation loop inside the compiled binary
              (Network::run; written to results/last_run_info.txt and read back by Brian2 as
              device._last_run_time). With OpenMP it is omp_get_wtime() wall time; without
              OpenMP (threads == 1, serial code) it is std::clock() CPU time of the process,
              which for a single-threaded process is its wall time.
  build_s     wall time from the first Brian2 object to the end of device.build(), minus
              simulate_s: Python network construction, code generation, compilation, and the
              binary's own set-up (synapse generation, initial values) and tear-down (writing
              results). Imports are not in build_s.
  total_s     wall time of the whole script, imports included.
"""

import time

T0 = time.perf_counter()

import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    DELAY_MS,
    DT_MS,
    N,
    N_E,
    N_I,
    P_CONN,
    STDP_BALANCED,
    StdoutToStderr,
    parse_args,
    rate_hz,
)


def main():
    ap = parse_args(__doc__.splitlines()[1])
    ap.add_argument(
        "--openmp-threads",
        type=int,
        default=None,
        help="override prefs.devices.cpp_standalone.openmp_threads "
        "(default: 0, i.e. serial code, for --threads 1; otherwise --threads)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the build directory")
    args = ap.parse_args()

    with StdoutToStderr() as out:
        import brian2 as b2
        import numpy as np
        from brian2 import ms, mV, nS, pF

        b2.BrianLogger.log_level_error()
        b2.prefs.logging.file_log = False
        b2.prefs.logging.delete_log_on_exit = True

        workdir = tempfile.mkdtemp(prefix="brian2_va_")
        b2.set_device("cpp_standalone", directory=workdir, build_on_run=False)
        omp = args.openmp_threads
        if omp is None:
            omp = 0 if args.threads <= 1 else args.threads
        b2.prefs.devices.cpp_standalone.openmp_threads = omp
        # Brian2's default is an unbounded "make -j"; bound it by the core count.
        b2.prefs.devices.cpp_standalone.extra_make_args_unix = ["-j", str(os.cpu_count() or 1)]

        t_build0 = time.perf_counter()
        b2.defaultclock.dt = DT_MS * ms
        b2.seed(args.seed)

        taum, taue, taui = 20 * ms, 5 * ms, 10 * ms
        Vt, Vr = -50 * mV, -60 * mV
        reset = "v = Vr"
        if args.model in ("cuba", "stdp"):
            # Brian2's CUBA example: synaptic "currents" expressed as voltages (pA * 1/g_L,
            # g_L = C_m / tau_m = 10 nS: 16.2 pA -> 1.62 mV, 90 pA -> 9 mV).
            El = -49 * mV
            eqs = """
            dv/dt  = (ge + gi - (v - El)) / taum : volt (unless refractory)
            dge/dt = -ge / taue : volt
            dgi/dt = -gi / taui : volt
            """
            we, wi = 1.62 * mV, -9 * mV
            method = "exact"
            if args.model == "stdp":
                st = STDP_BALANCED
                assert st["tau_plus_ms"] == st["tau_minus_ms"]  # one trace per neuron serves both
                tau_stdp = st["tau_plus_ms"] * ms
                a_plus, a_minus = st["a_plus"], st["a_minus"]
                g_l_ns = 10.0  # pA -> mV
                w_min, w_max = st["w_min"] / g_l_ns * mV, st["w_max"] / g_l_ns * mV
                eqs += "dx/dt = -x / tau_stdp : 1\n"
                # Traces are bumped in the reset, after the step's synaptic updates: a pre and a
                # post spike in the same step do not pair (as in fum).
                reset = "v = Vr; x += 1"
        else:
            # Brian2's COBA benchmark.
            C, gl = 200 * pF, 10 * nS
            El, Ee, Ei = -60 * mV, 0 * mV, -80 * mV
            eqs = """
            dv/dt  = (gl * (El - v) + ge * (Ee - v) + gi * (Ei - v)) / C : volt (unless refractory)
            dge/dt = -ge / taue : siemens
            dgi/dt = -gi / taui : siemens
            """
            we, wi = 6 * nS, 67 * nS
            method = "euler" if args.integrator == "reference" else "exponential_euler"

        P = b2.NeuronGroup(
            N,
            eqs,
            threshold="v > Vt",
            reset=reset,
            refractory=5 * ms,
            method=method,
        )
        if args.model in ("cuba", "stdp"):
            P.v = "Vr + rand() * (Vt - Vr)"
            P.ge = 0 * mV
            P.gi = 0 * mV
        else:
            P.v = "-65*mV + 5*mV * randn()"
            P.ge = "40*nS + 15*nS * randn()"
            P.gi = "200*nS + 120*nS * randn()"

        Pe = P[:N_E]
        Pi = P[N_E:]
        delay = DELAY_MS * ms
        if args.model == "stdp":
            Cee = b2.Synapses(
                Pe,
                Pe,
                model="w : volt",
                on_pre={
                    "pre": "ge_post += w",
                    "stdp": "w = clip(w - a_minus * w_max * x_post, w_min, w_max)",
                },
                on_post="w = clip(w + a_plus * w_max * x_pre, w_min, w_max)",
                delay={"pre": delay, "stdp": 0 * ms},
            )
            Cei = b2.Synapses(Pe, Pi, on_pre="ge += we", delay=delay)
            Cee.connect(condition="i != j", p=P_CONN)
            Cee.w = "we"
            Cei.connect(p=P_CONN)
            exc = [Cee, Cei]
        else:
            Ce = b2.Synapses(Pe, P, on_pre="ge += we", delay=delay)
            # i is the index within the source subgroup, j within P: exclude autapses.
            Ce.connect(condition="i != j", p=P_CONN)
            exc = [Ce]
        Ci = b2.Synapses(Pi, P, on_pre="gi += wi", delay=delay)
        Ci.connect(condition=f"i + {N_E} != j", p=P_CONN)

        mon = b2.SpikeMonitor(P)
        b2.run(args.duration_ms * ms)
        t_code0 = time.perf_counter()
        b2.device.build(directory=workdir, compile=True, run=True, debug=False)
        t_build1 = time.perf_counter()

        simulate_s = float(b2.device._last_run_time)
        frac = float(getattr(b2.device, "_last_run_completed_fraction", 1.0))
        timers = b2.device.timers
        compile_s = float(timers["compile"].get("make") or 0.0) + float(
            timers["compile"].get("clean") or 0.0
        )
        binary_s = float(timers.get("run_binary") or 0.0)
        counts = mon.count[:]
        n_e = int(counts[:N_E].sum())
        n_i = int(counts[N_E:].sum())
        n_syn = int(sum(len(c) for c in exc) + len(Ci))
        extra = {}
        if args.model == "stdp":
            w_ee = np.asarray(Cee.w[:] / mV, dtype=np.float64) * g_l_ns  # pA
            extra = {"w_ee_mean_pa": float(w_ee.mean()), "w_ee_std_pa": float(w_ee.std())}
        flags = " ".join(b2.prefs.codegen.cpp.extra_compile_args_gcc)
        settings = (
            f"C++ standalone (cpp_standalone), g++ {flags} (Brian2's defaults), "
            + (f"OpenMP {omp} threads" if omp else "serial code (no OpenMP)")
            + f", {np.dtype(b2.prefs.core.default_float_dtype).name}, make -j{os.cpu_count() or 1}"
        )

        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        total_s = time.perf_counter() - T0

        out.emit(
            {
                "peer": "brian2",
                "version": b2.__version__,
                "model": args.model,
                "threads": args.threads,
                "neurons": N,
                "synapses": n_syn,
                "duration_ms": args.duration_ms,
                "build_s": (t_build1 - t_build0) - simulate_s,
                "simulate_s": simulate_s,
                "total_s": total_s,
                "rate_e_hz": rate_hz(n_e, N_E, args.duration_ms),
                "rate_i_hz": rate_hz(n_i, N_I, args.duration_ms),
                **extra,
                "integrator": method,
                "dtype": np.dtype(b2.prefs.core.default_float_dtype).name,
                "settings": settings,
                "detail": {
                    "openmp_threads": omp,
                    "construct_s": t_code0 - t_build0,
                    "codegen_s": (t_build1 - t_code0) - compile_s - binary_s,
                    "compile_s": compile_s,
                    "binary_s": binary_s,
                    "binary_setup_teardown_s": binary_s - simulate_s,
                    "completed_fraction": frac,
                    "import_s": t_build0 - T0,
                    "workdir": workdir if args.keep else None,
                },
            }
        )


if __name__ == "__main__":
    main()
