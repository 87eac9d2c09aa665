#!/usr/bin/env python3
"""Writes NEST's `hpc_benchmark` network as a fum model: a balanced random network of
scale x 11,250 iaf_psc_alpha neurons (80 % E) with power-law STDP (stdp_pl_synapse_hom) on
E->E (Morrison, Aertsen & Diesmann 2007; Helias et al. 2012; Kunkel et al. 2014), with the
parameters of NEST's `pynest/examples/hpc_benchmark.py` (NEST 3.x).
assets/models/hpc_benchmark.toml is its output as `hpc_benchmark.py assets/models/hpc_benchmark.toml`.

Usage: hpc_benchmark.py OUT.toml [--scale F] [--indegree F] [--duration-ms T] [--seed S]

The network, as the NEST script builds it:
- NE = 9000 scale, NI = 2250 scale; every neuron gets CE = 9000 E and CI = 2250 I sources
  (fixed in-degree, multapses allowed, no autapses): the in-degree does not scale with the
  network (CE = NE / scale in the script).
- iaf_psc_alpha: E_L 0, C_m 250 pF, tau_m 10 ms, t_ref 0.5 ms, V_th 20 mV, V_reset 0,
  tau_syn 0.3258 ms (chosen in the script for a 1.7 ms EPSP rise time), V_m ~ N(5.7, 7.2) mV.
- Weights: JE = 0.14 mV peak EPSP, converted to a PSC amplitude JE_pA; inhibitory g = -5 times
  that. Delay 1.5 ms everywhere.
- E->E: stdp_pl_synapse_hom, lambda 0.1, alpha 0.0513, mu 0.4, tau_plus 15 ms, and the neurons'
  tau_minus 30 ms; initial weight JE_pA; the delay counted as dendritic in pairing, as NEST
  does (`dendritic_delay`).
- Input: one poisson_generator of rate nu_ext CE into every neuron (an independent train each,
  weight JE_pA), nu_ext = eta nu_thresh, eta = 1.685.

The script's note on scale: at scale 1 (its default, 11,250 neurons with 9000 + 2250 inputs each)
neurons share many inputs, the correlations drive the weights up, and the network drifts
towards synchrony over seconds; NEST recommends scale > 10 for the benchmark proper and runs
50 ms of presimulation and 250 ms at scale 1. Differences from the NEST script here: no
presimulation (run.json and the spike file cover the whole run, the onset included).

Only the standard library is used; every number in the model file is computed here, and
benchmarks/peers/nest_hpc.py imports `parameters()` so that NEST runs the same numbers."""
import math
import sys

TAU_SYN_MS = 0.32582722403722841  # the script's value, for t_rise = 1.700759 ms
NEURON = {"E_L": 0.0, "C_m": 250.0, "tau_m": 10.0, "t_ref": 0.5, "V_th": 20.0, "V_reset": 0.0}
V_MEAN_MV, V_STD_MV = 5.7, 7.2
DELAY_MS = 1.5
JE_MV = 0.14
G = -5.0
ETA = 1.685
STDP = {"alpha": 0.0513, "lambda": 0.1, "mu": 0.4, "tau_plus": 15.0, "tau_minus": 30.0}
DT_MS = 0.1
SEED = 55  # the script's nest.rng_seed


def lambert_w_minus1(x):
    """The lower branch W_{-1}(x) for -1/e <= x < 0 (Halley's iteration; the script calls
    scipy's lambertw(x, k=-1))."""
    if not -1.0 / math.e <= x < 0.0:
        raise ValueError(f"W_-1 is real on [-1/e, 0) only, not at {x}")
    w = min(math.log(-x) - math.log(-math.log(-x)), -1.0)  # the asymptote as x -> 0-
    for _ in range(100):
        ew = math.exp(w)
        f = w * ew - x
        step = f / (ew * (w + 1.0) - (w + 2.0) * f / (2.0 * w + 2.0))
        w -= step
        if abs(step) <= 1e-15 * abs(w):
            break
    return w


def psc_per_mv(tau_m, tau_syn, c_m):
    """pA of an alpha PSC whose EPSP at rest peaks at 1 mV (the script's convert_synapse_weight)."""
    a = tau_m / tau_syn
    b = 1.0 / tau_syn - 1.0 / tau_m
    t_rise = 1.0 / b * (-lambert_w_minus1(-math.exp(-1.0 / a) / a) - 1.0 / a)
    v_max = math.exp(1.0) / (tau_syn * c_m * b) * (
        (math.exp(-t_rise / tau_m) - math.exp(-t_rise / tau_syn)) / b - t_rise * math.exp(-t_rise / tau_syn)
    )
    return 1.0 / v_max


