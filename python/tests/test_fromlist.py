"""Synapses listed from Python (fum.FromList): a listed projection is the network its synapses
spell out, bit for bit (the spikes of the one_to_one, all_to_all or drawn projection it lists,
STDP included); a list the engine cannot take is refused naming what is wrong; a model file
cannot hold the lists, so what would write one refuses."""

import numpy as np
import pytest

import fum

THREADS = 2
CELL = dict(tau_m_ms=20.0, c_m_pf=250.0, e_l_mv=-70.0, v_reset_mv=-70.0, v_th_mv=-55.0, t_ref_ms=2.0, tau_syn_ex_ms=0.5, tau_syn_in_ms=0.5)


def driven(seed=7, n_a=120, n_b=120, n_c=30):
    """A (Poisson-driven, recurrent), B and C: the populations the tests connect."""
    net = fum.Model(dt_ms=0.1, seed=seed)
    A = net.population("A", n_a, "lif_cuba", **CELL, v_init_mv=fum.Uniform(-70.0, -55.0))
    B = net.population("B", n_b, "lif_cuba", **CELL)
    C = net.population("C", n_c, "lif_cuba", **CELL)
    net.poisson(A, rate_hz=15000.0, weight=50.0)
    net.poisson(B, rate_hz=8000.0, weight=50.0)
    net.poisson(C, rate_hz=8000.0, weight=50.0)
    return net, A, B, C


def same_spikes(a, b, populations):
    for name in populations:
        x, y = a.spikes(name), b.spikes(name)
        assert len(x.node_ids) > 30, f"{name} fires"
        np.testing.assert_array_equal(x.node_ids, y.node_ids)
        np.testing.assert_array_equal(x.timestamps_ms, y.timestamps_ms)


def test_listed_one_to_one_and_all_to_all_give_their_spikes_bit_for_bit():
    def network(listed):
        net, A, B, C = driven()
        net.connect(A, A, fum.FixedIndegree(20), weight=fum.Uniform(20.0, 40.0), delay_ms=1.5)
        if listed:
            ids = np.arange(120)
            net.connect(A, B, fum.FromList(ids, ids, weight=120.0, delay_ms=2.0))
            pre, post = np.repeat(ids, 30), np.tile(np.arange(30), 120)
            net.connect(A, C, fum.FromList(pre, post, weight=3.0, delay_ms=1.0), receptor="inhibitory")
        else:
            net.connect(A, B, fum.OneToOne(), weight=120.0, delay_ms=2.0)
            net.connect(A, C, fum.AllToAll(), weight=3.0, delay_ms=1.0, receptor="inhibitory")
        return net
    for shards in (1, 3):
        drawn = network(False).run(200.0, threads=THREADS, shards=shards, progress=False)
        listed = network(True).run(200.0, threads=THREADS, shards=shards, progress=False)
        same_spikes(drawn, listed, ["A", "B", "C"])
        for name in ("A_to_B", "A_to_C"):
            for x, y in zip(drawn.weights(name), listed.weights(name)):
                np.testing.assert_array_equal(x, y)
    # The inhibitory list is felt: C fires less than without it.
    net, A, B, C = driven()
    alone = net.run(200.0, threads=THREADS, progress=False)
    assert listed.rates()["C"] < 0.8 * alone.rates()["C"]


def test_drawn_synapses_read_back_and_listed_give_the_same_spikes():
    def network():
        net, A, B, C = driven(seed=11)
        return net, A, B
    net, A, B = network()
    net.connect(A, A, fum.FixedIndegree(25), weight=fum.Normal(30.0, 8.0), delay_ms=1.5)
    net.connect(A, B, fum.FixedProbability(0.1), weight=fum.Uniform(40.0, 80.0), delay_ms=1.0)
    drawn = net.run(150.0, threads=THREADS, shards=2, progress=False)
    again, A, B = network()
    for name, (source, target), delay in (("A_to_A", (A, A), 1.5), ("A_to_B", (A, B), 1.0)):
        pre, post, weight = drawn.weights(name)
        assert len(np.unique(weight)) > 100, "drawn weights"
        again.connect(source, target, fum.FromList(pre, post, weight=weight, delay_ms=delay))
    listed = again.run(150.0, threads=THREADS, shards=2, progress=False)
    same_spikes(drawn, listed, ["A", "B"])
    for name in ("A_to_A", "A_to_B"):
        for x, y in zip(drawn.weights(name), listed.weights(name)):
            np.testing.assert_array_equal(x, y)


