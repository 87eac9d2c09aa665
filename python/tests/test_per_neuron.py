"""Values per neuron from Python (`v_init_mv=array`, `i_e_pa=array`, a Poisson input's
`rate_hz=array`): they reach the engine (a population of them is the network of one population
per neuron, each with its own value, bit for bit, on any threads and shards; each neuron's rate
gives it the train a constant rate gives it); a wrong array is refused naming the population
or input and the field; a model file cannot hold them, so what would write one refuses; they
are part of the model's hash. (tests/alpha.rs and tests/determinism.rs find that listing the
values a distribution drew gives the drawn network's spikes.)"""

import numpy as np
import pytest

import fum

CELL = dict(tau_m_ms=20.0, c_m_pf=250.0, e_l_mv=-70.0, v_reset_mv=-70.0, v_th_mv=-55.0, t_ref_ms=2.0)
N = 12
# Initial potentials across the range, biases around the rheobase (187.5 pA): some neurons fire.
V0 = np.linspace(-70.0, -56.0, N)
BIAS = np.linspace(150.0, 420.0, N)


def listed(**run):
    """One population of N neurons, each with its own initial v and bias; v probed."""
    net = fum.Model(dt_ms=0.1, seed=3, duration_ms=100.0)
    A = net.population("A", N, "lif_cuba", **CELL, v_init_mv=V0, i_e_pa=list(BIAS))
    net.probe("v", "v", population=A, neurons=list(range(N)))
    return net.run(progress=False, **run)


def one_per_neuron():
    """N populations of one neuron, each its value as a number."""
    net = fum.Model(dt_ms=0.1, seed=3, duration_ms=100.0)
    for k in range(N):
        P = net.population(f"n{k}", 1, "lif_cuba", **CELL, v_init_mv=float(V0[k]), i_e_pa=float(BIAS[k]))
        net.probe(f"v{k}", "v", population=P, neurons=[0])
    return net.run(progress=False)


def test_values_per_neuron_are_those_of_one_population_per_neuron():
    run, split = listed(threads=1), one_per_neuron()
    v = run.probe("v").values
    np.testing.assert_array_equal(v, np.hstack([split.probe(f"v{k}").values for k in range(N)]))
    ids, times = run.spikes("A")
    assert len(ids) > 20 and len(set(ids)) > 1, "several neurons fire"
    for k in range(N):
        np.testing.assert_array_equal(times[ids == k], split.spikes(f"n{k}").timestamps_ms)
    for threads, shards in ((2, 0), (1, 3)):
        other = listed(threads=threads, shards=shards)
        np.testing.assert_array_equal(other.probe("v").values, v)
        np.testing.assert_array_equal(other.spikes("A").node_ids, ids)


@pytest.mark.parametrize("value, error, message", [
    (V0[:5], ValueError, "population 'A': v_init_mv has 5 values for 12 neurons"),
    (np.r_[V0[:11], np.nan], ValueError, r"population 'A': v_init_mv\[11\] = nan must be a finite 32-bit float"),
    (np.r_[V0[:11], 1e39], ValueError, r"population 'A': v_init_mv\[11\] = 1e\+39 must be a finite 32-bit float"),
    (V0.reshape(3, 4), ValueError, r"population 'A': v_init_mv is one value per neuron \(12\), not an array of shape \(3, 4\)"),
    (["a"] * N, TypeError, "population 'A': v_init_mv is a number, a distribution or one number per neuron"),
])
def test_a_wrong_array_is_refused_naming_the_population_and_field(value, error, message):
    net = fum.Model(dt_ms=0.1, seed=3, duration_ms=10.0)
    with pytest.raises(error, match=message):
        net.population("A", N, "lif_cuba", v_init_mv=value)
    with pytest.raises(error, match=message.replace("v_init_mv", "i_e_pa")):
        net.population("A", N, "lif_cuba", i_e_pa=value)


def test_the_values_are_copied_when_given():
    # A range and an array changed after the call give the values they held at the call.
    def network(v0):
        net = fum.Model(dt_ms=0.1, seed=3, duration_ms=100.0)
        A = net.population("A", N, "lif_cuba", **CELL, v_init_mv=v0, i_e_pa=range(150, 150 + 20 * N, 20))
        net.probe("v", "v", population=A, neurons=list(range(N)))
        return net

    v0 = V0.copy()
    changed = network(v0)
    v0[:] = -60.0
    np.testing.assert_array_equal(changed.run(progress=False).probe("v").values, network(V0).run(progress=False).probe("v").values)


