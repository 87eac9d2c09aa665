#!/usr/bin/env python3
"""The Brian2CUDA peer of the GPU scaling table: the Brunel-style network of
benchmarks/gpu/scaling_model.py built in Brian2 and run with Brian2CUDA's `cuda_standalone` device
(`--cpu`: Brian2's `cpp_standalone`, to test the script on a machine without a GPU).
Prints one JSON line to stdout (the shape of torch_brunel.py's, plus spikes and a breakdown).

Usage: brian2cuda_brunel.py N [duration_ms] [--stdp | --brunel | --poisson-drive] [--cpu] [--float64] [--threads T]
                            [--cc 9.0] [--cuda-path DIR] [--codegen-only] [--keep] [--seed S]

The network (as scaling_model.py writes it for fum): N lif_cuba neurons (iaf_psc_exp: tau_m 20 ms,
C_m 250 pF, E_L 0, V_th 20 mV, V_reset 10 mV, t_ref 2 ms, tau_syn 0.5 ms, V_0 ~ U[0, 20] mV),
80 % E / 20 % I; fixed in-degree 800 from E (+50 pA) and 200 from I (-250 pA) for every neuron,
sources drawn with replacement (multapses allowed, as in fum and torch_brunel.py) and without
autapses (as fum: a neuron's own index is skipped when it lies in the source population);
delay 1.5 ms; Poisson drive 16 kHz x 50 pA into every neuron (PoissonInput, binomial(1600, 0.001)
per step: mean 1.6 events, variance 1.598 instead of 1.6); dt 0.1 ms; exact integration.
`--brunel`: assets/models/brunel.toml instead (Brunel 2000 model A, g = 5, eta = 2; N = 12500
there): in-degree 1000 from E and 250 from I, Poisson drive 20 kHz (binomial(2000, 0.001)).
`--poisson-drive`: assets/models/poisson_drive.toml instead (`fum bench --suite poisson`; 10,000
neurons there): in-degree 80 from E (+300 pA) and 20 from I (-1500 pA), Poisson drive 1500 Hz x
300 pA (binomial(150, 0.001)), static.
`--stdp`: additive all-to-all STDP on E->E as fum's stdp_ee (tau+- 20 ms, a+ 0.001, a- 0.00105,
w in [0, 100 pA], dw = +a+ w_max x_pre at post spikes, -a- w_max x_post at pre spikes, clipped);
traces live in the neurons (one trace per neuron serves as pre and post trace since tau+ = tau-),
pairing uses the spike times at the neurons (a zero-delay plasticity pathway; the current arrives
after 1.5 ms through a second pathway), and a pre and post spike in the same step do not pair
(traces are bumped in the reset, after the synaptic updates of the step), as in fum.
Without `--stdp` the network is static (scaling_model.py --no-stdp, torch_brunel.py).
Values are float32 by default (fum and torch_brunel.py use f32); `--float64` for Brian2's default.

Timing (JSON keys; all wall-clock seconds; imports are in none of them):
  simulate_s   the simulation loop alone: Brian2's Network::run inside the compiled binary,
               bracketed by code inserted before and after it, with cudaDeviceSynchronize() at
               both ends on the GPU (so queued kernels are counted; CUDA modules are loaded
               eagerly, CUDA_MODULE_LOADING=EAGER, so their loading is not). detail.brian2_run_s
               is Brian2's own timer around the same loop (no synchronisation).
  build_s      everything before the simulation loop: Python model construction (construct_s),
               code generation (codegen_s), nvcc/g++ compilation (compile_s), and the binary's
               set-up up to the loop (binary_setup_s: process start, CUDA context, synapse
               generation on the host and upload, spike queues). fum's and PyTorch's build has no
               compilation step: build_no_compile_s = build_s - compile_s is the comparable part.
  detail.binary_teardown_s  after the loop: device-to-host copies and writing every array
               (synapse indices too) to disk, then freeing; detail.post_check_s: Brian2 reading
               the results back to check them for NaN; neither is in build_s or simulate_s.
  total_s      the whole script, imports included.

Device call (nvidia-h100-x1: CUDA 13.0 nvcc, Python 3.12; the wheels in .whl, carried):
  # here, once: echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps
  #   --only-binary=:all: --python-version 3.12 --implementation cp
  #   --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl
  #   brian2==2.10.1 brian2cuda==1.0b1 pyparsing==3.2.5
  # device (carry: [".whl"]):
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/b2site .whl/brian2-2.10.1-*.whl .whl/brian2cuda-1.0b1-*.whl \
      .whl/pyparsing-3.2.5-*.whl || exit
  PYTHONPATH=/tmp/b2site PYTHONUNBUFFERED=1 python3 benchmarks/peers/brian2cuda_brunel.py \
      10000 1000 > $OUT/brian2cuda_10000.json
  (--stdp for the STDP rows; --cc 9.0 is the default, --cuda-path DIR or CUDA_PATH if nvcc is not
  on PATH; the PYTHONPATH only for this command, so that other programs keep the image's pyparsing.)
  Each call generates and compiles a new project (about 3.5 min of CPU time for the static network,
  6 for STDP, split over the cores by make -j), so budget ~1 min of compilation per call.
  Sizes: synapse indices are int32 in Brian2CUDA, so N * 1000 must stay below 2^31 (N <= 2M);
  at 1M the host generates 10^9 synapses serially and the teardown writes ~8-12 GB to disk.

Brian2CUDA 1.0b1 on CUDA 13: its makefile hard-codes `nvcc -std=c++11`, and Thrust/CUB in CUDA 13
need C++17, so this script rewrites -std=c++11 to -std=c++17 in the generated makefile (and in the
host compiler flags); the GPU architecture is set explicitly (-arch=sm_90 from --cc, no nvidia-smi
query); `make` is emulated by this script if the machine has none. Checked without a GPU: with
nvcc 13.0.88 (pip's CUDA 13.0 wheels) and g++ 12 both variants compile and link for sm_90 and the
binary starts (then stops at cudaSetDevice: no driver); --cpu runs give rates as fum's.
"""

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# Network constants, as in benchmarks/gpu/scaling_model.py (assets/models/scaling.toml) and,
# with --brunel, assets/models/brunel.toml.
DT_MS = 0.1
K_E, K_I = 800, 200
BRUNEL_K_E, BRUNEL_K_I = 1000, 250
W_E_PA, W_I_PA = 50.0, 250.0
DELAY_MS = 1.5
POISSON_RATE_HZ, POISSON_W_PA = 16000.0, 50.0
BRUNEL_POISSON_RATE_HZ = 20000.0
# --poisson-drive (assets/models/poisson_drive.toml): in-degrees, weights (pA) and drive.
PD_K_E, PD_K_I = 80, 20
PD_W_E_PA, PD_W_I_PA = 300.0, 1500.0
PD_POISSON_RATE_HZ, PD_POISSON_W_PA = 1500.0, 300.0
POISSON_SOURCE_HZ = 10.0  # PoissonInput(rate / 10 Hz sources at 10 Hz): binomial(rate / 10 Hz, 0.001) per step
TIMING_FILE = "peer_timing.txt"


