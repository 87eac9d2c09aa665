"""fum as a PyNN backend (fum.pynn): a PyNN script runs, records, and returns neo Blocks; the
network it describes is the one fum's own API builds from the same values in fum's units, spike
for spike; what fum cannot do is refused, saying what. Skipped without PyNN (pip install PyNN)."""

import numpy as np
import pytest

pytest.importorskip("pyNN", reason="fum.pynn is a PyNN backend (pip install PyNN)")

import pyNN.mock as pynn_mock  # noqa: E402
from pyNN.core import IndexBasedExpression  # noqa: E402
from pyNN.space import Grid2D  # noqa: E402

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


# ---------------------------------------------------------------------------------------------
# Connectors PyNN draws: between PopulationViews and Assemblies (and, where fum has no rule for
# the connector, between whole Populations), PyNN's own connector code draws the synapses with
# the connector's rng, and fum runs them as a fum.FromList.
# ---------------------------------------------------------------------------------------------

class _Near(IndexBasedExpression):
    """A connection probability falling with the distance between indices."""

    def __call__(self, i, j):
        return np.exp(-np.abs(i - j) / 5.0)


def _seeded(s, seed):
    return s.NumpyRNG(seed=seed)


DRAWN = {
    "FixedProbability": lambda s: s.FixedProbabilityConnector(0.3, rng=_seeded(s, 11)),
    "FixedProbability without self-connections": lambda s: s.FixedProbabilityConnector(0.3, allow_self_connections=False, rng=_seeded(s, 11)),
    "FixedNumberPre": lambda s: s.FixedNumberPreConnector(4, rng=_seeded(s, 11)),
    "FixedNumberPre with replacement": lambda s: s.FixedNumberPreConnector(4, with_replacement=True, rng=_seeded(s, 11)),
    "FixedNumberPre of a distribution": lambda s: s.FixedNumberPreConnector(s.RandomDistribution("uniform_int", (2, 6), rng=_seeded(s, 5)), rng=_seeded(s, 11)),
    "FixedNumberPost": lambda s: s.FixedNumberPostConnector(3, rng=_seeded(s, 11)),
    "FixedTotalNumber": lambda s: s.FixedTotalNumberConnector(50, rng=_seeded(s, 11)),
    "FixedTotalNumber without replacement": lambda s: s.FixedTotalNumberConnector(50, with_replacement=False, rng=_seeded(s, 11)),
    "DistanceDependentProbability": lambda s: s.DistanceDependentProbabilityConnector("exp(-d/4)", rng=_seeded(s, 11)),
    "IndexBasedProbability": lambda s: s.IndexBasedProbabilityConnector(_Near(), rng=_seeded(s, 11)),
    "DisplacementDependentProbability": lambda s: s.DisplacementDependentProbabilityConnector(lambda d: (np.abs(d[0]) < 6) * 0.5, rng=_seeded(s, 11)),
    "Array": lambda s: s.ArrayConnector(np.random.RandomState(3).rand(20, 10) < 0.2),
    "AllToAll of drawn weights": lambda s: s.AllToAllConnector(allow_self_connections=False),
}


def drawn_projection(s, connector, between="views"):
    """A projection of `connector` in backend `s` (fum.pynn or pyNN.mock): between views of one
    Population (overlapping, so that self-connections are possible) or of two, or between two
    whole Populations (where fum has no rule for the connector); weights and delays drawn from
    RandomDistributions of their own rngs."""
    s.setup(timestep=0.1)
    a = s.Population(30, s.IF_curr_exp(**CELL), label="a")
    b = s.Population(20, s.IF_curr_exp(**CELL), label="b")
    syn = s.StaticSynapse(weight=s.RandomDistribution("gamma", (2.0, 0.05), rng=_seeded(s, 12)),
                          delay=s.RandomDistribution("uniform", (0.5, 3.0), rng=_seeded(s, 13)))
    if between == "views":
        return s.Projection(a[5:25], a[[1, 4, 7, 9, 12, 20, 21, 22, 23, 24]], connector(s), syn)
    if between == "views of two populations":
        return s.Projection(a[5:25], b[0:10], connector(s), syn)
    return s.Projection(s.Population(20, s.IF_curr_exp(**CELL), label="c"), s.Population(10, s.IF_curr_exp(**CELL), label="d"), connector(s), syn)


def as_array(listed):
    return np.array(listed, dtype=float).reshape(-1, 4)


@pytest.mark.parametrize("between", ["views", "views of two populations"])
@pytest.mark.parametrize("connector", list(DRAWN.values()), ids=list(DRAWN))
def test_connectors_between_views_give_the_synapses_pynn_draws(connector, between):
    expected = as_array(drawn_projection(pynn_mock, connector, between).get(["weight", "delay"], format="list"))
    prj = drawn_projection(sim, connector, between)
    drawn = as_array(prj.get(["weight", "delay"], format="list"))
    assert len(prj) == len(expected) > 0
    # The cells and weights PyNN drew, in its order; delays as fum runs them, rounded to steps.
    np.testing.assert_array_equal(drawn[:, :3], expected[:, :3])
    np.testing.assert_allclose(drawn[:, 3], np.floor(expected[:, 3] / 0.1 + 0.5) * 0.1, rtol=0, atol=1e-9)
    sim.run(5.0)
    after = as_array(prj.get(["weight", "delay"], format="list"))
    np.testing.assert_array_equal(after[:, [0, 1, 3]], drawn[:, [0, 1, 3]])
    np.testing.assert_allclose(after[:, 2], drawn[:, 2], rtol=1e-6)   # as fum stores them: 32-bit floats of pA
    sim.end()


