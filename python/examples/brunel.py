# %% [markdown]
# # The Brunel (2000) balanced network in fum
#
# Model A of Brunel (2000, J Comput Neurosci 8:183): 10,000 excitatory and 2,500 inhibitory
# leaky integrate-and-fire neurons, each receiving C_E = 1000 excitatory and C_I = 250
# inhibitory synapses and an external Poisson drive, with relative inhibition g = 5 and drive
# eta = 2: the asynchronous irregular regime (his Fig. 8C). It is the network of
# `assets/models/brunel.toml`, built here in Python; `--from-toml` loads that file instead and
# gives the same spikes.
#
# As a script (the figure goes to `--out`):
#
#     MPLBACKEND=Agg python python/examples/brunel.py --out runs/example --duration-ms 1000
#
# As a notebook: open this file in VS Code (its `# %%` cells run one by one), or convert it
# with `jupytext --to ipynb python/examples/brunel.py`. Options are read from the command line;
# a notebook takes their defaults: change them in the next cell there, e.g.
# `args = parser.parse_args(["--duration-ms", "200"])`.

# %%
import argparse
import sys
import time
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

import fum

parser = argparse.ArgumentParser(description="Brunel (2000) model A in fum: run it, plot raster, population rate and per-neuron statistics.")
parser.add_argument("--out", type=Path, default=Path("."), help="folder for the figure, brunel.png (default: the current folder)")
parser.add_argument("--duration-ms", type=float, default=1000.0, help="biological time to simulate, ms (default 1000)")
parser.add_argument("--threads", type=int, default=0, help="CPU threads (default 0: one per core)")
parser.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "auto"], help="where to run (default cpu)")
parser.add_argument("--from-toml", action="store_true", help="load assets/models/brunel.toml instead of building the network in Python")
# In Jupyter, sys.argv holds the kernel's own arguments: the defaults there.
args = parser.parse_args([] if "ipykernel" in sys.modules else None)

# %% [markdown]
# ## The network
#
# Brunel's parameters, and what fum's `lif_cuba` neuron needs from them. Potentials are relative
# to rest (E_L = 0 mV). Brunel's synapses are delta pulses of J = 0.1 mV; here they are short
# exponential currents (tau_syn = 0.5 ms) carrying the same charge, w = J C_m / tau_syn = 50 pA.
# The external drive is one Poisson train per neuron at C_E * nu_ext, with
# nu_ext = eta * nu_thr and nu_thr = theta / (J C_E tau_m) = 10 Hz.

# %%
N_E, N_I = 10_000, 2_500            # neurons
C_E, C_I = 1000, 250                # excitatory and inhibitory synapses per neuron (fixed in-degree)
g, eta = 5.0, 2.0                   # relative inhibition, external drive over threshold drive
J_mv, delay_ms = 0.1, 1.5           # PSP amplitude and synaptic delay
tau_m_ms, theta_mv, v_reset_mv, t_ref_ms = 20.0, 20.0, 10.0, 2.0
c_m_pf, tau_syn_ms = 250.0, 0.5

w_ex_pa = J_mv * c_m_pf / tau_syn_ms           # 50 pA: the charge of a 0.1 mV delta pulse
w_in_pa = g * w_ex_pa                          # 250 pA
nu_thr_hz = theta_mv / (J_mv * C_E * tau_m_ms * 1e-3)
external_hz = eta * nu_thr_hz * C_E            # 20 kHz into every neuron


def brunel_model() -> fum.Model:
    net = fum.Model(dt_ms=0.1, seed=12345)
    neuron = dict(tau_m_ms=tau_m_ms, c_m_pf=c_m_pf, e_l_mv=0.0, v_th_mv=theta_mv, v_reset_mv=v_reset_mv, t_ref_ms=t_ref_ms,
                  tau_syn_ex_ms=tau_syn_ms, tau_syn_in_ms=tau_syn_ms, v_init_mv=fum.Uniform(0.0, theta_mv))
    E = net.population("E", N_E, "lif_cuba", **neuron)
    I = net.population("I", N_I, "lif_cuba", **neuron)
    for target in (E, I):
        net.connect(E, target, fum.FixedIndegree(C_E), weight=w_ex_pa, delay_ms=delay_ms, receptor="excitatory")
    for target in (E, I):
        net.connect(I, target, fum.FixedIndegree(C_I), weight=w_in_pa, delay_ms=delay_ms, receptor="inhibitory")
    net.poisson(E, rate_hz=external_hz, weight=w_ex_pa, name="external")
    net.poisson(I, rate_hz=external_hz, weight=w_ex_pa, name="external_I")
    return net


