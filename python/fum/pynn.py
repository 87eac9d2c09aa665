"""fum as a PyNN backend: ``import fum.pynn as sim`` where a PyNN script says
``import pyNN.nest as sim`` (PyNN's backends live inside the pyNN package; this one ships with
fum). Needs PyNN (``pip install PyNN``, which brings neo and quantities).

    import fum.pynn as sim
    sim.setup(timestep=0.1, seed=1, threads=2)
    cells = sim.Population(100, sim.IF_curr_exp(tau_m=20.0, i_offset=0.0), label="E")
    noise = sim.Population(100, sim.SpikeSourcePoisson(rate=8000.0))
    sim.Projection(noise, cells, sim.OneToOneConnector(), sim.StaticSynapse(weight=0.09))
    sim.Projection(cells, cells, sim.FixedProbabilityConnector(0.1), sim.StaticSynapse(weight=0.05, delay=1.5))
    cells.record("spikes")
    sim.run(500.0)
    block = cells.get_data()                       # a neo Block: segments[0].spiketrains

PyNN describes a network cell by cell and draws connections in Python; fum builds a network
from a description and draws it in the engine. This backend collects the populations and
projections a script creates, writes them as a `fum.Model` at the first `run()` (fum's rules,
distributions and units: nA to pA, nF to pF, uS to nS), builds it once (`Model.build`) and
runs it on at every `run()`. What maps onto fum cleanly is supported; everything else is
refused with an error saying what (docs/python.md lists both):

- cells: IF_curr_exp (`lif_cuba`, NEST's iaf_psc_exp), IF_curr_alpha (`lif_psc_alpha`,
  iaf_psc_alpha), IF_cond_exp (`lif_coba`: the same equations, integrated with exponential
  Euler), SpikeSourceArray (`spike_source`: a train per cell, times rounded to steps as
  NEST's spike_generator), SpikeSourcePoisson (as fum's Poisson input: below). Parameters are
  one value per population; `i_offset` and the initial `v` may also be RandomDistributions
  ('uniform', 'normal', 'lognormal'), drawn per neuron by fum with its seed (not PyNN's rng),
  or a value per cell (a list, an array, a function of the index; set for PopulationViews
  too), which fum takes as listed values beside the model (`fum.Model.population`'s arrays).
- connectors, two ways (Projection's docstring says which way each goes):
  - drawn by fum from the model's seed when it builds the network: AllToAll, OneToOne,
    FixedProbability, FixedNumberPre (fum's fixed_indegree), FixedNumberPost
    (fixed_outdegree), FixedTotalNumber (with replacement) between whole Populations; weights
    and delays a number or a 'uniform', 'normal' or 'lognormal' RandomDistribution, drawn by
    fum. Nothing is listed in Python: this is the way for large networks.
  - listed: every connector PyNN draws (FixedProbability, FixedNumberPre/Post,
    FixedTotalNumber, DistanceDependentProbability, IndexBasedProbability,
    DisplacementDependentProbability, Array, Clone, FromFile, ...) from or onto
    PopulationViews and Assemblies, and between whole Populations those fum has no rule for.
    PyNN's own connector code draws the synapses when the Projection is created, from the
    connector's rng and the synapse type's RandomDistributions (any distribution, a value per
    pair, a function of distance), exactly as on any PyNN backend; fum runs the list as a
    `fum.FromList` (a weight and delay per synapse). FromListConnector (its rows, with weight
    and delay columns or the synapse type's, a distribution drawn for each synapse in the
    list's order) and AllToAll/OneToOne of numbers are expanded without drawing. The list is
    held in memory, drawn at Python's pace, and kept for reset().
  Projection.get('weight'/'delay', ...) and len(): a listed projection's at once (weights as
  the last run left them), a drawn one's after a run (its delays where they are one number).
- synapses: StaticSynapse; STDPMechanism with SpikePairRule and Additive- or
  MultiplicativeWeightDependence (fum's pair-based STDP, all-to-all pairing), with
  `dendritic_delay_fraction` 1 (PyNN's default and NEST's timing: fum's `dendritic_delay`) or
  0 (spikes paired at the neurons).
- SpikeSourcePoisson: an independent Poisson train into each target neuron, so only through a
  OneToOneConnector (a source population's trains shared among targets is not fum's input) and
  with a single weight; its spikes cannot be recorded. Its `rate` is one value, a
  RandomDistribution fum draws ('uniform', 'lognormal') or a value per cell (a list, an array,
  a function of the index; `set` on the Population or a PopulationView), the rate into the
  target neuron of that index (`fum.Model.poisson`'s `rate_hz=array`).
- current sources: DCSource (amplitude, start, stop) and StepCurrentSource (times,
  amplitudes), injected (`inject_into`, `population.inject`) into whole Populations (or views,
  Assemblies, lists of cells holding whole Populations): fum's DC inputs (`Model.dc`), nA to
  pA, each flowing in the steps from start / dt up to, not including, stop / dt (PyNN's
  meaning: the current acts on the cells from `start` until `stop`; NEST's backend subtracts
  min_delay for its generator's connection delay, fum's input has none); a step source is a
  window per step, the last amplitude until the run ends. Refused: part of a population
  (fum's DC input drives every neuron of its population), ACSource and NoisyCurrentSource (fum
  has no such input), recording a source's current, changing a source after the first run.
- recording: 'spikes', 'v' and (IF_cond_exp) 'gsyn_exc', 'gsyn_inh' of Populations and
  PopulationViews, get_data() (neo Blocks),
  get_spike_counts(), mean_spike_count().
- run(), run_until(), reset() (a new segment: the network is rebuilt from its seed, the same
  synapses, and starts again from its initial state), end().
"""

from __future__ import annotations

import copy
import math
import sys
from typing import Optional

import numpy as np

try:
    from pyNN import common, errors, recording
    from pyNN import connectors as _connectors
    from pyNN.connectors import (AllToAllConnector, FixedNumberPostConnector, FixedNumberPreConnector,
                                 FixedProbabilityConnector, FixedTotalNumberConnector, FromListConnector, OneToOneConnector)
    from pyNN.parameters import LazyArray, ParameterSpace, Sequence, simplify  # noqa: F401  (sim.Sequence)
    from pyNN.random import NumpyRNG, RandomDistribution  # noqa: F401  (sim.NumpyRNG, sim.RandomDistribution)
    from pyNN.recording import get_io
    from pyNN.space import Space
    from pyNN.standardmodels import StandardCurrentSource, build_translations, cells, electrodes, synapses
except ImportError as e:  # pragma: no cover - said to the user
    raise ImportError("fum.pynn needs PyNN: pip install PyNN (it brings neo and quantities)") from e

import fum

name = "fum"

# Every PyNN connector, so that a script's names resolve; Projection says which fum maps.
globals().update({n: c for n, c in vars(_connectors).items() if n.endswith("Connector") and isinstance(c, type)})


class Unsupported(NotImplementedError):
    """What a PyNN script asks for that fum does not do; the message says what."""


# ---------------------------------------------------------------------------------------------
# Simulator state
# ---------------------------------------------------------------------------------------------

class ID(int, common.IDMixin):

    def __init__(self, n):
        int.__init__(n)
        common.IDMixin.__init__(self)