def parameters(scale=1.0, indegree=1.0):
    """Every derived number of the network at `scale`, with the in-degrees times `indegree`
    (1 in NEST's script; the Poisson drive per neuron, nu_ext CE, does not depend on it)."""
    ne, ni = int(9000 * scale), int(2250 * scale)
    ce, ci = int(9000 * indegree), int(2250 * indegree)
    je_pa = psc_per_mv(NEURON["tau_m"], TAU_SYN_MS, NEURON["C_m"]) * JE_MV
    nu_thresh = NEURON["V_th"] / (ce * NEURON["tau_m"] / NEURON["C_m"] * je_pa * math.exp(1.0) * TAU_SYN_MS)
    return {
        "ne": ne,
        "ni": ni,
        "ce": ce,
        "ci": ci,
        "je_pa": je_pa,
        "ji_pa": G * je_pa,
        "poisson_hz": nu_thresh * ETA * ce * 1000.0,
    }


def model_toml(scale=1.0, duration_ms=1000.0, seed=SEED, indegree=1.0, stdp=True):
    p = parameters(scale, indegree)
    out = [
        f"# NEST's hpc_benchmark at scale {scale:g}, in-degree x {indegree:g}: written by benchmarks/models/hpc_benchmark.py (see its",
        "# docstring for the network and what differs from NEST's script); edit the script, not this file.",
        f"# {p['ne'] + p['ni']:,} lif_psc_alpha neurons (NEST iaf_psc_alpha), in-degree {p['ce']} E + {p['ci']} I,",
        f"# {(p['ne'] + p['ni']) * (p['ce'] + p['ci']):,} synapses; JE = {JE_MV} mV peak EPSP = {p['je_pa']:.6f} pA;",
        f"# power-law STDP on E->E (stdp_pl_synapse_hom); Poisson drive {p['poisson_hz']:.3f} Hz per neuron.",
        "",
        "[simulation]",
        f"dt_ms = {DT_MS}",
        f"duration_ms = {duration_ms}",
        f"seed = {seed}",
    ]
    for name, size in (("E", p["ne"]), ("I", p["ni"])):
        out += [
            "",
            "[[populations]]",
            f'name = "{name}"',
            f"size = {size}",
            'model = "lif_psc_alpha"',
            f"c_m_pf = {NEURON['C_m']}",
            f"tau_m_ms = {NEURON['tau_m']}",
            f"tau_syn_ex_ms = {TAU_SYN_MS!r}",
            f"tau_syn_in_ms = {TAU_SYN_MS!r}",
            f"t_ref_ms = {NEURON['t_ref']}",
            f"e_l_mv = {NEURON['E_L']}",
            f"v_th_mv = {NEURON['V_th']}",
            f"v_reset_mv = {NEURON['V_reset']}",
            f"v_init_mv = {{ normal = [{V_MEAN_MV}, {V_STD_MV}] }}",
        ]
    out += [] if not stdp else [
        "",
        "[[plasticity]]",
        'name = "stdp_pl"',
        'weight_dependence = "power_law"',
        f"lambda = {STDP['lambda']}",
        f"alpha = {STDP['alpha']}",
        f"mu = {STDP['mu']}",
        f"tau_plus_ms = {STDP['tau_plus']}",
        f"tau_minus_ms = {STDP['tau_minus']}   # NEST: the neurons' tau_minus",
        "dendritic_delay = true   # NEST's timing: the whole delay is dendritic",
    ]
    projections = [
        ("E_to_E", "E", "E", p["ce"], "excitatory", p["je_pa"], "stdp_pl" if stdp else None),
        ("I_to_E", "I", "E", p["ci"], "inhibitory", -p["ji_pa"], None),
        ("E_to_I", "E", "I", p["ce"], "excitatory", p["je_pa"], None),
        ("I_to_I", "I", "I", p["ci"], "inhibitory", -p["ji_pa"], None),
    ]
    for name, src, tgt, k, receptor, w, rule in projections:
        out += [
            "",
            "[[projections]]",
            f'name = "{name}"',
            f'source = "{src}"',
            f'target = "{tgt}"',
            f"rule = {{ fixed_indegree = {k} }}",
            f'receptor = "{receptor}"',
            f"weight = {w!r}",
            f"delay_ms = {DELAY_MS}",
            "allow_autapses = false",
        ]
        if rule:
            out.append(f'plasticity = "{rule}"')
    for tgt in ("E", "I"):
        out += [
            "",
            "[[inputs]]",
            f'name = "poisson_{tgt}"',
            'kind = "poisson"',
            f'target = "{tgt}"',
            f"rate_hz = {p['poisson_hz']!r}",
            f"weight = {p['je_pa']!r}",
        ]
    out += [
        "",
        "[recording]",
        'spikes = ["E", "I"]',
        "",
    ]
    return "\n".join(out)


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__.split("\n\n")[1])
    opts = {"--scale": 1.0, "--indegree": 1.0, "--duration-ms": 1000.0, "--seed": SEED}
    rest = args[1:]
    while rest:
        key, value = rest[0], rest[1] if len(rest) > 1 else None
        if key not in opts or value is None:
            sys.exit(f"unknown option or missing value: {key}")
        opts[key] = type(opts[key])(value)
        rest = rest[2:]
    with open(args[0], "w") as f:
        f.write(model_toml(opts["--scale"], opts["--duration-ms"], opts["--seed"], opts["--indegree"]))


if __name__ == "__main__":
    main()
