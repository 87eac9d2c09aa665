"""The Python package against the engine's own outputs: a network built in Python is the model
file's network (the same spikes, bit for bit, as the file and as `fum run`), run.spikes() is
what spikes.h5 holds, and model mistakes raise the message `fum check` prints.

`fum run` is the binary at $FUM_BIN, else target/release/fum; tests that need it or h5py are
skipped, saying so, where they are missing."""

import subprocess
import threading
import time

import numpy as np
import pytest

import fum
from support import ROOT, fum_binary, h5py

BRUNEL = ROOT / "assets" / "models" / "brunel.toml"
# Short runs: CI has 2 cores. 100 ms of Brunel is ~35,000 spikes.
DURATION_MS = 100.0
THREADS = 2


def brunel_in_python():
    """assets/models/brunel.toml, built in Python."""
    net = fum.Model(dt_ms=0.1, seed=12345)
    neuron = dict(tau_m_ms=20.0, c_m_pf=250.0, e_l_mv=0.0, v_th_mv=20.0, v_reset_mv=10.0, t_ref_ms=2.0,
                  tau_syn_ex_ms=0.5, tau_syn_in_ms=0.5, v_init_mv=fum.Uniform(0.0, 20.0))
    E = net.population("E", 10000, "lif_cuba", **neuron)
    I = net.population("I", 2500, "lif_cuba", **neuron)
    for target in (E, I):
        net.connect(E, target, fum.FixedIndegree(1000), weight=50.0, delay_ms=1.5, receptor="excitatory")
    for target in (E, I):
        net.connect(I, target, fum.FixedIndegree(250), weight=250.0, delay_ms=1.5, receptor="inhibitory")
    net.poisson(E, rate_hz=20000.0, weight=50.0, name="external")
    net.poisson(I, rate_hz=20000.0, weight=50.0, name="external_I")
    net.probe("membrane", "v", population=E, neurons=[0, 1, 2, 3, 4], interval_ms=0.1)
    return net


def test_populations_of_a_built_and_a_loaded_model():
    expected = [fum.Population("E", 10000), fum.Population("I", 2500)]
    assert brunel_in_python().populations == fum.Model.from_toml(BRUNEL).populations == expected


def read_spikes(path, population):
    with h5py("reads spikes.h5").File(path, "r") as f:
        group = f["spikes"][population]
        return group["node_ids"][()], group["timestamps"][()]


@pytest.fixture(scope="module")
def brunel_runs(tmp_path_factory):
    """Brunel from the file (with its outputs written) and built in Python."""
    out = tmp_path_factory.mktemp("brunel")
    from_file = fum.Model.from_toml(BRUNEL).run(DURATION_MS, threads=THREADS, out=out / "toml", progress=False)
    built = brunel_in_python().run(DURATION_MS, threads=THREADS, progress=False)
    return from_file, built, out


def test_python_built_brunel_gives_the_spikes_of_the_model_file(brunel_runs):
    from_file, built, _ = brunel_runs
    assert from_file.populations == built.populations == ["E", "I"]
    for population in ("E", "I"):
        a, b = from_file.spikes(population), built.spikes(population)
        assert len(a.node_ids) > 1000, "Brunel fires"
        np.testing.assert_array_equal(a.node_ids, b.node_ids)
        np.testing.assert_array_equal(a.timestamps_ms, b.timestamps_ms)
    np.testing.assert_array_equal(from_file.probe("membrane").values, built.probe("membrane").values)
    assert from_file.rates() == built.rates()


def test_spikes_equal_what_spikes_h5_holds(brunel_runs):
    from_file, _, out = brunel_runs
    for population in ("E", "I"):
        node_ids, timestamps = read_spikes(out / "toml" / "spikes.h5", population)
        spikes = from_file.spikes(population)
        # SONATA's uint64 on disk; int64 in memory, which numpy indexes with.
        assert node_ids.dtype == np.uint64 and spikes.node_ids.dtype == np.int64
        assert spikes.timestamps_ms.dtype == timestamps.dtype == np.float64
        np.testing.assert_array_equal(spikes.node_ids, node_ids)
        np.testing.assert_array_equal(spikes.timestamps_ms, timestamps)


