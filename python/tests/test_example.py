"""The example (python/examples/brunel.py) run as a user runs it: a script, headless
(MPLBACKEND=Agg), a short run into a temporary folder. It must draw its figure and print the
Brunel network's rates: near the documented ones (benchmarks/RESULTS.md: mean field 36.2 Hz,
fum 35.6 Hz and NEST 3.10 35.3 Hz over 1 s), and, the network built in Python being
assets/models/brunel.toml's, exactly those of `fum run` on that file.

Skipped, saying why, without matplotlib (the example's plotting) or, for the comparison with
`fum run`, without the binary ($FUM_BIN, else target/release/fum)."""

import json
import os
import re
import subprocess
import sys

import pytest

from support import ROOT, fum_binary

EXAMPLE = ROOT / "python" / "examples" / "brunel.py"
BRUNEL = ROOT / "assets" / "models" / "brunel.toml"
# Short: CI has 2 cores. 200 ms of Brunel is about 90,000 spikes.
DURATION_MS = 200.0
THREADS = 2
MEAN_FIELD_HZ = 36.2
# "rate E 35.645 Hz (whole run); from 100 ms: 35.609 Hz, ISI CV 0.364 (10000 neurons)"
RATE = re.compile(r"^rate (\w+) ([0-9.]+) Hz \(whole run\).* ISI CV ([0-9.]+)", re.M)


def run_example(out, *options):
    """The example's standard output, run in `out` (the figure goes there too)."""
    pytest.importorskip("matplotlib", reason="the example plots with matplotlib (pip install matplotlib)")
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(EXAMPLE), "--out", str(out), "--duration-ms", f"{DURATION_MS:g}", "--threads", str(THREADS), *options]
    done = subprocess.run(command, cwd=out, env=dict(os.environ, MPLBACKEND="Agg"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def printed_rates(stdout):
    """{population: (rate over the whole run, mean ISI CV)} as the example printed them."""
    rates = {pop: (float(rate), float(cv)) for pop, rate, cv in RATE.findall(stdout)}
    assert set(rates) == {"E", "I"}, f"no rate lines for E and I in:\n{stdout}"
    return rates


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    out = tmp_path_factory.mktemp("example")
    return out, run_example(out)


def test_the_example_draws_its_figure(example):
    out, stdout = example
    figure = out / "brunel.png"
    assert figure.is_file(), f"no {figure}; the example printed:\n{stdout}"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.stat().st_size > 50_000, "a figure with four panels of data, not an empty one"
    assert f"figure {figure}" in stdout


def test_the_example_prints_the_brunel_rates(example):
    _, stdout = example
    assert "12,500 neurons, 15,625,000 synapses" in stdout
    for pop, (rate, cv) in printed_rates(stdout).items():
        assert abs(rate - MEAN_FIELD_HZ) < 0.15 * MEAN_FIELD_HZ, f"{pop}: {rate} Hz, mean field {MEAN_FIELD_HZ} Hz"
        # Over 100 ms a neuron fires 3-4 times: its CV is rough, but irregular (0.36 over 1 s).
        assert 0.1 < cv < 0.7, f"{pop}: ISI CV {cv}"


def test_the_printed_rates_are_those_of_fum_run(example, tmp_path):
    _, stdout = example
    binary = fum_binary()
    subprocess.run([str(binary), "run", str(BRUNEL), "--duration", f"{DURATION_MS:g}ms", "--threads", str(THREADS), "--out", str(tmp_path / "cli"), "--quiet"], check=True)
    expected = json.loads((tmp_path / "cli" / "run.json").read_text())["rates_hz"]
    for pop, (rate, _) in printed_rates(stdout).items():
        assert rate == pytest.approx(expected[pop], abs=0.0005 + 1e-9), f"{pop}: printed {rate} Hz, fum run's run.json {expected[pop]} Hz"


def test_the_example_from_the_model_file_prints_the_same(example, tmp_path):
    _, built = example
    loaded = run_example(tmp_path, "--from-toml")
    assert "loaded from brunel.toml" in loaded
    assert printed_rates(loaded) == printed_rates(built)
    assert (tmp_path / "brunel.png").is_file()