@pytest.mark.parametrize("connector", [DRAWN[name] for name in ("DistanceDependentProbability", "IndexBasedProbability", "Array", "FixedNumberPre of a distribution",
                                                                 "FixedTotalNumber without replacement")])
def test_connectors_fum_has_no_rule_for_are_drawn_by_pynn_between_whole_populations(connector):
    expected = as_array(drawn_projection(pynn_mock, connector, "populations").get(["weight", "delay"], format="list"))
    prj = drawn_projection(sim, connector, "populations")
    assert prj._list is not None
    np.testing.assert_array_equal(as_array(prj.get(["weight", "delay"], format="list"))[:, :3], expected[:, :3])
    sim.end()


def test_weights_and_delays_of_distance_and_from_files_are_pynn_s(tmp_path):
    path = tmp_path / "synapses.txt"
    path.write_text("# columns = ['i', 'j', 'weight', 'delay']\n0 1 0.1 1.0\n2 3 0.2 1.5\n4 3 0.3 2.0\n")

    def projections(s):
        s.setup(timestep=0.1)
        E = s.Population(36, s.IF_curr_exp(**CELL), structure=Grid2D(), label="E")
        near = s.Projection(E[0:18], E[18:36], s.DistanceDependentProbabilityConnector("d < 3", rng=s.NumpyRNG(seed=3)),
                            s.StaticSynapse(weight=lambda d: 0.01 + 0.001 * d, delay=lambda d: 0.5 + 0.2 * d))
        filed = s.Projection(E[0:18], E[18:36], s.FromFileConnector(str(path)), s.StaticSynapse())
        return [as_array(prj.get(["weight", "delay"], format="list")) for prj in (near, filed)]
    expected = projections(pynn_mock)
    got = projections(sim)
    sim.run(1.0)
    sim.end()
    for e, g in zip(expected, got):
        assert len(g) == len(e) > 2
        np.testing.assert_array_equal(g[:, :3], e[:, :3])
        np.testing.assert_allclose(g[:, 3], np.floor(e[:, 3] / 0.1 + 0.5) * 0.1, rtol=0, atol=1e-9)
    assert len(np.unique(got[0][:, 2])) > 1, "weights by distance"


def test_fixed_probability_between_views_is_the_draw_of_its_rng():
    """The synapses are those of an independent draw from the same seeds: PyNN draws the
    connection matrix column by column (target by target) from the connector's rng, then the
    weights and delays of each column's synapses from theirs."""
    sim.setup(timestep=0.1, seed=77)
    E = sim.Population(60, sim.IF_curr_exp(**CELL), label="E")
    I = sim.Population(40, sim.IF_curr_exp(**CELL), label="I")
    targets = [1, 4, 7, 9, 12, 30, 31, 39]
    prj = sim.Projection(E[10:50], I[targets], sim.FixedProbabilityConnector(0.25, rng=sim.NumpyRNG(seed=21)),
                         sim.StaticSynapse(weight=sim.RandomDistribution("normal", (0.05, 0.01), rng=sim.NumpyRNG(seed=22)),
                                           delay=sim.RandomDistribution("uniform", (0.5, 3.0), rng=sim.NumpyRNG(seed=23))),
                         receptor_type="excitatory")   # given: guessing it would draw a weight
    u, w, d = (np.random.RandomState(seed) for seed in (21, 22, 23))
    expected = []
    for j in range(len(targets)):
        sources = np.flatnonzero(u.uniform(0.0, 1.0, 40) < 0.25)
        expected += zip(sources, [j] * len(sources), w.normal(0.05, 0.01, len(sources)), d.uniform(0.5, 3.0, len(sources)))
    expected = as_array(expected)
    drawn = as_array(prj.get(["weight", "delay"], format="list"))
    assert 50 < len(drawn) == len(expected)
    np.testing.assert_array_equal(drawn[:, :3], expected[:, :3])
    np.testing.assert_allclose(drawn[:, 3], np.floor(expected[:, 3] / 0.1 + 0.5) * 0.1, rtol=0, atol=1e-9)
    # The seed of setup() is fum's: it does not change what PyNN draws.
    sim.end()


