#!/usr/bin/env python3
"""Compare fum with Brian2 (C++ standalone) and NEST on the Vogels-Abbott CUBA and COBA networks.

Runs, for each model, REPEATS rounds of (fum, brian2, nest), interleaved, measures each
command's wall time from outside, and prints a markdown table of medians.

  fum:    target/release/fum run assets/models/vogels_abbott_<model>.toml --out DIR --threads T --quiet
          reads DIR/run.json (timing.build_s, timing.simulate_s, timing.total_s, rates_hz.E, rates_hz.I)
  brian2: benchmarks/peers/brian2_va.py --model M --threads T --duration-ms D --seed S
  nest:   benchmarks/peers/nest_va.py   --model M --threads T --duration-ms D --seed S

fum is skipped (with a note) when its binary is missing. Usually called through
benchmarks/compare_cpu.sh.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PEERS = ("fum", "brian2", "nest")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cmd_output(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "?"
    except Exception as e:  # noqa: BLE001
        return f"unavailable ({type(e).__name__})"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def busy_cpu_s():
    """CPU seconds spent by the whole machine outside idle/iowait since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def disturbed_run(rec):
    """A run during which the rest of the machine used more than 0.2 s + 10 % of its wall time in CPU."""
    o = rec.get("other_cpu_s")
    return o is not None and o > 0.2 + 0.1 * rec["wall_s"]


def py_versions(python):
    code = (
        "import importlib.metadata as m\n"
        "for p in ('brian2','nest-simulator','numpy','sympy','Cython'):\n"
        "    try: print(p, m.version(p))\n"
        "    except Exception: print(p, 'not installed')\n"
    )
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())


def run_fum(args, model, workdir, rep):
    out = os.path.join(workdir, f"fum_{model}_{rep}")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        args.fum,
        "run",
        os.path.join(ROOT, "assets", "models", f"vogels_abbott_{model}.toml"),
        "--out",
        out,
        "--threads",
        str(args.threads),
        "--quiet",
    ]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"exit {r.returncode}: {r.stderr.strip()[-2000:]}")
    with open(os.path.join(out, "run.json")) as f:
        j = json.load(f)
    shutil.rmtree(out, ignore_errors=True)
    t = j["timing"]
    rates = j["rates_hz"]
    return {
        "build_s": float(t["build_s"]),
        "simulate_s": float(t["simulate_s"]),
        "total_s": float(t["total_s"]),
        "rate_e_hz": float(rates["E"]),
        "rate_i_hz": float(rates["I"]),
        "wall_s": wall,
    }


