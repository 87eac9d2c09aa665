"""fum as a PyNN backend (fum.pynn): a PyNN script runs, records, and returns neo Blocks; the
network it describes is the one fum's own API builds from the same values in fum's units, spike
for spike; what fum cannot do is refused, saying what. Skipped without PyNN (pip install PyNN)."""

import numpy as np
import pytest

pytest.importorskip("pyNN", reason="fum.pynn is a PyNN backend (pip install PyNN)")

import pyNN.mock as pynn_mock  # noqa: E402

import fum  # noqa: E402
import fum.pynn as sim  # noqa: E402

THREADS = 2
CELL = dict(tau_m=20.0, cm=0.25, v_rest=-70.0, v_reset=-70.0, v_thresh=-55.0, tau_refrac=2.0, tau_syn_E=0.5, tau_syn_I=0.5)


def pynn_network(duration_ms=200.0, runs=2):
    """A small E/I network with Poisson drive in PyNN, run in `runs` calls; PyNN's units (nA, nF)."""
    sim.setup(timestep=0.1, seed=5, threads=THREADS)
    E = sim.Population(400, sim.IF_curr_exp(**CELL), label="E")
    E.initialize(v=sim.RandomDistribution("uniform", (-70.0, -55.0)))
    I = sim.Population(100, sim.IF_curr_exp(**CELL, i_offset=0.3), label="I")
    noise = sim.Population(400, sim.SpikeSourcePoisson(rate=15000.0), label="noise")
    sim.Projection(noise, E, sim.OneToOneConnector(), sim.StaticSynapse(weight=0.05))
    ee = sim.Projection(E, E, sim.FixedNumberPreConnector(40), sim.StaticSynapse(weight=sim.RandomDistribution("uniform", (0.02, 0.06)), delay=1.5))
    sim.Projection(E, I, sim.FixedProbabilityConnector(0.1), sim.StaticSynapse(weight=0.05, delay=1.5))
    sim.Projection(I, E, sim.FixedNumberPreConnector(10), sim.StaticSynapse(weight=-0.25, delay=1.5), receptor_type="inhibitory")
    E.record("spikes")
    I.record("spikes")
    E[0:3].record("v")
    for _ in range(runs):
        sim.run(duration_ms / runs)
    return E, I, ee


def fum_network():
    """The same network in fum's own API and units (pA, pF)."""
    net = fum.Model(dt_ms=0.1, seed=5)
    cell = dict(tau_m_ms=20.0, c_m_pf=250.0, e_l_mv=-70.0, v_reset_mv=-70.0, v_th_mv=-55.0, t_ref_ms=2.0, tau_syn_ex_ms=0.5, tau_syn_in_ms=0.5)
    E = net.population("E", 400, "lif_cuba", **cell, v_init_mv=fum.Uniform(-70.0, -55.0))
    I = net.population("I", 100, "lif_cuba", **cell, i_e_pa=300.0, v_init_mv=-65.0)
    net.poisson(E, rate_hz=15000.0, weight=50.0)
    net.connect(E, E, fum.FixedIndegree(40), weight=fum.Uniform(20.0, 60.0), delay_ms=1.5, allow_autapses=True, allow_multapses=False)
    net.connect(E, I, fum.FixedProbability(0.1), weight=50.0, delay_ms=1.5)
    net.connect(I, E, fum.FixedIndegree(10), weight=250.0, delay_ms=1.5, receptor="inhibitory", allow_multapses=False)
    return net


def spike_array(block):
    """(ids, times) of a neo Block's first segment, sorted by time then id."""
    trains = block.segments[0].spiketrains
    ids = np.concatenate([np.full(len(t), t.annotations["source_index"]) for t in trains])
    times = np.concatenate([t.magnitude for t in trains])
    order = np.lexsort((ids, times))
    return ids[order], times[order]


def sorted_spikes(spikes):
    order = np.lexsort((spikes.node_ids, spikes.timestamps_ms))
    return spikes.node_ids[order], spikes.timestamps_ms[order]


def test_a_pynn_script_gives_the_spikes_of_the_same_network_in_fum():
    E, I, _ = pynn_network()
    block = E.get_data()
    assert len(block.segments) == 1 and len(block.segments[0].spiketrains) == 400
    run = fum_network().run(200.0, threads=THREADS, progress=False)
    for pop, name in ((E, "E"), (I, "I")):
        ids, times = spike_array(pop.get_data())
        expected_ids, expected_times = sorted_spikes(run.spikes(name))
        assert len(ids) > 500, f"{name} fires"
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(times, expected_times, rtol=0, atol=1e-9)
        rate_hz = len(ids) / (pop.size * 0.2)
        assert rate_hz == pytest.approx(run.rates()[name], rel=1e-12)
        assert pop.mean_spike_count() == pytest.approx(len(ids) / pop.size)
    signal = block.segments[0].analogsignals[0]
    assert signal.shape == (2000, 3) and str(signal.units.dimensionality) == "mV"
    np.testing.assert_array_equal(np.asarray(signal.magnitude, dtype=np.float32), fum_probe(run_with_probe()))
    sim.end()