def test_the_same_value_for_every_neuron_is_the_one_value():
    net = fum.Model(dt_ms=0.1, seed=3, duration_ms=10.0)
    net.population("A", N, "lif_cuba", v_init_mv=np.full(N, -65.0), i_e_pa=[100.0] * N)
    text = net.to_toml()
    assert "v_init_mv = -65.0" in text and "i_e_pa = 100.0" in text and "listed" not in text


def test_no_model_file_or_checkpoint_holds_values(tmp_path):
    net = fum.Model(dt_ms=0.1, seed=3, duration_ms=50.0)
    net.population("A", N, "lif_cuba", **CELL, i_e_pa=BIAS)
    for write in (net.to_toml, net.document):
        with pytest.raises(fum.FumError, match=r"population 'A' gives i_e_pa per neuron \(an array\), which a model file cannot hold"):
            write()
    with pytest.raises(fum.FumError, match=r"checkpoints of a model with listed synapses \(fum.FromList\) or values per neuron"):
        net.run(out=tmp_path / "out", checkpoint_every_ms=10.0, progress=False)
    run = net.run(out=tmp_path / "run", progress=False)
    with pytest.raises(fum.FumError, match="to_toml()"):
        run.model.to_toml()
    # The run's model keeps its values: it runs again, to the same spikes; so does a model built
    # once and run on.
    again = run.model.run(progress=False)
    assert len(run.spikes("A").node_ids) > 10
    np.testing.assert_array_equal(again.spikes("A").timestamps_ms, run.spikes("A").timestamps_ms)
    sim = net.build(progress=False)
    sim.run(20.0)
    np.testing.assert_array_equal(sim.run(30.0).spikes("A").timestamps_ms, run.spikes("A").timestamps_ms)
    # A model file that says a population lists its values is refused without them.
    text = "[simulation]\nduration_ms = 1.0\n[[populations]]\nname = \"A\"\nsize = 2\nmodel = \"lif_cuba\"\nlisted = [\"v_init_mv\"]\n"
    with pytest.raises(fum.ModelError, match=r"m.toml:\d+:\d+: populations\[0\]\.listed: v_init_mv listed per neuron comes with the model from Python"):
        fum.Model.from_toml_string(text, "m.toml")


def test_the_values_are_part_of_the_model_hash():
    def hash_of(v):
        net = fum.Model(dt_ms=0.1, seed=3, duration_ms=1.0)
        net.population("A", 3, "lif_cuba", v_init_mv=v)
        return net.run(progress=False).run_json["model_hash"]
    # The same range (the same model text), other values: another model.
    assert hash_of([-70.0, -60.0, -65.0]) == hash_of([-70.0, -60.0, -65.0]) != hash_of([-70.0, -65.0, -60.0])


# Poisson rates per target neuron: N unconnected neurons, each driven at one of three rates. A
# neuron's train is keyed by (input, neuron, step), so each neuron fires as in the run of the
# same input at its rate for all.
LEVELS = np.array([8000.0, 12000.0, 16000.0])
RATES = LEVELS[np.arange(N) % 3]
DRIVEN = dict(CELL, tau_syn_ex_ms=0.5, v_init_mv=-65.0)


def driven(rate_hz, **run):
    net = fum.Model(dt_ms=0.1, seed=3, duration_ms=100.0)
    A = net.population("A", N, "lif_cuba", **DRIVEN)
    net.poisson(A, rate_hz=rate_hz, weight=50.0, name="drive")
    net.probe("v", "v", population=A, neurons=list(range(N)))
    return net.run(progress=False, **run)