def repository_file(relative: str) -> Path:
    """`relative` in the repository this example belongs to (found from the script, or upward
    from the current folder in a notebook, where there is no __file__)."""
    start = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd().resolve()
    for folder in (start, *start.parents):
        if (folder / relative).is_file():
            return folder / relative
    raise FileNotFoundError(f"{relative} not found above {start}: run this from the fum repository")


if args.from_toml:
    net = fum.Model.from_toml(repository_file("assets/models/brunel.toml"))
else:
    net = brunel_model()
# `net.to_toml()` is the model file this stands for; `net.check()` validates it as `fum check` does.
net

# %% [markdown]
# ## Run
#
# `build` builds the network in the engine; each `sim.run` simulates on from where the last one
# stopped, with the GIL released, drawing a progress line on stderr (the build's too). Here the
# initial transient first, then the rest: the spikes are those of one `net.run(duration)`, bit
# for bit, and the last run holds everything from 0 ms. `run.spikes(pop)` gives numpy arrays,
# `run.run_json` is what `fum run` writes to run.json (for this last part of the run).

# %%
transient_ms = min(200.0, args.duration_ms / 2)
started = time.monotonic()
sim = net.build(backend=args.backend, threads=args.threads)
settled = sim.run(transient_ms)
run = sim.run(args.duration_ms - transient_ms)
wall_s = time.monotonic() - started
report = run.run_json
sizes = run.sizes                                   # {"E": 10000, "I": 2500}
spikes = {pop: run.spikes(pop) for pop in ("E", "I")}
duration_ms = run.duration_ms

# %% [markdown]
# ## Per-neuron statistics
#
# Rates and ISI CVs (standard deviation over mean of a neuron's inter-spike intervals, neurons
# with at least 4 spikes: NaN for the others) are taken after the initial transient, from
# 200 ms on as `tests/statistics.rs` does (from half the run in runs shorter than 400 ms).
# `run.rates(pop, per_neuron=True)` and `run.cv(pop)` give one value per neuron, as numpy
# arrays; `run.spikes(pop)` gives the spikes themselves, sorted by time.

# %%
def per_neuron(pop):
    """Each neuron's rate (Hz) after the transient, and the ISI CVs of those with >= 4 spikes."""
    rates_hz = run.rates(pop, per_neuron=True, start_ms=transient_ms)
    cv = run.cv(pop, start_ms=transient_ms, min_spikes=4)
    return rates_hz, cv[~np.isnan(cv)]


stats = {pop: per_neuron(pop) for pop in ("E", "I")}

# %% [markdown]
# ## Headline numbers (run.json)

# %%
network, timing = report["network"], report["timing"]
print(f"Brunel (2000) model A, g = {g:g}, eta = {eta:g}: {network['neurons']:,} neurons, {network['synapses']:,} synapses "
      f"({network['bytes_total'] / 1e6:.1f} MB), {'loaded from brunel.toml' if args.from_toml else 'built in Python'}")
simulate_s = settled.run_json["timing"]["simulate_s"] + timing["simulate_s"]
print(f"{duration_ms:g} ms on {report['device']}: build {settled.run_json['timing']['build_s']:.2f} s, simulate {simulate_s:.2f} s "
      f"(real-time factor {simulate_s / (duration_ms * 1e-3):.2f}), {wall_s:.2f} s in all")
print(f"spikes {report['spikes_total']:,}, synaptic events {report['synaptic_events']:,}")
for pop in ("E", "I"):
    rates_hz, cv = stats[pop]
    print(f"rate {pop} {report['rates_hz'][pop]:.3f} Hz (whole run); from {transient_ms:g} ms: {rates_hz.mean():.3f} Hz, "
          f"ISI CV {np.mean(cv) if len(cv) else float('nan'):.3f} ({len(cv)} neurons)")
print("Brunel's mean field gives 36.2 Hz; NEST 3.10 35.3 Hz, ISI CV 0.36 (benchmarks/RESULTS.md, 1 s)")

# %% [markdown]
# ## Figure
#
# A raster of 100 excitatory and 25 inhibitory neurons (the network's 4:1), the population rate
# in 1 ms bins, and the distributions of per-neuron rates and ISI CVs.