def test_stdp_learns_on_a_list_as_on_the_rule_it_lists():
    stdp = dict(a_plus=0.01, a_minus=0.012, w_max=100.0)

    def network(listed):
        net, A, B, C = driven(seed=3)
        rule = fum.Stdp(**stdp)
        if listed:
            pre, post = np.repeat(np.arange(120), 120), np.tile(np.arange(120), 120)
            net.connect(A, B, fum.FromList(pre, post, weight=2.0, delay_ms=1.0), plasticity=rule)
        else:
            net.connect(A, B, fum.AllToAll(), weight=2.0, delay_ms=1.0, plasticity=rule)
        return net
    drawn = network(False).run(150.0, threads=THREADS, progress=False)
    listed = network(True).run(150.0, threads=THREADS, progress=False)
    same_spikes(drawn, listed, ["A", "B"])
    w_drawn, w_listed = drawn.weights("A_to_B").weight, listed.weights("A_to_B").weight
    np.testing.assert_array_equal(w_drawn, w_listed)
    assert np.count_nonzero(w_listed != 2.0) > 1000, "STDP changed the listed weights"


def test_weights_and_delays_per_synapse_and_repeated_pairs():
    net = fum.Model(dt_ms=0.1, seed=1, duration_ms=20.0)
    src = net.population("src", 3, "spike_source", spike_times_ms=[[1.0], [2.0], []])
    cells = net.population("cells", 4, "lif_cuba", **CELL)
    pre, post = [0, 0, 1, 1, 2], [3, 3, 0, 2, 1]
    weight = np.array([100.0, 250.0, 7.5, 0.0, 3.0])
    net.connect(src, cells, fum.FromList(pre, post, weight=weight, delay_ms=[1.0, 2.5, 4.0, 1.0, 0.1]))
    net.probe("v", "v", population=cells, neurons=[0, 3], interval_ms=0.1)
    run = net.run(progress=False)
    got = run.weights("src_to_cells")
    assert sorted(zip(got.pre.tolist(), got.post.tolist(), got.weight.tolist())) == sorted(zip(pre, post, weight.tolist()))
    # Each synapse arrives after its own delay: cell 3 gets 100 pA at 2 ms and 250 more at 3.5 ms
    # (two synapses of one pair), cell 0 gets 7.5 pA at 6 ms.
    probe = run.probe("v")
    moved = lambda column: probe.time_ms[np.flatnonzero(probe.values[:, column] != probe.values[0, column])[0]]  # noqa: E731
    assert moved(1) == pytest.approx(2.1) and moved(0) == pytest.approx(6.1)
    dv = np.diff(probe.values[:, 1].astype(float))   # dv[k - 1]: the step into sample k
    first, second = dv[20], dv[35]                     # into 2.1 ms and into 3.6 ms
    assert dv[34] < 0.1 * first, "the first synapse's current has decayed by 3.5 ms"
    assert second == pytest.approx(2.5 * first, rel=0.05), "the pair's second synapse (250 pA) arrives at 3.5 ms"


def test_a_list_may_be_empty():
    net = fum.Model(dt_ms=0.1, seed=1, duration_ms=5.0)
    A = net.population("A", 5, "lif_cuba")
    net.connect(A, A, fum.FromList([], [], weight=1.0))
    run = net.run(progress=False)
    assert all(len(column) == 0 for column in run.weights("A_to_A"))