# ---------------------------------------------------------------------------------------------
# `make` stand-in, for a machine without GNU make. Brian2 runs `<make_cmd_unix> -j N` in the
# project directory; this reads Brian2CUDA's makefile (a fixed, simple template) and does what it
# says: compile every source with $(NVCC) $(NVCCFLAGS) -dc in parallel, then link with $(LFLAGS).
def emulate_make():
    from concurrent.futures import ThreadPoolExecutor

    var = {}
    with open("makefile") as f:
        for line in f:
            m = re.match(r"^([A-Z_]+)\s*:?=\s*(.*)$", line.rstrip("\n"))
            if m:
                var[m.group(1)] = m.group(2)
    cxx = os.environ.get("CXX", "g++")
    nvcc = var["NVCC"].lstrip("@").replace("$(CXX)", cxx)
    srcs = var["SRCS"].split()
    objs = [re.sub(r"\.(cu|cpp|c)$", ".o", s) for s in srcs]

    def compile_one(pair):
        src, obj = pair
        cmd = f"{nvcc} {var['NVCCFLAGS']} -dc {src} -o {obj}"
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        return r.returncode, cmd, r.stdout + r.stderr

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as ex:
        results = list(ex.map(compile_one, zip(srcs, objs)))
    failed = [r for r in results if r[0] != 0]
    for code, cmd, out in failed:
        sys.stderr.write(f"[emulated make] failed ({code}): {cmd}\n{out}\n")
    if failed:
        return 2
    cmd = f"{nvcc} {var['LFLAGS']} {' '.join(objs)} -o {var.get('PROGRAM', 'main')}"
    r = subprocess.run(cmd, shell=True)
    return 0 if r.returncode == 0 else 2


