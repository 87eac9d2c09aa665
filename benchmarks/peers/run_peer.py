#!/usr/bin/env python3
"""The one entry point of the peer simulators for `fum bench --peers`: runs one of fum's asset
models (assets/models/<model>.toml) in a peer simulator and prints one JSON line.

Install (Debian 12 / Python 3.11 tested; Brian2's C++ standalone mode needs g++ and make):
    python3 -m venv /work/venv-peers
    /work/venv-peers/bin/pip install -r benchmarks/requirements.txt     # brian2, nest-simulator
and run fum with that interpreter first on PATH (e.g. `. /work/venv-peers/bin/activate`), or call
the venv's python3 directly. GPU peers: torch (pip install torch) and Brian2CUDA (see
brian2cuda_brunel.py: brian2 2.10.1 + brian2cuda 1.0b1 and an nvcc) for --backend cuda.

How fum calls it (from the repository root):
    python3 benchmarks/peers/run_peer.py --list
        one JSON line: {"python": ..., "peers": {"brian2": {"version": "2.9.0", "models": [...],
        "backends": ["cpu"], "matched_differs": ["vogels_abbott_coba"]}, ...},
        "missing": {"torch": "ModuleNotFoundError: ..."}}
        (matched_differs: the models whose --integrator matched runs another scheme than the
        reference one, which fum bench then runs both ways)
        (peers whose module imports and whose tools are there; the others under "missing")
    python3 benchmarks/peers/run_peer.py --peer brian2 --model vogels_abbott_cuba --backend cpu \\
        --threads 2 --duration-ms 1000 --seed 1 [--integrator reference|matched] [--neurons N]
        [--timeout-s S]
        exactly one JSON line on stdout (the peer's own output goes to stderr):
        {"peer", "version", "model", "backend", "threads", "neurons", "synapses", "duration_ms",
         "seed", "build_s", "simulate_s", "total_s", "rates_hz": {"E", "I"}, "integrator",
         "integrator_requested", "dtype", "settings", "asset_mismatch": [...], "command", "detail"}
        exit 0. On failure: non-zero exit and {"peer", "model", "backend", "error"}; exit 3 when the
        peer has no script for the model or does not run on the backend
        ({"error": "no brian2 script for model X"}), 124 on --timeout-s.

Peers, backends and models (each the same network as the asset; the differences are listed in
the scripts' docstrings and in `asset_mismatch` when the asset has changed since):
    brian2      cpu   vogels_abbott_cuba, vogels_abbott_coba, stdp_balanced (brian2_va.py),
                      brunel, scaling, poisson_drive (brian2cuda_brunel.py --cpu --float64)
                      C++ standalone with Brian2's default compiler flags, float64 (Brian2's
                      default), serial code for --threads 1, OpenMP otherwise.
    nest        cpu   vogels_abbott_cuba, vogels_abbott_coba, stdp_balanced (nest_va.py),
                      brunel, scaling, poisson_drive (nest_brunel.py; poisson_generator, one
                      generator to every neuron, an independent train each)
    brian2cuda  cuda  brunel, scaling (brian2cuda_brunel.py, cuda_standalone, float32)
    torch       cuda  brunel (torch_brunel.py --brunel; no STDP, so not scaling)
--integrator: "reference" (default) runs the peer's reference scheme for the model, "matched"
fum's. They differ only for vogels_abbott_coba in Brian2: forward Euler (R. Brette's Brian
benchmark-1 script) vs exponential Euler (fum's lif_coba). NEST has one integrator for
iaf_cond_exp (GSL RKF45, adaptive) and reports it either way; the JSON's "integrator" is always
the one that ran.
--neurons scales brunel, scaling and poisson_drive as `fum bench` does (E = floor(0.8 N), I = N - E,
in-degrees kept); the other models run at their asset size only. poisson_drive is the Poisson-driven
scaling set of `fum bench --suite poisson` (100 synapses per neuron, 1500 Hz drive; Brian2 drives it
with PoissonInput, NEST with poisson_generator).
--seed and --duration-ms default to the asset's. The peers draw their networks from their own
random streams: same statistics, not the same synapses as fum.

Timing: build_s and simulate_s are the peer's own timers (simulate_s: the simulation loop alone;
build_s: network construction, plus code generation and compilation for Brian2 / Brian2CUDA),
total_s is the wall time of the whole peer process as measured here (interpreter start, imports,
build, simulation, reading results back), the figure to set beside fum's wall time.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MODELS_DIR = os.path.join(ROOT, "assets", "models")

EXIT_UNSUPPORTED = 3
EXIT_TIMEOUT = 124

VA = {"vogels_abbott_cuba": "cuba", "vogels_abbott_coba": "coba", "stdp_balanced": "stdp"}


def threads_omp(t):
    """Brian2 OpenMP threads: 0 (serial code, Brian2's default) for one thread."""
    return 0 if t <= 1 else t


# For each peer: its module, backends and, per model, the command (a function of the arguments).
def brian2_cmd(a):
    if a.model in VA:
        return ["brian2_va.py", "--model", VA[a.model], "--threads", str(a.threads), "--duration-ms", f"{a.duration_ms:g}",
                "--seed", str(a.seed), "--integrator", a.integrator]
    flag = {"brunel": "--brunel", "poisson_drive": "--poisson-drive"}.get(a.model, "--stdp")
    return ["brian2cuda_brunel.py", str(a.neurons), f"{a.duration_ms:g}", flag, "--cpu", "--float64",
            "--threads", str(threads_omp(a.threads)), "--seed", str(a.seed)]


def nest_cmd(a):
    if a.model in VA:
        return ["nest_va.py", "--model", VA[a.model], "--threads", str(a.threads), "--duration-ms", f"{a.duration_ms:g}",
                "--seed", str(a.seed), "--integrator", a.integrator]
    return ["nest_brunel.py", "--model", a.model, "--neurons", str(a.neurons), "--threads", str(a.threads),
            "--duration-ms", f"{a.duration_ms:g}", "--seed", str(a.seed)]


def brian2cuda_cmd(a):
    flag = "--brunel" if a.model == "brunel" else "--stdp"
    return ["brian2cuda_brunel.py", str(a.neurons), f"{a.duration_ms:g}", flag, "--seed", str(a.seed)]


def torch_cmd(a):
    return ["torch_brunel.py", str(a.neurons), f"{a.duration_ms:g}", "--brunel", "--seed", str(a.seed)]


PEERS = {
    "brian2": {
        "module": "brian2",
        "backends": ["cpu"],
        "models": ["vogels_abbott_cuba", "vogels_abbott_coba", "brunel", "stdp_balanced", "scaling", "poisson_drive"],
        # Models whose --integrator matched runs another scheme than the reference one.
        "matched_differs": ["vogels_abbott_coba"],
        "cmd": brian2_cmd,
        "needs": ["g++", "make"],
    },
    "nest": {
        "module": "nest",
        "backends": ["cpu"],
        "models": ["vogels_abbott_cuba", "vogels_abbott_coba", "brunel", "stdp_balanced", "scaling", "poisson_drive"],
        "cmd": nest_cmd,
        "needs": [],
    },
    "brian2cuda": {
        "module": "brian2cuda",
        "backends": ["cuda"],
        "models": ["brunel", "scaling"],
        "cmd": brian2cuda_cmd,
        "needs": ["nvcc", "gpu"],
    },
    "torch": {
        "module": "torch",
        "backends": ["cuda"],
        "models": ["brunel"],
        "cmd": torch_cmd,
        "needs": ["torch.cuda"],
    },
}
SCALABLE = {"brunel", "scaling", "poisson_drive"}
OTHER_PEER = {("brian2", "cuda"): "brian2cuda", ("brian2cuda", "cpu"): "brian2"}


# ---------------------------------------------------------------------------------------------
# The assets: defaults (seed, duration, size) and a check that they still are the networks the
# peer scripts build. EXPECTED holds what the scripts implement, in the TOML's terms.
def _pop(size, **kw):
    return {"size": size, **kw}


_VA_CUBA = dict(model="lif_cuba", tau_m_ms=20.0, c_m_pf=200.0, e_l_mv=-49.0, v_th_mv=-50.0, v_reset_mv=-60.0, t_ref_ms=5.0,
                tau_syn_ex_ms=5.0, tau_syn_in_ms=10.0, v_init_mv={"uniform": [-60.0, -50.0]})
_VA_COBA = dict(model="lif_coba", tau_m_ms=20.0, c_m_pf=200.0, e_l_mv=-60.0, v_th_mv=-50.0, v_reset_mv=-60.0, t_ref_ms=5.0,
                tau_syn_ex_ms=5.0, tau_syn_in_ms=10.0, e_ex_mv=0.0, e_in_mv=-80.0, v_init_mv={"normal": [-65.0, 5.0]},
                syn_ex_init={"normal": [40.0, 15.0]}, syn_in_init={"normal": [200.0, 120.0]})
_BRUNEL = dict(model="lif_cuba", tau_m_ms=20.0, c_m_pf=250.0, e_l_mv=0.0, v_th_mv=20.0, v_reset_mv=10.0, t_ref_ms=2.0,
               tau_syn_ex_ms=0.5, tau_syn_in_ms=0.5, v_init_mv={"uniform": [0.0, 20.0]})


def _proj(rule, w_e, w_i, delay, plastic_ee=None, k_i=None):
    r_e = rule
    r_i = rule if k_i is None else {"fixed_indegree": k_i}
    p = {
        "E_to_E": {"source": "E", "target": "E", "rule": r_e, "receptor": "excitatory", "weight": w_e, "delay_ms": delay},
        "E_to_I": {"source": "E", "target": "I", "rule": r_e, "receptor": "excitatory", "weight": w_e, "delay_ms": delay},
        "I_to_E": {"source": "I", "target": "E", "rule": r_i, "receptor": "inhibitory", "weight": w_i, "delay_ms": delay},
        "I_to_I": {"source": "I", "target": "I", "rule": r_i, "receptor": "inhibitory", "weight": w_i, "delay_ms": delay},
    }
    if plastic_ee:
        p["E_to_E"]["plasticity"] = plastic_ee
    return p


_STDP = dict(weight_dependence="additive", pairing="all_to_all")
EXPECTED = {
    "vogels_abbott_cuba": {
        "dt_ms": 0.1,
        "populations": {"E": _pop(3200, **_VA_CUBA), "I": _pop(800, **_VA_CUBA)},
        "projections": _proj({"fixed_probability": 0.02}, 16.2, 90.0, 0.1),
        "inputs": {},
        "plasticity": {},
    },
    "vogels_abbott_coba": {
        "dt_ms": 0.1,
        "populations": {"E": _pop(3200, **_VA_COBA), "I": _pop(800, **_VA_COBA)},
        "projections": _proj({"fixed_probability": 0.02}, 6.0, 67.0, 0.1),
        "inputs": {},
        "plasticity": {},
    },
    "stdp_balanced": {
        "dt_ms": 0.1,
        "populations": {"E": _pop(3200, **_VA_CUBA), "I": _pop(800, **_VA_CUBA)},
        "projections": _proj({"fixed_probability": 0.02}, 16.2, 90.0, 0.1, plastic_ee="stdp_ee"),
        "inputs": {},
        "plasticity": {"stdp_ee": dict(tau_plus_ms=20.0, tau_minus_ms=20.0, a_plus=0.005, a_minus=0.00525, w_min=0.0,
                                       w_max=32.4, **_STDP)},
    },
    "brunel": {
        "dt_ms": 0.1,
        "populations": {"E": _pop(10000, **_BRUNEL), "I": _pop(2500, **_BRUNEL)},
        "projections": _proj({"fixed_indegree": 1000}, 50.0, 250.0, 1.5, k_i=250),
        "inputs": {"external": {"kind": "poisson", "target": "E", "rate_hz": 20000.0, "weight": 50.0},
                   "external_I": {"kind": "poisson", "target": "I", "rate_hz": 20000.0, "weight": 50.0}},
        "plasticity": {},
    },
    "scaling": {
        "dt_ms": 0.1,
        "populations": {"E": _pop(8000, **_BRUNEL), "I": _pop(2000, **_BRUNEL)},
        "projections": _proj({"fixed_indegree": 800}, 50.0, 250.0, 1.5, plastic_ee="stdp_ee", k_i=200),
        "inputs": {"external": {"kind": "poisson", "target": "E", "rate_hz": 16000.0, "weight": 50.0},
                   "external_I": {"kind": "poisson", "target": "I", "rate_hz": 16000.0, "weight": 50.0}},
        "plasticity": {"stdp_ee": dict(tau_plus_ms=20.0, tau_minus_ms=20.0, a_plus=0.001, a_minus=0.00105, w_min=0.0,
                                       w_max=100.0, **_STDP)},
    },
    "poisson_drive": {
        "dt_ms": 0.1,
        "populations": {"E": _pop(8000, **_BRUNEL), "I": _pop(2000, **_BRUNEL)},
        "projections": _proj({"fixed_indegree": 80}, 300.0, 1500.0, 1.5, k_i=20),
        "inputs": {"external": {"kind": "poisson", "target": "E", "rate_hz": 1500.0, "weight": 300.0},
                   "external_I": {"kind": "poisson", "target": "I", "rate_hz": 1500.0, "weight": 300.0}},
        "plasticity": {},
    },
}
# Fields of the asset that the scripts do not model (and that do not change the network).
IGNORED_KEYS = {"name"}
# Defaults of fum's model format, for fields an asset may leave out.
FUM_DEFAULTS = {"allow_autapses": False, "allow_multapses": True, "receptor": "excitatory"}


def load_asset(model):
    path = os.path.join(MODELS_DIR, f"{model}.toml")
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError:
            return None, "cannot read the asset (Python < 3.11 without tomli): defaults assumed, not checked"
    try:
        with open(path, "rb") as f:
            return tomllib.load(f), None
    except OSError as e:
        return None, f"cannot read {os.path.relpath(path, ROOT)}: {e}"


def asset_mismatch(model, asset, scaled):
    """Differences between the asset and what the peer scripts build, as readable strings."""
    exp = EXPECTED[model]
    out = []

    def cmp(where, want, got):
        if isinstance(want, float) and isinstance(got, (int, float)) and abs(want - got) <= 1e-9 * max(1.0, abs(want)):
            return
        if want != got:
            out.append(f"{where}: asset {json.dumps(got)}, peer scripts {json.dumps(want)}")

    cmp("simulation.dt_ms", exp["dt_ms"], asset.get("simulation", {}).get("dt_ms", 0.1))
    for kind, key in (("populations", "name"), ("projections", "name"), ("inputs", "name"), ("plasticity", "name")):
        got = {e.get(key): e for e in asset.get(kind, [])}
        want = exp[kind]
        for name in sorted(set(got) | set(want)):
            if name not in want:
                out.append(f"{kind}.{name}: in the asset, not in the peer scripts")
                continue
            if name not in got:
                out.append(f"{kind}.{name}: in the peer scripts, not in the asset")
                continue
            g, w = got[name], want[name]
            for field in sorted(set(g) | set(w)):
                if field in IGNORED_KEYS or (field == "size" and scaled):
                    continue
                if field not in w and g.get(field) == FUM_DEFAULTS.get(field, object()):
                    continue
                cmp(f"{kind}.{name}.{field}", w.get(field, FUM_DEFAULTS.get(field)), g.get(field, FUM_DEFAULTS.get(field)))
    return out


# ---------------------------------------------------------------------------------------------
def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def have_nvcc():
    for c in [os.path.join(os.environ.get("CUDA_PATH", ""), "bin", "nvcc"), shutil.which("nvcc") or "",
              "/usr/local/cuda/bin/nvcc", "/opt/cuda/bin/nvcc"]:
        if c and os.path.exists(c):
            return True
    return False


def have_gpu():
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        return r.returncode == 0 and "GPU" in r.stdout
    return os.path.exists("/dev/nvidia0")


def probe(peer):
    """(version, None) if the peer can run here, else (None, why not)."""
    spec = PEERS[peer]
    mod = spec["module"]
    code = (
        "import os, sys\n"
        "os.environ.setdefault('PYNEST_QUIET', '1')\n"
        "saved = os.dup(1); os.dup2(2, 1)\n"  # banners to stderr
        f"import {mod} as m\n"
        "v = getattr(m, '__version__', '?')\n"
        + ("import torch; v += ' cuda=' + str(torch.cuda.is_available())\n" if "torch.cuda" in spec["needs"] else "")
        + "os.write(saved, (v + '\\n').encode())\n"
    )
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, f"import {mod} timed out"
    if r.returncode != 0:
        err = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        return None, (err[-1] if err else f"import {mod} failed (exit {r.returncode})")
    version = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "?"
    for need in spec["needs"]:
        if need in ("g++", "make") and not shutil.which(need):
            return None, f"{mod} {version} imports, but `{need}` is not on PATH (C++ standalone needs it)"
        if need == "nvcc" and not have_nvcc():
            return None, f"{mod} {version} imports, but no nvcc (CUDA_PATH, PATH, /usr/local/cuda)"
        if need == "gpu" and not have_gpu():
            return None, f"{mod} {version} imports, but no NVIDIA GPU is visible"
        if need == "torch.cuda":
            if version.endswith("cuda=False"):
                return None, f"torch {version.split()[0]} imports, but torch.cuda.is_available() is False"
            version = version.split()[0]
    return version, None


def cmd_list():
    with ThreadPoolExecutor(max_workers=len(PEERS)) as ex:
        res = dict(zip(PEERS, ex.map(probe, PEERS)))
    peers, missing = {}, {}
    for name, (version, why) in res.items():
        if version is None:
            missing[name] = why
        else:
            peers[name] = {"version": version, "models": PEERS[name]["models"], "backends": PEERS[name]["backends"],
                           "matched_differs": PEERS[name].get("matched_differs", [])}
    emit({"python": sys.executable, "peers": peers, "missing": missing})
    return 0


# ---------------------------------------------------------------------------------------------
def run_script(cmd, timeout_s):
    """Runs a peer script; its stderr is passed through (and its tail kept). Returns
    (returncode, stdout, stderr tail, wall seconds, timed out)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    tail = []

    def pump():
        for raw in iter(proc.stderr.readline, b""):
            sys.stderr.buffer.write(raw)
            sys.stderr.flush()
            tail.append(raw.decode(errors="replace"))
            if len(tail) > 60:
                del tail[:-60]

    out = []
    threads = [threading.Thread(target=pump, daemon=True), threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)]
    for th in threads:
        th.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s if timeout_s and timeout_s > 0 else None)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, 9)
        proc.wait()
    for th in threads:
        th.join(timeout=10)
    stdout = out[0] if out else b""
    return proc.returncode, stdout.decode(errors="replace"), "".join(tail), time.perf_counter() - t0, timed_out


def normalise(peer, model, a, j, wall_s, cmd):
    """The script's JSON line in run_peer's format."""
    if peer == "brian2cuda":
        version = j.get("brian2cuda", "?")
    elif peer == "torch":
        version = j.get("torch", "?")
    else:
        version = j.get("version") or j.get("brian2") or "?"
    detail = dict(j.get("detail") or {})
    detail["script_total_s"] = j.get("total_s")
    for k in ("build_no_compile_s", "spikes", "rate_hz", "w_ee_mean_pa", "w_ee_std_pa", "brian2", "stdp"):
        if k in j:
            detail[k] = j[k]
    return {
        "peer": peer,
        "version": version,
        "model": model,
        "backend": a.backend,
        "threads": a.threads,
        "neurons": j.get("neurons"),
        "synapses": j.get("synapses"),
        "duration_ms": a.duration_ms,
        "seed": a.seed,
        "build_s": j.get("build_s"),
        "simulate_s": j.get("simulate_s"),
        "total_s": wall_s,
        "rates_hz": {"E": j.get("rate_e_hz"), "I": j.get("rate_i_hz")},
        "integrator": j.get("integrator"),
        "integrator_requested": a.integrator,
        "dtype": j.get("dtype", "float32" if peer == "torch" else "float64" if peer == "nest" else None),
        "settings": j.get("settings"),
        "asset_mismatch": a.mismatch,
        "command": " ".join(["python3", os.path.relpath(os.path.join(HERE, cmd[0]), ROOT)] + cmd[1:]),
        "detail": detail,
    }


def cmd_run(a):
    base = {"peer": a.peer, "model": a.model, "backend": a.backend}

    def fail(code, msg):
        emit({**base, "error": msg})
        return code

    spec = PEERS[a.peer]
    if a.backend not in spec["backends"]:
        other = OTHER_PEER.get((a.peer, a.backend))
        return fail(EXIT_UNSUPPORTED, f"{a.peer} runs on {'/'.join(spec['backends'])} only"
                    + (f" (for {a.backend}: --peer {other})" if other else ""))
    if a.model not in spec["models"]:
        return fail(EXIT_UNSUPPORTED, f"no {a.peer} script for model {a.model}")

    asset, why = load_asset(a.model)
    sizes = [p.get("size", 0) for p in asset.get("populations", [])] if asset else []
    asset_n = sum(sizes) if sizes else sum(p["size"] for p in EXPECTED[a.model]["populations"].values())
    if a.neurons is not None and a.neurons != asset_n and a.model not in SCALABLE:
        return fail(EXIT_UNSUPPORTED, f"the {a.peer} script for {a.model} runs the asset's {asset_n} neurons only "
                    f"(--neurons scales {', '.join(sorted(SCALABLE))})")
    a.neurons = a.neurons or asset_n
    sim = (asset or {}).get("simulation", {})
    if a.seed is None:
        a.seed = int(sim.get("seed", 1))
    if a.duration_ms is None:
        a.duration_ms = float(sim.get("duration_ms", 1000.0))
    a.mismatch = [why] if why else asset_mismatch(a.model, asset, scaled=a.neurons != asset_n)
    for m in a.mismatch:
        sys.stderr.write(f"run_peer.py: warning: {a.model}: {m}\n")

    cmd = spec["cmd"](a)
    full = [sys.executable, os.path.join(HERE, cmd[0])] + cmd[1:]
    sys.stderr.write(f"run_peer.py: {' '.join(full)}\n")
    sys.stderr.flush()
    try:
        code, stdout, tail, wall_s, timed_out = run_script(full, a.timeout_s)
    except OSError as e:
        return fail(1, f"could not start {cmd[0]}: {e}")
    if timed_out:
        return fail(EXIT_TIMEOUT, f"{cmd[0]} did not finish within {a.timeout_s:g} s")
    lines = [ln for ln in stdout.splitlines() if ln.strip().startswith("{")]
    if code != 0 or len(lines) != 1:
        why = f"{cmd[0]} exited with {code}" if code != 0 else f"{cmd[0]} printed {len(lines)} JSON lines instead of one"
        last = [ln for ln in tail.strip().splitlines() if ln.strip()][-8:]
        return fail(code if code and code > 0 else 1, why + (": " + " | ".join(last) if last else ""))
    try:
        j = json.loads(lines[0])
    except json.JSONDecodeError as e:
        return fail(1, f"{cmd[0]} printed invalid JSON ({e}): {lines[0][:500]}")
    emit(normalise(a.peer, a.model, a, j, wall_s, cmd))
    return 0


def main():
    ap = argparse.ArgumentParser(
        description="Run one of fum's asset models in a peer simulator (one JSON line on stdout).",
        epilog="See the module docstring (head of this file) for the JSON fields and how fum calls it.",
    )
    ap.add_argument("--list", action="store_true", help="list the peers importable here, with their models and backends")
    ap.add_argument("--peer", choices=sorted(PEERS))
    ap.add_argument("--model", help="asset model name (assets/models/<model>.toml)")
    ap.add_argument("--backend", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--duration-ms", type=float, default=None, help="default: the asset's")
    ap.add_argument("--seed", type=int, default=None, help="default: the asset's")
    ap.add_argument("--integrator", choices=["reference", "matched"], default="reference")
    ap.add_argument("--neurons", type=int, default=None,
                    help="brunel, scaling and poisson_drive: scale to N neurons as fum bench does")
    ap.add_argument("--timeout-s", type=float, default=0.0, help="kill the peer after this many seconds (0: never)")
    a = ap.parse_args()
    if a.list:
        return cmd_list()
    if not a.peer or not a.model:
        ap.error("--peer and --model are required (or --list)")
    if a.threads < 1:
        ap.error("--threads must be at least 1")
    return cmd_run(a)


if __name__ == "__main__":
    sys.exit(main())