@pytest.mark.parametrize("rule, error, message", [
    (lambda: fum.FromList([0, 1], [0], weight=1.0), ValueError, r"FromList: pre and post differ in length \(2 and 1\)"),
    (lambda: fum.FromList([0, -1], [0, 1], weight=1.0), ValueError, r"FromList.pre\[1\] = -1 is negative"),
    (lambda: fum.FromList([0, 1.5], [0, 1], weight=1.0), TypeError, r"FromList.pre: indices are integers, not float64"),
    (lambda: fum.FromList([[0, 1]], [0], weight=1.0), ValueError, r"FromList.pre: a 1-D list or array"),
    (lambda: fum.FromList([0, 1], [0, 1], weight=[1.0, -2.0]), ValueError, r"FromList.weight\[1\] = -2: weights are magnitudes"),
    (lambda: fum.FromList([0, 1], [0, 1], weight=[1.0, np.nan]), ValueError, r"FromList.weight\[1\] = nan: must be finite"),
    (lambda: fum.FromList([0, 1], [0, 1], weight=[1.0, 2.0, 3.0]), ValueError, r"FromList.weight: a number or one per synapse \(2\), not of shape \(3,\)"),
    (lambda: fum.FromList([0, 1], [0, 1], weight=1e39), ValueError, r"FromList.weight\[0\] = 1e\+39 does not fit the 32-bit floats"),
    (lambda: fum.FromList([0, 1], [0, 1], weight=1.0, delay_ms=[1.0, np.inf]), ValueError, r"FromList.delay_ms\[1\] = inf: must be finite"),
    (lambda: fum.FromList([0, 1], [0, 1], weight=1.0, delay_ms=[1.0, -1.0]), ValueError, r"FromList.delay_ms\[1\] = -1: delays must be positive"),
])
def test_a_list_is_refused_naming_what_is_wrong(rule, error, message):
    with pytest.raises(error, match=message):
        rule()


@pytest.mark.parametrize("connect, error, message", [
    (lambda net, A, B: net.connect(A, B, fum.FromList([0, 10], [0, 1], weight=1.0)), ValueError, r"FromList.pre\[1\] = 10 is not a neuron of population 'A' \(10 neurons\)"),
    (lambda net, A, B: net.connect(A, B, fum.FromList([0, 1], [3, 4], weight=1.0)), ValueError, r"FromList.post\[1\] = 4 is not a neuron of population 'B' \(4 neurons\)"),
    (lambda net, A, B: net.connect(A, B, fum.FromList([0, 1], [0, 1], weight=1.0, delay_ms=[1.0, 0.04])), ValueError, r"FromList.delay_ms\[1\] = 0.04 ms is shorter than one step \(dt = 0.1 ms\)"),
    (lambda net, A, B: net.connect(A, B, fum.FromList([0], [0], weight=1.0, delay_ms=102.4)), ValueError, r"FromList.delay_ms\[0\] = 102.4 ms is longer than fum's 1023 steps \(102.3 ms\)"),
    (lambda net, A, B: net.connect(A, B, fum.FromList([0], [0], weight=1.0), weight=2.0), TypeError, r"connect\(weight=...\): a FromList projection's synapses are those listed"),
    (lambda net, A, B: net.connect(A, B, fum.FromList([0], [0], weight=1.0), delay_ms=2.0), TypeError, r"connect\(delay_ms=...\)"),
    (lambda net, A, B: net.connect(A, B, fum.FromList([0], [0], weight=1.0), allow_autapses=True), TypeError, r"connect\(allow_autapses=...\)"),
    (lambda net, A, B: net.connect(A, B, fum.OneToOne()), TypeError, r"connect\(\) needs a weight"),
])
def test_a_list_that_does_not_fit_its_projection_is_refused(connect, error, message):
    net = fum.Model(dt_ms=0.1, duration_ms=5.0)
    A = net.population("A", 10, "lif_cuba")
    B = net.population("B", 4, "lif_cuba")
    with pytest.raises(error, match=message):
        connect(net, A, B)