def test_weight_distributions_are_honoured_per_synapse():
    sim.setup(timestep=0.1, seed=3)
    E = sim.Population(300, sim.IF_curr_exp(**CELL), label="E")
    k, theta = 4.0, 0.01
    gamma = sim.Projection(E[0:150], E[150:300], sim.FixedProbabilityConnector(0.5, rng=sim.NumpyRNG(seed=4)),
                           sim.StaticSynapse(weight=sim.RandomDistribution("gamma", (k, theta), rng=sim.NumpyRNG(seed=5)), delay=1.0))
    listed = sim.Projection(E, E, sim.FromListConnector([(i, (7 * i) % 300) for i in range(300)]),
                            sim.StaticSynapse(weight=sim.RandomDistribution("uniform", (0.01, 0.02), rng=sim.NumpyRNG(seed=6)), delay=2.0))
    # Between whole Populations fum draws, and 'gamma' is not one of its distributions: a view
    # of all of them (E[:]) has PyNN draw it.
    whole = sim.Projection(E[:], E[:], sim.FixedNumberPreConnector(5, rng=sim.NumpyRNG(seed=7)),
                           sim.StaticSynapse(weight=sim.RandomDistribution("gamma", (k, theta), rng=sim.NumpyRNG(seed=8)), delay=1.0))
    drawn = np.array(gamma.get("weight", format="list", with_address=False))
    assert len(np.unique(drawn)) == len(drawn), "a weight per synapse"
    sim.run(10.0)
    weights = np.array(gamma.get("weight", format="list", with_address=False))
    np.testing.assert_allclose(weights, drawn, rtol=1e-6)
    assert len(weights) == pytest.approx(150 * 150 * 0.5, rel=0.05)
    assert weights.mean() == pytest.approx(k * theta, rel=0.02) and weights.std() == pytest.approx(np.sqrt(k) * theta, rel=0.05)
    # A FromListConnector's weights are drawn for each synapse in the list's order (PyNN's own
    # FromListConnector draws each target's from a fresh copy of the rng: the same numbers).
    from_list = np.array(listed.get("weight", format="list", with_address=False))
    np.testing.assert_allclose(from_list, np.random.RandomState(6).uniform(0.01, 0.02, 300), rtol=1e-6)
    assert len(whole) == 300 * 5 and np.array(whole.get("weight", format="list", with_address=False)).mean() == pytest.approx(k * theta, rel=0.05)
    sim.end()