def run_with_probe():
    net = fum_network()
    net.probe("v", "v", population="E", neurons=[0, 1, 2], interval_ms=0.1)
    return net.run(200.0, threads=THREADS, progress=False)


def fum_probe(run):
    return run.probe("v").values


def test_weights_come_back_in_pynn_units_and_stdp_learns():
    sim.setup(timestep=0.1, seed=2, threads=THREADS)
    E = sim.Population(200, sim.IF_curr_exp(**CELL), label="E")
    noise = sim.Population(200, sim.SpikeSourcePoisson(rate=20000.0))
    sim.Projection(noise, E, sim.OneToOneConnector(), sim.StaticSynapse(weight=0.05))
    stdp = sim.STDPMechanism(timing_dependence=sim.SpikePairRule(tau_plus=20.0, tau_minus=20.0, A_plus=0.01, A_minus=0.012),
                             weight_dependence=sim.AdditiveWeightDependence(w_min=0.0, w_max=0.1), weight=0.04, delay=1.0)
    plastic = sim.Projection(E, E, sim.FixedProbabilityConnector(0.1), stdp)
    static = sim.Projection(E, E, sim.AllToAllConnector(allow_self_connections=False), sim.StaticSynapse(weight=0.001, delay=2.0))
    sim.run(100.0)
    assert len(static) == 200 * 199
    weights = np.array(static.get("weight", format="list", with_address=False))
    np.testing.assert_allclose(weights, 0.001, rtol=1e-6)
    learned = plastic.get("weight", format="array")
    assert learned.shape == (200, 200)
    values = learned[~np.isnan(learned)]
    assert len(values) > 0.05 * 200 * 200 and np.all((values >= 0.0) & (values <= 0.1 + 1e-7))
    assert np.count_nonzero(np.abs(values - 0.04) > 1e-6) > 100, "STDP changed weights"
    sim.end()


def test_dendritic_delay_fraction_chooses_the_stdp_timing():
    def rule(fraction):
        sim.setup(timestep=0.1, seed=2, threads=THREADS)
        E = sim.Population(20, sim.IF_curr_exp(**CELL), label="E")
        stdp = sim.STDPMechanism(timing_dependence=sim.SpikePairRule(tau_plus=20.0, tau_minus=20.0, A_plus=0.01, A_minus=0.012),
                                 weight_dependence=sim.AdditiveWeightDependence(w_min=0.0, w_max=0.1), weight=0.04, delay=1.0,
                                 dendritic_delay_fraction=fraction)
        try:
            return sim.Projection(E, E, sim.FixedProbabilityConnector(0.1), stdp)._synapse()[2]
        finally:
            sim.end()
    assert rule(1.0).fields["dendritic_delay"] is True
    assert rule(0.0).fields["dendritic_delay"] is False
    with pytest.raises(Exception, match="dendritic_delay_fraction 0.5"):
        rule(0.5)


def test_a_spike_source_array_fires_its_trains_and_drives_its_targets():
    sim.setup(timestep=0.1, seed=3, threads=THREADS)
    trains = [sim.Sequence([1.0, 5.5]), sim.Sequence([3.0]), sim.Sequence([])]
    source = sim.Population(3, sim.SpikeSourceArray(spike_times=trains), label="source")
    cells = sim.Population(3, sim.IF_curr_exp(**CELL), label="cells")
    sim.Projection(source, cells, sim.OneToOneConnector(), sim.StaticSynapse(weight=20.0, delay=1.0))
    with pytest.raises(Exception, match="receives no synapses"):
        sim.Projection(cells, source, sim.OneToOneConnector(), sim.StaticSynapse(weight=1.0))
    source.record("spikes")
    cells.record("spikes")
    sim.run(20.0)
    fired = [list(t.magnitude) for t in source.get_data().segments[0].spiketrains]
    assert [len(t) for t in fired] == [2, 1, 0]
    np.testing.assert_allclose(np.concatenate(fired), [1.0, 5.5, 3.0], atol=1e-9)
    driven = [list(t.magnitude) for t in cells.get_data().segments[0].spiketrains]
    assert [len(t) for t in driven] == [2, 1, 0], driven
    for train, target in zip(fired, driven):
        for sent, got in zip(train, target):
            assert sent + 1.0 < got < sent + 3.0, (sent, got)
    sim.end()