# ---------------------------------------------------------------------------------------------
def find_cuda(cuda_path_arg):
    """(cuda_path, nvcc, runtime_version as float) of the CUDA toolkit to build with."""
    candidates = []
    if cuda_path_arg:
        candidates.append(os.path.join(cuda_path_arg, "bin", "nvcc"))
    if os.environ.get("CUDA_PATH"):
        candidates.append(os.path.join(os.environ["CUDA_PATH"], "bin", "nvcc"))
    if shutil.which("nvcc"):
        candidates.append(shutil.which("nvcc"))
    candidates += ["/usr/local/cuda/bin/nvcc", "/opt/cuda/bin/nvcc"]
    for nvcc in candidates:
        if os.path.exists(nvcc):
            nvcc = os.path.realpath(nvcc)
            out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
            m = re.search(r"release (\d+)\.(\d+)", out)
            version = float(f"{m.group(1)}.{m.group(2)}") if m else 13.0
            return os.path.dirname(os.path.dirname(nvcc)), nvcc, version
    raise SystemExit("brian2cuda_brunel.py: no nvcc found (tried --cuda-path, CUDA_PATH, PATH, /usr/local/cuda)")


def cuda_library_dirs(cuda_path, workdir):
    """Library folders of the toolkit that hold libcurand (a bare libcurand.so.N, as pip's CUDA
    wheels ship it, gets a libcurand.so link in workdir/_peer_lib so that -lcurand finds it)."""
    dirs = [
        d
        for d in (
            os.path.join(cuda_path, "lib64"),
            os.path.join(cuda_path, "lib"),
            os.path.join(cuda_path, "targets", "x86_64-linux", "lib"),
        )
        if os.path.isdir(d)
    ]
    have_so = any(os.path.exists(os.path.join(d, "libcurand.so")) for d in dirs)
    if not have_so:
        for d in dirs:
            versioned = sorted(f for f in os.listdir(d) if f.startswith("libcurand.so."))
            if versioned:
                link_dir = os.path.join(workdir, "_peer_lib")
                os.makedirs(link_dir, exist_ok=True)
                os.symlink(os.path.join(d, versioned[0]), os.path.join(link_dir, "libcurand.so"))
                dirs.append(link_dir)
                break
    return dirs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, help="number of neurons")
    ap.add_argument("duration_ms", type=float, nargs="?", default=1000.0)
    ap.add_argument("--stdp", action="store_true", help="additive STDP on E->E (as scaling_model.py without --no-stdp)")
    ap.add_argument("--brunel", action="store_true", help="assets/models/brunel.toml: in-degree 1000/250, 20 kHz drive")
    ap.add_argument("--poisson-drive", action="store_true",
                    help="assets/models/poisson_drive.toml: in-degree 80/20, 300/1500 pA, 1500 Hz x 300 pA drive")
    ap.add_argument("--cpu", action="store_true", help="Brian2 cpp_standalone instead of Brian2CUDA")
    ap.add_argument("--threads", type=int, default=0, help="--cpu only: OpenMP threads (0: serial code)")
    ap.add_argument("--float64", action="store_true", help="Brian2's default float64 instead of float32")
    ap.add_argument("--cc", type=float, default=9.0, help="GPU compute capability to compile for (H100: 9.0)")
    ap.add_argument("--cuda-path", default=None, help="CUDA toolkit folder (default: CUDA_PATH, nvcc on PATH, /usr/local/cuda)")
    ap.add_argument("--codegen-only", action="store_true", help="generate the project and stop (no compiler, no GPU needed)")
    ap.add_argument("--keep", action="store_true", help="keep the project folder")
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()
    if args.stdp and (args.brunel or args.poisson_drive):
        ap.error("--brunel and --poisson-drive have no STDP (their assets are static)")
    if args.brunel and args.poisson_drive:
        ap.error("--brunel or --poisson-drive, not both")

    n = args.n
    n_e = n * 4 // 5
    n_i = n - n_e
    k_e, k_i = (BRUNEL_K_E, BRUNEL_K_I) if args.brunel else (PD_K_E, PD_K_I) if args.poisson_drive else (K_E, K_I)
    poisson_hz = BRUNEL_POISSON_RATE_HZ if args.brunel else PD_POISSON_RATE_HZ if args.poisson_drive else POISSON_RATE_HZ
    w_e_pa, w_i_pa = (PD_W_E_PA, PD_W_I_PA) if args.poisson_drive else (W_E_PA, W_I_PA)
    poisson_w_pa = PD_POISSON_W_PA if args.poisson_drive else POISSON_W_PA

    with StdoutToStderr() as out:
        import setuptools  # noqa: F401  (Brian2 uses distutils, which setuptools provides on 3.12)
        import brian2 as b2
        import numpy as np
        from brian2 import Hz, amp, ms, mV, pA, pF  # noqa: F401

        if not args.cpu:
            import brian2cuda  # noqa: F401  (registers the cuda_standalone device)

        b2.BrianLogger.log_level_error()
        b2.prefs.logging.file_log = False
        b2.prefs.logging.delete_log_on_exit = True
        workdir = tempfile.mkdtemp(prefix="brian2cuda_brunel_" if not args.cpu else "brian2cpp_brunel_")
        jobs = str(os.cpu_count() or 1)
        b2.prefs.devices.cpp_standalone.extra_make_args_unix = ["-j", jobs]
        if shutil.which("make") is None and not args.cpu:
            b2.prefs.devices.cpp_standalone.make_cmd_unix = f"{shlex_quote(sys.executable)} {shlex_quote(os.path.abspath(__file__))} --emulate-make"
        if not args.float64:
            b2.prefs.core.default_float_dtype = b2.float32
        # <chrono>/<cstdio> for the inserted timers (user headers go into main too).
        b2.prefs.codegen.cpp.headers = ["<chrono>", "<cstdio>"]

        cuda_info = {}
        if args.cpu:
            b2.set_device("cpp_standalone", directory=workdir, build_on_run=False)
            b2.prefs.devices.cpp_standalone.openmp_threads = args.threads
            sync = ""
        else:
            b2.set_device("cuda_standalone", directory=workdir, build_on_run=False)
            cb = b2.prefs.devices.cuda_standalone.cuda_backend
            # No GPU query (nvidia-smi / deviceQuery): GPU 0, architecture from --cc.
            cb.detect_gpus = False
            cb.gpu_id = 0
            cb.compute_capability = float(args.cc)
            if args.codegen_only:
                cb.detect_cuda = False
                cb.cuda_path = args.cuda_path or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
                cb.cuda_runtime_version = 13.0
            else:
                cuda_path, nvcc, version = find_cuda(args.cuda_path)
                cb.cuda_path = cuda_path
                cb.cuda_runtime_version = version
                libdirs = cuda_library_dirs(cuda_path, workdir)
                b2.prefs.codegen.cpp.library_dirs = list(b2.prefs.codegen.cpp.library_dirs) + libdirs
                os.environ["LD_LIBRARY_PATH"] = ":".join(libdirs + [os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(":")
                cuda_info = {"cuda_path": cuda_path, "nvcc": nvcc, "cuda_version": version, "library_dirs": libdirs}
            # CUDA 13's Thrust/CUB need C++17 (the host compiler gets the same standard).
            b2.prefs.codegen.cpp.extra_compile_args_gcc = [
                "-std=c++17" if a == "-std=c++11" else a for a in b2.prefs.codegen.cpp.extra_compile_args_gcc
            ]
            dev = b2.get_device()
            orig_generate_makefile = dev.generate_makefile

            def generate_makefile_cxx17(writer, *a, **k):
                orig_generate_makefile(writer, *a, **k)
                path = os.path.join(writer.project_dir, "makefile")
                with open(path) as f:
                    text = f.read()
                with open(path, "w") as f:
                    f.write(text.replace("-std=c++11", "-std=c++17"))

            dev.generate_makefile = generate_makefile_cxx17
            os.environ["CUDA_MODULE_LOADING"] = "EAGER"
            sync = "CUDA_SAFE_CALL(cudaDeviceSynchronize());"

        # Timers inside the binary: main() start, loop start/end (synchronised), end of brian_end().
        dev = b2.get_device()
        # The moment code generation ends and compilation starts.
        marks = {}
        orig_compile_source = dev.compile_source

        def compile_source_timed(*a, **k):
            marks["compile_start"] = time.perf_counter()
            return orig_compile_source(*a, **k)

        dev.compile_source = compile_source_timed
        dev.insert_code(
            "before_start",
            "std::chrono::high_resolution_clock::time_point _peer_t0 = std::chrono::high_resolution_clock::now(), _peer_t1, _peer_t2;",
        )
        dev.insert_code("before_network_run", f"{sync} _peer_t1 = std::chrono::high_resolution_clock::now();")
        dev.insert_code("after_network_run", f"{sync} _peer_t2 = std::chrono::high_resolution_clock::now();")
        dev.insert_code(
            "after_end",
            "{ std::chrono::high_resolution_clock::time_point _peer_t3 = std::chrono::high_resolution_clock::now();"
            f' FILE* _peer_f = fopen("{TIMING_FILE}", "w");'
            ' fprintf(_peer_f, "%.9f %.9f %.9f\\n",'
            " std::chrono::duration<double>(_peer_t1 - _peer_t0).count(),"
            " std::chrono::duration<double>(_peer_t2 - _peer_t1).count(),"
            " std::chrono::duration<double>(_peer_t3 - _peer_t2).count());"
            " fclose(_peer_f); }",
        )

        # ---- the network -------------------------------------------------------------------
        t_build0 = time.perf_counter()
        b2.defaultclock.dt = DT_MS * ms
        b2.seed(args.seed)
        ns = {
            "tau_m": 20.0 * ms,
            "C_m": 250.0 * pF,
            "tau_s": 0.5 * ms,
            "v_th": 20.0 * mV,
            "v_reset": 10.0 * mV,
            "w_e": w_e_pa * pA,
            "w_i": w_i_pa * pA,
            "tau_stdp": 20.0 * ms,
            "a_plus": 0.001,
            "a_minus": 0.00105,
            "w_min": 0.0 * pA,
            "w_max": 100.0 * pA,
        }
        eqs = """
        dv/dt = -v / tau_m + Isyn / C_m : volt (unless refractory)
        dIsyn/dt = -Isyn / tau_s : amp
        nspk : integer
        """
        reset = "v = v_reset; nspk += 1"
        if args.stdp:
            eqs += "dx/dt = -x / tau_stdp : 1\n"
            reset += "; x += 1"
        P = b2.NeuronGroup(n, eqs, threshold="v >= v_th", reset=reset, refractory=2.0 * ms,
                           method="exact", namespace=ns, name="P")
        P.v = "rand() * 20*mV"
        Pe = P[:n_e]
        Pi = P[n_e:]
        delay = DELAY_MS * ms
        # Fixed in-degree with replacement: for every target j, K sources drawn uniformly from the
        # source population without j itself where j lies in it (m = 1; j_local = j - first):
        # (m * (j_local + 1) + U{0 .. N_pre - m - 1}) % N_pre skips j_local and nothing else.
        def gen(k, first, same):
            if not same:
                return f"int(rand() * N_pre) % N_pre for kk in range({k})"
            m = f"int(j >= {first} and j < {first} + N_pre)"
            return f"({m} * (j - {first} + 1) + int(rand() * (N_pre - {m}))) % N_pre for kk in range({k})"
        syns = []
        if args.stdp:
            S_ee = b2.Synapses(
                Pe, Pe, model="w : amp",
                on_pre={
                    "pre": "Isyn_post += w",
                    "stdp": "w = clip(w - a_minus * w_max * x_post, w_min, w_max)",
                },
                on_post="w = clip(w + a_plus * w_max * x_pre, w_min, w_max)",
                delay={"pre": delay, "stdp": 0 * ms},
                namespace=ns, name="S_ee",
            )
            S_ee.connect(i=gen(k_e, 0, True))
            S_ee.w = "w_e"
            S_ei = b2.Synapses(Pe, Pi, on_pre="Isyn_post += w_e", delay=delay, namespace=ns, name="S_ei")
            S_ei.connect(i=gen(k_e, 0, False))
            syns += [S_ee, S_ei]
        else:
            S_e = b2.Synapses(Pe, P, on_pre="Isyn_post += w_e", delay=delay, namespace=ns, name="S_e")
            S_e.connect(i=gen(k_e, 0, True))
            syns.append(S_e)
        S_i = b2.Synapses(Pi, P, on_pre="Isyn_post -= w_i", delay=delay, namespace=ns, name="S_i")
        S_i.connect(i=gen(k_i, n_e, True))
        syns.append(S_i)
        poisson_n = int(round(poisson_hz / POISSON_SOURCE_HZ))
        drive = b2.PoissonInput(P, "Isyn", N=poisson_n, rate=POISSON_SOURCE_HZ * Hz, weight=poisson_w_pa * pA)
        net = b2.Network(P, drive, *syns)
        net.run(args.duration_ms * ms)

        # ---- generate, compile, run ----------------------------------------------------------
        t_code0 = time.perf_counter()
        if args.codegen_only:
            b2.device.build(directory=workdir, compile=False, run=False, debug=False)
            files = sorted(os.listdir(os.path.join(workdir, "code_objects")))
            with open(os.path.join(workdir, "makefile")) as f:
                mk = f.read()
            out.emit({
                "peer": "brian2cuda" if not args.cpu else "brian2-cpp",
                "codegen_only": True,
                "workdir": workdir,
                "codegen_s": time.perf_counter() - t_code0,
                "code_objects": len(files),
                "makefile_nvccflags": [l for l in mk.splitlines() if l.startswith(("NVCCFLAGS", "LFLAGS", "NVCC ", "CXXFLAGS"))],
            })
            return
        try:
            b2.device.build(directory=workdir, compile=True, run=True, debug=False, with_output=True)
        except RuntimeError as e:
            # Brian2 hides the compiler's output: show it (make again, same flags, serially).
            sys.stderr.write(f"brian2cuda_brunel.py: build failed: {e}\nproject: {workdir}\n")
            if "compilation failed" in str(e):
                mk = b2.prefs.devices.cpp_standalone.make_cmd_unix
                subprocess.run(f"{mk} -k 2>&1 | tail -n 150 >&2", shell=True, cwd=workdir)
            raise
        t_build1 = time.perf_counter()

        timers = b2.device.timers
        compile_s = float(timers["compile"].get("make") or 0.0) + float(timers["compile"].get("clean") or 0.0)
        binary_s = float(timers.get("run_binary") or 0.0)
        with open(os.path.join(workdir, TIMING_FILE)) as f:
            setup_s, simulate_s, teardown_s = (float(x) for x in f.read().split())
        brian2_run_s = float(b2.device._last_run_time)
        frac = float(getattr(b2.device, "_last_run_completed_fraction", 1.0))
        counts = P.nspk[:]
        spikes = int(counts.sum())
        spikes_e = int(counts[:n_e].sum())
        n_syn = int(sum(len(s) for s in syns))
        extra = {}
        if args.stdp and n_e * k_e <= 200_000_000:
            w_ee = np.asarray(S_ee.w[:] / pA, dtype=np.float64)
            extra = {"w_ee_mean_pa": float(w_ee.mean()), "w_ee_std_pa": float(w_ee.std())}
        if os.environ.get("PEER_DEBUG"):
            sys.stderr.write(f"spike count histogram (spikes: neurons): {dict(enumerate(np.bincount(counts)))}\n")
        t_read = time.perf_counter()

        construct_s = t_code0 - t_build0
        codegen_s = marks["compile_start"] - t_code0
        # After the binary: Brian2 reads the results back to check them for NaN.
        post_check_s = t_build1 - marks["compile_start"] - compile_s - binary_s
        build_s = construct_s + codegen_s + compile_s + setup_s
        dur_s = args.duration_ms * 1e-3
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        versions = {"brian2": b2.__version__}
        if not args.cpu:
            versions["brian2cuda"] = brian2cuda.__version__
        dtype = "float64" if args.float64 else "float32"
        if args.cpu:
            flags = " ".join(b2.prefs.codegen.cpp.extra_compile_args_gcc)
            settings = (
                f"C++ standalone (cpp_standalone), g++ {flags} (Brian2's defaults), "
                + (f"OpenMP {args.threads} threads" if args.threads else "serial code (no OpenMP)")
                + f", {dtype}, make -j{jobs}"
            )
        else:
            settings = (
                f"Brian2CUDA {brian2cuda.__version__} cuda_standalone (Brian2 {b2.__version__}), nvcc "
                f"{cuda_info.get('cuda_version')} -arch=sm_{int(round(args.cc * 10))}, "
                f"Brian2CUDA's default nvcc/g++ flags (-std=c++17 for CUDA 13), {dtype}"
            )
        out.emit({
            "peer": "brian2cuda" if not args.cpu else "brian2-cpp",
            **versions,
            "neurons": n,
            "synapses": n_syn,
            "stdp": bool(args.stdp),
            "model": "brunel" if args.brunel else "poisson_drive" if args.poisson_drive else "scaling" if args.stdp else "scaling_static",
            "dtype": dtype,
            "integrator": "exact",
            "settings": settings,
            "duration_ms": args.duration_ms,
            "build_s": build_s,
            "build_no_compile_s": build_s - compile_s,
            "simulate_s": simulate_s,
            "spikes": spikes,
            "rate_hz": spikes / (n * dur_s),
            "rate_e_hz": spikes_e / (n_e * dur_s),
            "rate_i_hz": (spikes - spikes_e) / (n_i * dur_s),
            **extra,
            "total_s": time.perf_counter() - T0,
            "detail": {
                "construct_s": construct_s,
                "codegen_s": codegen_s,
                "compile_s": compile_s,
                "binary_s": binary_s,
                "binary_setup_s": setup_s,
                "binary_teardown_s": teardown_s,
                "process_overhead_s": binary_s - (setup_s + simulate_s + teardown_s),
                "brian2_run_s": brian2_run_s,
                "completed_fraction": frac,
                "post_check_s": post_check_s,
                "readback_s": t_read - t_build1,
                "import_s": t_build0 - T0,
                "openmp_threads": args.threads if args.cpu else None,
                "compute_capability": None if args.cpu else args.cc,
                **cuda_info,
                "workdir": workdir if args.keep else None,
            },
        })


def shlex_quote(s):
    import shlex

    return shlex.quote(s)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--emulate-make":
        sys.exit(emulate_make())
    from _common import StdoutToStderr  # noqa: E402

    main()
