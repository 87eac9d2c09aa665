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
  ('uniform', 'normal', 'lognormal'), drawn per neuron by fum with its seed (not PyNN's rng).
- connectors: AllToAll, OneToOne, FixedProbability, FixedNumberPre (fum's fixed_indegree),
  FixedNumberPost (fixed_outdegree), FixedTotalNumber, between whole populations; weights and
  delays a number or a RandomDistribution, drawn by fum. FromList (conn_list of (i, j) or
  with weight and delay columns), and AllToAll and OneToOne between PopulationViews, which draw
  nothing: expanded into a list of synapses (fum.FromList), weights and delays a number or
  the list's columns.
- synapses: StaticSynapse; STDPMechanism with SpikePairRule and Additive- or
  MultiplicativeWeightDependence (fum's pair-based STDP, all-to-all pairing), with
  `dendritic_delay_fraction` 1 (PyNN's default and NEST's timing: fum's `dendritic_delay`) or
  0 (spikes paired at the neurons).
- SpikeSourcePoisson: an independent Poisson train into each target neuron, so only through a
  OneToOneConnector (a source population's trains shared among targets is not fum's input) and
  with a single weight; its spikes cannot be recorded.
- recording: 'spikes', 'v' and (IF_cond_exp) 'gsyn_exc', 'gsyn_inh' of Populations and
  PopulationViews, get_data() (neo Blocks),
  get_spike_counts(), mean_spike_count(); Projection.get('weight', ...) after a run.
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
    from pyNN.parameters import ParameterSpace, Sequence, simplify  # noqa: F401  (sim.Sequence)
    from pyNN.random import NumpyRNG, RandomDistribution  # noqa: F401  (sim.NumpyRNG, sim.RandomDistribution)
    from pyNN.recording import get_io
    from pyNN.space import Space
    from pyNN.standardmodels import build_translations, cells, synapses
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
# Values: one per population, or a distribution fum draws
# ---------------------------------------------------------------------------------------------

def _value(lazy, what: str, scale: float = 1.0, distributions: bool = True, translated: bool = False):
    """The fum value of a PyNN parameter (a lazyarray) in PyNN's units times `scale`: a number
    where it is the same for all, else a fum distribution where it is a RandomDistribution fum
    draws. `translated`: a cell type's native parameter, whose translation has scaled it
    already (a lazy multiplication by `scale`, which a distribution's conversion does)."""
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
    if hasattr(lazy, "is_homogeneous") and not lazy.is_homogeneous:
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
        if value.size == 0 or not np.all(value == value.flat[0]):
            raise Unsupported(f"{what}: fum takes one value per population (or a RandomDistribution it draws), not a value per cell")
        value = value.flat[0]
    return float(value) * (1.0 if translated else scale)


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


class PopulationView(common.PopulationView):
    _assembly_class = Assembly
    _simulator = simulator

    def _get_parameters(self, *names):
        space = self.parent._get_parameters(*names)
        values = {name: simplify(np.asarray(space[name].evaluate(simplify=False))[self.mask]) for name in names}
        return ParameterSpace(values, shape=(self.size,))

    def _set_parameters(self, parameter_space):
        raise Unsupported("setting parameters of a PopulationView: fum takes one value per population")

    def _set_initial_value_array(self, variable, initial_values):
        raise Unsupported("initial values of a PopulationView: fum takes one value (or distribution) per population")

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
            drawn = fum_name in ("i_e_pa", "rate_hz")   # what fum draws per neuron
            fields[fum_name] = _value(self._parameters[native], f"{self.label}.{pynn_name}", scale, distributions=drawn, translated=True)
        for variable, value in self._initial.items():
            if variable not in _INITIAL:
                continue
            field, scale = _INITIAL[variable]
            if celltype.fum_model == "lif_psc_alpha" and field != "v_init_mv":
                if _value(value, f"{self.label} initial {variable}") != 0.0:
                    raise Unsupported(f"{self.label}: initial {variable} of IF_curr_alpha is not supported (fum starts its synaptic currents at 0)")
                continue
            fields[field] = _value(value, f"{self.label} initial {variable}", scale)
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


def _view_index(pop, ids):
    """Indices in `pop` (a Population or PopulationView) of cells `ids` of its Population."""
    if not isinstance(pop, PopulationView):
        return ids
    index = np.full(_root(pop).size, -1, dtype=np.int64)
    index[_cells(pop)] = np.arange(pop.size)
    return index[ids]


# A projection whose synapses fum.pynn lists (Projection._rule): FromListConnector, and the
# connectors that draw nothing between PopulationViews.
_LISTED = object()


class Connection(object):
    """A synapse as a fum run left it (for Projection.get and iteration)."""

    def __init__(self, pre, post, weight):
        self.presynaptic_index, self.postsynaptic_index, self.weight = pre, post, weight

    def as_tuple(self, *names):
        return tuple(getattr(self, name) for name in names)


class Projection(common.Projection):
    __doc__ = common.Projection.__doc__
    _simulator = simulator
    _static_synapse_class = StaticSynapse

    def __init__(self, presynaptic_population, postsynaptic_population, connector, synapse_type=None, source=None, receptor_type=None, space=Space(), label=None):
        state.refuse_if_built("creating a Projection")
        # Before PyNN's own checks, which look for the target's receptor types.
        if isinstance(getattr(postsynaptic_population, "celltype", None), (SpikeSourcePoisson, SpikeSourceArray)):
            raise errors.ConnectionError(f"a {type(postsynaptic_population.celltype).__name__} receives no synapses")
        common.Projection.__init__(self, presynaptic_population, postsynaptic_population, connector, synapse_type, source, receptor_type, space, label)
        for role, pop in (("presynaptic", self.pre), ("postsynaptic", self.post)):
            if not isinstance(pop, (Population, PopulationView)):
                raise Unsupported(f"{role} {type(pop).__name__}: fum connects Populations and PopulationViews, not Assemblies")
            cells = _cells(pop)
            if len(np.unique(cells)) != len(cells):
                raise Unsupported(f"{role} {pop.label}: a PopulationView that repeats cells")
        if source is not None:
            raise Unsupported("source: fum neurons have one spike source")
        self.fum_name = f"{_root(self.pre).fum_name}_to_{_root(self.post).fum_name}_{len(state.projections)}"
        if self._rule()[0] is _LISTED:   # refused at once, not at run()
            self._listed()
        state.projections.append(self)

    def _rule(self):
        c = self._connector
        allow_autapses = getattr(c, "allow_self_connections", True)
        if allow_autapses not in (True, False):
            raise Unsupported(f"{type(c).__name__}(allow_self_connections={allow_autapses!r}): fum allows or refuses self-connections, nothing between")
        fields = {"allow_autapses": bool(allow_autapses)} if self.pre is self.post else {}
        if type(c) is FromListConnector:
            return _LISTED, {}
        if isinstance(self.pre, PopulationView) or isinstance(self.post, PopulationView):
            if type(c) in (OneToOneConnector, AllToAllConnector):
                return _LISTED, {}
            raise Unsupported(f"{type(c).__name__} from or onto a PopulationView: fum draws connections from its own seed over whole "
                              "populations, so a view's share would not be the connector's; AllToAll, OneToOne and FromList connectors, "
                              "which draw nothing, connect views")
        if type(c) is OneToOneConnector:
            return fum.OneToOne(), {}
        if type(c) is AllToAllConnector:
            return fum.AllToAll(), fields
        if type(c) is FixedProbabilityConnector:
            return fum.FixedProbability(float(c.p_connect)), fields
        if type(c) is FixedNumberPreConnector:
            return fum.FixedIndegree(int(c.n)), {**fields, "allow_multapses": bool(c.with_replacement)}
        if type(c) is FixedNumberPostConnector:
            return fum.FixedOutdegree(int(c.n)), {**fields, "allow_multapses": bool(c.with_replacement)}
        if type(c) is FixedTotalNumberConnector:
            if not c.with_replacement:
                raise Unsupported("FixedTotalNumberConnector(with_replacement=False): fum's fixed_total_number, as NEST's, draws with replacement")
            return fum.FixedTotalNumber(int(c.n)), fields
        raise Unsupported(f"{type(c).__name__}: fum.pynn maps AllToAll, OneToOne, FixedProbability, FixedNumberPre, FixedNumberPost, FixedTotalNumber and FromList connectors")

    def _listed(self):
        """(pre, post, weight, delay) of a listed projection: the indices of its synapses' cells
        in their Populations, and each synapse's weight and delay in PyNN's units where the
        connector gives them (FromListConnector's columns), else None."""
        c = self._connector
        pre_cells, post_cells = _cells(self.pre), _cells(self.post)
        weight = delay = None
        if type(c) is FromListConnector:
            table = np.asarray(c.conn_list, dtype=float)
            table = table.reshape(len(table), -1) if table.size else np.zeros((0, 2 + len(c.column_names)))
            i, j = table[:, 0], table[:, 1]
            for role, ids, pop in (("presynaptic", i, self.pre), ("postsynaptic", j, self.post)):
                bad = ~((ids >= 0) & (ids < pop.size) & (ids == np.round(ids)))
                if bad.any():
                    k = int(np.flatnonzero(bad)[0])
                    raise errors.ConnectionError(f"FromListConnector: conn_list[{k}]: {role} index {ids[k]:g} is not a cell of {pop.label} ({pop.size} cells)")
            for column, name in enumerate(c.column_names, 2):
                if name == "weight":
                    weight = table[:, column]
                elif name == "delay":
                    delay = table[:, column]
                else:
                    raise Unsupported(f"FromListConnector column {name!r}: fum lists a weight and a delay per synapse; other parameters are the synapse type's")
            pre, post = pre_cells[i.astype(np.int64)], post_cells[j.astype(np.int64)]
        elif type(c) is OneToOneConnector:
            if self.pre.size != self.post.size:
                raise errors.ConnectionError(f"OneToOneConnector between {self.pre.label} ({self.pre.size} cells) and {self.post.label} ({self.post.size}): the sizes must be equal")
            pre, post = pre_cells, post_cells
        else:
            pre, post = np.repeat(pre_cells, len(post_cells)), np.tile(post_cells, len(pre_cells))
            if _root(self.pre) is _root(self.post) and not c.allow_self_connections:
                keep = pre != post
                pre, post = pre[keep], post[keep]
        return pre, post, weight, delay

    def _fum_list(self, weight, delay):
        """The fum.FromList of a listed projection, weights and delays in fum's units: the
        connector's columns, or the synapse type's `weight` and `delay` (numbers)."""
        pre, post, weights, delays = self._listed()
        if weights is None:
            if not isinstance(weight, float):
                raise Unsupported(f"{self.label}: a RandomDistribution weight on listed synapses (FromListConnector, or a connector between PopulationViews): "
                                  "fum draws distributions over whole populations from its seed; give the weights in the list")
            weights = weight
        else:
            weights = weights * self.post.celltype.fum_weight_scale
            if (weights < 0).any():
                if self.receptor_type != "inhibitory":
                    raise Unsupported(f"{self.label}: a negative weight onto the {self.receptor_type} receptor")
                weights = np.abs(weights)
        if delays is None:
            if not isinstance(delay, float):
                raise Unsupported(f"{self.label}: a RandomDistribution delay on listed synapses: give the delays in the list")
            delays = delay
        return fum.FromList(pre, post, weight=weights, delay_ms=delays)

    def _synapse(self):
        """(weight, delay, stdp rule or None) in fum's units."""
        syn = self.synapse_type
        if not isinstance(syn, (StaticSynapse, STDPMechanism)):
            raise Unsupported(f"synapse type {type(syn).__name__}: fum.pynn has StaticSynapse and STDPMechanism")
        scale = self.post.celltype.fum_weight_scale
        ps = syn.parameter_space
        weight = _value(ps["weight"], f"{self.label}.weight", scale)
        if isinstance(weight, float) and weight < 0:
            if self.receptor_type != "inhibitory":
                raise Unsupported(f"{self.label}: a negative weight onto the {self.receptor_type} receptor")
            weight = -weight
        delay = _value(ps["delay"], f"{self.label}.delay")
        rule = None
        if isinstance(syn, STDPMechanism):
            td, wd = syn.timing_dependence, syn.weight_dependence
            if not isinstance(td, SpikePairRule) or not isinstance(wd, (AdditiveWeightDependence, MultiplicativeWeightDependence)) or syn.voltage_dependence is not None:
                raise Unsupported("STDPMechanism: fum.pynn maps SpikePairRule with AdditiveWeightDependence or MultiplicativeWeightDependence")
            t, w = td.parameter_space, wd.parameter_space
            num = lambda space, key: _value(space[key], f"{self.label}.{key}", distributions=False)  # noqa: E731
            # PyNN's default, 1, is NEST's timing: the whole delay dendritic.
            fraction = num(ps, "dendritic_delay_fraction")
            if fraction not in (0.0, 1.0):
                raise Unsupported(f"{self.label}: dendritic_delay_fraction {fraction}: fum pairs spikes at the neurons (0) or with the whole delay dendritic (1)")
            rule = fum.Stdp(a_plus=num(t, "A_plus"), a_minus=num(t, "A_minus"), w_max=num(w, "w_max") * scale,
                            w_min=num(w, "w_min") * scale, tau_plus_ms=num(t, "tau_plus"), tau_minus_ms=num(t, "tau_minus"),
                            weight_dependence=wd.fum_dependence, dendritic_delay=fraction == 1.0)
        return weight, delay, rule

    def __len__(self):
        return len(self.connections)

    @property
    def connections(self):
        if state.last_run is None:
            raise Unsupported("the synapses of a Projection before the first run(): fum draws them when it builds the network")
        pre, post, weight = state.last_run.weights(self.fum_name)
        pre, post = _view_index(self.pre, pre), _view_index(self.post, post)
        scale = self.post.celltype.fum_weight_scale
        return [Connection(int(i), int(j), float(w) / scale) for i, j, w in zip(pre, post, weight)]

    def __getitem__(self, i):
        return self.connections[i]

    def __iter__(self):
        return iter(self.connections)

    def set(self, **attributes):
        raise Unsupported("Projection.set: fum draws weights and delays when it builds the network; give them to the synapse type")

    def _get_attributes_as_list(self, names):
        if "delay" in names:
            raise Unsupported("reading delays back: fum.Run.weights gives pre, post and weight")
        return [c.as_tuple(*names) for c in self.connections]


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
    used = set()
    for prj in state.projections:
        weight, delay, rule = prj._synapse()
        if _root(prj.pre) in sources:
            if prj.pre is not _root(prj.pre):
                raise Unsupported(f"{prj.label}: a PopulationView of a SpikeSourcePoisson: fum's Poisson input drives whole populations")
            if prj.pre in used:
                raise Unsupported(f"{prj.pre.label}: a SpikeSourcePoisson in two projections: fum's Poisson input is a train per target, not trains shared among targets")
            used.add(prj.pre)
            if type(prj._connector) is not OneToOneConnector or prj.pre.size != prj.post.size or prj.post is not _root(prj.post):
                raise Unsupported(f"{prj.label}: a SpikeSourcePoisson projects through a OneToOneConnector onto a population of its size (fum's Poisson input: an independent train into each neuron)")
            if rule is not None or not isinstance(weight, float):
                raise Unsupported(f"{prj.label}: from a SpikeSourcePoisson, a StaticSynapse of one weight")
            net.poisson(prj.post.fum_name, rate_hz=sources[prj.pre]["rate_hz"], weight=weight, receptor=prj.receptor_type, name=prj.fum_name)
            continue
        rule_value, fields = prj._rule()
        if rule_value is _LISTED:
            net.connect(_root(prj.pre).fum_name, _root(prj.post).fum_name, prj._fum_list(weight, delay), name=prj.fum_name,
                        receptor=prj.receptor_type, plasticity=rule)
            continue
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