class State(common.control.BaseState):
    """The network being described (populations and projections in the order created), the
    fum simulation built from it at the first run, and the latest `fum.Run`."""

    def __init__(self):
        common.control.BaseState.__init__(self)
        self.mpi_rank = 0
        self.num_processes = 1
        self.dt = 0.1
        self.min_delay = 0.1
        self.max_delay = 102.3
        self.seed = 0
        self.threads = 0
        self.backend = "cpu"
        self.progress = False
        self.clear()

    def clear(self):
        self.recorders = set([])
        self.populations: list = []
        self.projections: list = []
        # (source, Population) of every injection, in the order made.
        self.current_sources: list = []
        self.id_counter = 0
        self.segment_counter = -1
        self.reset()

    def reset(self):
        """Back to t = 0: the next run builds the network again (the same synapses, from the
        same seed) and starts from its initial state."""
        self.running = False
        self.t = 0.0
        self.t_start = 0.0
        self.segment_counter += 1
        self.simulation: Optional[fum.Simulation] = None
        self.last_run: Optional[fum.Run] = None
        for recorder in self.recorders:
            recorder._since_ms = 0.0

    @property
    def built(self) -> bool:
        return self.simulation is not None

    def refuse_if_built(self, what: str) -> None:
        if self.built:
            raise Unsupported(f"{what} after the network was built (at the first run()): fum builds it once; "
                               "describe it completely before running, or call reset() first")

    def run(self, simtime: float) -> None:
        self.run_until(self.t + simtime)

    def run_until(self, tstop: float) -> None:
        steps = int(round((tstop - self.t) / self.dt))
        if steps <= 0:
            self.running = True
            return
        if self.simulation is None:
            self.simulation = _model(self).build(seed=self.seed, threads=self.threads, backend=self.backend, progress=self.progress)
        self.last_run = self.simulation.run(steps * self.dt, progress=self.progress)
        self.t = self.last_run.duration_ms
        self.running = True


state = State()
simulator = sys.modules[__name__]   # PyNN's classes look for `_simulator.state`


# ---------------------------------------------------------------------------------------------
# Cell types: PyNN's names and units, fum's fields (scale: PyNN value x scale = fum value)
# ---------------------------------------------------------------------------------------------

_LIF = (
    ("tau_m", "tau_m_ms", 1.0),
    ("cm", "c_m_pf", 1000.0),
    ("v_rest", "e_l_mv", 1.0),
    ("v_thresh", "v_th_mv", 1.0),
    ("v_reset", "v_reset_mv", 1.0),
    ("tau_refrac", "t_ref_ms", 1.0),
    ("i_offset", "i_e_pa", 1000.0),
    ("tau_syn_E", "tau_syn_ex_ms", 1.0),
    ("tau_syn_I", "tau_syn_in_ms", 1.0),
)


def _translations(table):
    return build_translations(*[(pynn, native, scale) if scale != 1.0 else (pynn, native) for pynn, native, scale in table])


class IF_curr_exp(cells.IF_curr_exp):
    __doc__ = cells.IF_curr_exp.__doc__
    fum_model = "lif_cuba"
    fum_table = _LIF
    # Synaptic currents, nA in PyNN and pA in fum.
    fum_weight_scale = 1000.0
    translations = _translations(_LIF)


class IF_curr_alpha(cells.IF_curr_alpha):
    __doc__ = cells.IF_curr_alpha.__doc__
    fum_model = "lif_psc_alpha"
    fum_table = _LIF
    fum_weight_scale = 1000.0
    translations = _translations(_LIF)


class IF_cond_exp(cells.IF_cond_exp):
    __doc__ = cells.IF_cond_exp.__doc__
    fum_model = "lif_coba"
    fum_table = _LIF + (("e_rev_E", "e_ex_mv", 1.0), ("e_rev_I", "e_in_mv", 1.0))
    # Conductances, uS in PyNN and nS in fum.
    fum_weight_scale = 1000.0
    translations = _translations(fum_table)


class SpikeSourceArray(cells.SpikeSourceArray):
    __doc__ = cells.SpikeSourceArray.__doc__
    fum_model = "spike_source"
    fum_table = ()
    translations = build_translations(("spike_times", "spike_times"))


class SpikeSourcePoisson(cells.SpikeSourcePoisson):
    __doc__ = cells.SpikeSourcePoisson.__doc__
    fum_model = None
    fum_table = (("rate", "rate_hz", 1.0), ("start", "start", 1.0), ("duration", "duration", 1.0))
    translations = _translations(fum_table)


# Recorded signals: PyNN's variable, fum's probe variable, scale (nS to uS). PyNN itself refuses
# a variable the cell type does not record (gsyn_* are IF_cond_exp's).
_PROBED = {"v": ("v", 1.0), "gsyn_exc": ("syn_ex", 1e-3), "gsyn_inh": ("syn_in", 1e-3)}

# Initial values: PyNN's state variable, fum's field, scale (nA/uS to pA/nS for the synapses).
_INITIAL = {"v": ("v_init_mv", 1.0), "isyn_exc": ("syn_ex_init", 1000.0), "isyn_inh": ("syn_in_init", 1000.0),
            "gsyn_exc": ("syn_ex_init", 1000.0), "gsyn_inh": ("syn_in_init", 1000.0)}


# ---------------------------------------------------------------------------------------------
# Synapse types
# ---------------------------------------------------------------------------------------------

class StaticSynapse(synapses.StaticSynapse):
    __doc__ = synapses.StaticSynapse.__doc__
    translations = build_translations(("weight", "weight"), ("delay", "delay"))

    def _get_minimum_delay(self):
        return state.dt


class STDPMechanism(synapses.STDPMechanism):
    __doc__ = synapses.STDPMechanism.__doc__
    base_translations = build_translations(("weight", "weight"), ("delay", "delay"), ("dendritic_delay_fraction", "dendritic_delay_fraction"))

    def _get_minimum_delay(self):
        return state.dt


class AdditiveWeightDependence(synapses.AdditiveWeightDependence):
    __doc__ = synapses.AdditiveWeightDependence.__doc__
    translations = build_translations(("w_max", "w_max"), ("w_min", "w_min"))
    fum_dependence = "additive"


class MultiplicativeWeightDependence(synapses.MultiplicativeWeightDependence):
    __doc__ = synapses.MultiplicativeWeightDependence.__doc__
    translations = build_translations(("w_max", "w_max"), ("w_min", "w_min"))
    fum_dependence = "multiplicative"


class SpikePairRule(synapses.SpikePairRule):
    __doc__ = synapses.SpikePairRule.__doc__
    translations = build_translations(("tau_plus", "tau_plus_ms"), ("tau_minus", "tau_minus_ms"), ("A_plus", "a_plus"), ("A_minus", "a_minus"))


# ---------------------------------------------------------------------------------------------
# Values: one per population, a distribution fum draws, or (i_offset, v, rate) one per cell
# ---------------------------------------------------------------------------------------------