def test_python_built_brunel_gives_the_spikes_of_fum_run(brunel_runs, tmp_path):
    _, built, _ = brunel_runs
    binary = fum_binary()
    out = tmp_path / "cli"
    subprocess.run([str(binary), "run", str(BRUNEL), "--duration", f"{DURATION_MS:g}ms", "--threads", str(THREADS), "--out", str(out), "--quiet"], check=True)
    for population in ("E", "I"):
        node_ids, timestamps = read_spikes(out / "spikes.h5", population)
        np.testing.assert_array_equal(built.spikes(population).node_ids, node_ids)
        np.testing.assert_array_equal(built.spikes(population).timestamps_ms, timestamps)


def test_a_model_mistake_names_the_field():
    net = fum.Model(duration_ms=10.0)
    net.population("E", 10, "lif_cuba", tau_m_ms=-5.0)
    with pytest.raises(fum.ModelError, match=r"populations\[0\]\.tau_m_ms: must be positive and finite \(got -5\)"):
        net.run(progress=False)
    net = fum.Model(duration_ms=10.0)
    net.population("E", 10, "lif_cuba", tau_mm_ms=20.0)
    with pytest.raises(fum.ModelError, match=r"populations\[0\].*unknown field `tau_mm_ms`"):
        net.check()
    net = fum.Model(duration_ms=10.0)
    E = net.population("E", 10, "lif_cuba")
    net.connect(E, "F", fum.FixedIndegree(2), weight=1.0)
    with pytest.raises(fum.ModelError, match=r"projections\[0\]\.target"):
        net.check()


def test_a_model_file_mistake_gives_the_message_of_fum_check(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BRUNEL.read_text().replace("tau_m_ms = 20.0", "tau_m_ms = -5.0", 1))
    with pytest.raises(fum.ModelError) as raised:
        fum.Model.from_toml(bad)
    message = str(raised.value)
    assert message.startswith(f"{bad}:") and "populations[0].tau_m_ms: must be positive and finite (got -5)" in message
    check = subprocess.run([str(fum_binary()), "check", str(bad)], capture_output=True, text=True)
    assert check.returncode != 0
    assert f"error: {message}" in check.stderr


def small_plastic_network():
    net = fum.Model(dt_ms=0.1, seed=3)
    E = net.population("E", 400, "lif_cuba", v_init_mv=fum.Uniform(-70.0, -55.0))
    I = net.population("I", 100, "lif_cuba", record_spikes=False)
    stdp = fum.Stdp(a_plus=0.01, a_minus=0.0105, w_max=100.0)
    net.connect(E, E, fum.FixedIndegree(40), weight=fum.Uniform(20.0, 40.0), delay_ms=1.5, plasticity=stdp)
    net.connect(E, I, fum.FixedProbability(0.1), weight=30.0, delay_ms=fum.Uniform(0.5, 2.0))
    net.connect(I, E, fum.FixedIndegree(10), weight=100.0, receptor="inhibitory")
    net.poisson(E, rate_hz=fum.LogNormal(9.9, 0.1), weight=90.0)
    net.poisson(I, rate_hz=20000.0, weight=90.0)
    net.probe("w", "weight", projection="E_to_E", count=3)
    return net


def test_power_law_stdp_takes_nests_names():
    net = fum.Model(dt_ms=0.1, seed=3, duration_ms=10.0)
    E = net.population("E", 50, "lif_cuba")
    rule = fum.Stdp(weight_dependence="power_law", lambda_=0.1, alpha=0.0513, mu=0.4, tau_plus_ms=15.0)
    net.connect(E, E, fum.FixedIndegree(5), weight=45.0, plasticity=rule)
    text = net.to_toml()
    assert "lambda = 0.1" in text and "mu = 0.4" in text and "a_plus" not in text and "w_max" not in text
    net.check()
    with pytest.raises(fum.ModelError, match=r"plasticity\[0\]\.a_plus"):
        bad = fum.Model(dt_ms=0.1, duration_ms=10.0)
        bad.connect(bad.population("E", 50, "lif_cuba"), "E", fum.FixedIndegree(5), weight=45.0, plasticity=fum.Stdp(0.01, weight_dependence="power_law", lambda_=0.1, alpha=1.0, mu=0.4))
        bad.check()