def test_rates_per_neuron_give_each_neuron_the_train_of_its_rate():
    run = driven(RATES, threads=1)
    ids, times = run.spikes("A")
    v = run.probe("v").values
    for level in LEVELS:
        alike = driven(float(level))
        which = np.flatnonzero(RATES == level)
        np.testing.assert_array_equal(v[:, which], alike.probe("v").values[:, which])
        for k in which:
            np.testing.assert_array_equal(times[ids == k], alike.spikes("A").timestamps_ms[alike.spikes("A").node_ids == k])
    counts = np.bincount(ids, minlength=N)
    assert counts[RATES == LEVELS[2]].sum() > 2 * counts[RATES == LEVELS[0]].sum() > 0, counts
    for threads, shards in ((2, 0), (1, 3)):
        other = driven(list(RATES), threads=threads, shards=shards)
        np.testing.assert_array_equal(other.probe("v").values, v)
        np.testing.assert_array_equal(other.spikes("A").node_ids, ids)


@pytest.mark.parametrize("value, error, message", [
    (RATES[:5], ValueError, "input 'drive': rate_hz has 5 values for 12 neurons"),
    (np.r_[RATES[:11], -1.0], ValueError, r"input 'drive': rate_hz\[11\] = -1 must be a finite rate, not negative"),
    (np.r_[RATES[:11], np.inf], ValueError, r"input 'drive': rate_hz\[11\] = inf must be a finite rate, not negative"),
    (np.r_[np.nan, RATES[1:]], ValueError, r"input 'drive': rate_hz\[0\] = nan must be a finite rate, not negative"),
    (RATES.reshape(3, 4), ValueError, r"input 'drive': rate_hz is one value per neuron \(12\), not an array of shape \(3, 4\)"),
    (["a"] * N, TypeError, "input 'drive': rate_hz is a number, a distribution or one number per neuron"),
])
def test_a_wrong_array_of_rates_is_refused_naming_the_input_and_field(value, error, message):
    net = fum.Model(dt_ms=0.1, seed=3, duration_ms=10.0)
    net.population("A", N, "lif_cuba")
    with pytest.raises(error, match=message):
        net.poisson("A", rate_hz=value, weight=1.0, name="drive")
    with pytest.raises(ValueError, match="input 'poisson_B': rate_hz per neuron of 'B', which is not a population of this model"):
        net.poisson("B", rate_hz=RATES, weight=1.0)


def test_rates_per_neuron_are_one_rate_where_equal_and_no_model_file_holds_them(tmp_path):
    net = fum.Model(dt_ms=0.1, seed=3, duration_ms=10.0)
    net.population("A", N, "lif_cuba")
    net.poisson("A", rate_hz=np.full(N, 500.0), weight=1.0)
    assert "rate_hz = 500.0" in net.to_toml() and "listed" not in net.to_toml()
    net.poisson("A", rate_hz=RATES, weight=1.0, name="drive")
    for write in (net.to_toml, net.document):
        with pytest.raises(fum.FumError, match=r"input 'drive' gives rate_hz per neuron \(an array\), which a model file cannot hold"):
            write()
    with pytest.raises(fum.FumError, match=r"values per neuron \(v_init_mv, i_e_pa, rate_hz arrays\)"):
        net.run(out=tmp_path / "out", checkpoint_every_ms=5.0, progress=False)
    run = net.run(progress=False)
    with pytest.raises(fum.FumError, match="to_toml()"):
        run.model.to_toml()
    with pytest.raises(ValueError, match="an input named 'drive' exists already"):
        net.poisson("A", rate_hz=RATES[::-1], weight=1.0, name="drive")
    text = "[simulation]\nduration_ms = 1.0\n[[populations]]\nname = \"A\"\nsize = 2\nmodel = \"lif_cuba\"\n" \
           "[[inputs]]\nname = \"drive\"\nkind = \"poisson\"\ntarget = \"A\"\nweight = 1.0\nlisted = [\"rate_hz\"]\n"
    with pytest.raises(fum.ModelError, match=r"m.toml:\d+:\d+: inputs\[0\]\.listed: rate_hz listed per neuron comes with the model from Python"):
        fum.Model.from_toml_string(text, "m.toml")


def test_the_rates_are_part_of_the_model_hash():
    def hash_of(rates):
        net = fum.Model(dt_ms=0.1, seed=3, duration_ms=1.0)
        net.population("A", 3, "lif_cuba")
        net.poisson("A", rate_hz=rates, weight=1.0)
        return net.run(progress=False).run_json["model_hash"]
    assert hash_of([10.0, 30.0, 20.0]) == hash_of([10.0, 30.0, 20.0]) != hash_of([10.0, 20.0, 30.0])
