#!/usr/bin/env python3
"""Writes the Potjans & Diesmann (2014) cortical microcircuit as a fum model: 77,169 iaf_psc_exp
neurons in 8 populations (L23E, L23I, L4E, L4I, L5E, L5I, L6E, L6I), ~0.3e9 synapses, Poisson
background input; the parameters of NEST's PyNEST example `Potjans_2014` (network_params.py,
sim_params.py, helpers.py) at full scale, without thalamic or DC input (the example's default).
assets/models/microcircuit.toml is its output as `microcircuit.py assets/models/microcircuit.toml`
(tests/microcircuit.rs checks that the two agree).

Usage: microcircuit.py OUT.toml [--scale F]

--scale F multiplies the population sizes and the synapses of every projection by F (rounded
half to even, as NumPy's round in the example: its N_scaling = F with K_scaling = 1), so the
mean in-degrees, the external input and the weights stay as at full scale (the example's
K_scaling < 1 instead thins the in-degrees and compensates with weights and DC input).
Keeping in-degrees keeps the mean input, but a neuron then shares more of its sources with its
neighbours, and the correlations this brings move the rates: at 0.1, L23E fires at about
1.3-1.7 Hz and L5E at 9-10 Hz instead of 0.87 and 7.6 (fum, 1 s, measured with the
fixed-in-degree variant this script wrote before).

Only the standard library is used; every number in the model file is computed here."""
import math
import sys

# --- The NEST example's parameters (network_params.py, sim_params.py) ------------------------
POPULATIONS = ["L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I"]
N_FULL = [20683, 5834, 21915, 5479, 4850, 1065, 14395, 2948]
# Connection probabilities: row = target, column = source (the example's conn_probs).
CONN_PROBS = [
    [0.1009, 0.1689, 0.0437, 0.0818, 0.0323, 0.0,    0.0076, 0.0],
    [0.1346, 0.1371, 0.0316, 0.0515, 0.0755, 0.0,    0.0042, 0.0],
    [0.0077, 0.0059, 0.0497, 0.135,  0.0067, 0.0003, 0.0453, 0.0],
    [0.0691, 0.0029, 0.0794, 0.1597, 0.0033, 0.0,    0.1057, 0.0],
    [0.1004, 0.0622, 0.0505, 0.0057, 0.0831, 0.3726, 0.0204, 0.0],
    [0.0548, 0.0269, 0.0257, 0.0022, 0.06,   0.3158, 0.0086, 0.0],
    [0.0156, 0.0066, 0.0211, 0.0166, 0.0572, 0.0197, 0.0396, 0.2252],
    [0.0364, 0.001,  0.0034, 0.0005, 0.0277, 0.008,  0.0658, 0.1443],
]
K_EXT = [1600, 1500, 2100, 1900, 2000, 1900, 2900, 2100]
BG_RATE_HZ = 8.0
PSP_EXC_MEAN_MV = 0.15      # mean peak EPSP; converted to a PSC amplitude below
WEIGHT_REL_STD = 0.1
G = -4.0                    # relative inhibitory strength
DELAY_EXC_MEAN_MS = 1.5
DELAY_INH_MEAN_MS = 0.75
DELAY_REL_STD = 0.5
# V0_type = 'optimized' (the example's default): a normal per population.
V0_MEAN_MV = [-68.28, -63.16, -63.33, -63.45, -63.11, -61.66, -66.72, -61.43]
V0_STD_MV = [5.36, 4.57, 4.74, 4.94, 4.94, 4.55, 5.46, 4.48]
C_M_PF, TAU_M_MS, TAU_SYN_MS, T_REF_MS = 250.0, 10.0, 0.5, 2.0
E_L_MV, V_TH_MV, V_RESET_MV = -65.0, -50.0, -65.0
DT_MS, T_SIM_MS, SEED = 0.1, 1000.0, 555  # sim_params: resolution, t_sim, master_seed