def test_fixed_total_number_draws_exactly_n_synapses():
    net = fum.Model(dt_ms=0.1, seed=4)
    E = net.population("E", 100, "lif_cuba")
    I = net.population("I", 30, "lif_cuba")
    net.connect(E, I, fum.FixedTotalNumber(1234), weight=1.0)
    net.connect(I, I, fum.FixedTotalNumber(500), weight=1.0, receptor="inhibitory")
    assert "fixed_total_number = 1234" in net.to_toml()
    run = net.run(1.0, progress=False)
    assert len(run.weights("E_to_I").pre) == 1234
    synapses = run.weights("I_to_I")
    assert len(synapses.pre) == 500 and not np.any(synapses.pre == synapses.post), "no autapses unless allowed"
    net.connect(I, E, fum.FixedTotalNumber(10), weight=1.0, allow_multapses=False)
    with pytest.raises(fum.ModelError, match=r"projections\[2\]\.allow_multapses: fixed_total_number"):
        net.check(1.0)


def test_rates_run_json_probes_and_weights():
    net = small_plastic_network()
    calls = []
    run = net.run(50.0, threads=THREADS, progress=lambda done, end: calls.append((done, end)))
    assert calls and calls[-1] == (500, 500)
    assert run.outcome == "finished" and run.run_json["end_step"] == 500
    assert run.run_json["network"]["neurons"] == 500
    assert set(run.rates()) == {"E", "I"} and run.rates()["E"] > 0
    assert run.populations == ["E"]
    with pytest.raises(KeyError, match="not recorded"):
        run.spikes("I")
    ids, times = run.spikes("E")
    assert len(ids) == len(times) > 0 and np.all(np.diff(times) >= 0) and ids.max() < 400
    samples = run.probe("w")
    assert samples.values.shape == (500, 3) and samples.sites.shape == (3, 2)
    synapses = run.weights("E_to_E")
    assert len(synapses.pre) == 400 * 40
    assert np.all(synapses.weight >= 0) and np.all(synapses.weight <= 100.0)
    assert not np.array_equal(synapses.weight, small_plastic_network().run(0.1, progress=False).weights("E_to_E").weight), "STDP changed weights"
    # The weight probe's last sample is the synapse's weight at the end.
    for (pre, post), last in zip(samples.sites, samples.values[-1]):
        first = np.flatnonzero((synapses.pre == pre) & (synapses.post == post))[0]
        assert synapses.weight[first] == last
    assert "[[plasticity]]" in net.to_toml() and 'plasticity = "stdp"' in net.to_toml()


def test_alpha_neurons_with_a_bias_drawn_per_neuron():
    net = fum.Model(duration_ms=100.0, seed=4)
    net.population("A", 100, "lif_psc_alpha", i_e_pa=fum.Uniform(380.0, 600.0), tau_syn_ex_ms=1.0)
    assert "[populations.i_e_pa]\nuniform = [380.0, 600.0]" in net.to_toml()
    run = net.run(threads=THREADS, progress=False)
    ids, _ = run.spikes("A")
    # Every neuron is above the rheobase (375 pA) and fires; no two draws are alike.
    assert len(np.unique(ids)) == 100
    counts = np.bincount(ids, minlength=100)
    assert counts.min() >= 1 and counts.max() > counts.min()
    bad = fum.Model(duration_ms=10.0)
    bad.population("A", 10, "lif_psc_alpha", i_e_pa=fum.Uniform(600.0, 380.0))
    with pytest.raises(fum.ModelError, match=r"populations\[0\]\.i_e_pa: uniform = \[600, 380\]: low must not exceed high"):
        bad.check()