def test_reset_starts_a_new_segment_of_the_same_network():
    E, _, _ = pynn_network(runs=1)
    first = spike_array(E.get_data())
    sim.reset()
    assert sim.get_current_time() == 0.0
    sim.run(200.0)
    block = E.get_data()
    assert len(block.segments) == 2
    for a, b in zip(first, spike_array_of(block.segments[1])):
        np.testing.assert_array_equal(a, b)
    sim.end()


def spike_array_of(segment):
    ids = np.concatenate([np.full(len(t), t.annotations["source_index"]) for t in segment.spiketrains])
    times = np.concatenate([t.magnitude for t in segment.spiketrains])
    order = np.lexsort((ids, times))
    return ids[order], times[order]


def test_other_cell_types_run():
    sim.setup(timestep=0.1, seed=3, threads=THREADS)
    alpha = sim.Population(50, sim.IF_curr_alpha(i_offset=sim.RandomDistribution("uniform", (0.4, 0.6)), cm=0.25, tau_m=10.0, v_rest=-70.0, v_reset=-70.0, v_thresh=-55.0), label="alpha")
    cond = sim.Population(50, sim.IF_cond_exp(i_offset=1.0), label="cond")
    sim.Projection(alpha, cond, sim.FixedTotalNumberConnector(500), sim.StaticSynapse(weight=0.002, delay=1.0))
    noise = sim.Population(50, sim.SpikeSourcePoisson(rate=sim.RandomDistribution("uniform", (500.0, 1500.0))))
    sim.Projection(noise, cond, sim.OneToOneConnector(), sim.StaticSynapse(weight=0.001))
    assert "[inputs.rate_hz]\nuniform = [500.0, 1500.0]" in sim._model(sim.state).to_toml()
    alpha.record("spikes")
    cond.record("spikes")
    sim.run(100.0)
    counts = alpha.get_spike_counts()
    assert len(counts) == 50 and all(n > 0 for n in counts.values()) and len(set(counts.values())) > 1, "rheobase 375 pA: all fire, each at its own bias"
    assert sum(cond.get_spike_counts().values()) > 0
    sim.end()


def test_conductances_are_recorded_in_microsiemens():
    sim.setup(timestep=0.1, seed=3, threads=THREADS)
    cond = sim.Population(20, sim.IF_cond_exp(tau_syn_E=5.0), label="cond")
    src = sim.Population(20, sim.SpikeSourceArray(spike_times=[5.0, 12.0]), label="src")
    sim.Projection(src, cond, sim.OneToOneConnector(), sim.StaticSynapse(weight=0.004, delay=1.0))
    cond[0:4].record(["gsyn_exc", "gsyn_inh"], sampling_interval=0.1)
    sim.run(30.0)
    signals = {s.name: s for s in cond.get_data().segments[0].analogsignals}
    g, g_inh = signals["gsyn_exc"], signals["gsyn_inh"]
    assert g.shape == (300, 4) and str(g.units.dimensionality) == "uS"
    assert not g_inh.magnitude.any(), "no inhibitory input"
    g = g.magnitude[:, 0]
    # 4 nS arrive 1 ms after each spike and decay with tau_syn_E between arrivals.
    assert g[:55].max() == 0.0 and g.max() == pytest.approx(0.004 * (1.0 + np.exp(-7.0 / 5.0)), rel=1e-5)
    np.testing.assert_allclose(g[70:120] / g[69:119], np.exp(-0.1 / 5.0), rtol=1e-5)
    sim.end()