def _value(lazy, what: str, scale: float = 1.0, distributions: bool = True, translated: bool = False, cells: bool = False, per_cell: bool = False):
    """The fum value of a PyNN parameter (a lazyarray) in PyNN's units times `scale`: a number
    where it is the same for all, else a fum distribution where it is a RandomDistribution fum
    draws. `translated`: a cell type's native parameter, whose translation has scaled it
    already (a lazy multiplication by `scale`, which a distribution's conversion does).
    `cells`: a value of a population's cells, which PyNN may give per cell (a list, an array,
    a function of the index): one number where every cell's is the same, else, where
    `per_cell` (fum's `i_e_pa`, `v_init_mv` and `rate_hz`), a numpy array of one value per
    cell."""
    base = getattr(lazy, "base_value", lazy)
    if isinstance(base, RandomDistribution):
        if not distributions:
            raise Unsupported(f"{what}: fum takes one value here, not a distribution")
        if len(getattr(lazy, "operations", [])) > (1 if translated and scale != 1.0 else 0):
            raise Unsupported(f"{what}: fum draws a RandomDistribution itself; arithmetic on one is not supported")
        p = base.parameters
        if base.name == "uniform":
            return fum.Uniform(p["low"] * scale, p["high"] * scale)
        if base.name == "normal":
            return fum.Normal(p["mu"] * scale, p["sigma"] * scale)
        if base.name == "lognormal":
            return fum.LogNormal(p["mu"] + math.log(scale), p["sigma"])
        raise Unsupported(f"{what}: fum draws 'uniform', 'normal' and 'lognormal' distributions, not {base.name!r}")
    if hasattr(lazy, "is_homogeneous") and not lazy.is_homogeneous and not cells:
        raise Unsupported(f"{what}: fum takes one value per population (or a RandomDistribution it draws), not a value per cell")
    if hasattr(lazy, "evaluate"):
        if lazy.shape is None:
            lazy = copy.deepcopy(lazy)
            lazy.shape = (1,)
        value = lazy.evaluate(simplify=True)
    else:
        value = lazy
    if callable(value):
        raise Unsupported(f"{what}: fum takes one value per population, not a function of the cell")
    value = np.asarray(value, dtype=float)
    if value.ndim > 0:
        if value.size > 0 and np.all(value == value.flat[0]):
            value = value.flat[0]
        elif per_cell:
            if not np.isfinite(value).all():
                k = int(np.flatnonzero(~np.isfinite(value))[0])
                raise ValueError(f"{what}: cell {k}'s value {value[k]} must be finite")
            return value * (1.0 if translated else scale)
        else:
            also = " (a value per cell: i_offset, the initial v and a SpikeSourcePoisson's rate only)" if cells else ""
            raise Unsupported(f"{what}: fum takes one value per population (or a RandomDistribution it draws), not a value per cell{also}")
    return float(value) * (1.0 if translated else scale)


def _with_cells(whole, cells, part, what: str):
    """`whole`, a lazyarray of every cell of a Population, with its cells `cells` (indices) set
    to `part`, a lazyarray of theirs: a value per cell. A RandomDistribution, which fum draws
    for a whole population, cannot share one with other values."""
    if any(isinstance(getattr(x, "base_value", x), RandomDistribution) for x in (whole, part)):
        raise Unsupported(f"{what}: a value for part of a population whose other cells have a RandomDistribution, or the reverse: "
                          "fum draws a distribution for a whole Population")
    values = np.array(np.broadcast_to(whole.evaluate(simplify=False), whole.shape), dtype=float)
    values[cells] = np.broadcast_to(part.evaluate(simplify=False), part.shape)
    return LazyArray(values, shape=values.shape)


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------

class Recorder(recording.Recorder):
    _simulator = simulator

    def __init__(self, population, file=None):
        recording.Recorder.__init__(self, population, file)
        self._since_ms = 0.0

    def _record(self, variable, new_ids, sampling_interval=None):
        state.refuse_if_built("recording")
        if isinstance(self.population.celltype, SpikeSourcePoisson):
            raise Unsupported("recording a SpikeSourcePoisson: fum's Poisson input is not a population of neurons")
        if isinstance(self.population.celltype, SpikeSourceArray) and variable.name != "spikes":
            raise Unsupported(f"recording {variable.name!r} of a SpikeSourceArray: it has spikes only")
        if variable.name != "spikes" and variable.name not in _PROBED:
            raise Unsupported(f"recording {variable.name!r}: fum.pynn records 'spikes', 'v', 'gsyn_exc' and 'gsyn_inh'")

    def _spikes(self):
        """(ids, times) of the population's spikes since the segment's start."""
        if state.last_run is None:
            return np.zeros(0, dtype=int), np.zeros(0)
        node_ids, times = state.last_run.spikes(self.population.fum_name)
        keep = times >= self._since_ms
        return self.population.all_cells[node_ids[keep]].astype(int), np.array(times[keep])

    def _get_spiketimes(self, ids, clear=False):
        cells, times = self._spikes()
        keep = np.isin(cells, np.asarray(list(ids), dtype=int))
        return cells[keep], times[keep]

    def _get_all_signals(self, variable, ids, clear=False):
        if state.last_run is None or not ids:
            return np.zeros((0, len(ids))), None
        samples = state.last_run.probe(_probe_name(self.population, variable.name))
        columns = [int(np.flatnonzero(samples.sites == self.population.id_to_index(int(i)))[0]) for i in ids]
        keep = samples.time_ms >= self._since_ms
        return np.asarray(samples.values[keep][:, columns], dtype=float) * _PROBED[variable.name][1], None

    def _local_count(self, variable, filter_ids=None):
        if variable.name != "spikes":
            raise Unsupported("counts of spikes only")
        ids = sorted(int(i) for i in self.filter_recorded(variable, filter_ids))
        cells, _ = self._spikes()
        counts = dict.fromkeys(ids, 0)
        for cell, n in zip(*np.unique(cells, return_counts=True)):
            if int(cell) in counts:
                counts[int(cell)] = int(n)
        return counts

    def _clear_simulator(self):
        self._since_ms = state.t

    def _reset(self):
        self._since_ms = 0.0


# ---------------------------------------------------------------------------------------------
# Populations
# ---------------------------------------------------------------------------------------------

class Assembly(common.Assembly):
    _simulator = simulator

    @property
    def receptor_types(self):
        """The receptor types all its populations have, in the first one's order (PyNN's
        Assembly gives them in a set's order, which decides the receptor a Projection
        guesses: excitatory for positive weights)."""
        first = self.populations[0].celltype.receptor_types
        return [r for r in first if all(r in p.celltype.receptor_types for p in self.populations[1:])]


class PopulationView(common.PopulationView):
    _assembly_class = Assembly
    _simulator = simulator

    def _get_parameters(self, *names):
        space = self.parent._get_parameters(*names)
        values = {name: simplify(np.asarray(space[name].evaluate(simplify=False))[self.mask]) for name in names}
        return ParameterSpace(values, shape=(self.size,))

    def _set_parameters(self, parameter_space):
        root = _root(self)
        state.refuse_if_built("setting parameters")
        if root.celltype.fum_model == "spike_source":
            raise Unsupported(f"setting parameters of a PopulationView of a {type(root.celltype).__name__}: set them for its Population")
        for name, value in parameter_space.items():
            root._parameters[name] = _with_cells(root._parameters[name], _cells(self), value, f"{self.label}.{name}")

    def _set_initial_value_array(self, variable, initial_values):
        root = _root(self)
        state.refuse_if_built("setting initial values")
        whole = root._initial.get(variable, LazyArray(root.celltype.default_initial_values[variable], shape=(root.size,)))
        root._initial[variable] = root.initial_values[variable] = _with_cells(whole, _cells(self), initial_values, f"{self.label} initial {variable}")

    @property
    def initial_values(self):
        # PyNN's PopulationView.initialize stores the view's values here after
        # `_set_initial_value_array` (its own property raises NotImplementedError); they live
        # in the Population's, so a fresh dict takes them.
        return {}

    def _get_view(self, selector, label=None):
        return PopulationView(self, selector, label)