def test_a_dc_pulse_fires_only_while_it_flows():
    net = fum.Model(duration_ms=100.0, seed=4)
    net.population("N", 5, "lif_cuba", e_l_mv=-70.0, v_init_mv=-70.0, tau_m_ms=10.0, c_m_pf=250.0)
    net.dc("N", 1000.0, start_ms=20.0, stop_ms=60.0, name="pulse")
    assert 'start_ms = 20.0\nstop_ms = 60.0' in net.to_toml()
    ids, times = net.run(threads=THREADS, progress=False).spikes("N")
    assert len(ids) >= 5 * 4, "every neuron fires several times while the current flows"
    assert times.min() >= 20.0 and times.max() < 60.0, (times.min(), times.max())
    # The same current from the start: its spikes, 20 ms earlier.
    always = fum.Model(duration_ms=40.0, seed=4)
    always.population("N", 5, "lif_cuba", e_l_mv=-70.0, v_init_mv=-70.0, tau_m_ms=10.0, c_m_pf=250.0)
    always.dc("N", 1000.0)
    a_ids, a_times = always.run(threads=THREADS, progress=False).spikes("N")
    assert np.array_equal(ids, a_ids) and np.allclose(times - 20.0, a_times)
    bad = fum.Model(duration_ms=10.0)
    bad.population("N", 5, "lif_cuba")
    bad.dc("N", 10.0, start_ms=5.0, stop_ms=5.0)
    with pytest.raises(fum.ModelError, match=r"inputs\[0\]\.stop_ms: must come at least a step after start_ms"):
        bad.check()


def test_two_listed_projections_may_not_share_a_name():
    net = fum.Model(duration_ms=10.0)
    A = net.population("A", 4, "lif_cuba")
    net.connect(A, A, fum.FromList([0], [1], weight=1.0))
    with pytest.raises(ValueError, match=r"a projection named 'A_to_A' exists already"):
        net.connect(A, A, fum.FromList([1], [2], weight=1.0))


def test_stop_and_resume_give_one_run(tmp_path):
    net = small_plastic_network()
    whole = net.run(40.0, progress=False)
    first = net.run(40.0, out=tmp_path / "a", stop_after_ms=20.0, progress=False)
    assert first.outcome == "stopped"
    resumed = fum.resume(tmp_path / "a", progress=False)
    assert resumed.outcome == "finished"
    np.testing.assert_array_equal(resumed.spikes("E").timestamps_ms, whole.spikes("E").timestamps_ms)
    np.testing.assert_array_equal(resumed.weights("E_to_E").weight, whole.weights("E_to_E").weight)


def test_spikes_dataframe_needs_pandas():
    run = small_plastic_network().run(10.0, progress=False)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs pandas"):
            run.spikes_dataframe()
        pytest.skip("pandas is not installed: checked that spikes_dataframe() says it needs it")
    frame = run.spikes_dataframe()
    assert list(frame.columns) == ["population", "node_ids", "timestamps_ms"] and len(frame) == len(run.spikes("E").node_ids)


def test_ctrl_c_stops_the_run_after_its_outputs(tmp_path):
    """SIGINT while simulating: the run stops at a step boundary, writes its outputs (outcome
    "interrupted") and raises KeyboardInterrupt, as `fum run` does."""
    import signal
    import sys
    import time

    script = tmp_path / "interrupted.py"
    script.write_text(f"""
import json, sys, fum
net = fum.Model.from_toml({str(BRUNEL)!r})
started = []
def progress(done, end):
    if not started:
        started.append(done)
        print("running", flush=True)
try:
    net.run(100000.0, threads=1, out={str(tmp_path / 'out')!r}, progress=progress)
except KeyboardInterrupt:
    print("KeyboardInterrupt", json.load(open({str(tmp_path / 'out' / 'run.json')!r}))["outcome"], flush=True)
""")
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert child.stdout.readline().strip() == "running"
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    assert child.stdout.readline().strip() == "KeyboardInterrupt interrupted"
    assert child.wait(timeout=60) == 0 and time.monotonic() - sent < 30


def test_ids_are_int64_everywhere_and_numpy_indexes_with_them():
    run = small_plastic_network().run(20.0, progress=False)
    ids = run.spikes("E").node_ids
    assert ids.dtype == np.int64 and np.bincount(ids, minlength=400).sum() == len(ids)
    synapses = run.weights("E_to_E")
    assert synapses.pre.dtype == synapses.post.dtype == np.int64
    assert run.probe("w").sites.dtype == np.int64
    net = fum.Model(dt_ms=0.1, seed=1)
    net.population("A", 10, "lif_cuba", i_e_pa=500.0)
    net.probe("v", "v", population="A", neurons=[3, 7])
    assert net.run(5.0, progress=False).probe("v").sites.tolist() == [3, 7]