def test_from_list_and_views_give_the_spikes_of_the_same_lists_in_fum():
    rng = np.random.default_rng(4)
    n = 600
    pre, post = rng.integers(0, 100, n), rng.integers(0, 100, n)
    w, d = rng.uniform(0.01, 0.05, n), rng.choice([1.0, 1.5, 2.0], n)
    e_view, i_view = [11, 15, 17, 20], list(range(3, 63, 3))

    sim.setup(timestep=0.1, seed=9, threads=THREADS)
    E = sim.Population(100, sim.IF_curr_exp(**CELL), label="E")
    E.initialize(v=sim.RandomDistribution("uniform", (-70.0, -55.0)))
    I = sim.Population(30, sim.IF_curr_exp(**CELL), label="I")
    noise = sim.Population(100, sim.SpikeSourcePoisson(rate=15000.0), label="noise")
    sim.Projection(noise, E, sim.OneToOneConnector(), sim.StaticSynapse(weight=0.05))
    ee = sim.Projection(E, E, sim.FromListConnector(list(zip(pre, post, w, d))), sim.StaticSynapse())
    ei = sim.Projection(E[0:40], I[e_view], sim.AllToAllConnector(), sim.StaticSynapse(weight=0.2, delay=1.0))
    ie = sim.Projection(I[10:30], E[i_view], sim.OneToOneConnector(), sim.StaticSynapse(weight=-0.5, delay=1.0), receptor_type="inhibitory")
    pairs = sim.Projection(E, I, sim.FromListConnector([(0, 0), (1, 2), (1, 2)]), sim.StaticSynapse(weight=0.3, delay=2.0))
    E.record("spikes")
    I.record("spikes")
    sim.run(200.0)

    def in_fum(inhibition):
        net = fum.Model(dt_ms=0.1, seed=9)
        cell = dict(tau_m_ms=20.0, c_m_pf=250.0, e_l_mv=-70.0, v_reset_mv=-70.0, v_th_mv=-55.0, t_ref_ms=2.0, tau_syn_ex_ms=0.5, tau_syn_in_ms=0.5)
        fE = net.population("E", 100, "lif_cuba", **cell, v_init_mv=fum.Uniform(-70.0, -55.0))
        fI = net.population("I", 30, "lif_cuba", **cell, v_init_mv=-65.0)
        net.poisson(fE, rate_hz=15000.0, weight=50.0)
        net.connect(fE, fE, fum.FromList(pre, post, weight=w * 1000.0, delay_ms=d))
        net.connect(fE, fI, fum.FromList(np.repeat(np.arange(40), 4), np.tile(e_view, 40), weight=200.0, delay_ms=1.0))
        net.connect(fI, fE, fum.FromList(np.arange(10, 30), i_view, weight=500.0 * inhibition, delay_ms=1.0), receptor="inhibitory")
        net.connect(fE, fI, fum.FromList([0, 1, 1], [0, 2, 2], weight=300.0, delay_ms=2.0), name="pairs")
        return net.run(200.0, threads=THREADS, progress=False)
    run = in_fum(1.0)
    uninhibited = in_fum(0.0)
    assert not np.array_equal(run.spikes("E").node_ids, uninhibited.spikes("E").node_ids), "the views' inhibition is felt"
    for pop, name, fired in ((E, "E", 200), (I, "I", 10)):
        ids, times = spike_array(pop.get_data())
        expected_ids, expected_times = sorted_spikes(run.spikes(name))
        assert len(ids) > fired, f"{name} fires"
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(times, expected_times, rtol=0, atol=1e-9)

    # Weights come back in PyNN's units, indexed in the projection's views.
    assert len(ee) == n and len(pairs) == 3
    listed = sorted(ee.get("weight", format="list"))
    assert [(i, j) for i, j, _ in listed] == sorted(zip(pre.tolist(), post.tolist()))
    np.testing.assert_allclose([x for _, _, x in listed], [x for _, _, x in sorted(zip(pre, post, w))], rtol=1e-6)
    weights = ei.get("weight", format="array")
    assert weights.shape == (40, 4)
    np.testing.assert_allclose(weights, 0.2, rtol=1e-6)
    assert sorted((i, j) for i, j, _ in ie.get("weight", format="list")) == [(k, k) for k in range(20)]
    sim.end()


def test_a_projection_between_views_excludes_self_connections_when_asked():
    sim.setup(timestep=0.1, seed=1)
    E = sim.Population(10, sim.IF_curr_exp(), label="E")
    prj = sim.Projection(E[0:6], E[3:10], sim.AllToAllConnector(allow_self_connections=False), sim.StaticSynapse(weight=0.1, delay=1.0))
    sim.run(1.0)
    pairs = {(i, j) for i, j, _ in prj.get("weight", format="list")}
    # Cells 3, 4 and 5 are in both views (source index 3 is target index 0, ...).
    assert len(pairs) == 6 * 7 - 3 and (3, 0) not in pairs and (4, 1) not in pairs and (3, 1) in pairs
    sim.end()