def test_a_network_pynn_draws_gives_the_spikes_of_its_lists_in_fum():
    """PyNN draws the projections between views and of an Assembly; fum draws the one between
    whole populations from its seed. The same network in fum's own API, with fum.FromList of
    the lists the projections give back, fires the same spikes; reset() runs the same synapses."""
    sim.setup(timestep=0.1, seed=9, threads=THREADS)
    E = sim.Population(100, sim.IF_curr_exp(**CELL), label="E")
    E.initialize(v=sim.RandomDistribution("uniform", (-70.0, -55.0)))
    I = sim.Population(30, sim.IF_curr_exp(**CELL), label="I")
    noise = sim.Population(100, sim.SpikeSourcePoisson(rate=15000.0), label="noise")
    sim.Projection(noise, E, sim.OneToOneConnector(), sim.StaticSynapse(weight=0.05))
    ee = sim.Projection(E[0:50], E[50:100], sim.FixedProbabilityConnector(0.2, rng=sim.NumpyRNG(seed=1)),
                        sim.StaticSynapse(weight=sim.RandomDistribution("gamma", (2.0, 0.02), rng=sim.NumpyRNG(seed=2)),
                                          delay=sim.RandomDistribution("uniform", (0.5, 2.5), rng=sim.NumpyRNG(seed=3))))
    ei = sim.Projection(E, I[0:20], sim.FixedNumberPreConnector(10, rng=sim.NumpyRNG(seed=4)), sim.StaticSynapse(weight=1.0, delay=1.0))
    ie = sim.Projection(I, E[::2], sim.FixedTotalNumberConnector(300, with_replacement=False, rng=sim.NumpyRNG(seed=5)),
                        sim.StaticSynapse(weight=-0.3, delay=1.0), receptor_type="inhibitory")
    mixed = sim.Projection(E[0:10] + I[20:30], E[90:100] + I[0:5], sim.FixedProbabilityConnector(0.3, rng=sim.NumpyRNG(seed=6)),
                           sim.StaticSynapse(weight=sim.RandomDistribution("uniform", (0.02, 0.08), rng=sim.NumpyRNG(seed=7)), delay=1.5))
    sim.Projection(E, E, sim.FixedProbabilityConnector(0.05), sim.StaticSynapse(weight=0.02, delay=1.5))   # fum draws it
    lists = {prj: as_array(prj.get(["weight", "delay"], format="list")) for prj in (ee, ei, ie, mixed)}
    E.record("spikes")
    I.record("spikes")
    sim.run(200.0)
    first = [spike_array(pop.get_data()) for pop in (E, I)]
    sim.reset()
    sim.run(200.0)
    again = [spike_array_of(pop.get_data().segments[1]) for pop in (E, I)]

    net = fum.Model(dt_ms=0.1, seed=9)
    cell = dict(tau_m_ms=20.0, c_m_pf=250.0, e_l_mv=-70.0, v_reset_mv=-70.0, v_th_mv=-55.0, t_ref_ms=2.0, tau_syn_ex_ms=0.5, tau_syn_in_ms=0.5)
    fE = net.population("E", 100, "lif_cuba", **cell, v_init_mv=fum.Uniform(-70.0, -55.0))
    fI = net.population("I", 30, "lif_cuba", **cell, v_init_mv=-65.0)
    net.poisson(fE, rate_hz=15000.0, weight=50.0)

    def listed(source, target, pre_cells, post_cells, table, **kwargs):
        i, j = table[:, 0].astype(int), table[:, 1].astype(int)
        net.connect(source, target, fum.FromList(np.asarray(pre_cells)[i], np.asarray(post_cells)[j], weight=np.abs(table[:, 2]) * 1000.0, delay_ms=table[:, 3]),
                    name=f"listed_{len(net._projections)}", **kwargs)
    listed(fE, fE, range(0, 50), range(50, 100), lists[ee])
    listed(fE, fI, range(100), range(20), lists[ei])
    listed(fI, fE, range(30), range(0, 100, 2), lists[ie], receptor="inhibitory")
    # The Assembly's cells: E 0-9 then I 20-29 send, E 90-99 then I 0-4 receive.
    table = lists[mixed]
    for source, pre_cells, sent in ((fE, range(0, 10), table[:, 0] < 10), (fI, range(20, 30), table[:, 0] >= 10)):
        for target, post_cells, got in ((fE, range(90, 100), table[:, 1] < 10), (fI, range(0, 5), table[:, 1] >= 10)):
            part = table[sent & got]
            part[:, 0] -= 0 if source is fE else 10
            part[:, 1] -= 0 if target is fE else 10
            listed(source, target, pre_cells, post_cells, part)
    net.connect(fE, fE, fum.FixedProbability(0.05), weight=20.0, delay_ms=1.5, allow_autapses=True)
    run = net.run(200.0, threads=THREADS, progress=False)

    assert len(lists[ie]) == 300 and (lists[ie][:, 2] == -0.3).all(), "weights come back in PyNN's sign"
    for (ids, times), (ids_again, times_again), name, fired in zip(first, again, ("E", "I"), (500, 50)):
        expected_ids, expected_times = sorted_spikes(run.spikes(name))
        assert len(ids) > fired, f"{name} fires"
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(times, expected_times, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(ids_again, ids)
        np.testing.assert_array_equal(times_again, times)
    sim.end()


def test_stdp_learns_on_synapses_pynn_draws():
    sim.setup(timestep=0.1, seed=2, threads=THREADS)
    E = sim.Population(200, sim.IF_curr_exp(**CELL), label="E")
    noise = sim.Population(200, sim.SpikeSourcePoisson(rate=20000.0))
    sim.Projection(noise, E, sim.OneToOneConnector(), sim.StaticSynapse(weight=0.05))
    stdp = sim.STDPMechanism(timing_dependence=sim.SpikePairRule(tau_plus=20.0, tau_minus=20.0, A_plus=0.01, A_minus=0.012),
                             weight_dependence=sim.AdditiveWeightDependence(w_min=0.0, w_max=0.1),
                             weight=sim.RandomDistribution("uniform", (0.03, 0.05), rng=sim.NumpyRNG(seed=1)), delay=1.0)
    plastic = sim.Projection(E[0:100], E[100:200], sim.FixedProbabilityConnector(0.2, rng=sim.NumpyRNG(seed=2)), stdp)
    before = as_array(plastic.get(["weight", "delay"], format="list"))
    sim.run(100.0)
    after = as_array(plastic.get(["weight", "delay"], format="list"))
    np.testing.assert_array_equal(after[:, [0, 1, 3]], before[:, [0, 1, 3]])
    assert np.all((after[:, 2] >= 0.0) & (after[:, 2] <= 0.1 + 1e-7))
    assert np.count_nonzero(np.abs(after[:, 2] - before[:, 2]) > 1e-6) > 100, "STDP changed weights"
    sim.end()


def test_delays_of_synapses_fum_draws_come_back_where_they_are_one_number():
    sim.setup(timestep=0.1, seed=1)
    E = sim.Population(20, sim.IF_curr_exp(), label="E")
    fixed = sim.Projection(E, E, sim.FixedProbabilityConnector(0.5), sim.StaticSynapse(weight=-0.1, delay=1.52), receptor_type="inhibitory")
    drawn = sim.Projection(E, E, sim.FixedProbabilityConnector(0.5), sim.StaticSynapse(weight=0.1, delay=sim.RandomDistribution("uniform", (1.0, 2.0))))
    assert fixed._list is None and drawn._list is None, "between whole Populations fum draws"
    with pytest.raises(sim.Unsupported, match="before the first run"):
        len(fixed)
    sim.run(1.0)
    listed = as_array(fixed.get(["weight", "delay"], format="list"))
    assert len(listed) == len(fixed) > 100
    np.testing.assert_allclose(listed[:, 2:], [[-0.1, 1.5]] * len(listed), rtol=1e-6)
    with pytest.raises(sim.Unsupported, match="delays that fum drew from a distribution"):
        drawn.get(["weight", "delay"], format="list")
    sim.end()


@pytest.mark.parametrize("build, message", [
    (lambda E, P: sim.Projection(E[0:10], E[10:20], sim.SmallWorldConnector(2.0, 0.1), sim.StaticSynapse(weight=0.1)), "SmallWorldConnector: PyNN does not draw it"),
    (lambda E, P: sim.Projection(E[0:10], E[5:15], sim.FixedProbabilityConnector(0.5, allow_self_connections="NoMutual"), sim.StaticSynapse(weight=0.1)),
     "'NoMutual' between a Population and itself only"),
    (lambda E, P: sim.Projection(E, E, sim.CloneConnector(sim.Projection(E, E, sim.FixedProbabilityConnector(0.1), sim.StaticSynapse(weight=0.1))), sim.StaticSynapse(weight=0.2)),
     "before the first run"),
    (lambda E, P: sim.Projection(E[0:10], E[10:20], sim.FixedProbabilityConnector(0.5),
                                 sim.STDPMechanism(timing_dependence=sim.SpikePairRule(A_plus=sim.RandomDistribution("uniform", (0.01, 0.02))),
                                                   weight_dependence=sim.AdditiveWeightDependence(), weight=0.01, delay=1.0)),
     "A_plus per synapse: fum takes one A_plus per projection"),
    (lambda E, P: sim.Projection(E, E, sim.FromListConnector([(0, 20)]), sim.StaticSynapse(weight=0.1)), r"conn_list\[0\]: postsynaptic index 20 is not a cell of E \(20 cells\)"),
    (lambda E, P: sim.Projection(E[0:5], E, sim.FromListConnector([(5, 0)]), sim.StaticSynapse(weight=0.1)), r"presynaptic index 5 is not a cell of view of 'E' with size 5 \(5 cells\)"),
    (lambda E, P: sim.Projection(E, E, sim.FromListConnector([(0, 1, 0.5)], column_names=["U"]), sim.StaticSynapse(weight=0.1)), "FromListConnector column 'U'"),
    (lambda E, P: sim.Projection(E, E, sim.AllToAllConnector(), sim.StaticSynapse(weight=0.1), source="soma"), "source"),
    (lambda E, P: sim.Projection(E, P[0:5] + E, sim.AllToAllConnector(), sim.StaticSynapse(weight=0.1)), "a SpikeSourcePoisson receives no synapses"),
    (lambda E, P: sim.Population(5, pynn_mock.IF_cond_alpha()), "cell type IF_cond_alpha"),
    (lambda E, P: P.record("spikes"), "recording a SpikeSourcePoisson"),
    (lambda E, P: E.record("gsyn_exc"), "gsyn_exc"),
    (lambda E, P: E[0:5].initialize(v=sim.RandomDistribution("uniform", (-70.0, -60.0))), "fum draws a distribution for a whole Population"),
    (lambda E, P: sim.Population(5, sim.SpikeSourceArray(spike_times=[1.0]))[0:2].set(spike_times=[2.0]), "setting parameters of a PopulationView of a SpikeSourceArray"),
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
    (lambda E, P: E.set(tau_m=np.linspace(10.0, 20.0, 20)), r"E.tau_m: fum takes one value per population .* \(a value per cell: i_offset, the initial v and a SpikeSourcePoisson's rate only\)"),
    (lambda E, P: E.initialize(isyn_exc=lambda i: 0.01 * i), r"E initial isyn_exc: fum takes one value per population .* \(a value per cell"),
    (lambda E, P: sim.Projection(E, E, sim.AllToAllConnector(), sim.StaticSynapse(weight=sim.RandomDistribution("gamma", (1.0, 1.0)))), r"not 'gamma' \(between whole Populations fum draws"),
    (lambda E, P: sim.Projection(E[0:5], E, sim.FixedProbabilityConnector(0.5), sim.StaticSynapse(weight=0.1, delay=200.0)), "longer than fum's 1023 steps"),
    (lambda E, P: sim.Projection(P + E, E, sim.FixedProbabilityConnector(0.5), sim.StaticSynapse(weight=0.1)), "an Assembly holding one"),
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


# ---------------------------------------------------------------------------------------------
# Current sources: DCSource and StepCurrentSource as fum's DC inputs (Model.dc with windows)
# ---------------------------------------------------------------------------------------------

def pynn_driven_network(inject, duration_ms=200.0, runs=2, e_cell=None):
    """A small recurrent E/I network (no other drive) that `inject(E, I)` gives its currents,
    run in `runs` calls; E's spikes and E[0:3]'s v. `e_cell`: more of E's parameters."""
    sim.setup(timestep=0.1, seed=7, threads=THREADS)
    E = sim.Population(100, sim.IF_curr_exp(**{**CELL, **(e_cell or {})}), label="E")
    I = sim.Population(25, sim.IF_curr_exp(**CELL), label="I")
    sim.Projection(E, E, sim.FixedProbabilityConnector(0.1), sim.StaticSynapse(weight=0.05, delay=1.5))
    sim.Projection(E, I, sim.FixedProbabilityConnector(0.2), sim.StaticSynapse(weight=0.05, delay=1.0))
    sim.Projection(I, E, sim.FixedProbabilityConnector(0.2), sim.StaticSynapse(weight=-0.2, delay=1.0), receptor_type="inhibitory")
    inject(E, I)
    E.record("spikes")
    I.record("spikes")
    E[0:3].record("v")
    for _ in range(runs):
        sim.run(duration_ms / runs)
    spikes = {pop.label: spike_array(pop.get_data()) for pop in (E, I)}
    v = np.asarray(E.get_data().segments[0].analogsignals[0].magnitude, dtype=np.float32)
    sim.end()
    return spikes, v


def fum_driven_network(currents, duration_ms=200.0, **e_fields):
    """The same network in fum's API, `currents(net)` adding its DC inputs; `e_fields`: more
    of E's fields."""
    net = fum.Model(dt_ms=0.1, seed=7)
    cell = dict(tau_m_ms=20.0, c_m_pf=250.0, e_l_mv=-70.0, v_reset_mv=-70.0, v_th_mv=-55.0, t_ref_ms=2.0, tau_syn_ex_ms=0.5, tau_syn_in_ms=0.5, v_init_mv=-65.0)
    net.population("E", 100, "lif_cuba", **{**cell, **e_fields})
    net.population("I", 25, "lif_cuba", **cell)
    net.connect("E", "E", fum.FixedProbability(0.1), weight=50.0, delay_ms=1.5, allow_autapses=True)
    net.connect("E", "I", fum.FixedProbability(0.2), weight=50.0, delay_ms=1.0)
    net.connect("I", "E", fum.FixedProbability(0.2), weight=200.0, delay_ms=1.0, receptor="inhibitory")
    currents(net)
    net.probe("v", "v", population="E", neurons=[0, 1, 2], interval_ms=0.1)
    run = net.run(duration_ms, threads=THREADS, progress=False)
    return {name: sorted_spikes(run.spikes(name)) for name in ("E", "I")}, run.probe("v").values


def assert_same_run(pynn, fum_run, fired=("E", "I")):
    (spikes, v), (expected, expected_v) = pynn, fum_run
    for name in ("E", "I"):
        ids, times = spikes[name]
        if name in fired:
            assert len(ids) > 20, f"{name} fires"
        np.testing.assert_array_equal(ids, expected[name][0])
        np.testing.assert_allclose(times, expected[name][1], rtol=0, atol=1e-9)
    assert v.shape == expected_v.shape == (2000, 3)
    np.testing.assert_array_equal(v, expected_v)


# Values per cell (i_offset and the initial v) are fum's values per neuron (fum.Model.population's
# arrays): a list, an array or a function of the index, for a Population or its views.
V_CELLS = np.linspace(-70.0, -56.0, 100)
I_CELLS = np.random.default_rng(4).uniform(0.0, 0.4, 100)   # nA: about half above the rheobase


@pytest.mark.parametrize("e_cell, inject", [
    ({"i_offset": list(I_CELLS), "tau_m": np.full(100, 20.0)}, lambda E, I: E.initialize(v=V_CELLS)),
    (None, lambda E, I: (E.set(i_offset=I_CELLS), E.initialize(v=lambda i: V_CELLS[i]))),
    (None, lambda E, I: (E[:50].initialize(v=V_CELLS[:50]), E[50:][::-1].initialize(v=V_CELLS[50:][::-1]),
                         E[::2].set(i_offset=I_CELLS[::2]), (E[1::2] + I).set(i_offset=0.0), E[1::2].set(i_offset=I_CELLS[1::2]))),
], ids=["constructor", "set", "views"])
def test_values_per_cell_give_the_spikes_of_fum_s_values_per_neuron(e_cell, inject):
    pynn = pynn_driven_network(inject, e_cell=e_cell)
    assert_same_run(pynn, fum_driven_network(lambda net: None, v_init_mv=V_CELLS, i_e_pa=I_CELLS * 1000.0), fired=("E",))


def test_a_value_per_cell_must_be_finite():
    sim.setup(timestep=0.1)
    E = sim.Population(20, sim.IF_curr_exp(), label="E")
    E.set(i_offset=np.r_[np.zeros(19), np.inf])
    with pytest.raises(ValueError, match="E.i_offset: cell 19's value inf must be finite"):
        sim.run(1.0)
    sim.end()


# A SpikeSourcePoisson's rate per cell is fum's Poisson input's rate per target neuron
# (fum.Model.poisson's rate_hz=array): the cell of index k drives the target neuron k.
RATE_CELLS = np.random.default_rng(5).uniform(2000.0, 16000.0, 100)


def poisson_per_cell(given):
    """`given(noise)` sets the rates of a SpikeSourcePoisson of 100 cells driving E one to one."""
    def inject(E, I):
        noise = sim.Population(100, sim.SpikeSourcePoisson(rate=1000.0), label="noise")
        given(noise)
        sim.Projection(noise, E, sim.OneToOneConnector(), sim.StaticSynapse(weight=0.05))
    return inject


@pytest.mark.parametrize("given", [
    lambda noise: noise.set(rate=RATE_CELLS),
    lambda noise: noise.set(rate=lambda i: RATE_CELLS[i]),
    lambda noise: (noise[:50].set(rate=RATE_CELLS[:50]), noise[50:][::-1].set(rate=RATE_CELLS[50:][::-1])),
], ids=["set", "function", "views"])
def test_rates_per_cell_give_the_spikes_of_fum_s_rates_per_neuron(given):
    pynn = pynn_driven_network(poisson_per_cell(given))
    assert_same_run(pynn, fum_driven_network(lambda net: net.poisson("E", rate_hz=RATE_CELLS, weight=50.0)), fired=("E",))


def test_rates_per_cell_in_the_constructor_and_their_refusals():
    for rates in (list(RATE_CELLS), RATE_CELLS):
        sim.setup(timestep=0.1, seed=7)
        E = sim.Population(100, sim.IF_curr_exp(**CELL), label="E")
        noise = sim.Population(100, sim.SpikeSourcePoisson(rate=rates), label="noise")
        sim.Projection(noise, E, sim.OneToOneConnector(), sim.StaticSynapse(weight=0.05))
        E.record("spikes")
        sim.run(50.0)
        ids, times = spike_array(E.get_data())
        sim.end()
        net = fum.Model(dt_ms=0.1, seed=7)
        net.population("E", 100, "lif_cuba", **dict(tau_m_ms=20.0, c_m_pf=250.0, e_l_mv=-70.0, v_reset_mv=-70.0, v_th_mv=-55.0, t_ref_ms=2.0, tau_syn_ex_ms=0.5, tau_syn_in_ms=0.5, v_init_mv=-65.0))
        net.poisson("E", rate_hz=RATE_CELLS, weight=50.0)
        expected = sorted_spikes(net.run(50.0, progress=False).spikes("E"))
        assert len(ids) > 20
        np.testing.assert_array_equal(ids, expected[0])
        np.testing.assert_allclose(times, expected[1], rtol=0, atol=1e-9)
    for bad, error, message in ((np.r_[RATE_CELLS[:99], -5.0], ValueError, r"input 'noise_to_E_0': rate_hz\[99\] = -5 must be a finite rate, not negative"),
                                (np.r_[RATE_CELLS[:99], np.inf], ValueError, "noise.rate: cell 99's value inf must be finite")):
        sim.setup(timestep=0.1)
        E = sim.Population(100, sim.IF_curr_exp(), label="E")
        noise = sim.Population(100, sim.SpikeSourcePoisson(rate=bad), label="noise")
        sim.Projection(noise, E, sim.OneToOneConnector(), sim.StaticSynapse(weight=0.05))
        with pytest.raises(error, match=message):
            sim.run(1.0)
        sim.end()


def test_dc_sources_give_the_spikes_of_fum_s_dc_inputs():
    def inject(E, I):
        E.inject(sim.DCSource(amplitude=0.6, start=50.0, stop=150.0))   # nA, ms: across the two runs' boundary
        sim.DCSource(amplitude=0.35).inject_into(I[::-1])                 # a view of all of I: the whole population
        (E + I).inject(sim.DCSource(amplitude=0.1, start=120.0))          # an Assembly of whole populations: into each

    def currents(net):
        net.dc("E", 600.0, start_ms=50.0, stop_ms=150.0)
        net.dc("I", 350.0)
        net.dc("E", 100.0, start_ms=120.0)
        net.dc("I", 100.0, start_ms=120.0)

    pynn = pynn_driven_network(inject)
    assert_same_run(pynn, fum_driven_network(currents))
    times = pynn[0]["E"][1]
    assert times.min() >= 50.0, "E is driven by its current only"


def test_a_step_current_source_is_its_windows():
    # The amplitude at each time holds until the next (the last until the run ends); 60.0 and
    # 60.04 round to the same step, where the later one's amplitude holds, as on NEST.
    times, amplitudes = [20.0, 60.0, 60.04, 100.0, 170.0], [0.4, 5.0, 0.8, 0.0, 0.5]

    def inject(E, I):
        step = sim.StepCurrentSource(times=times, amplitudes=amplitudes)
        step.inject_into(list(E.all_cells))   # a list of all of E's cells
        I.inject(step)

    def currents(net):
        for pop in ("E", "I"):
            net.dc(pop, 400.0, start_ms=20.0, stop_ms=60.0)
            net.dc(pop, 800.0, start_ms=60.04, stop_ms=100.0)
            net.dc(pop, 500.0, start_ms=170.0)

    pynn = pynn_driven_network(inject)
    assert_same_run(pynn, fum_driven_network(currents))
    sim.setup(timestep=0.1)
    step = sim.StepCurrentSource(times=times, amplitudes=amplitudes)
    assert step._windows() == [(400.0, 20.0, 60.0), (800.0, 60.04, 100.0), (500.0, 170.0, None)]
    sim.end()


@pytest.mark.parametrize("celltype", ["IF_curr_exp", "IF_curr_alpha", "IF_cond_exp"])
def test_cells_fire_only_while_the_current_flows(celltype):
    sim.setup(timestep=0.1, seed=1, threads=THREADS)
    cells = sim.Population(10, getattr(sim, celltype)(), label="cells")    # unconnected, at rest (v_rest = v = -65 mV)
    quiet = sim.Population(10, getattr(sim, celltype)(), label="quiet")
    cells.inject(sim.DCSource(amplitude=2.0, start=40.0, stop=120.0))
    step = sim.StepCurrentSource(times=[150.0, 170.0], amplitudes=[2.0, 0.0])
    step.amplitudes = [3.0, 0.0]   # before the first run: taken
    cells.inject(step)
    cells.record(["spikes", "v"])
    quiet.record("spikes")
    sim.run(250.0)
    block = cells.get_data()
    trains = block.segments[0].spiketrains
    times = np.concatenate([t.magnitude for t in trains])
    assert all(len(t) > 2 for t in trains), "every cell fires while 2 nA flow"
    assert np.all(((times >= 40.0) & (times < 120.0)) | ((times >= 150.0) & (times < 170.0))), times
    assert np.count_nonzero(times >= 150.0) >= 10
    v = block.segments[0].analogsignals[0].magnitude
    assert np.all(v[:400] == -65.0), "at rest until the current starts at 40 ms"
    assert np.all(v[401] > -65.0)
    assert sum(quiet.get_spike_counts().values()) == 0
    sim.end()


def test_current_sources_take_pynn_s_units_and_defaults():
    sim.setup(timestep=0.1)
    E = sim.Population(5, sim.IF_curr_exp(), label="E")
    E.inject(sim.DCSource())                                   # 1 nA, from 0, stop 1e12: the whole run
    E.inject(sim.DCSource(amplitude=-0.25, start=-5.0, stop=10.0))   # a negative start is 0, as NEST's
    E.inject(sim.DCSource(amplitude=0.3, start=10.0, stop=10.04))    # no whole step: nothing flows
    E.inject(sim.DCSource(amplitude=0.0, start=1.0, stop=2.0))
    twice = sim.DCSource(amplitude=0.5, start=1.0, stop=2.0)
    E.inject(twice)
    twice.inject_into(E[:])                                    # injected twice: its current twice, as on NEST
    inputs = [i for i in sim._model(sim.state)._inputs if i["kind"] == "dc"]
    assert [(i["amplitude_pa"], i.get("start_ms"), i.get("stop_ms")) for i in inputs] == [(1000.0, None, None), (-250.0, None, 10.0), (500.0, 1.0, 2.0), (500.0, 1.0, 2.0)]
    sim.end()


@pytest.mark.parametrize("inject, error, message", [
    (lambda E, S: E[0:5].inject(sim.DCSource()), sim.Unsupported, r"DCSource.inject_into: 5 of the 20 cells of E: fum injects a current into whole populations only"),
    (lambda E, S: sim.StepCurrentSource(times=[1.0], amplitudes=[1.0]).inject_into(E.all_cells[[0, 3]]), sim.Unsupported, "2 of the 20 cells of E"),
    (lambda E, S: E[0].inject(sim.DCSource()), sim.Unsupported, "1 of the 20 cells of E"),
    (lambda E, S: sim.DCSource().inject_into(list(E.all_cells) + [E[0]]), sim.Unsupported, "cells of E given more than once"),
    (lambda E, S: sim.DCSource().inject_into(E + S), TypeError, "Can't inject current into a spike source"),
    (lambda E, S: sim.DCSource().inject_into(S), TypeError, "Can't inject current into a spike source"),
    (lambda E, S: sim.ACSource(amplitude=1.0, frequency=10.0), sim.Unsupported, "ACSource: fum has no sinusoidal current input"),
    (lambda E, S: sim.NoisyCurrentSource(mean=0.5, stdev=0.2), sim.Unsupported, "NoisyCurrentSource: fum has no noise current input"),
    (lambda E, S: sim.DCSource().record(), sim.Unsupported, "recording the current of a DCSource: fum does not record its inputs"),
    (lambda E, S: sim.StepCurrentSource(times=[1.0], amplitudes=[1.0]).get_data(), sim.Unsupported, "recording the current of a StepCurrentSource"),
    (lambda E, S: sim.DCSource(amplitude=sim.RandomDistribution("uniform", (0.1, 0.2))), sim.Unsupported, "DCSource.amplitude: fum takes one value here"),
    (lambda E, S: sim.DCSource(start=20.0, stop=10.0), ValueError, r"stop \(10 ms\) before start \(20 ms\)"),
    (lambda E, S: sim.StepCurrentSource(times=[5.0, 1.0], amplitudes=[1.0, 0.0]), ValueError, "monotonically increasing"),
    (lambda E, S: sim.StepCurrentSource(times=[-1.0], amplitudes=[1.0]), ValueError, "negative timestamps"),
    (lambda E, S: sim.StepCurrentSource(times=[1.0, 2.0], amplitudes=[1.0]), ValueError, "2 times and 1 amplitudes"),
])
def test_what_fum_does_not_inject_is_refused(inject, error, message):
    sim.setup(timestep=0.1)
    E = sim.Population(20, sim.IF_curr_exp(), label="E")
    S = sim.Population(20, sim.SpikeSourceArray(spike_times=[1.0]), label="S")
    with pytest.raises(error, match=message):
        inject(E, S)
    assert sim.state.current_sources == [], "nothing injected"
    sim.end()


def test_current_sources_are_described_before_the_run_and_again_after_reset():
    sim.setup(timestep=0.1, seed=1, threads=THREADS)
    cells = sim.Population(10, sim.IF_curr_exp(), label="cells")
    dc = sim.DCSource(amplitude=2.0, start=10.0, stop=60.0)
    cells.inject(dc)
    cells.record("spikes")
    sim.run(100.0)
    assert sum(cells.get_spike_counts().values()) > 10
    with pytest.raises(sim.Unsupported, match="changing the parameters of a DCSource after the network was built"):
        dc.amplitude = 0.0
    with pytest.raises(sim.Unsupported, match="changing the parameters of a DCSource after"):
        dc.set_parameters(stop=30.0)
    with pytest.raises(sim.Unsupported, match="injecting a StepCurrentSource after the network was built"):
        cells.inject(sim.StepCurrentSource(times=[0.0], amplitudes=[1.0]))
    assert dc._windows() == [(2000.0, 10.0, 60.0)], "unchanged"
    sim.reset()
    dc.amplitude = 0.0    # after reset() the network is described again
    sim.run(100.0)
    assert sum(cells.get_spike_counts().values()) == 0
    assert len(cells.get_data().segments) == 2
    sim.end()