def poisson_driven(size=60):
    """Neurons driven by excitatory and inhibitory Poisson input alone, the excitatory rate drawn
    per neuron: irregular (ISI CV about 0.5), each at its own rate, a few nearly silent."""
    net = fum.Model(dt_ms=0.1, seed=8)
    net.population("P", size, "lif_cuba", v_init_mv=fum.Uniform(-70.0, -55.0))
    net.population("Q", 20, "lif_cuba", record_spikes=False)
    net.poisson("P", rate_hz=fum.Uniform(8000.0, 14000.0), weight=90.0)
    net.poisson("P", rate_hz=8000.0, weight=90.0, receptor="inhibitory")
    net.poisson("Q", rate_hz=10000.0, weight=90.0)
    return net


def hand_rate_and_cv(node_ids, timestamps_ms, neuron, start_ms, end_ms, min_spikes):
    """One neuron's rate (Hz) and ISI CV over [start_ms, end_ms), with the statistics module."""
    import statistics

    times = [t for i, t in zip(node_ids.tolist(), timestamps_ms.tolist()) if i == neuron and start_ms <= t < end_ms]
    rate = len(times) / ((end_ms - start_ms) / 1000.0)
    if len(times) < min_spikes:
        return rate, None
    intervals = [b - a for a, b in zip(times, times[1:])]
    return rate, statistics.pstdev(intervals) / statistics.mean(intervals)


def test_rates_and_cv_per_neuron_against_a_hand_computation():
    run = poisson_driven().run(600.0, threads=THREADS, progress=False)
    node_ids, timestamps = run.spikes("P")
    assert run.sizes == {"P": 60, "Q": 20} and run.duration_ms == 600.0
    for window, kwargs in [((0.0, 600.0), {}), ((100.0, 450.0), {"start_ms": 100.0, "end_ms": 450.0})]:
        rates = run.rates("P", per_neuron=True, **kwargs)
        for min_spikes in (2, 3, 6):
            cv = run.cv("P", min_spikes=min_spikes, **kwargs)
            assert rates.shape == cv.shape == (60,)
            for neuron in range(60):
                rate, expected = hand_rate_and_cv(node_ids, timestamps, neuron, *window, min_spikes)
                assert rates[neuron] == pytest.approx(rate, rel=1e-12)
                if expected is None:
                    assert np.isnan(cv[neuron]), f"neuron {neuron}: fewer than {min_spikes} spikes, CV {cv[neuron]}"
                else:
                    assert cv[neuron] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert 0 < np.count_nonzero(np.isnan(run.cv("P", **kwargs))) < 30, "most neurons fire, a few hardly"
    # Poisson-driven neurons fire irregularly; the mean of the per-neuron rates is the population's.
    assert 0.3 < np.nanmean(run.cv("P")) < 1.0
    assert run.rates("P", per_neuron=True).mean() == pytest.approx(run.rates("P"), rel=1e-12)
    assert run.rates("P", start_ms=0.0) == pytest.approx(run.rates()["P"], rel=1e-12)
    with pytest.raises(KeyError, match="not recorded"):
        run.rates("Q", per_neuron=True)
    assert run.rates("Q") > 0, "an unrecorded population's mean rate is run.json's"
    with pytest.raises(ValueError, match="at least 2"):
        run.cv("P", min_spikes=1)
    with pytest.raises(ValueError, match="empty"):
        run.cv("P", start_ms=300.0, end_ms=300.0)
    silent = poisson_driven(size=5)
    silent.population("S", 4, "lif_cuba")
    cv = silent.run(50.0, progress=False).cv("S")
    assert cv.shape == (4,) and np.all(np.isnan(cv)), "a silent population's CVs are NaN"