class Population(common.Population):
    __doc__ = common.Population.__doc__
    _simulator = simulator
    _recorder_class = Recorder
    _assembly_class = Assembly

    def __init__(self, *args, **kwargs):
        state.refuse_if_built("creating a Population")
        self._initial: dict = {}
        common.Population.__init__(self, *args, **kwargs)
        if not isinstance(self.celltype, (IF_curr_exp, IF_curr_alpha, IF_cond_exp, SpikeSourceArray, SpikeSourcePoisson)):
            raise Unsupported(f"cell type {type(self.celltype).__name__}: fum.pynn has {', '.join(list_standard_models())}")
        self.fum_name = "".join(c if c.isalnum() or c == "_" else "_" for c in self.label)
        if any(p.fum_name == self.fum_name for p in state.populations):
            self.fum_name += f"_{len(state.populations)}"
        state.populations.append(self)

    def _create_cells(self):
        id_range = np.arange(state.id_counter, state.id_counter + self.size)
        self.all_cells = np.array([ID(i) for i in id_range], dtype=ID)
        self._mask_local = np.ones((self.size,), bool)
        for cell in self.all_cells:
            cell.parent = self
        state.id_counter += self.size
        parameter_space = self.celltype.native_parameters
        parameter_space.shape = (self.size,)
        self._parameters = parameter_space

    def _set_initial_value_array(self, variable, initial_values):
        state.refuse_if_built("setting initial values")
        self._initial[variable] = initial_values

    def _get_view(self, selector, label=None):
        return PopulationView(self, selector, label)

    def _get_parameters(self, *names):
        native = self.celltype.get_native_names(*names) if not any(n in self.celltype.computed_parameters() for n in names) else self.celltype.get_native_names()
        space = ParameterSpace({n: self._parameters[n] for n in native}, shape=(self.size,))
        return self.celltype.reverse_translate(space)

    def _set_parameters(self, parameter_space):
        state.refuse_if_built("setting parameters")
        for name, value in parameter_space.items():
            self._parameters[name] = value

    # What fum gets.
    def _fields(self) -> dict:
        """The fum population's fields: parameters and initial values."""
        celltype = self.celltype
        if isinstance(celltype, SpikeSourceArray):
            # A train per cell (one Sequence each, or one for all), as fum's spike_times_ms.
            space = copy.deepcopy(self._parameters)
            space.evaluate(simplify=False)
            return {"spike_times_ms": [[float(t) for t in seq.value] for seq in space["spike_times"]]}
        fields = {}
        for pynn_name, fum_name, scale in celltype.fum_table:
            native = celltype.translations[pynn_name]["translated_name"]
            drawn = fum_name in ("i_e_pa", "rate_hz")   # what fum draws, or takes, per neuron
            fields[fum_name] = _value(self._parameters[native], f"{self.label}.{pynn_name}", scale, distributions=drawn, translated=True,
                                      cells=True, per_cell=drawn)
        for variable, value in self._initial.items():
            if variable not in _INITIAL:
                continue
            field, scale = _INITIAL[variable]
            if celltype.fum_model == "lif_psc_alpha" and field != "v_init_mv":
                if _value(value, f"{self.label} initial {variable}", cells=True) != 0.0:
                    raise Unsupported(f"{self.label}: initial {variable} of IF_curr_alpha is not supported (fum starts its synaptic currents at 0)")
                continue
            fields[field] = _value(value, f"{self.label} initial {variable}", scale, cells=True, per_cell=field == "v_init_mv")
        return fields


# ---------------------------------------------------------------------------------------------
# Projections
# ---------------------------------------------------------------------------------------------

def _root(pop):
    """The Population a Population or PopulationView is of."""
    return pop.grandparent if isinstance(pop, PopulationView) else pop


def _cells(pop):
    """The indices in its Population of the cells of a Population or PopulationView, in the
    view's order."""
    if isinstance(pop, PopulationView):
        return np.asarray(pop.index_in_grandparent(np.arange(pop.size)), dtype=np.int64)
    return np.arange(pop.size, dtype=np.int64)


def _locate(pop):
    """(roots, which, index) of a Population, PopulationView or Assembly: the Populations its
    cells belong to, and for each of its cells, in its order, the Population (an index into
    `roots`) and the index there."""
    roots, which, index = [], [], []
    for part in (pop.populations if isinstance(pop, common.Assembly) else [pop]):
        root = _root(part)
        if not any(r is root for r in roots):
            roots.append(root)
        cells = _cells(part)
        which.append(np.full(len(cells), next(k for k, r in enumerate(roots) if r is root), dtype=np.int64))
        index.append(cells)
    return roots, np.concatenate(which), np.concatenate(index)


def _weight_scale(pop) -> float:
    """PyNN's weight unit in fum's (nA or uS: 1000) of the cells of `pop`."""
    scales = {root.celltype.fum_weight_scale for root in _locate(pop)[0]}
    if len(scales) != 1:
        raise Unsupported(f"{pop.label}: an Assembly of cells whose weights differ in units")
    return scales.pop()