def psc_over_psp(c_m, tau_m, tau_syn):
    """pA of PSC amplitude per mV of PSP peak for a current-based exponential synapse: the PSP
    of a unit current jump is tau_s tau_m / (C (tau_m - tau_s)) (e^{-t/tau_m} - e^{-t/tau_s}),
    largest at t* = tau_m tau_s ln(tau_m / tau_s) / (tau_m - tau_s) (the example's helper
    postsynaptic_potential_to_current gives the same)."""
    t_peak = tau_m * tau_syn * math.log(tau_m / tau_syn) / (tau_m - tau_syn)
    peak = tau_syn * tau_m / (c_m * (tau_m - tau_syn)) * (math.exp(-t_peak / tau_m) - math.exp(-t_peak / tau_syn))
    return 1.0 / peak


def total_synapses(p, n_pre, n_post):
    """The example's num_synapses_from_conn_probs, rounded as its network.py rounds it: the
    number of synapses drawn with replacement among n_pre x n_post pairs that leaves a pair
    connected with probability p."""
    return round(math.log(1.0 - p) / math.log(1.0 - 1.0 / (n_pre * n_post)))


def normal_cdf(x, mean, sd):
    return 0.5 * (1.0 + math.erf((x - mean) / (sd * math.sqrt(2.0))))


def mean_delays_ms(mean, sd, dt):
    """Mean delay as fum draws it (a normal rounded to steps, at least one step) and as NEST
    draws it (a normal redrawn below dt/2, then rounded to steps), and the fraction of draws
    below dt/2 (which fum puts at one step and NEST redraws)."""
    below = normal_cdf(0.5 * dt, mean, sd)
    fum = nest = 0.0
    for k in range(1, int((mean + 12 * sd) / dt) + 2):
        p = normal_cdf((k + 0.5) * dt, mean, sd) - normal_cdf((k - 0.5) * dt, mean, sd)
        fum += k * dt * (p + (below if k == 1 else 0.0))
        nest += k * dt * p / (1.0 - below)
    return fum, nest, below