@pytest.mark.parametrize("build, message", [
    (lambda E, P: sim.Projection(E[0:10], E, sim.FixedProbabilityConnector(0.1), sim.StaticSynapse(weight=0.1)), "FixedProbabilityConnector from or onto a PopulationView: fum draws connections from its own seed"),
    (lambda E, P: sim.Projection(E, E[[1, 2]], sim.FixedNumberPreConnector(1), sim.StaticSynapse(weight=0.1)), "FixedNumberPreConnector from or onto a PopulationView"),
    (lambda E, P: sim.Projection(E, E, sim.ArrayConnector(np.ones((20, 20), bool)), sim.StaticSynapse(weight=0.1)), "ArrayConnector: fum.pynn maps"),
    (lambda E, P: sim.Projection(E[0:5] + E[10:15], E, sim.AllToAllConnector(), sim.StaticSynapse(weight=0.1)), "not Assemblies"),
    (lambda E, P: sim.Projection(E, E, sim.FromListConnector([(0, 20)]), sim.StaticSynapse(weight=0.1)), r"conn_list\[0\]: postsynaptic index 20 is not a cell of E \(20 cells\)"),
    (lambda E, P: sim.Projection(E[0:5], E, sim.FromListConnector([(5, 0)]), sim.StaticSynapse(weight=0.1)), r"presynaptic index 5 is not a cell of view of 'E' with size 5 \(5 cells\)"),
    (lambda E, P: sim.Projection(E, E, sim.FromListConnector([(0, 1, 0.5)], column_names=["U"]), sim.StaticSynapse(weight=0.1)), "FromListConnector column 'U'"),
    (lambda E, P: sim.Projection(E, E, sim.AllToAllConnector(), sim.StaticSynapse(weight=0.1), source="soma"), "source"),
    (lambda E, P: sim.Population(5, pynn_mock.IF_cond_alpha()), "cell type IF_cond_alpha"),
    (lambda E, P: P.record("spikes"), "recording a SpikeSourcePoisson"),
    (lambda E, P: E.record("gsyn_exc"), "gsyn_exc"),
])
def test_what_fum_does_not_do_is_refused_at_once(build, message):
    sim.setup(timestep=0.1)
    E = sim.Population(20, sim.IF_curr_exp(), label="E")
    P = sim.Population(20, sim.SpikeSourcePoisson(rate=10.0))
    with pytest.raises((sim.Unsupported, Exception), match=message):
        build(E, P)
    sim.end()


@pytest.mark.parametrize("build, message", [
    (lambda E, P: sim.Projection(P, E, sim.AllToAllConnector(), sim.StaticSynapse(weight=0.1)), "through a OneToOneConnector"),
    (lambda E, P: E.set(tau_m=sim.RandomDistribution("uniform", (10.0, 20.0))), "tau_m: fum takes one value"),
    (lambda E, P: E.initialize(v=np.linspace(-70.0, -60.0, 20)), "fum takes one value per population"),
    (lambda E, P: sim.Projection(E, E, sim.AllToAllConnector(), sim.StaticSynapse(weight=sim.RandomDistribution("gamma", (1.0, 1.0)))), "not 'gamma'"),
    (lambda E, P: sim.Projection(E, E, sim.FromListConnector([(0, 1)]), sim.StaticSynapse(weight=sim.RandomDistribution("uniform", (0.1, 0.2)))), "a RandomDistribution weight on listed synapses"),
    (lambda E, P: sim.Projection(E[0:4], E[4:8], sim.OneToOneConnector(), sim.StaticSynapse(weight=0.1, delay=sim.RandomDistribution("uniform", (1.0, 2.0)))), "a RandomDistribution delay on listed synapses"),
    (lambda E, P: sim.Projection(E, E, sim.FromListConnector([(0, 1, -0.1, 1.0)]), sim.StaticSynapse()), "a negative weight onto the excitatory receptor"),
    (lambda E, P: sim.Projection(P[0:5], E[0:5], sim.OneToOneConnector(), sim.StaticSynapse(weight=0.1)), "a PopulationView of a SpikeSourcePoisson"),
    (lambda E, P: sim.Projection(P, E[0:20], sim.OneToOneConnector(), sim.StaticSynapse(weight=0.1)), "through a OneToOneConnector onto a population of its size"),
])
def test_what_fum_does_not_do_is_refused_at_the_first_run(build, message):
    sim.setup(timestep=0.1)
    E = sim.Population(20, sim.IF_curr_exp(), label="E")
    P = sim.Population(20, sim.SpikeSourcePoisson(rate=10.0))
    build(E, P)
    with pytest.raises(sim.Unsupported, match=message):
        sim.run(1.0)
    sim.end()


def test_the_network_is_described_before_it_runs():
    sim.setup(timestep=0.1)
    E = sim.Population(20, sim.IF_curr_exp(), label="E")
    sim.run(1.0)
    with pytest.raises(sim.Unsupported, match="creating a Population after the network was built"):
        sim.Population(5, sim.IF_curr_exp())
    with pytest.raises(sim.Unsupported, match="creating a Projection after"):
        sim.Projection(E, E, sim.OneToOneConnector(), sim.StaticSynapse())
    sim.end()