def _number(lazy, what: str = ""):
    """A synapse parameter (a lazyarray) as one number for every synapse, or None where it is
    not (a RandomDistribution, a value per pair, a function of distance or of the indices)."""
    try:
        value = _value(lazy, what, distributions=False)
    except (Unsupported, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _steps_ms(delay_ms):
    """Delays as fum simulates them: rounded to whole steps, as the engine rounds."""
    return np.round(np.floor(np.asarray(delay_ms, dtype=float) / state.dt + 0.5) * state.dt, 9)


class Connection(object):
    """A synapse (for Projection.get and iteration): its cells' indices in the projection's
    pre- and postsynaptic Population, PopulationView or Assembly, its weight (PyNN's units) and
    delay (ms, rounded to steps)."""

    def __init__(self, pre, post, weight, delay):
        self.presynaptic_index, self.postsynaptic_index, self.weight, self._delay = pre, post, weight, delay

    @property
    def delay(self):
        if self._delay is None:
            raise Unsupported("reading back delays that fum drew from a distribution: fum.Run.weights gives pre, post and weight")
        return self._delay

    def as_tuple(self, *names):
        return tuple(getattr(self, name) for name in names)


_DRAWN_BY_FUM = (AllToAllConnector, OneToOneConnector, FixedProbabilityConnector, FixedNumberPreConnector,
                 FixedNumberPostConnector, FixedTotalNumberConnector)


class Projection(common.Projection):
    __doc__ = """A PyNN Projection on fum. Its synapses come one of two ways:

    - drawn by fum, from the model's seed (`setup(seed=...)`), when it builds the network: a
      connector fum has a rule for (AllToAll, OneToOne, FixedProbability, FixedNumberPre and
      FixedNumberPost of a number `n`, FixedTotalNumber with replacement) between whole
      Populations; weights and delays numbers or distributions fum draws. Nothing is held in
      Python, and it scales to networks of any size.
    - listed: any connector from or onto a PopulationView or an Assembly, and between whole
      Populations the connectors fum has no rule for (DistanceDependentProbability,
      IndexBasedProbability, Array, FixedNumberPre/Post of a RandomDistribution `n`,
      FixedTotalNumber without replacement, allow_self_connections='NoMutual', Clone,
      FromFile, ...). PyNN's own connector code draws the synapses when the Projection is
      created, as on every PyNN backend, from the connector's rng and the synapse type's
      RandomDistributions (with their rngs), and fum runs them as a `fum.FromList` (a weight
      and a delay per synapse). FromListConnector, and AllToAll and OneToOne whose weight and
      delay are numbers, are expanded without PyNN's connector code. The list is held in
      memory (32 bytes a synapse) and drawn at Python's pace.

    """ + (common.Projection.__doc__ or "")
    _simulator = simulator
    _static_synapse_class = StaticSynapse

    def __init__(self, presynaptic_population, postsynaptic_population, connector, synapse_type=None, source=None, receptor_type=None, space=Space(), label=None):
        state.refuse_if_built("creating a Projection")
        # Before PyNN's own checks, which look for the target's receptor types.
        for target in (postsynaptic_population.populations if isinstance(postsynaptic_population, common.Assembly) else [postsynaptic_population]):
            if isinstance(getattr(target, "celltype", None), (SpikeSourcePoisson, SpikeSourceArray)):
                raise errors.ConnectionError(f"a {type(target.celltype).__name__} receives no synapses")
        common.Projection.__init__(self, presynaptic_population, postsynaptic_population, connector, synapse_type, source, receptor_type, space, label)
        for role, pop in (("presynaptic", self.pre), ("postsynaptic", self.post)):
            if not isinstance(pop, (Population, PopulationView, common.Assembly)):
                raise Unsupported(f"{role} {type(pop).__name__}: fum connects Populations, PopulationViews and Assemblies")
            ids = np.asarray(pop.all_cells, dtype=np.int64)
            if len(np.unique(ids)) != len(ids):
                raise Unsupported(f"{role} {pop.label}: a PopulationView or Assembly that repeats cells")
        if source is not None:
            raise Unsupported("source: fum neurons have one spike source")
        self._index = len(state.projections)
        self.fum_name = f"{_locate(self.pre)[0][0].fum_name}_to_{_locate(self.post)[0][0].fum_name}_{self._index}"
        # (pre, post, weight, delay) of a listed projection: the synapses' cells as indices in
        # self.pre and self.post, weights in PyNN's units and sign, delays in ms as given.
        self._list = None
        if self._rule() is None:
            self._list = self._expanded() if self._expands() else self._drawn()
        state.projections.append(self)

    # -- How the synapses come --------------------------------------------------------------

    def _rule(self):
        """(fum rule, fields) where fum draws this projection (a connector fum has, between
        whole Populations), else None: its synapses are listed."""
        c = self._connector
        if type(c) not in _DRAWN_BY_FUM or not (isinstance(self.pre, Population) and isinstance(self.post, Population)):
            return None
        allow_autapses = getattr(c, "allow_self_connections", True)
        if allow_autapses not in (True, False):
            return None   # 'NoMutual': PyNN draws it
        fields = {"allow_autapses": bool(allow_autapses)} if self.pre is self.post else {}
        if type(c) is OneToOneConnector:
            return fum.OneToOne(), {}
        if type(c) is AllToAllConnector:
            return fum.AllToAll(), fields
        if type(c) is FixedProbabilityConnector:
            return fum.FixedProbability(float(c.p_connect)), fields
        if not isinstance(c.n, (int, np.integer)):
            return None   # a RandomDistribution of n: PyNN draws it
        if type(c) is FixedNumberPreConnector:
            return fum.FixedIndegree(int(c.n)), {**fields, "allow_multapses": bool(c.with_replacement)}
        if type(c) is FixedNumberPostConnector:
            return fum.FixedOutdegree(int(c.n)), {**fields, "allow_multapses": bool(c.with_replacement)}
        if not c.with_replacement:
            return None   # fum's fixed_total_number, as NEST's, draws with replacement; PyNN draws this
        return fum.FixedTotalNumber(int(c.n)), fields

    def _expands(self) -> bool:
        """Whether the synapses are listed without PyNN's connector: FromListConnector (its list
        is checked here), and AllToAll and OneToOne where the synapse type's weight and delay are
        numbers (else PyNN's connector draws them, in its order)."""
        c = self._connector
        if type(c) is FromListConnector:
            self._from_list()
            return True
        if type(c) not in (AllToAllConnector, OneToOneConnector) or getattr(c, "allow_self_connections", True) not in (True, False):
            return False
        ps = self.synapse_type.parameter_space
        return all(_number(ps[name]) is not None for name in ("weight", "delay"))

    def _from_list(self):
        """(i, j, {column: values}) of a FromListConnector, checked: indices of cells of the
        projection's pre and post, columns weight and delay."""
        c = self._connector
        table = np.asarray(c.conn_list, dtype=float)
        table = table.reshape(len(table), -1) if table.size else np.zeros((0, 2 + len(c.column_names)))
        i, j = table[:, 0], table[:, 1]
        for role, ids, pop in (("presynaptic", i, self.pre), ("postsynaptic", j, self.post)):
            bad = ~((ids >= 0) & (ids < pop.size) & (ids == np.round(ids)))
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise errors.ConnectionError(f"FromListConnector: conn_list[{k}]: {role} index {ids[k]:g} is not a cell of {pop.label} ({pop.size} cells)")
        columns = {}
        for column, name in enumerate(c.column_names, 2):
            if name not in ("weight", "delay"):
                raise Unsupported(f"FromListConnector column {name!r}: fum lists a weight and a delay per synapse; other parameters are the synapse type's")
            columns[name] = table[:, column]
        return i.astype(np.int64), j.astype(np.int64), columns

    def _expanded(self):
        """The list of a FromListConnector, or of an AllToAll or OneToOne connector, expanded
        (nothing is drawn); weights and delays the list's columns or the synapse type's."""
        c = self._connector
        columns = {}
        if type(c) is FromListConnector:
            pre, post, columns = self._from_list()
        elif type(c) is OneToOneConnector:
            if self.pre.size != self.post.size:
                raise errors.ConnectionError(f"OneToOneConnector between {self.pre.label} ({self.pre.size} cells) and {self.post.label} ({self.post.size}): the sizes must be equal")
            pre = post = np.arange(self.pre.size, dtype=np.int64)
        else:
            pre = np.repeat(np.arange(self.pre.size, dtype=np.int64), self.post.size)
            post = np.tile(np.arange(self.post.size, dtype=np.int64), self.pre.size)
            if not c.allow_self_connections:
                # As PyNN: no synapse from a cell onto itself, whichever views hold it.
                keep = np.asarray(self.pre.all_cells, dtype=np.int64)[pre] != np.asarray(self.post.all_cells, dtype=np.int64)[post]
                pre, post = pre[keep], post[keep]
        values = [np.asarray(columns[name], dtype=float) if name in columns else self._listed_values(name, pre, post) for name in ("weight", "delay")]
        return (pre, post, *values)

    def _listed_values(self, name, pre, post):
        """The synapse type's `name` (weight or delay) for listed synapses: a number for all, a
        value per pair (an array of the projection's shape), or a RandomDistribution drawn for
        each synapse in the list's order (from its rng, which goes on: PyNN's
        FromListConnector draws from a copy of it for each target, the same numbers again)."""
        lazy = self.synapse_type.parameter_space[name]
        number = _number(lazy)
        if number is not None:
            return np.full(len(pre), number)
        base = lazy.base_value
        if isinstance(base, RandomDistribution):
            if len(pre) == 0:
                return np.zeros(0)
            lazy = copy.copy(lazy)
            lazy.shape = (len(pre),)
            return np.asarray(lazy.evaluate(simplify=False), dtype=float).reshape(len(pre))
        if isinstance(base, np.ndarray) and base.shape == (self.pre.size, self.post.size):
            lazy = copy.copy(lazy)
            lazy.shape = base.shape
            return np.asarray(lazy.evaluate(simplify=False), dtype=float)[pre, post]
        raise Unsupported(f"{self.label}.{name}: listed synapses take a number, a value per pair or a RandomDistribution; give the {name}s in the list")

    def _drawn(self):
        """The list PyNN's connector draws (`Connector.connect`, which calls
        `_convergent_connect` for each target cell)."""
        c = self._connector
        name = type(c).__name__
        if getattr(c, "allow_self_connections", True) == "NoMutual" and not (self.pre is self.post and isinstance(self.pre, Population)):
            raise Unsupported(f"{name}(allow_self_connections='NoMutual') between PopulationViews or Assemblies: "
                              "PyNN draws 'NoMutual' between a Population and itself only")
        # The synapse type's other parameters (STDP's), one value per projection.
        self._fixed = {n: _number(lazy) for n, lazy in self.synapse_type.native_parameters.items() if n not in ("weight", "delay")}
        self._drawing = []
        try:
            c.connect(self)
        except Unsupported:
            raise
        except NotImplementedError as e:
            raise Unsupported(f"{name}: PyNN does not draw it ({str(e) or 'its connect() is not implemented'})") from e
        drawn, self._drawing = self._drawing, None
        if not drawn:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
        return tuple(np.concatenate(column) for column in zip(*drawn))

    def _convergent_connect(self, presynaptic_indices, postsynaptic_index, location_selector=None, **connection_parameters):
        """Synapses from cells `presynaptic_indices` of self.pre onto cell `postsynaptic_index`
        of self.post, of `connection_parameters` (native names: a number for all or one per
        synapse), as PyNN's connectors draw them: added to the list."""
        if location_selector is not None:
            raise Unsupported("location_selector: fum's neurons are points")
        # Indices, though CSAConnector gives cells (IDs).
        if isinstance(postsynaptic_index, common.IDMixin):
            postsynaptic_index = self.post.id_to_index(postsynaptic_index)
        if len(presynaptic_indices) and isinstance(presynaptic_indices[0], common.IDMixin):
            presynaptic_indices = self.pre.id_to_index(np.asarray(presynaptic_indices))
        pre = np.asarray(presynaptic_indices, dtype=np.int64).reshape(-1)
        values = {}
        for name, value in connection_parameters.items():
            value = np.broadcast_to(np.asarray(value, dtype=float), pre.shape)
            if name in ("weight", "delay"):
                values[name] = np.array(value)
            elif len(value) and not np.all(value == self._fixed.get(name)):
                name = self._pynn_name(name)
                raise Unsupported(f"{self.label}: {name} per synapse: fum takes one {name} per projection (the synapse type's); weight and delay may differ between synapses")
        self._drawing.append((pre, np.full(len(pre), int(postsynaptic_index), dtype=np.int64), values["weight"], values["delay"]))

    def _pynn_name(self, native: str) -> str:
        """PyNN's name of the synapse type's parameter `native`."""
        syn = self.synapse_type
        for model in (syn, getattr(syn, "timing_dependence", None), getattr(syn, "weight_dependence", None)):
            for name, t in getattr(model, "translations", {}).items():
                if t["translated_name"] == native:
                    return name
        return native

    def _parts(self):
        """(name, source, target, pre, post, rows) of a listed projection for each pair of
        Populations its synapses join (one, unless an Assembly joins several): the fum
        projection's name, the Populations, the synapses' cells there, and their rows in the
        list, ordered as fum.Run.weights lists them (by source, then target; a pair's several
        synapses in the list's order)."""
        pre, post = self._list[0], self._list[1]
        pre_roots, pre_which, pre_index = _locate(self.pre)
        post_roots, post_which, post_index = _locate(self.post)
        which_pre, which_post = pre_which[pre], post_which[post]
        parts = []
        for a, source in enumerate(pre_roots):
            for b, target in enumerate(post_roots):
                rows = np.flatnonzero((which_pre == a) & (which_post == b))
                if len(rows) == 0:
                    continue
                i, j = pre_index[pre[rows]], post_index[post[rows]]
                order = np.argsort(i * target.size + j, kind="stable")
                parts.append((f"{source.fum_name}_to_{target.fum_name}_{self._index}", source, target, i[order], j[order], rows[order]))
        return parts

    def _connect_listed(self, net, poisson) -> None:
        """Adds a listed projection to `net`: a fum.FromList for each pair of Populations."""
        rule = self._plasticity()
        pre, post, weight, delay = self._list
        for name, source, target, i, j, rows in self._parts():
            if source in poisson:
                if self.pre is source:
                    raise Unsupported(f"{self.label}: a SpikeSourcePoisson projects through a OneToOneConnector onto a population of its size (fum's Poisson input: an independent train into each neuron)")
                raise Unsupported(f"{self.label}: a PopulationView of a SpikeSourcePoisson (or an Assembly holding one): fum's Poisson input drives whole populations")
            w = weight[rows] * target.celltype.fum_weight_scale
            if (w < 0).any():
                if self.receptor_type != "inhibitory":
                    raise Unsupported(f"{self.label}: a negative weight onto the {self.receptor_type} receptor")
                w = np.abs(w)
            try:
                net.connect(source.fum_name, target.fum_name, fum.FromList(i, j, weight=w, delay_ms=delay[rows]), name=name,
                            receptor=self.receptor_type, plasticity=rule)
            except ValueError as e:
                raise Unsupported(f"{self.label}: {e}") from e

    # -- The synapse type ---------------------------------------------------------------------

    def _plasticity(self):
        """fum's STDP rule of the synapse type, in fum's units, or None (StaticSynapse)."""
        syn = self.synapse_type
        if not isinstance(syn, (StaticSynapse, STDPMechanism)):
            raise Unsupported(f"synapse type {type(syn).__name__}: fum.pynn has StaticSynapse and STDPMechanism")
        if not isinstance(syn, STDPMechanism):
            return None
        scale = _weight_scale(self.post)
        td, wd = syn.timing_dependence, syn.weight_dependence
        if not isinstance(td, SpikePairRule) or not isinstance(wd, (AdditiveWeightDependence, MultiplicativeWeightDependence)) or syn.voltage_dependence is not None:
            raise Unsupported("STDPMechanism: fum.pynn maps SpikePairRule with AdditiveWeightDependence or MultiplicativeWeightDependence")
        ps, t, w = syn.parameter_space, td.parameter_space, wd.parameter_space
        num = lambda space, key: _value(space[key], f"{self.label}.{key}", distributions=False)  # noqa: E731
        # PyNN's default, 1, is NEST's timing: the whole delay dendritic.
        fraction = num(ps, "dendritic_delay_fraction")
        if fraction not in (0.0, 1.0):
            raise Unsupported(f"{self.label}: dendritic_delay_fraction {fraction}: fum pairs spikes at the neurons (0) or with the whole delay dendritic (1)")
        return fum.Stdp(a_plus=num(t, "A_plus"), a_minus=num(t, "A_minus"), w_max=num(w, "w_max") * scale,
                        w_min=num(w, "w_min") * scale, tau_plus_ms=num(t, "tau_plus"), tau_minus_ms=num(t, "tau_minus"),
                        weight_dependence=wd.fum_dependence, dendritic_delay=fraction == 1.0)

    def _synapse(self):
        """(weight, delay, stdp rule or None) in fum's units, of a projection fum draws: weight
        and delay each a number or a distribution fum draws."""
        rule = self._plasticity()
        ps = self.synapse_type.parameter_space
        try:
            weight = _value(ps["weight"], f"{self.label}.weight", _weight_scale(self.post))
            delay = _value(ps["delay"], f"{self.label}.delay")
        except Unsupported as e:
            if isinstance(self.pre.celltype, SpikeSourcePoisson):
                raise
            raise Unsupported(f"{e} (between whole Populations fum draws the synapses, their weights and delays from its seed; "
                              "connect PopulationViews, e.g. pop[:], to have PyNN draw them, any distribution or value per pair)") from e
        if isinstance(weight, float) and weight < 0:
            if self.receptor_type != "inhibitory":
                raise Unsupported(f"{self.label}: a negative weight onto the {self.receptor_type} receptor")
            weight = -weight
        return weight, delay, rule

    # -- The synapses ---------------------------------------------------------------------------

    def _columns(self):
        """(pre, post, weight, delay) of every synapse: indices in self.pre and self.post,
        weights in PyNN's units as the last run left them (a listed projection's, before the first
        run, as listed), delays in ms rounded to steps (None: drawn by fum from a distribution)."""
        if self._list is None:
            if state.last_run is None:
                raise Unsupported("the synapses of a Projection before the first run(): fum draws them when it builds the network "
                                  "(a connector between whole Populations); PyNN draws those from or onto PopulationViews at once")
            pre, post, weight = state.last_run.weights(self.fum_name)
            given = _number(self.synapse_type.parameter_space["weight"])
            weight = np.asarray(weight, dtype=float) / _weight_scale(self.post) * (-1.0 if given is not None and given < 0 else 1.0)
            delay = _number(self.synapse_type.parameter_space["delay"])
            delay = None if delay is None else np.full(len(pre), float(_steps_ms(delay)))
            return np.asarray(pre, dtype=np.int64), np.asarray(post, dtype=np.int64), weight, delay
        pre, post, weight, delay = self._list
        if state.last_run is not None:
            weight = weight.copy()
            for name, source, target, i, j, rows in self._parts():
                run_pre, run_post, run_weight = state.last_run.weights(name)
                if not (np.array_equal(run_pre, i) and np.array_equal(run_post, j)):   # pragma: no cover - fum lists what it was given
                    raise RuntimeError(f"{self.label}: the synapses of fum projection {name!r} are not the ones listed")
                weight[rows] = np.copysign(np.asarray(run_weight, dtype=float) / target.celltype.fum_weight_scale, weight[rows])
        return pre, post, weight, _steps_ms(delay)

    def __len__(self):
        return len(self._list[0]) if self._list is not None else len(self._columns()[0])

    @property
    def connections(self):
        pre, post, weight, delay = self._columns()
        delays = [None] * len(pre) if delay is None else delay.tolist()
        return [Connection(i, j, w, d) for i, j, w, d in zip(pre.tolist(), post.tolist(), weight.tolist(), delays)]

    def __getitem__(self, i):
        return self.connections[i]

    def __iter__(self):
        return iter(self.connections)

    def set(self, **attributes):
        raise Unsupported("Projection.set: fum draws weights and delays when it builds the network, and PyNN lists them when the Projection is made; give them to the synapse type")

    def _get_attributes_as_list(self, names):
        pre, post, weight, delay = self._columns()
        columns = {"presynaptic_index": pre, "postsynaptic_index": post, "weight": weight, "delay": delay}
        if "delay" in names and delay is None:
            raise Unsupported("reading back delays that fum drew from a distribution: fum.Run.weights gives pre, post and weight")
        for name in names:
            if name not in columns:
                raise Unsupported(f"reading back {name!r}: fum.pynn gives the weight and delay of each synapse")
        return list(zip(*(columns[name].tolist() for name in names)))


# ---------------------------------------------------------------------------------------------
# Current sources: DC inputs into whole populations
# ---------------------------------------------------------------------------------------------

_NEVER_MS = 1e12   # PyNN's default `stop`: the current flows until the run ends


def _step(ms: float) -> int:
    """The step fum rounds a time `ms` (>= 0) to: ms / dt rounded half up, as the engine's
    f64::round does (Python's round() rounds halves to even)."""
    x = ms / state.dt
    whole = math.floor(x)
    return int(whole) + (1 if x - whole >= 0.5 else 0)


def _window(amplitude_na: float, start_ms: float, stop_ms: float) -> list:
    """[(amplitude_pa, start_ms, stop_ms)]: the fum DC input of a current `amplitude_na` (PyNN's
    nA) flowing from `start_ms` until `stop_ms` (start None: from the run's start, stop None:
    until its end), or [] where none flows (no amplitude, or no whole step between start and
    stop once both are rounded to steps: fum's window is the steps from start / dt up to, not
    including, stop / dt)."""
    first = _step(max(start_ms, 0.0))
    last = None if not stop_ms < _NEVER_MS else _step(max(stop_ms, 0.0))
    if amplitude_na == 0.0 or (last is not None and last <= first):
        return []
    return [(amplitude_na * 1000.0, float(start_ms) if first > 0 else None, float(stop_ms) if last is not None else None)]


def _injected_populations(cells, what: str) -> list:
    """The Populations whose cells `cells` are (a Population, PopulationView, Assembly, a list of
    cells or a cell), each once: fum injects into whole populations only, so each population
    `cells` touches must be held whole (in any order), each cell once."""
    if isinstance(cells, common.IDMixin):
        cells = [cells]
    groups = {}
    for cell in cells:
        if not isinstance(cell, common.IDMixin):
            raise TypeError(f"{what}: a Population, PopulationView, Assembly or list of cells (IDs), not {type(cell).__name__}")
        if not cell.celltype.injectable:
            raise TypeError("Can't inject current into a spike source.")
        groups.setdefault(id(cell.parent), (cell.parent, []))[1].append(int(cell))
    populations = []
    for pop, ids in groups.values():
        if not any(p is pop for p in state.populations):
            raise Unsupported(f"{what}: {pop.label} is not a population of this network (it was created before the latest setup())")
        if len(set(ids)) != len(ids):
            raise Unsupported(f"{what}: cells of {pop.label} given more than once; fum injects a current once into each cell of a population "
                              "(inject again to add the same current a second time)")
        if len(ids) != pop.size:
            raise Unsupported(f"{what}: {len(ids)} of the {pop.size} cells of {pop.label}: fum injects a current into whole populations only "
                              "(a DC input drives every neuron of its population); inject into the Population, or make these cells a Population of their own")
        populations.append(pop)
    return populations


class _CurrentSource(StandardCurrentSource):
    """A PyNN current source as fum's DC inputs (`[[inputs]] kind = "dc"`, `fum.Model.dc`): a
    current of one amplitude into every neuron of a whole population, in the steps from `start`
    up to, not including, `stop` (each rounded to steps). Parameters are in PyNN's units (nA,
    ms) and become fum's (pA) when the network is built at the first run(); they may change
    until then (and again after reset())."""

    def __init__(self, **parameters):
        StandardCurrentSource.__init__(self, **parameters)
        self.parameter_space.shape = (1,)
        self._windows()   # refuses bad parameters at once

    def inject_into(self, cells):
        """Injects the current into every cell of `cells`: a Population, or a PopulationView,
        Assembly or list of cells that holds whole Populations (fum's DC inputs drive whole
        populations). Injecting a source twice into a population adds its current twice, as
        on NEST."""
        name = type(self).__name__
        state.refuse_if_built(f"injecting a {name}")
        for pop in _injected_populations(cells, f"{name}.inject_into"):
            state.current_sources.append((self, pop))

    def set_native_parameters(self, parameters):
        name = type(self).__name__
        state.refuse_if_built(f"changing the parameters of a {name}")
        space = copy.deepcopy(self.parameter_space)
        space.update(**dict(parameters.items()))
        self._windows(space)
        self.parameter_space = space

    def get_native_parameters(self):
        space = copy.deepcopy(self.parameter_space)
        space.evaluate(simplify=True)
        return ParameterSpace(dict(space.items()))

    def _number(self, space, key):
        return _value(space[key], f"{type(self).__name__}.{key}", distributions=False)

    def _windows(self, space=None) -> list:
        """[(amplitude_pa, start_ms or None, stop_ms or None)]: the fum DC inputs of the source."""
        raise NotImplementedError

    def record(self):
        raise Unsupported(f"recording the current of a {type(self).__name__}: fum does not record its inputs "
                          "(the current is the source's amplitude in the steps from start / dt up to, not including, stop / dt)")

    def get_data(self):
        self.record()

    _get_data = get_data


class DCSource(_CurrentSource, electrodes.DCSource):
    __doc__ = electrodes.DCSource.__doc__ + """
    On fum: a DC input (`fum.Model.dc`) of amplitude x 1000 pA into every neuron of each
    Population it is injected into, flowing in the steps from round(start / dt) up to, not
    including, round(stop / dt) (a negative start is 0; the default stop, 1e12 ms, never comes).
    """
    translations = build_translations(("amplitude", "amplitude"), ("start", "start"), ("stop", "stop"))

    def _windows(self, space=None) -> list:
        space = self.parameter_space if space is None else space
        amplitude, start, stop = (self._number(space, key) for key in ("amplitude", "start", "stop"))
        if stop < start:
            raise ValueError(f"DCSource: stop ({stop:g} ms) before start ({start:g} ms)")
        return _window(amplitude, start, stop)


class StepCurrentSource(_CurrentSource, electrodes.StepCurrentSource):
    __doc__ = electrodes.StepCurrentSource.__doc__ + """
    On fum: a DC input for each step, amplitudes[k] x 1000 pA from times[k] up to times[k + 1]
    (the last until the run ends), each rounded to steps; where several times round to the
    same step, the last one's amplitude holds (as PyNN's NEST and Brian2 backends).
    """
    translations = build_translations(("amplitudes", "amplitudes"), ("times", "times"))

    def _windows(self, space=None) -> list:
        space = copy.deepcopy(self.parameter_space if space is None else space)
        space.shape = (1,)
        for key in ("times", "amplitudes"):
            if isinstance(space[key].base_value, RandomDistribution):
                raise Unsupported(f"StepCurrentSource.{key}: a Sequence of numbers, not a RandomDistribution")
        space.evaluate(simplify=True)
        values = dict(space.items())
        times, amplitudes = (np.asarray(getattr(values[key], "value", values[key]), dtype=float).reshape(-1) for key in ("times", "amplitudes"))
        if len(times) != len(amplitudes):
            raise ValueError(f"StepCurrentSource: {len(times)} times and {len(amplitudes)} amplitudes: one amplitude per time")
        if (times < 0).any():
            raise ValueError("Step current cannot accept negative timestamps.")
        if len(times) > 1 and (np.diff(times) <= 0).any():
            raise ValueError("Step current timestamps should be monotonically increasing.")
        windows = []
        for k, (time, amplitude) in enumerate(zip(times.tolist(), amplitudes.tolist())):
            windows += _window(amplitude, time, times[k + 1] if k + 1 < len(times) else _NEVER_MS)
        return windows


class ACSource(electrodes.ACSource):
    __doc__ = electrodes.ACSource.__doc__

    def __init__(self, **parameters):
        raise Unsupported("ACSource: fum has no sinusoidal current input; its current inputs are constant "
                          "(DCSource, StepCurrentSource, a cell's i_offset)")


class NoisyCurrentSource(electrodes.NoisyCurrentSource):
    __doc__ = electrodes.NoisyCurrentSource.__doc__

    def __init__(self, **parameters):
        raise Unsupported("NoisyCurrentSource: fum has no noise current input; its current inputs are constant "
                          "(DCSource, StepCurrentSource, a cell's i_offset) and its noise is Poisson spike input "
                          "(a SpikeSourcePoisson through a OneToOneConnector)")


# ---------------------------------------------------------------------------------------------
# The fum model
# ---------------------------------------------------------------------------------------------

def _model(state: State) -> "fum.Model":
    """The fum.Model the described network stands for."""
    net = fum.Model(dt_ms=state.dt, seed=state.seed)
    sources = {}
    for pop in state.populations:
        if isinstance(pop.celltype, SpikeSourcePoisson):
            sources[pop] = pop._fields()
            if sources[pop]["start"] != 0.0 or sources[pop]["duration"] < 1e9:
                raise Unsupported(f"{pop.label}: SpikeSourcePoisson with start or duration: fum's Poisson input runs throughout")
            continue
        fields = pop._fields()
        net.population(pop.fum_name, pop.size, pop.celltype.fum_model, record_spikes=False, **fields)
    for index, (source, pop) in enumerate(state.current_sources):
        for k, (amplitude_pa, start_ms, stop_ms) in enumerate(source._windows()):
            net.dc(pop.fum_name, amplitude_pa, name=f"{pop.fum_name}_current_{index}_{k}", start_ms=start_ms, stop_ms=stop_ms)
    used = set()
    for prj in state.projections:
        if prj._list is not None:
            prj._connect_listed(net, sources)
            continue
        weight, delay, rule = prj._synapse()
        if prj.pre in sources:
            if prj.pre in used:
                raise Unsupported(f"{prj.pre.label}: a SpikeSourcePoisson in two projections: fum's Poisson input is a train per target, not trains shared among targets")
            used.add(prj.pre)
            if type(prj._connector) is not OneToOneConnector or prj.pre.size != prj.post.size:
                raise Unsupported(f"{prj.label}: a SpikeSourcePoisson projects through a OneToOneConnector onto a population of its size (fum's Poisson input: an independent train into each neuron)")
            if rule is not None or not isinstance(weight, float):
                raise Unsupported(f"{prj.label}: from a SpikeSourcePoisson, a StaticSynapse of one weight")
            net.poisson(prj.post.fum_name, rate_hz=sources[prj.pre]["rate_hz"], weight=weight, receptor=prj.receptor_type, name=prj.fum_name)
            continue
        rule_value, fields = prj._rule()
        net.connect(prj.pre.fum_name, prj.post.fum_name, rule_value, weight, name=prj.fum_name, delay_ms=delay,
                    receptor=prj.receptor_type, plasticity=rule, **fields)
    for recorder in state.recorders:
        pop = recorder.population
        if isinstance(pop.celltype, SpikeSourcePoisson):
            continue
        recorded = recorder.recorded
        if any(v.name == "spikes" and ids for v, ids in recorded.items()):
            net.record_spikes(pop.fum_name)
        for variable, ids in recorded.items():
            if variable.name in _PROBED and ids:
                neurons = sorted(int(pop.id_to_index(int(i))) for i in ids)
                interval = recorder.sampling_interval
                net.probe(_probe_name(pop, variable.name), _PROBED[variable.name][0], population=pop.fum_name, neurons=neurons, interval_ms=interval)
    return net


def _probe_name(pop, variable: str) -> str:
    return f"{pop.fum_name}_{variable}"


# ---------------------------------------------------------------------------------------------
# Control and the procedural API
# ---------------------------------------------------------------------------------------------

def setup(timestep=common.control.DEFAULT_TIMESTEP, min_delay=common.control.DEFAULT_MIN_DELAY, max_delay=None, *, seed=0, threads=0, backend="cpu", progress=False, **extra_params):
    """Starts a new network: `timestep` (ms), and fum's own options `seed` (fum draws the
    network and its inputs from it), `threads`, `backend` ("cpu", "cuda", "auto") and
    `progress` (fum's progress line)."""
    common.setup(timestep, min_delay, **extra_params)
    state.clear()
    state.dt = timestep
    state.min_delay = timestep if min_delay == "auto" else min_delay
    state.max_delay = max_delay if max_delay is not None else 1023 * timestep
    state.seed, state.threads, state.backend, state.progress = seed, threads, backend, progress
    return rank()


def end(compatible_output=True):
    """Writes the data of recordings given a file, and forgets the network."""
    for (population, variables, filename) in state.write_on_end:
        population.write_data(get_io(filename), variables)
    state.write_on_end = []


run, run_until = common.build_run(simulator)
run_for = run
reset = common.build_reset(simulator)
initialize = common.initialize
get_current_time, get_time_step, get_min_delay, get_max_delay, num_processes, rank = common.build_state_queries(simulator)

create = common.build_create(Population)
connect = common.build_connect(Projection, FixedProbabilityConnector, StaticSynapse)
record = common.build_record(simulator)


def record_v(source, filename):
    return record(["v"], source, filename)


def list_standard_models():
    """The standard cell types fum.pynn has."""
    return ["IF_curr_exp", "IF_curr_alpha", "IF_cond_exp", "SpikeSourceArray", "SpikeSourcePoisson"]