def main():
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    out = sys.argv[1]
    scale = float(sys.argv[sys.argv.index("--scale") + 1]) if "--scale" in sys.argv else 1.0
    sizes = [max(1, round(n * scale)) for n in N_FULL]
    w_exc = PSP_EXC_MEAN_MV * psc_over_psp(C_M_PF, TAU_M_MS, TAU_SYN_MS)

    # The projections, in the example's order (targets, then sources).
    projections, synapses, count = "", 0, 0
    for i, target in enumerate(POPULATIONS):
        for j, source in enumerate(POPULATIONS):
            p = CONN_PROBS[i][j]
            if p == 0.0:
                continue
            k_total = round(total_synapses(p, N_FULL[j], N_FULL[i]) * scale)
            synapses += k_total
            count += 1
            excitatory = j % 2 == 0
            w = w_exc * (2.0 if (i, j) == (0, 2) else 1.0) * (1.0 if excitatory else -G)
            d = DELAY_EXC_MEAN_MS if excitatory else DELAY_INH_MEAN_MS
            projections += f"""
# p = {p}: {k_total / sizes[i]:.2f} synapses per target neuron on average
[[projections]]
name = "{source}_to_{target}"
source = "{source}"
target = "{target}"
rule = {{ fixed_total_number = {k_total} }}
receptor = "{'excitatory' if excitatory else 'inhibitory'}"
weight = {{ normal = [{w:.4f}, {w * WEIGHT_REL_STD:.4f}] }}
delay_ms = {{ normal = [{d}, {d * DELAY_REL_STD}] }}
""" + ("allow_autapses = true\n" if source == target else "")

    fum_exc, nest_exc, below_exc = mean_delays_ms(DELAY_EXC_MEAN_MS, DELAY_EXC_MEAN_MS * DELAY_REL_STD, DT_MS)
    fum_inh, nest_inh, below_inh = mean_delays_ms(DELAY_INH_MEAN_MS, DELAY_INH_MEAN_MS * DELAY_REL_STD, DT_MS)
    text = f"""# The Potjans & Diesmann (2014) cortical microcircuit (Cereb. Cortex 24:785), as NEST's PyNEST
# example Potjans_2014 defines it (network_params.py, sim_params.py; no thalamic or DC input).
# Generated by benchmarks/models/microcircuit.py{'' if scale == 1.0 else f' --scale {scale}'}: edit the script, not this file.
#
# {sum(sizes):,} iaf_psc_exp neurons (lif_cuba) in 8 populations, {synapses:,} synapses in {count} projections.
# C_m {C_M_PF:g} pF, tau_m {TAU_M_MS:g} ms, tau_syn {TAU_SYN_MS:g} ms, t_ref {T_REF_MS:g} ms, E_L = V_reset = {E_L_MV:g} mV, V_th {V_TH_MV:g} mV.
# Initial V: the example's default V0_type = 'optimized', a normal per population.
# Weights: PSC amplitude {w_exc:.4f} pA (a {PSP_EXC_MEAN_MV:g} mV peak EPSP), relative sd {WEIGHT_REL_STD:g}, L4E->L23E doubled,
# inhibitory {-G:g} x as strong (receptor "inhibitory"). Delays: normal, excitatory {DELAY_EXC_MEAN_MS:g} +- {DELAY_EXC_MEAN_MS * DELAY_REL_STD:g} ms,
# inhibitory {DELAY_INH_MEAN_MS:g} +- {DELAY_INH_MEAN_MS * DELAY_REL_STD:g} ms. Background: an independent Poisson train of {BG_RATE_HZ:g} Hz x K_ext into
# every neuron, weight {w_exc:.4f} pA.
#
# Connectivity as NEST draws it: K_total = round(ln(1 - p) / ln(1 - 1/(N_pre N_post))) synapses
# per projection with p > 0 (fixed_total_number: each synapse's source and target uniform,
# multapses and autapses allowed), so in- and out-degrees are binomial around K_total / N_post
# and K_total / N_pre. The same rule and totals as NEST, not NEST's random numbers: the synapses
# are another draw of the same distribution.
# (This file used to be the fixed-in-degree variant, as PyNN's and GeNN's versions of the model
# build it: every target neuron had exactly round(K_total / N_post) sources, and L5I->L4E, whose
# in-degree rounds to 0, was left out: 298,905,266 synapses in 54 projections. The microcircuit
# measurements in benchmarks/RESULTS.md from before this change are of that variant.)
# Differences from the NEST example:
# - A weight draw below 0 would be clipped to 0 (NEST redraws it); at 10 sd it never happens.
# - A delay is rounded to whole steps and clipped to at least one step (dt = {DT_MS:g} ms); NEST
#   redraws draws below dt/2. So the {100 * below_exc:.1f} % of excitatory and {100 * below_inh:.1f} % of inhibitory draws below
#   dt/2 become one step here instead of being redrawn: mean delays {fum_exc:.3f} and {fum_inh:.3f} ms here
#   against {nest_exc:.3f} and {nest_inh:.3f} ms in NEST (its truncated normals).
# - The background reaches the neurons without the example's 1.5 ms generator delay, and there
#   is no presimulation: the example simulates 500 ms before the 1000 ms it evaluates, while here
#   run.json's rates cover the whole run, the onset included.
"""
    if scale != 1.0:
        text += f"""#
# Scaled by {scale}: population sizes x {scale} (rounded); in-degrees, input and weights as at
# full scale (the synapse counts above are of this scaled network).
"""
    text += f"""[simulation]
dt_ms = {DT_MS}
duration_ms = {T_SIM_MS}
seed = {SEED}
"""
    for i, name in enumerate(POPULATIONS):
        text += f"""
[[populations]]
name = "{name}"
size = {sizes[i]}
model = "lif_cuba"
c_m_pf = {C_M_PF}
tau_m_ms = {TAU_M_MS}
tau_syn_ex_ms = {TAU_SYN_MS}
tau_syn_in_ms = {TAU_SYN_MS}
t_ref_ms = {T_REF_MS}
e_l_mv = {E_L_MV}
v_th_mv = {V_TH_MV}
v_reset_mv = {V_RESET_MV}
v_init_mv = {{ normal = [{V0_MEAN_MV[i]}, {V0_STD_MV[i]}] }}
"""
    text += projections
    for i, name in enumerate(POPULATIONS):
        text += f"""
[[inputs]]
name = "background_{name}"
kind = "poisson"
target = "{name}"
rate_hz = {BG_RATE_HZ * K_EXT[i]}  # {BG_RATE_HZ:g} Hz x K_ext = {K_EXT[i]}
weight = {w_exc:.4f}
"""
    text += f"""
[recording]
spikes = [{", ".join(f'"{p}"' for p in POPULATIONS)}]
"""
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