def run_peer(args, peer, model):
    script = os.path.join(HERE, f"{peer}_va.py")
    cmd = [
        args.python,
        script,
        "--model",
        model,
        "--threads",
        str(args.threads),
        "--duration-ms",
        str(args.duration_ms),
        "--seed",
        str(args.seed),
        "--integrator",
        args.integrator,
    ]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"exit {r.returncode}: {r.stderr.strip()[-2000:]}")
    lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("{")]
    if len(lines) != 1:
        raise RuntimeError(f"expected one JSON line on stdout, got: {r.stdout[-2000:]!r}")
    j = json.loads(lines[0])
    j["wall_s"] = wall
    return j


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=3):
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 10:
        return f"{x:.2f}"
    return f"{x:.{nd}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["cuba", "coba"], choices=["cuba", "coba"])
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    ap.add_argument(
        "--duration-ms",
        type=float,
        default=1000.0,
        help="for brian2/nest only; fum simulates the duration in the TOML (1000 ms)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--integrator",
        choices=["reference", "matched"],
        default="reference",
        help="COBA in Brian2: reference = forward Euler (Brette's benchmark script), matched = "
        "exponential Euler (fum's scheme); NEST always runs iaf_cond_exp's RKF45",
    )
    ap.add_argument("--python", default=sys.executable, help="interpreter for the peer scripts")
    ap.add_argument("--fum", default=os.path.join(ROOT, "target", "release", "fum"))
    ap.add_argument(
        "--retry-disturbed",
        type=int,
        default=0,
        help="redo a run up to this many times when other processes used much CPU during it "
        "(more than 0.2 s + 10%% of its wall time); the last attempt is kept either way",
    )
    ap.add_argument("--retry-wait-s", type=float, default=10.0, help="pause before such a retry")
    ap.add_argument("--json-out", help="also write every run's raw record to this file")
    args = ap.parse_args()

    peers = list(args.peers)
    notes = []
    if "fum" in peers and not os.access(args.fum, os.X_OK):
        notes.append(f"fum skipped: {os.path.relpath(args.fum, ROOT)} not found (cargo build --release)")
        peers.remove("fum")
    if "fum" in peers and args.duration_ms != 1000.0:
        notes.append(
            f"--duration-ms {args.duration_ms:g} applies to brian2/nest only; fum runs the TOML's 1000 ms"
        )

    vers = py_versions(args.python)
    print("# fum vs Brian2 vs NEST: Vogels-Abbott CUBA / COBA (CPU)")
    print()
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- machine: {cpu_model()}, nproc {os.cpu_count()}, {platform.system()} {platform.release()}")
    print(
        f"- threads: {args.threads}, repeats: {args.repeats}, duration: {args.duration_ms:g} ms, seed: {args.seed}, "
        f"integrator: {args.integrator}"
    )
    print(f"- python: {cmd_output([args.python, '--version'])} ({args.python})")
    print(
        f"- brian2 {vers.get('brian2')}, nest-simulator {vers.get('nest-simulator')}, "
        f"numpy {vers.get('numpy')}, sympy {vers.get('sympy')}, Cython {vers.get('Cython')}"
    )
    print(f"- g++: {cmd_output(['g++', '--version'])}")
    if "fum" in peers:
        print(f"- fum: {cmd_output([args.fum, '--version'])}")
    print(f"- load average at start (1/5/15 min): {loadavg()}")
    for n in notes:
        print(f"- note: {n}")
    print()
    sys.stdout.flush()

    results = {m: {p: [] for p in peers} for m in args.models}
    failures = []
    workdir = tempfile.mkdtemp(prefix="fum_compare_")
    discarded = []
    try:
        for model in args.models:
            for rep in range(args.repeats):
                for peer in peers:
                    tag = f"[{model} rep {rep + 1}/{args.repeats}] {peer}"
                    for attempt in range(args.retry_disturbed + 1):
                        busy0, child0 = busy_cpu_s(), children_cpu_s()
                        try:
                            if peer == "fum":
                                rec = run_fum(args, model, workdir, rep)
                            else:
                                rec = run_peer(args, peer, model)
                        except Exception as e:  # noqa: BLE001
                            failures.append(f"{model}/{peer}/rep{rep}: {e}")
                            print(f"  {tag}: FAILED ({str(e)[:300]})", file=sys.stderr, flush=True)
                            rec = None
                            break
                        busy1, child1 = busy_cpu_s(), children_cpu_s()
                        rec["rep"] = rep
                        rec["attempt"] = attempt
                        # CPU time the machine used during the run for anything but the command
                        # itself (this script's own few ms included): a measure of interference.
                        rec["other_cpu_s"] = (
                            max(0.0, (busy1 - busy0) - (child1 - child0)) if busy0 is not None else None
                        )
                        disturbed = disturbed_run(rec)
                        print(
                            f"  {tag}: build {rec['build_s']:.3f} s, simulate {rec['simulate_s']:.3f} s, "
                            f"wall {rec['wall_s']:.3f} s, rates E {rec['rate_e_hz']:.2f} / "
                            f"I {rec['rate_i_hz']:.2f} Hz, other CPU {fmt(rec['other_cpu_s'])} s"
                            + (" DISTURBED" if disturbed else ""),
                            file=sys.stderr,
                            flush=True,
                        )
                        if not disturbed or attempt == args.retry_disturbed:
                            break
                        discarded.append({"model": model, "peer": peer, **rec})
                        time.sleep(args.retry_wait_s)
                    if rec is not None:
                        results[model][peer].append(rec)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        "| model | peer | build_s | simulate_s | total wall s | rate E / I (Hz) "
        "| simulate vs fum | total vs fum | runs | other CPU s (max) |"
    )
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for model in args.models:
        fum_runs = results[model].get("fum", [])
        fum_sim = med([r["simulate_s"] for r in fum_runs])
        fum_wall = med([r["wall_s"] for r in fum_runs])
        for peer in peers:
            runs = results[model][peer]
            b = med([r["build_s"] for r in runs])
            s = med([r["simulate_s"] for r in runs])
            w = med([r["wall_s"] for r in runs])
            re_ = med([r["rate_e_hz"] for r in runs])
            ri = med([r["rate_i_hz"] for r in runs])
            rs = f"{s / fum_sim:.2f}x" if (s is not None and fum_sim) else "n/a"
            rw = f"{w / fum_wall:.2f}x" if (w is not None and fum_wall) else "n/a"
            rates = f"{re_:.2f} / {ri:.2f}" if re_ is not None else "n/a"
            oc = [r["other_cpu_s"] for r in runs if r.get("other_cpu_s") is not None]
            other = fmt(max(oc), 2) if oc else "n/a"
            print(
                f"| {model} | {peer} | {fmt(b)} | {fmt(s)} | {fmt(w)} | {rates} | {rs} | {rw} | {len(runs)} | {other} |"
            )
    print()
    print(
        "Medians over runs. build_s / simulate_s are each tool's own timers (brian2: build_s includes "
        "code generation and C++ compilation; simulate_s is its Network::run loop timer; nest: "
        "simulate_s = Prepare+Run+Cleanup = Simulate). total wall s is measured from outside around the "
        "whole command (process start, imports, build, simulation, output). Ratios are peer median / fum "
        "median (>1: fum faster). other CPU s: CPU time the rest of the machine used while a run of "
        "that row was going (from /proc/stat minus the command's own CPU time); well above zero means "
        "the timings were disturbed (see --retry-disturbed)."
    )
    if failures:
        print()
        print("Failures:")
        for f in failures:
            print(f"- {f[:500]}")

    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(
                {
                    "threads": args.threads,
                    "duration_ms": args.duration_ms,
                    "results": results,
                    "discarded_disturbed": discarded,
                },
                f,
                indent=1,
            )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