# %%
colors = {"E": "tab:blue", "I": "tab:red"}
shown = {"E": 100, "I": 25}
yticks = {"E": [0, 25, 50, 75], "I": [0, 12, 24]}

fig = plt.figure(figsize=(10, 9), layout="constrained")
grid = fig.add_gridspec(3, 2, height_ratios=[2.2, 1.0, 1.3])
raster = fig.add_subplot(grid[0, :])
psth = fig.add_subplot(grid[1, :], sharex=raster)
rate_hist = fig.add_subplot(grid[2, 0])
cv_hist = fig.add_subplot(grid[2, 1])

offset, ticks, labels = 0, [], []
for pop in ("E", "I"):
    node_ids, timestamps_ms = spikes[pop]
    keep = node_ids < shown[pop]
    raster.plot(timestamps_ms[keep], offset + node_ids[keep], "|", color=colors[pop], markersize=2.5,
                label=f"{pop}: neurons 0-{shown[pop] - 1} of {sizes[pop]:,}")
    ticks += [offset + i for i in yticks[pop]]
    labels += [f"{pop} {i}" for i in yticks[pop]]
    offset += shown[pop]
raster.axhline(shown["E"] - 0.5, color="0.5", linewidth=0.6)
raster.set_ylim(-0.5, offset - 0.5)
raster.set_yticks(ticks, labels)
for label in raster.get_yticklabels():
    label.set_color(colors[label.get_text().split()[0]])
raster.set_ylabel("neuron (population, id)")
raster.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, markerscale=3, frameon=False, borderaxespad=0.2)
raster.set_title("spike raster", loc="left")
raster.tick_params(labelbottom=False)

bin_ms = 1.0
edges = np.arange(0.0, duration_ms + bin_ms, bin_ms)
for pop in ("E", "I"):
    counts, _ = np.histogram(spikes[pop].timestamps_ms, bins=edges)
    psth.step(edges[:-1], counts / (sizes[pop] * bin_ms * 1e-3), where="post", color=colors[pop], linewidth=0.8,
              alpha=0.9 if pop == "E" else 0.7, label=pop)
psth.set_xlim(0.0, duration_ms)
psth.set_xlabel("time (ms)")
psth.set_ylabel(f"rate (Hz, {bin_ms:g} ms bins)")
psth.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False, borderaxespad=0.2)
psth.set_title("population rate (spikes per neuron and second)", loc="left")

# A neuron's rate is a whole number of spikes over the window: bins of whole spike counts.
quantum_hz = 1000.0 / (duration_ms - transient_ms)
low, high = (min(s[0].min() for s in stats.values()), max(s[0].max() for s in stats.values()))
width = quantum_hz * max(1, int(np.ceil((high - low) / quantum_hz / 40)))
rate_edges = np.arange(low - quantum_hz / 2, high + width, width)
for pop in ("E", "I"):
    rates_hz, cv = stats[pop]
    rate_hist.hist(rates_hz, bins=rate_edges, weights=np.full(len(rates_hz), 1.0 / len(rates_hz)), histtype="step", color=colors[pop],
                   linewidth=1.5, label=f"{pop}: mean {rates_hz.mean():.1f} Hz")
    if len(cv):
        cv_hist.hist(cv, bins=40, weights=np.full(len(cv), 1.0 / len(cv)), histtype="step", color=colors[pop],
                     linewidth=1.5, label=f"{pop}: mean {cv.mean():.2f}")
rate_hist.set_xlabel(f"firing rate (Hz, {transient_ms:g}-{duration_ms:g} ms)")
rate_hist.set_ylabel("fraction of neurons")
rate_hist.legend()
rate_hist.set_title("per-neuron rates")
cv_hist.set_xlabel("ISI CV (neurons with >= 4 spikes)")
cv_hist.set_ylabel("fraction of neurons")
cv_hist.legend()
cv_hist.set_title("irregularity")
fig.suptitle(f"Brunel (2000) model A in fum: {N_E:,} E + {N_I:,} I LIF neurons, g = {g:g}, eta = {eta:g}, {duration_ms:g} ms")

args.out.mkdir(parents=True, exist_ok=True)
figure = args.out / "brunel.png"
fig.savefig(figure, dpi=120)
print(f"figure {figure}")
if matplotlib.get_backend().lower() != "agg":
    plt.show()