def test_a_built_network_run_twice_gives_the_spikes_of_one_run():
    net = small_plastic_network()
    whole = net.run(60.0, threads=THREADS, progress=False)
    sim = net.build(threads=THREADS, progress=False)
    assert sim.steps == 0 and sim.time_ms == 0.0
    first = sim.run(30.0, progress=False)
    second = sim.run(30.0, progress=False)
    assert sim.steps == 600 and sim.time_ms == 60.0 and repr(sim) == "Simulation(60 ms simulated)"
    assert (first.duration_ms, second.duration_ms) == (30.0, 60.0)
    assert second.run_json["start_step"] == 300 and second.run_json["end_step"] == 600
    for a, b in zip(second.spikes("E"), whole.spikes("E")):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(second.weights("E_to_E").weight, whole.weights("E_to_E").weight)
    np.testing.assert_array_equal(second.probe("w").values, whole.probe("w").values)
    assert second.rates() == whole.rates()
    # The first run keeps its own end: its spikes and samples are those of the first 30 ms.
    early = whole.spikes("E").timestamps_ms < 30.0
    np.testing.assert_array_equal(first.spikes("E").node_ids, whole.spikes("E").node_ids[early])
    assert first.probe("w").values.shape == (300, 3)
    assert first.run_json["timing"]["build_s"] > 0 and second.run_json["timing"]["build_s"] == 0
    with pytest.raises(fum.FumError, match="ended at 30 ms and its simulation has run on to 60 ms"):
        first.weights("E_to_E")
    assert sim.model.populations == net.populations


def test_a_built_network_from_a_model_file_runs_on_with_its_seed():
    net = fum.Model.from_toml(BRUNEL)
    sim = net.build(threads=THREADS, seed=7, progress=False)
    sim.run(10.0, progress=False)
    run = sim.run(10.0, progress=False)
    whole = net.run(20.0, threads=THREADS, seed=7, progress=False)
    np.testing.assert_array_equal(run.spikes("I").timestamps_ms, whole.spikes("I").timestamps_ms)
    np.testing.assert_array_equal(run.spikes("I").node_ids, whole.spikes("I").node_ids)
    with pytest.raises(ValueError, match="positive"):
        sim.run(-1.0)


def test_the_gil_is_released_while_simulating():
    """Another Python thread runs while the engine simulates."""
    sim = fum.Model.from_toml(BRUNEL).build(threads=THREADS, progress=False)
    ticks, running = [], threading.Event()

    def count():
        while not running.is_set():
            time.sleep(0.001)
        while running.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.002)

    thread = threading.Thread(target=count)
    thread.start()
    running.set()
    # Runs of 60 ms until a quarter of a second was spent in them, however fast the machine.
    runs = []
    while sum(ended - started for started, ended in runs) < 0.25:
        started = time.monotonic()
        sim.run(60.0, progress=False)
        runs.append((started, time.monotonic()))
    running.clear()
    thread.join()
    during = [t for t in ticks if any(started < t < ended for started, ended in runs)]
    # A tick every ~2 ms while the GIL is free: ~100 here; held, at most one a run.
    assert len(during) > 20, f"{len(during)} ticks in {len(runs)} runs of {sum(e - s for s, e in runs):.2f} s"


def test_the_build_reports_its_progress(capfd):
    net = small_plastic_network()
    calls = []
    net.build(threads=THREADS, progress=lambda done, end: calls.append((done, end)))
    assert calls == [], "a function hears the steps only"
    net.run(20.0, threads=THREADS, progress=True)
    err = capfd.readouterr().err
    assert "fum: building 500 neurons, 24.0k synapses" in err and "fum: placing the network on cpu" in err, err
    assert "200/200 steps" in err and err.endswith("\n")


def test_a_resumed_run_knows_its_model(tmp_path):
    net = small_plastic_network()
    net.run(40.0, out=tmp_path / "a", stop_after_ms=20.0, progress=False)
    resumed = fum.resume(tmp_path / "a", progress=False)
    assert resumed.sizes == {"E": 400, "I": 100}
    assert resumed.model.populations == net.populations and resumed.duration_ms == 40.0
    rates = resumed.rates("E", per_neuron=True)
    assert rates.shape == (400,) and rates.mean() == pytest.approx(resumed.rates()["E"], rel=1e-12)
