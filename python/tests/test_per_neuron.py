"""Values per neuron from Python (`v_init_mv=array`, `i_e_pa=array`): they reach the engine (a
population of them is the network of one population per neuron, each with its own value, bit
for bit, on any threads and shards); a wrong array is refused naming the population and the
field; a model file cannot hold them, so what would write one refuses; they are part of the
model's hash. (tests/alpha.rs finds that listing the values a distribution drew gives the
drawn network's spikes.)"""

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