def test_what_the_engine_refuses_of_a_list_names_the_field():
    net = fum.Model(dt_ms=0.1, duration_ms=5.0)
    A = net.population("A", 10, "lif_cuba")
    net.connect(A, A, fum.FixedIndegree(2), weight=1.0)
    net.connect(A, A, fum.FromList([0, 1], [1, 2], weight=[5.0, 150.0]), name="listed", plasticity=fum.Stdp(a_plus=0.1, a_minus=0.1, w_max=100.0))
    with pytest.raises(fum.ModelError, match=r"<fum.Model>:\d+:\d+: projections\[1\]\.weight: initial weights must lie within the bounds of rule \"stdp\" \[0, 100\]"):
        net.check()
    # A model file cannot list synapses: the rule it would need is refused without its lists.
    text = "[simulation]\nduration_ms = 1.0\n[[populations]]\nname = \"A\"\nsize = 2\nmodel = \"lif_cuba\"\n" \
           "[[projections]]\nname = \"p\"\nsource = \"A\"\ntarget = \"A\"\nrule = { explicit = 2 }\nweight = 1.0\n"
    with pytest.raises(fum.ModelError, match=r"m.toml:\d+:\d+: projections\[0\]\.rule\.explicit: synapses listed one by one come with the model from Python"):
        fum.Model.from_toml_string(text, "m.toml")


def test_no_model_file_or_checkpoint_holds_a_list(tmp_path):
    net = fum.Model(dt_ms=0.1, seed=2, duration_ms=10.0)
    A = net.population("A", 10, "lif_cuba", i_e_pa=400.0)
    net.connect(A, A, fum.FixedIndegree(2), weight=1.0)
    net.connect(A, A, fum.FromList([0, 1], [1, 2], weight=2.0), name="listed")
    for write in (net.to_toml, net.document):
        with pytest.raises(fum.FumError, match=r"projection 'listed' lists its synapses \(fum.FromList\), which a model file cannot hold"):
            write()
    with pytest.raises(fum.FumError, match="checkpoints of a model with listed synapses"):
        net.run(out=tmp_path / "out", checkpoint_every_ms=5.0, progress=False)
    run = net.run(out=tmp_path / "run", progress=False)
    with pytest.raises(fum.FumError, match="to_toml()"):
        run.model.to_toml()
    # The run's model keeps its lists: it runs again, to the same spikes.
    again = run.model.run(progress=False)
    np.testing.assert_array_equal(again.spikes("A").timestamps_ms, run.spikes("A").timestamps_ms)
    np.testing.assert_array_equal(again.weights("listed").weight, [2.0, 2.0])


def test_the_lists_are_part_of_the_model_hash():
    def hash_of(weight):
        net = fum.Model(dt_ms=0.1, seed=2, duration_ms=1.0)
        A = net.population("A", 10, "lif_cuba")
        net.connect(A, A, fum.FromList([0, 1], [1, 2], weight=weight))
        return net.run(progress=False).run_json["model_hash"]
    # The same range of weights (the same model text), other synapses: another model.
    assert hash_of([2.0, 3.0]) == hash_of([2.0, 3.0]) != hash_of([3.0, 2.0])


def test_a_built_network_with_a_list_runs_on_as_one_run():
    def network():
        net, A, B, C = driven(seed=5)
        ids = np.arange(120)
        net.connect(A, B, fum.FromList(ids, ids[::-1], weight=np.linspace(50.0, 150.0, 120), delay_ms=np.linspace(0.5, 3.0, 120)))
        return net
    whole = network().run(200.0, threads=THREADS, progress=False)
    sim = network().build(threads=THREADS, progress=False)
    sim.run(100.0, progress=False)
    halves = sim.run(100.0, progress=False)
    same_spikes(whole, halves, ["A", "B"])
