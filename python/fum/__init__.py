"""fum from Python: build a spiking network or load a model file, run it, read the results.

    import fum
    net = fum.Model.from_toml("assets/models/brunel.toml")     # a model file, or build one:
    net = fum.Model(dt_ms=0.1, seed=1)
    E = net.population("E", 800, "lif_cuba", tau_m_ms=20.0, v_init_mv=fum.Uniform(-70.0, -55.0))
    net.connect(E, E, fum.FixedIndegree(80), weight=50.0, delay_ms=1.5)
    net.poisson(E, rate_hz=20000.0, weight=50.0)
    run = net.run(200.0, threads=2)
    node_ids, timestamps_ms = run.spikes("E")
    run.rates("E", per_neuron=True)                              # Hz, one per neuron
    sim = net.build(threads=2)                                   # or build once and run on:
    sim.run(100.0); run = sim.run(100.0)                         # the spikes of one run(200.0)

A model built here is written as the TOML model file it stands for (``net.to_toml()``) and
parsed by the engine's own parser: every keyword argument is the model file's field of the
same name (docs/model-format.md), and a mistake raises ``fum.ModelError`` with the message
``fum check`` prints, naming the field. Synapses listed one by one (``fum.FromList``) and
values given per neuron (``v_init_mv=array``, ``i_e_pa=array``, a Poisson input's
``rate_hz=array``) go to the engine beside the text, which cannot hold them.

PyNN scripts run on fum with ``import fum.pynn as sim`` (docs/python.md says what maps).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np

from ._fum import FumError, ModelError, NativeModel, NativeRun, NativeSimulation
from ._fum import resume as _native_resume
from ._fum import to_toml as _to_toml

__all__ = [
    "Model", "Run", "Simulation", "resume", "FumError", "ModelError",
    "Uniform", "Normal", "LogNormal",
    "FixedProbability", "FixedIndegree", "FixedOutdegree", "FixedTotalNumber", "OneToOne", "AllToAll", "FromList",
    "Stdp", "Population", "Projection", "Spikes", "ProbeSamples", "Synapses",
]

# What a Python-built model is called in messages (`<fum.Model>:14:1: populations[0]...`): the
# line and column are those of `Model.to_toml()`'s text.
_NAME = "<fum.Model>"


class _Value:
    """A value written into the model file as `toml()` gives it."""

    def toml(self) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.toml()!r})"


class Uniform(_Value):
    """A distribution drawn per neuron or synapse: uniform on [low, high]."""

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high

    def toml(self):
        return {"uniform": [self.low, self.high]}


class Normal(_Value):
    """A normal distribution of mean `mean` and standard deviation `std`."""

    def __init__(self, mean: float, std: float):
        self.mean, self.std = mean, std

    def toml(self):
        return {"normal": [self.mean, self.std]}


class LogNormal(_Value):
    """e to the power of a normal draw of mean `mu` and standard deviation `sigma` (NumPy's)."""

    def __init__(self, mu: float, sigma: float):
        self.mu, self.sigma = mu, sigma

    def toml(self):
        return {"lognormal": [self.mu, self.sigma]}


class FixedProbability(_Value):
    """Each (source, target) pair is connected with probability `p`."""

    def __init__(self, p: float):
        self.p = p

    def toml(self):
        return {"fixed_probability": self.p}


class FixedIndegree(_Value):
    """Each target neuron gets `k` synapses from sources drawn uniformly."""

    def __init__(self, k: int):
        self.k = k

    def toml(self):
        return {"fixed_indegree": self.k}


class FixedOutdegree(_Value):
    """Each source neuron makes `k` synapses onto targets drawn uniformly."""

    def __init__(self, k: int):
        self.k = k

    def toml(self):
        return {"fixed_outdegree": self.k}


class FixedTotalNumber(_Value):
    """`n` synapses in all, each from a source onto a target drawn uniformly (NEST's
    `fixed_total_number`; multapses kept, autapses as `allow_autapses` says)."""

    def __init__(self, n: int):
        self.n = n

    def toml(self):
        return {"fixed_total_number": self.n}


class OneToOne(_Value):
    """Neuron i of the source onto neuron i of the target."""

    def toml(self):
        return "one_to_one"


class AllToAll(_Value):
    """Every source onto every target."""

    def toml(self):
        return "all_to_all"


class FromList(_Value):
    """Synapses listed one by one: source neuron `pre[k]` onto target neuron `post[k]`
    (population-local indices), of weight `weight[k]` and delay `delay_ms[k]`; `weight` and
    `delay_ms` are each a number for every synapse or one per synapse (default delay: one
    step). Pass it as `connect(A, B, rule=fum.FromList(pre, post, weight=w, delay_ms=d))`.

    Weights are magnitudes, as everywhere in fum (`receptor="inhibitory"` for inhibition);
    delays are rounded to whole steps. A row keeps the order listed, and repeated pairs are
    several synapses. The lists travel with the model, not in its text: `to_toml()` refuses
    a model with listed synapses, and its runs write no checkpoints (`fum.resume` rebuilds a
    model from its text)."""

    def __init__(self, pre: Any, post: Any, weight: Any, delay_ms: Any = None):
        self.pre = _indices(pre, "pre")
        self.post = _indices(post, "post")
        if len(self.pre) != len(self.post):
            raise ValueError(f"FromList: pre and post differ in length ({len(self.pre)} and {len(self.post)})")
        self.weight = _per_synapse(weight, len(self.pre), "weight")
        if (self.weight < 0).any():
            k = int(np.flatnonzero(self.weight < 0)[0])
            raise ValueError(f"FromList.weight[{k}] = {self.weight[k]:g}: weights are magnitudes; give receptor=\"inhibitory\" for inhibition")
        if (np.abs(self.weight) > np.finfo(np.float32).max).any():
            k = int(np.flatnonzero(np.abs(self.weight) > np.finfo(np.float32).max)[0])
            raise ValueError(f"FromList.weight[{k}] = {self.weight[k]:g} does not fit the 32-bit floats weights are stored in")
        self.weight = self.weight.astype(np.float32)
        self.delay_ms = None if delay_ms is None else _per_synapse(delay_ms, len(self.pre), "delay_ms")
        if self.delay_ms is not None and (self.delay_ms <= 0).any():
            k = int(np.flatnonzero(self.delay_ms <= 0)[0])
            raise ValueError(f"FromList.delay_ms[{k}] = {self.delay_ms[k]:g}: delays must be positive")

    def __len__(self) -> int:
        return len(self.pre)

    def toml(self):
        return {"explicit": len(self)}

    def __repr__(self) -> str:
        return f"FromList({len(self)} synapses)"

    def _checked(self, source: str, n_source: Optional[int], target: str, n_target: Optional[int], dt_ms: float) -> "FromList":
        """This list for a projection from `source` onto `target` (their sizes, where known):
        indices in range, delays of at least one step, no longer than fum's longest."""
        for key, ids, name, size in (("pre", self.pre, source, n_source), ("post", self.post, target, n_target)):
            if size is not None and (ids >= size).any():
                k = int(np.flatnonzero(ids >= size)[0])
                raise ValueError(f"FromList.{key}[{k}] = {ids[k]} is not a neuron of population {name!r} ({size} neurons)")
        delay = np.full(len(self), float(dt_ms)) if self.delay_ms is None else self.delay_ms
        steps = np.floor(delay / dt_ms + 0.5)   # to the nearest step, as the engine rounds
        for bad, why in ((steps < 1, f"is shorter than one step (dt = {dt_ms:g} ms)"), (steps > _MAX_DELAY_STEPS, f"is longer than fum's {_MAX_DELAY_STEPS} steps ({_MAX_DELAY_STEPS * dt_ms:g} ms)")):
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise ValueError(f"FromList.delay_ms[{k}] = {delay[k]:g} ms {why}")
        checked = FromList.__new__(FromList)
        checked.pre, checked.post, checked.weight, checked.delay_ms = self.pre, self.post, self.weight, delay
        return checked

    def _columns(self) -> tuple:
        """What the engine takes: pre, post (uint32), weight (float32), delay_ms (float64)."""
        return (self.pre.astype(np.uint32), self.post.astype(np.uint32), self.weight, np.ascontiguousarray(self.delay_ms, dtype=np.float64))


# The longest delay, in steps (fum_kernels::delivery::MAX_DELAY_STEPS).
_MAX_DELAY_STEPS = 1023


def _indices(values: Any, key: str):
    """`values` as a 1-D int64 array of non-negative integers (FromList's `key`)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"FromList.{key}: a 1-D list or array of indices, not of shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"FromList.{key}: indices are integers, not {array.dtype}")
    if (array < 0).any():
        k = int(np.flatnonzero(array < 0)[0])
        raise ValueError(f"FromList.{key}[{k}] = {array[k]} is negative")
    if (array >= 2**32).any():
        k = int(np.flatnonzero(array >= 2**32)[0])
        raise ValueError(f"FromList.{key}[{k}] = {array[k]} is not a neuron index (below 2^32)")
    return array.astype(np.int64)


def _per_synapse(values: Any, n: int, key: str):
    """`values`, a number or one per synapse, as a float64 array of `n` finite values."""
    try:
        array = np.array(values, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"FromList.{key}: a number or one number per synapse ({e})") from None
    if array.ndim == 0:
        array = np.full(n, float(array))
    elif array.ndim != 1 or len(array) != n:
        raise ValueError(f"FromList.{key}: a number or one per synapse ({n}), not of shape {array.shape}")
    if not np.isfinite(array).all():
        k = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"FromList.{key}[{k}] = {array[k]}: must be finite")
    return array


# Population fields that take one value per neuron (an array or sequence), listed beside the text.
_PER_NEURON = ("v_init_mv", "i_e_pa")

_F32_MAX = float(np.finfo(np.float32).max)


def _is_per_neuron(value: Any) -> bool:
    """Whether a field's value lists one value per neuron: a sequence, range, numpy array or
    pandas Series (anything else is a number or a distribution)."""
    return (isinstance(value, (list, tuple, range, np.ndarray)) or hasattr(value, "to_numpy")) and np.ndim(value) != 0


def _per_neuron(values: Any, owner: str, size: int, key: str, rates: bool = False):
    """`values`, one per neuron (`size` neurons) of `owner` ("population 'A'", or "input 'drive'"
    for the neurons of its target), as a float64 array of what the engine stores: finite 32-bit
    floats, or (`rates`) finite rates, not negative. A copy: changing `values` afterwards
    changes nothing of the model."""
    try:
        array = np.array(values, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{owner}: {key} is a number, a distribution or one number per neuron ({e})") from None
    if array.ndim != 1:
        raise ValueError(f"{owner}: {key} is one value per neuron ({size}), not an array of shape {array.shape}")
    if len(array) != size:
        raise ValueError(f"{owner}: {key} has {len(array)} values for {size} neurons")
    bad = ~(np.isfinite(array) & ((array >= 0) if rates else (np.abs(array) <= _F32_MAX)))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{owner}: {key}[{k}] = {array[k]:g} must be " + ("a finite rate, not negative" if rates else "a finite 32-bit float"))
    return array


def _span(values) -> Any:
    """The model file's value for listed values: one number where all are the same, else the
    range they span (what the engine makes of them too)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    return lo if lo >= hi else Uniform(lo, hi)


class Stdp:
    """A pair-based STDP rule (`[[plasticity]]`); pass it as `connect(..., plasticity=rule)`.

    Keyword arguments are the model file's fields: `tau_plus_ms`, `tau_minus_ms`, `w_min`,
    `weight_dependence` ("additive", "multiplicative" or "power_law"), `pairing` ("all_to_all"
    or "nearest"), `dendritic_delay` (True: NEST's timing), `post_history`. One rule may serve
    several projections; it is named `name`, or "stdp", "stdp_2", ... in the order it is first
    used.

    The additive and multiplicative rules take `a_plus`, `a_minus` and `w_max`. NEST's power law
    (`stdp_pl_synapse_hom`) takes NEST's `lambda`, `alpha` and `mu` instead, `lambda` spelled
    `lambda_` (a Python keyword), and `w_max` only for an upper bound::

        fum.Stdp(weight_dependence="power_law", lambda_=0.1, alpha=0.0513, mu=0.4, tau_plus_ms=15.0)
    """

    def __init__(self, a_plus: Optional[float] = None, a_minus: Optional[float] = None, w_max: Optional[float] = None, *, name: Optional[str] = None, **fields: Any):
        self.name = name
        if "lambda_" in fields:
            fields["lambda"] = fields.pop("lambda_")
        given = {"a_plus": a_plus, "a_minus": a_minus, "w_max": w_max}
        self.fields = {**{k: v for k, v in given.items() if v is not None}, **fields}


class Population(NamedTuple):
    """A population of a model; pass it wherever a population's name goes."""

    name: str
    size: int

    def __str__(self) -> str:
        return self.name


class Projection(NamedTuple):
    """A projection of a model; pass it wherever a projection's name goes."""

    name: str
    source: str
    target: str

    def __str__(self) -> str:
        return self.name


def _toml(value: Any) -> Any:
    """The model-file value of `value`: distributions and rules as their tables, populations and
    projections by name, numpy arrays and scalars as lists and numbers."""
    if isinstance(value, _Value):
        return value.toml()
    if isinstance(value, (Population, Projection)):
        return value.name
    if isinstance(value, dict):
        return {k: _toml(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_toml(v) for v in value]
    if hasattr(value, "tolist"):
        return _toml(value.tolist())
    return value


class Model:
    """A network: built here with the methods below, or read from a model file (`from_toml`).

    `Model(dt_ms, seed, duration_ms=None, threads=None, shards=None, weights=None)` takes the
    fields of the file's `[simulation]` table; `duration_ms` may instead be given to `run`.
    """

    def __init__(self, dt_ms: float = 0.1, seed: int = 0, *, duration_ms: Optional[float] = None, threads: Optional[int] = None, shards: Optional[int] = None, weights: Optional[str] = None):
        self._simulation = {"dt_ms": dt_ms, "duration_ms": duration_ms, "seed": seed, "threads": threads, "shards": shards, "weights": weights}
        self._populations: list = []
        self._projections: list = []
        self._plasticity: list = []
        self._rules: list = []
        self._inputs: list = []
        self._structural: list = []
        self._spikes: list = []
        self._probes: list = []
        self._listed: dict = {}
        self._values: dict = {}
        self._input_values: dict = {}
        self._native: Optional[NativeModel] = None

    @classmethod
    def from_toml(cls, path: Union[str, Path]) -> "Model":
        """Reads and validates a model file (as `fum check` does); raises `ModelError`."""
        return cls._loaded(NativeModel.load(str(path)))

    @classmethod
    def from_toml_string(cls, text: str, name: str = "<string>") -> "Model":
        """Parses and validates model text; `name` stands for the file in messages."""
        return cls._loaded(NativeModel.parse(text, name))

    @classmethod
    def _loaded(cls, native: NativeModel) -> "Model":
        model = cls.__new__(cls)
        model._native = native
        return model

    @property
    def populations(self) -> list:
        """Every population as `Population(name, size)`, in the model's order: those added with
        `population()`, or the model file's."""
        if self._native is not None:
            return [Population(name, size) for name, size in self._native.populations()]
        return [Population(p["name"], p["size"]) for p in self._populations]

    def _building(self) -> None:
        if self._native is not None:
            raise FumError(f"this model was read from {self._native.path}: change it in its file")

    def population(self, name: str, size: int, model: str, *, record_spikes: bool = True, **fields: Any) -> Population:
        """Adds `[[populations]]`: `model` is "lif_cuba", "lif_psc_alpha" or "lif_coba"; the
        keyword arguments are its fields (`tau_m_ms`, `c_m_pf`, `e_l_mv`, `v_th_mv`,
        `v_reset_mv`, `t_ref_ms`, `tau_syn_ex_ms`, `tau_syn_in_ms`, `i_e_pa`, `e_ex_mv`,
        `e_in_mv`, `v_init_mv`, `syn_ex_init`, `syn_in_init`, `integrator`); `i_e_pa` and
        `v_init_mv` may be distributions (`Uniform`, `Normal`, `LogNormal`), drawn per neuron,
        or one value per neuron (a sequence, range, numpy array or pandas Series of `size` finite numbers, copied), which go
        to the engine beside the text as `FromList`'s synapses do: such a model has no
        `to_toml()` and its runs no checkpoints (unless every value is the same: then it is
        the one value). `model="spike_source"` makes neurons that fire at given times instead:
        one list of times per neuron (`spike_times_ms=[[1.0, 5.5], [], ...]`) or a SONATA or
        CSV spike file (`spikes="lgn.h5"`, `spikes_population=...`). Its spikes are recorded
        unless `record_spikes=False`."""
        self._building()
        listed = {}
        for key in _PER_NEURON:
            value = fields.get(key)
            if _is_per_neuron(value):
                values = _per_neuron(value, f"population {name!r}", size, key)
                if size == 0:
                    del fields[key]
                elif (values == values[0]).all():
                    fields[key] = float(values[0])
                else:
                    listed[key] = values
                    fields[key] = _span(values)
        if listed:
            if name in self._values:
                raise ValueError(f"a population named {name!r} exists already: give this one another name")
            self._values[name] = listed
            fields["listed"] = list(listed)
        self._populations.append({"name": name, "size": size, "model": model, **fields})
        if record_spikes:
            self._spikes.append(name)
        return Population(name, size)

    def connect(self, source: Union[Population, str], target: Union[Population, str], rule: Any, weight: Any = None, *, name: Optional[str] = None, plasticity: Optional[Union[Stdp, str]] = None, **fields: Any) -> Projection:
        """Adds `[[projections]]` from `source` to `target`: `rule` (FixedIndegree(k), ...) and
        `weight` (a number or distribution); keyword arguments `delay_ms`, `receptor`
        ("excitatory" or "inhibitory"), `allow_autapses`, `allow_multapses`, and `plasticity`
        (an `Stdp` rule). Named `name`, else "<source>_to_<target>". A `FromList` rule lists
        the synapses with their weights and delays (no `weight`, `delay_ms` or
        `allow_*` here)."""
        self._building()
        source, target = str(source), str(target)
        name = name or f"{source}_to_{target}"
        if isinstance(plasticity, Stdp):
            plasticity = self._rule(plasticity)
        if isinstance(rule, FromList):
            for key, given in (("weight", weight is not None), *((k, k in fields) for k in ("delay_ms", "allow_autapses", "allow_multapses"))):
                if given:
                    raise TypeError(f"connect({key}=...): a FromList projection's synapses are those listed, with FromList's weight and delay_ms")
            sizes = {p["name"]: p["size"] for p in self._populations}
            listed = rule._checked(source, sizes.get(source), target, sizes.get(target), self._simulation["dt_ms"])
            if name in self._listed or any(p["name"] == name for p in self._projections):
                raise ValueError(f"a projection named {name!r} exists already: give this one another name (connect(..., name=...))")
            self._listed[name] = listed
            empty = len(listed) == 0
            weight = 0.0 if empty else _span(listed.weight.astype(np.float64))
            if not empty:
                fields["delay_ms"] = _span(listed.delay_ms)
        elif weight is None:
            raise TypeError("connect() needs a weight (a number or distribution), unless its rule is a FromList")
        self._projections.append({"name": name, "source": source, "target": target, "rule": rule, "weight": weight, "plasticity": plasticity, **fields})
        return Projection(name, source, target)

    def _rule(self, rule: Stdp) -> str:
        """The name of `rule` in `[[plasticity]]`, added on first use."""
        for known, name in self._rules:
            if known is rule:
                return name
        name = rule.name or ("stdp" if not self._rules else f"stdp_{len(self._rules) + 1}")
        self._rules.append((rule, name))
        self._plasticity.append({"name": name, **rule.fields})
        return name

    def poisson(self, target: Union[Population, str], rate_hz: Any, weight: float, *, name: Optional[str] = None, **fields: Any) -> str:
        """Adds a Poisson input (`[[inputs]]`, kind "poisson"): an independent train of
        `rate_hz` (a number, a distribution drawn per neuron, or one rate per neuron of
        `target`: a sequence, range, numpy array or pandas Series of finite rates, not negative) into every neuron of
        `target`, each spike of `weight`; keyword argument `receptor`. Returns its name. Rates
        per neuron go to the engine beside the text, as `population`'s arrays do (no
        `to_toml()`, no checkpoints; all the same: the one rate)."""
        self._building()
        name = self._input_name("poisson", target, name)
        fields = {"rate_hz": rate_hz, "weight": weight, **fields}
        if _is_per_neuron(rate_hz):
            size = next((p["size"] for p in self._populations if p["name"] == str(target)), None)
            if size is None:
                raise ValueError(f"input {name!r}: rate_hz per neuron of {str(target)!r}, which is not a population of this model")
            rates = _per_neuron(rate_hz, f"input {name!r}", size, "rate_hz", rates=True)
            if size == 0 or (rates == rates[0]).all():
                fields["rate_hz"] = float(rates[0]) if size else 0.0
            else:
                if name in self._input_values:
                    raise ValueError(f"an input named {name!r} exists already: give this one another name")
                self._input_values[name] = {"rate_hz": rates}
                fields.update(rate_hz=_span(rates), listed=["rate_hz"])
        return self._input("poisson", target, name, fields)

    def dc(self, target: Union[Population, str], amplitude_pa: float, *, name: Optional[str] = None, start_ms: Optional[float] = None, stop_ms: Optional[float] = None) -> str:
        """Adds a constant current (`[[inputs]]`, kind "dc") into every neuron of `target`: for
        the whole run, or in the steps from `start_ms` up to, not including, `stop_ms` (each
        rounded to steps; either may be left out). Returns its name."""
        window = {k: v for k, v in (("start_ms", start_ms), ("stop_ms", stop_ms)) if v is not None}
        return self._input("dc", target, name, {"amplitude_pa": amplitude_pa, **window})

    def _input_name(self, kind: str, target: Any, name: Optional[str]) -> str:
        return name or f"{kind}_{target}" + (f"_{len(self._inputs) + 1}" if any(i["name"] == f"{kind}_{target}" for i in self._inputs) else "")

    def _input(self, kind: str, target: Any, name: Optional[str], fields: dict) -> str:
        self._building()
        name = self._input_name(kind, target, name)
        self._inputs.append({"name": name, "kind": kind, "target": str(target), **fields})
        return name

    def record_spikes(self, *populations: Union[Population, str]) -> None:
        """Records the spikes of these populations too (`[recording] spikes`)."""
        self._building()
        self._spikes.extend(str(p) for p in populations if str(p) not in self._spikes)

    def probe(self, name: str, variable: str, **fields: Any) -> str:
        """Adds `[[recording.probes]]`: `variable` is "v", "syn_ex", "syn_in" or "weight";
        keyword arguments `interval_ms`, and `population` with `neurons=[ids]`, or `projection`
        with `synapses=[[pre, post], ...]` or `count=N`."""
        self._building()
        self._probes.append({"name": name, "variable": variable, **fields})
        return name

    def structural(self, projection: Union[Projection, str], every_ms: float, prune: dict, **fields: Any) -> None:
        """Adds `[[structural]]` (pruning and regrowth) to `projection`: `prune` is e.g.
        `{"weight_below": 0.5}`; keyword arguments `commit_after_ms` and `regrow` (e.g.
        `{"to_indegree": 800, "weight": 5.0}`)."""
        self._building()
        self._structural.append({"projection": projection, "every_ms": every_ms, "prune": prune, **fields})

    def _refuse_listed(self, what: str, listed: list, values: list) -> None:
        """Refuses `what`, a model file, where projections `listed` list their synapses or
        ("population" or "input", name, field) `values` give a field per neuron."""
        if listed:
            raise FumError(f"{what}: projection {listed[0]!r} lists its synapses (fum.FromList), which a model file cannot hold; "
                           "run, build or check the model from Python instead")
        if values:
            kind, name, field = values[0]
            raise FumError(f"{what}: {kind} {name!r} gives {field} per neuron (an array), which a model file cannot hold; "
                           "run, build or check the model from Python instead")

    def _listed_values(self) -> list:
        return [("population", population, key) for population, fields in self._values.items() for key in fields] + \
            [("input", name, key) for name, fields in self._input_values.items() for key in fields]

    def document(self, duration_ms: Optional[float] = None) -> dict:
        """The model file as a dict (tables and arrays of tables as the file lays them out)."""
        self._building()
        self._refuse_listed("document()", list(self._listed), self._listed_values())
        return self._document(duration_ms)

    def _document(self, duration_ms: Optional[float]) -> dict:
        simulation = dict(self._simulation)
        if duration_ms is not None:
            simulation["duration_ms"] = duration_ms
        document = {
            "simulation": simulation,
            "populations": self._populations,
            "projections": self._projections,
            "plasticity": self._plasticity,
            "structural": self._structural,
            "inputs": self._inputs,
            "recording": {"spikes": self._spikes, "probes": self._probes},
        }
        return _toml({k: v for k, v in document.items() if v != []})

    def to_toml(self, duration_ms: Optional[float] = None) -> str:
        """The model file this model stands for (its text, for a model read from a file).
        Refused for a model with listed synapses (`FromList`) or values per neuron, which a
        file cannot hold."""
        if self._native is not None:
            self._refuse_listed("to_toml()", self._native.listed(), self._native.listed_values())
            return self._native.source
        self._building()
        self._refuse_listed("to_toml()", list(self._listed), self._listed_values())
        return self._text(duration_ms)

    def _text(self, duration_ms: Optional[float]) -> str:
        """The model's text, listed projections as `rule = { explicit = N }` and fields given
        per neuron named in their population's `listed` (see `_parsed`)."""
        return _to_toml(self._document(duration_ms))

    def check(self, duration_ms: Optional[float] = None) -> None:
        """Validates the model as `fum check` does; raises `ModelError` naming the field."""
        self._parsed(duration_ms)

    def _parsed(self, duration_ms: Optional[float]) -> NativeModel:
        if self._native is not None:
            return self._native
        if duration_ms is None and self._simulation["duration_ms"] is None:
            raise FumError("a model built in Python needs a duration: Model(duration_ms=...) or run(duration_ms)")
        # The engine's parser, with the synapses of FromList projections and the values given
        # per neuron beside the text.
        listed = {name: rule._columns() for name, rule in self._listed.items()}
        return NativeModel.parse(self._text(duration_ms), _NAME, listed, self._values, self._input_values)

    def run(self, duration_ms: Optional[float] = None, *, seed: Optional[int] = None, backend: str = "cpu", threads: int = 0, shards: int = 0, out: Optional[Union[str, Path]] = None, overwrite: bool = False, checkpoint_every_ms: Optional[float] = None, keep_checkpoints: int = 0, stop_after_ms: Optional[float] = None, progress: Union[bool, Callable[[int, int], None]] = True) -> "Run":
        """Builds and runs the model, as `fum run` does, and returns its `Run`.

        `duration_ms` and `seed` override the model's. `backend` is "cpu", "cuda" or "auto";
        `threads` and `shards` 0 choose (one thread per core, a shard per thread). With `out`, a
        folder, the outputs are written there as well (spikes.h5, probes.h5, run.json), and
        `checkpoint_every_ms`, `keep_checkpoints` and `stop_after_ms` work as `fum run`'s
        options (`fum.resume(out)` continues). `progress`: True prints a progress line on
        stderr (what the build is doing and its time, then a bar of steps), False nothing, a
        function is called as `progress(steps_done, last_step)` (every 100 steps). Ctrl-C stops
        the run after the step, writes its outputs and raises KeyboardInterrupt. The simulation
        runs with the GIL released. To run on afterwards, `build()` instead.
        """
        native = self._parsed(duration_ms)
        override = duration_ms if self._native is not None else None
        out = None if out is None else str(out)
        with _progress(progress) as report:
            result = native.run(duration_ms=override, seed=seed, backend=backend, threads=threads, shards=shards, out=out, overwrite=overwrite,
                                checkpoint_every_ms=checkpoint_every_ms, keep_checkpoints=keep_checkpoints, stop_after_ms=stop_after_ms, progress=report)
        return Run(result)

    def build(self, *, seed: Optional[int] = None, backend: str = "cpu", threads: int = 0, shards: int = 0, progress: Union[bool, Callable[[int, int], None]] = True) -> "Simulation":
        """Builds the network and puts it on its backend without running it: a `Simulation`
        whose `run(duration_ms)` steps on from where the last one stopped, as NEST's
        `Simulate` and Brian2's `run` do. `seed`, `backend`, `threads`, `shards` and `progress`
        as for `run`; the model's duration does not matter. Nothing is written to disk (for
        spikes.h5, run.json and checkpoints, `run(out=...)`)."""
        native = self._parsed(None if self._native is not None or self._simulation["duration_ms"] is not None else self._simulation["dt_ms"])
        with _progress(progress) as report:
            result = native.build(seed=seed, backend=backend, threads=threads, shards=shards, progress=report)
        return Simulation(result)

    def __repr__(self) -> str:
        if self._native is not None:
            return f"Model.from_toml({str(self._native.path)!r})"
        return f"Model({len(self._populations)} populations, {len(self._projections)} projections)"


def resume(out: Union[str, Path], *, threads: int = 0, backend: Optional[str] = None, progress: Union[bool, Callable[[int, int], None]] = True) -> "Run":
    """Continues the run in `out` from its newest valid checkpoint, as `fum resume` does."""
    with _progress(progress) as report:
        result = _native_resume(str(out), threads=threads, backend=backend, progress=report)
    return Run(result)


class _progress:
    """The progress callback a run gets, which the engine calls as (steps_done, last_step,
    phase): `phase` is None for the steps (every 100), and says in words what the run does as
    it starts building the network, as each shard is built and as it places it on its backend.
    A function of the caller's gets the steps, as `progress(steps_done, last_step)`. True draws
    a line on stderr: while building, the phase and the time so far, redrawn four times a
    second by a thread of its own; then a bar of the steps,
    redrawn at most five times a second. A carriage return redraws it in place, in a terminal
    and in Jupyter alike."""

    def __init__(self, progress: Union[bool, Callable[[int, int], None]]):
        self.user = progress if callable(progress) else None
        self.show = progress is True
        self.last = 0.0
        self.started = time.monotonic()
        self.drawn = 0
        self.phase: Optional[str] = None
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.ticker: Optional[threading.Thread] = None

    def __enter__(self) -> Optional[Callable[..., None]]:
        return self.report if self.user is not None or self.show else None

    def report(self, done: int, end: int, phase: Optional[str] = None) -> None:
        if phase is not None:
            if self.show:
                with self.lock:
                    self.phase = phase
                    self.write(self.phase_line())
                if self.ticker is None:
                    self.ticker = threading.Thread(target=self.tick, name="fum-progress", daemon=True)
                    self.ticker.start()
            return
        if self.user is not None:
            self.user(done, end)
            return
        now = time.monotonic()
        with self.lock:
            if self.phase is None and now - self.last < 0.2 and done < end:
                return
            self.phase, self.last = None, now
            share = done / end if end else 1.0
            bar = "=" * int(30 * share)
            self.write(f"fum [{bar:<30}] {done}/{end} steps, {now - self.started:.1f} s")

    def phase_line(self) -> str:
        return f"fum: {self.phase}, {time.monotonic() - self.started:.1f} s"

    def tick(self) -> None:
        while not self.done.wait(0.25):
            with self.lock:
                if self.phase is None:
                    return
                self.write(self.phase_line())

    def write(self, line: str) -> None:
        """Draws `line` over the last one (padded with spaces where the last was longer)."""
        sys.stderr.write("\r" + line.ljust(self.drawn))
        sys.stderr.flush()
        self.drawn = len(line)

    def __exit__(self, *_: Any) -> None:
        self.done.set()
        if self.ticker is not None:
            self.ticker.join()
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


class Spikes(NamedTuple):
    """Spikes of a population, sorted by time: population-local ids (int64) and times in ms
    (float64)."""

    node_ids: Any
    timestamps_ms: Any


class ProbeSamples(NamedTuple):
    """A probe's samples: times (ms), values (samples x sites), and the sites: neuron ids, or
    (sites x 2) [pre, post] pairs for a weight probe (int64)."""

    time_ms: Any
    values: Any
    sites: Any


class Synapses(NamedTuple):
    """A projection's synapses: source and target (population-local ids, int64) and weight."""

    pre: Any
    post: Any
    weight: Any


class Run:
    """A finished run: `run_json` (run.json's content), `spikes()`, `rates()`, `cv()`,
    `probe()`, `weights()`, and the model it ran (`model`, `sizes`). It holds the network as
    the run left it (for `weights()`) while it lives.

    Ids are int64 throughout (spikes' node_ids, probe sites, synapses' pre and post): spikes.h5
    stores SONATA's uint64, which numpy will not use as an index without a cast
    (`np.bincount` refuses it); the values are the same."""

    def __init__(self, native: NativeRun):
        self._native = native
        self.run_json: dict = json.loads(native.report_json())
        self._spikes: dict = {}
        self._probes = {name: (i, variable) for i, (name, variable) in enumerate(native.probe_names())}
        self._model: Optional[Model] = None

    @property
    def outcome(self) -> str:
        """"finished", "stopped" (stop_after_ms) or "interrupted"."""
        return self.run_json["outcome"]

    @property
    def model(self) -> Model:
        """The model run (after `fum.resume`, the one its checkpoints hold), as a `Model` read
        from its text: `run.model.populations`, `run.model.to_toml()`."""
        if self._model is None:
            self._model = Model._loaded(self._native.model())
        return self._model

    @property
    def sizes(self) -> dict:
        """The size of every population of the model, recorded or not: {name: neurons}."""
        return {p.name: p.size for p in self.model.populations}

    @property
    def duration_ms(self) -> float:
        """The biological time simulated, from 0 ms to the run's end (a run stopped early, or a
        `Simulation` run several times, included)."""
        return round(self.run_json["end_step"] * self.run_json["dt_ms"], 9)

    @property
    def populations(self) -> list:
        """The names of the populations whose spikes were recorded."""
        return self._native.spike_populations()

    def spikes(self, population: Union[Population, str]) -> Spikes:
        """The spikes of a recorded population as numpy arrays (node_ids int64, timestamps_ms
        float64) sorted by time, the values spikes.h5 holds; read-only, shared between calls."""
        name = str(population)
        if name not in self._spikes:
            recorded = self.populations
            if name not in recorded:
                raise KeyError(f"the spikes of {name!r} were not recorded (recorded: {', '.join(recorded) or 'none'})")
            node_ids, timestamps = self._native.spikes(recorded.index(name))
            node_ids.flags.writeable = False
            timestamps.flags.writeable = False
            self._spikes[name] = Spikes(node_ids, timestamps)
        return self._spikes[name]

    def spikes_dataframe(self):
        """Every recorded spike as a pandas DataFrame (population, node_ids, timestamps_ms),
        sorted by population, then time. Needs pandas."""
        try:
            import pandas
        except ImportError as e:
            raise ImportError("spikes_dataframe() needs pandas (pip install pandas); spikes() gives numpy arrays without it") from e
        frames = [pandas.DataFrame({"population": name, "node_ids": s.node_ids, "timestamps_ms": s.timestamps_ms}) for name in self.populations for s in [self.spikes(name)]]
        if not frames:
            return pandas.DataFrame({"population": [], "node_ids": [], "timestamps_ms": []})
        return pandas.concat(frames, ignore_index=True)

    def _window(self, population: Union[Population, str], start_ms: Optional[float], end_ms: Optional[float]):
        """The population's size and its spikes (ids, times) in [start_ms, end_ms), the window
        itself (default: the whole run)."""
        name = str(population)
        sizes = self.sizes
        if name not in sizes:
            raise KeyError(f"no population named {name!r} (populations: {', '.join(sizes)})")
        start = 0.0 if start_ms is None else float(start_ms)
        end = self.duration_ms if end_ms is None else float(end_ms)
        if not end > start:
            raise ValueError(f"the window [{start:g} ms, {end:g} ms) is empty")
        node_ids, timestamps = self.spikes(name)
        keep = (timestamps >= start) & (timestamps < end)
        return sizes[name], node_ids[keep], timestamps[keep], start, end

    def rates(self, population: Optional[Union[Population, str]] = None, *, per_neuron: bool = False, start_ms: Optional[float] = None, end_ms: Optional[float] = None):
        """Firing rates, Hz.

        `rates()`: {population: mean rate} of every population over the whole run (run.json's
        `rates_hz`; unrecorded populations too). `rates(pop)`: that mean rate alone.
        `rates(pop, per_neuron=True)`: a numpy array of the population's size, each neuron's
        spike count over the window divided by its length; `start_ms` and `end_ms` choose the
        window [start_ms, end_ms) (default: the whole run), e.g. to leave out a transient. A
        window, or rates per neuron, need the population's spikes recorded."""
        if population is None:
            if per_neuron or start_ms is not None or end_ms is not None:
                raise TypeError("rates per neuron, or over a window, are of one population: rates(population, ...)")
            return dict(self.run_json["rates_hz"])
        if not per_neuron and start_ms is None and end_ms is None:
            name = str(population)
            if name not in self.run_json["rates_hz"]:
                raise KeyError(f"no population named {name!r} (populations: {', '.join(self.run_json['rates_hz'])})")
            return self.run_json["rates_hz"][name]
        size, node_ids, _, start, end = self._window(population, start_ms, end_ms)
        per = np.bincount(node_ids, minlength=size) / ((end - start) * 1e-3)
        return per if per_neuron else float(per.mean())

    def cv(self, population: Union[Population, str], *, start_ms: Optional[float] = None, end_ms: Optional[float] = None, min_spikes: int = 3):
        """The coefficient of variation of each neuron's inter-spike intervals (ISI) in the
        window [start_ms, end_ms) (default: the whole run): their standard deviation (numpy's,
        over n, not n - 1) over their mean, a numpy array of the population's size. NaN where
        a neuron fired fewer than `min_spikes` spikes in the window: always below 2 (no
        interval); the default, 3, also leaves out a single interval, whose CV would be 0.
        Needs the population's spikes recorded. `np.nanmean(run.cv(pop))` is the population's
        mean CV."""
        if min_spikes < 2:
            raise ValueError(f"min_spikes must be at least 2: a CV needs an interval (got {min_spikes})")
        size, node_ids, timestamps, _, _ = self._window(population, start_ms, end_ms)
        order = np.argsort(node_ids, kind="stable")   # by neuron, each neuron's spikes still in time order
        ids, times = node_ids[order], timestamps[order]
        same = ids[1:] == ids[:-1]
        isi, owner = np.diff(times)[same], ids[1:][same]
        intervals = np.bincount(owner, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(owner, isi, size) / intervals
            deviation = isi - mean[owner]
            cv = np.sqrt(np.bincount(owner, deviation * deviation, size) / intervals) / mean
        cv[np.bincount(ids, minlength=size) < min_spikes] = np.nan
        return cv

    def probe(self, name: str) -> ProbeSamples:
        """The samples of probe `name` (`[[recording.probes]]`), as probes.h5 holds them."""
        if name not in self._probes:
            raise KeyError(f"no probe named {name!r} (probes: {', '.join(self._probes) or 'none'})")
        return ProbeSamples(*self._native.probe(self._probes[name][0]))

    def weights(self, projection: Union[Projection, str]) -> Synapses:
        """Every synapse of `projection` as the run left it (pre, post, weight), ordered by
        source, then target, whatever the shards and threads. A plastic
        weight lacks the potentiation still pending since its source's last spike (STDP's
        potentiation is applied at the next presynaptic spike: docs/model-format.md). A run of a
        `Simulation` that has run on since refuses: take them from its latest run."""
        return Synapses(*self._native.weights(str(projection)))

    def __repr__(self) -> str:
        return f"Run({self.outcome}, {self.run_json['end_step']} steps, rates {self.rates()})"


class Simulation:
    """A network built once (`Model.build`) and run in several calls: each `run(duration_ms)`
    steps on from where the last one stopped, as NEST's `Simulate` and Brian2's `run` do, so
    runs of 100 ms and 100 ms give the spikes (and learned weights) of one run of 200 ms, bit
    for bit. Each returns a `Run` of everything from 0 ms to its end: what is recorded
    accumulates, and its rates count from 0 ms. The simulation runs with the GIL released;
    Ctrl-C stops it after the step, raising KeyboardInterrupt, and the next `run` goes on from
    there. Nothing is written to disk.

        sim = net.build(threads=2)
        sim.run(100.0)
        run = sim.run(100.0)           # run.spikes("E"): 0-200 ms; sim.time_ms == 200.0
    """

    def __init__(self, native: NativeSimulation):
        self._native = native

    def run(self, duration_ms: float, *, progress: Union[bool, Callable[[int, int], None]] = True) -> Run:
        """Steps on for `duration_ms` (whole steps of dt) and returns the `Run` so far.
        `progress` as for `Model.run` (steps counted from 0 ms)."""
        with _progress(progress) as report:
            result = self._native.run(duration_ms, progress=report)
        return Run(result)

    @property
    def steps(self) -> int:
        """Steps simulated so far."""
        return self._native.steps()

    @property
    def time_ms(self) -> float:
        """Biological time simulated so far, ms."""
        return round(self.steps * self._native.dt_ms, 9)

    @property
    def model(self) -> Model:
        """The model built."""
        return Model._loaded(self._native.model())

    def __repr__(self) -> str:
        return f"Simulation({self.time_ms:g} ms simulated)"
