#!/usr/bin/env python3
"""Replays NEST's stdp_pl_synapse_hom offline on recorded spike trains, to tell whether a
difference in E->E weight drift between NEST and fum comes from the rule or from the spikes.

  hpc_benchmark.py --sim nest --scale 1 --indegree 0.1 --seed 55 --dump nest_55.npz
  hpc_benchmark.py --sim fum  --scale 1 --indegree 0.1 --seed 55 --dump fum_55.npz
  stdp_replay.py nest_55.npz fum_55.npz [...]          # a report per file, then a comparison
  stdp_replay.py --json out.json nest_55.npz ...        # the figures as JSON too

Each .npz (hpc_benchmark.py --dump) holds every spike of the run and the E->E synapses into the
first --weight-targets E neurons with their weight at the end (all start at JE). For each
synapse this script runs, in float64, what NEST 3.10's `stdp_pl_synapse_hom::send` and
`ArchivingNode` (get_history, get_K_value, set_spiketime) do at each presynaptic spike t of a
synapse of delay d (the whole delay dendritic), with t_last the previous one (0 before the first,
as NEST's t_lastspike_ starts at 0, with Kplus 0, so the first spike facilitates nothing):

  1. facilitate by every postsynaptic spike tp with t_last - d < tp <= t - d, oldest first:
     w += lambda w^mu Kplus exp(-(tp + d - t_last) / tau_plus);
  2. depress by the postsynaptic trace at t - d of the spikes strictly before t - d (K- just
     after the newest such spike, decayed): w = max(0, w - lambda alpha w K-);
  3. Kplus = Kplus exp(-(t - t_last) / tau_plus) + 1, t_last = t.

K- just after a postsynaptic spike is K- exp(-(tp - tp_prev) / tau_minus) + 1 (0 before the
first). Times are compared in whole steps (NEST compares ms with a tolerance, to the same effect).
No upper bound on the weight (the NEST model has none; w >= 0 from the depression).

Which presynaptic spikes have gone through the synapse when the weight is read at the end:
fum processes a spike in its step, so all of them; NEST delivers the spikes of a slice of
min_delay D at the start of the next slice, so those emitted in the last (possibly partial)
slice, stamps after (ceil(T / D) - 1) D steps, are not delivered. D is the kernel's min_delay
(stored by --dump): 1 ms here, not the network's 1.5 ms, as the spike recorder's connection has
NEST's default delay of 1 ms.
Like both simulators, the replay leaves the potentiation pending since the source's last
delivered spike out of the weight (it is reported apart, "pending").

Per file it prints (JSON, then tables):
- rates, and pre and post spikes per sampled synapse;
- the check: the replay's weights against the recorded ones (max and mean absolute difference;
  NEST's should agree to ~1e-13 pA, fum's to f32 rounding, ~1e-4 pA);
- the mean drift read three ways: `drift_all_pre` (every presynaptic spike up to T, fum's
  reading), `drift_nest_read` (NEST's reading), `drift_with_pending` (plus the pending
  potentiation: every pair of spikes before T counted, the drift with no reading artefact);
- its time course every 10 ms (`read_drift_at_ms`, `complete_drift_at_ms`, and mean, sd, min,
  max of the read drift and of the pending part over the second half of the run): how much a
  drift read at one instant fluctuates;
- the sums of potentiation and depression per synapse (`pot_*`, `dep_*`, `pending_*`);
- the linear theory: the drift predicted from the mean cross-correlogram of the sampled
  connected pairs (post minus pre spike time, -150..150 ms, 0.1 ms bins, pre spikes from 150 ms
  to T - 150 ms) and the STDP window at w = JE, in total, for independent trains at the same
  rates (`theory_flat_net_pa`), and its correlation-driven excess split by lag ranges, so that
  two simulators' correlograms can be compared lag by lag (--ccg-out writes the curves).

About 1-3 minutes per file of 45,000 synapses at scale 1, in-degree x 0.1, 1 s (pure Python).
Needs numpy only.
"""

import argparse
import json
import math
import sys

import numpy as np

MARKS_MS = tuple(range(10, 100001, 10))  # the drift's time course: every 10 ms (up to T)
LAG_STEPS = 1500  # correlogram half-width: 150 ms at dt 0.1 ms (the depression window, tau 30 ms, is 0.7 % there)


def load(path):
    z = np.load(path)
    d = {k: z[k] for k in z.files}
    d["path"] = path
    d["sim"] = str(d["sim"])
    dt = float(d["dt_ms"])
    d["steps"] = np.rint(d["times"] / dt).astype(np.int64)
    d["delay_steps"] = np.rint(d["delay_ms"] / dt).astype(np.int64)
    d["T_steps"] = int(round(float(d["duration_ms"]) / dt))
    if not float(d.get("min_delay_ms", 0.0)):
        d["min_delay_ms"] = 1.0  # fum's dumps (and early NEST ones): NEST's min_delay for this network
    return d


def trains(d, ids):
    """{neuron: sorted spike steps} for the neurons in `ids`."""
    want = np.zeros(int(d["ne"]) + int(d["ni"]), dtype=bool)
    want[np.asarray(list(ids))] = True
    keep = want[d["senders"]]
    s, t = d["senders"][keep], d["steps"][keep]
    o = np.lexsort((t, s))
    s, t = s[o], t[o]
    out = {int(i): np.empty(0, dtype=np.int64) for i in ids}
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else []
    for a, b in zip(starts, list(starts[1:]) + [len(s)]):
        out[int(s[a])] = t[a:b]
    return out


def k_minus(post_steps, dt, tau_minus):
    """K- just after each postsynaptic spike (ArchivingNode::set_spiketime)."""
    k = np.empty(len(post_steps))
    acc, last = 0.0, None
    for i, tp in enumerate(post_steps):
        acc = (acc * math.exp(-(tp - last) * dt / tau_minus) if last is not None else 0.0) + 1.0
        k[i] = acc
        last = tp
    return k


def replay_synapse(pre, post, kpost, d, w0, cut, dt, lam, alpha, mu, tau_plus, tau_minus, marks=()):
    """NEST's send() over the presynaptic spikes up to step `cut`: (final weight, sum of
    facilitations, sum of depressions, pending potentiation, facilitations, [complete weight at
    each of `marks`], [weight as read at each of `marks`]). The pending potentiation is what
    the next presynaptic spike would add for the postsynaptic spikes not yet facilitated with;
    the complete weight at a mark c is the weight after the presynaptic spikes up to c plus the
    pending potentiation of the postsynaptic spikes up to c: every pair of spikes before c
    counted once."""
    w, kplus, t_last = float(w0), 0.0, 0
    pot = dep = 0.0
    n_fac = 0
    arrive = post + d  # postsynaptic spikes at the synapse
    lo = 0  # first postsynaptic spike not yet facilitated with (arrive > t_last)

    def pending(upto):
        wp = w
        for j in range(lo, upto):
            wp += lam * wp**mu * kplus * math.exp((t_last - arrive[j]) * dt / tau_plus)
        return wp - w

    complete, read, m = [], [], 0
    for t in pre:
        if t > cut:
            break
        while m < len(marks) and marks[m] < t:
            complete.append(w + pending(int(np.searchsorted(post, marks[m], side="right"))))
            read.append(w)
            m += 1
        hi = int(np.searchsorted(arrive, t, side="right"))  # arrive <= t
        for j in range(lo, hi):
            dw = lam * w**mu * kplus * math.exp((t_last - arrive[j]) * dt / tau_plus)
            w += dw
            pot += dw
        n_fac += max(0, hi - lo)
        lo = max(lo, hi)
        k = int(np.searchsorted(arrive, t, side="left")) - 1  # newest with arrive < t
        if k >= 0:
            km = kpost[k] * math.exp((arrive[k] - t) * dt / tau_minus)
            new = max(0.0, w - lam * alpha * w * km)
            dep += w - new
            w = new
        kplus = kplus * math.exp((t_last - t) * dt / tau_plus) + 1.0
        t_last = t
    for c in marks[m:]:
        complete.append(w + pending(int(np.searchsorted(post, c, side="right"))))
        read.append(w)
    return w, pot, dep, pending(len(arrive)), n_fac, complete, read


def nest_cut(d):
    """The last presynaptic stamp (steps) NEST has delivered by the end of the run."""
    D = int(round(float(d["min_delay_ms"]) / float(d["dt_ms"])))
    return (math.ceil(d["T_steps"] / D) - 1) * D


def ccg(d, pre_tr, post_tr, src, tgt, L):
    """Sum over the sampled synapses of the histogram of post - pre spike lags (steps,
    -L..L), pre spikes in [L, T - L) so that every lag is seen in full."""
    T = d["T_steps"]
    hist = np.zeros(2 * L + 1)
    n_pre = 0
    for j in np.unique(tgt):
        post = post_tr[int(j)]
        pres = [pre_tr[int(s)] for s in src[tgt == j]]
        pre = np.concatenate(pres) if pres else np.empty(0, dtype=np.int64)
        pre = pre[(pre >= L) & (pre < T - L)]
        n_pre += len(pre)
        if not len(pre) or not len(post):
            continue
        a = np.searchsorted(post, pre - L, side="left")
        b = np.searchsorted(post, pre + L, side="right")
        counts = b - a
        idx = np.repeat(np.arange(len(pre)), counts)
        offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        lags = post[np.repeat(a, counts) + offs] - pre[idx]
        hist += np.bincount(lags + L, minlength=2 * L + 1)
    return hist, n_pre


def summary(x):
    """Mean, standard deviation, min and max of a time series (the drift every 10 ms)."""
    return {"mean": float(np.mean(x)), "std": float(np.std(x)), "min": float(np.min(x)), "max": float(np.max(x))}


def analyse(d, sample=None, seed=0):
    dt = float(d["dt_ms"])
    lam, alpha, mu, tau_plus, tau_minus = (float(x) for x in d["stdp"])
    je = float(d["je_pa"])
    ne, ni, T = int(d["ne"]), int(d["ni"]), d["T_steps"]
    src, tgt, dl, w_end = d["source"], d["target"], d["delay_steps"], d["weight"]
    if sample is not None and sample < len(src):
        pick = np.sort(np.random.default_rng(seed).choice(len(src), sample, replace=False))
        src, tgt, dl, w_end = src[pick], tgt[pick], dl[pick], w_end[pick]
    own = nest_cut(d) if d["sim"] == "nest" else T  # what the simulator had delivered
    pre_tr = trains(d, set(src.tolist()))
    post_tr = trains(d, set(tgt.tolist()))
    kp = {j: k_minus(s, dt, tau_minus) for j, s in post_tr.items()}
    n = len(src)

    marks = [int(round(x / dt)) for x in MARKS_MS if x / dt <= T]

    def replay_all(cut):
        r = [replay_synapse(pre_tr[int(src[i])], post_tr[int(tgt[i])], kp[int(tgt[i])], int(dl[i]), je, cut, dt, lam, alpha, mu, tau_plus, tau_minus, marks) for i in range(n)]
        return [np.array([x[k] for x in r]) for k in range(7)]

    # The simulator's own reading (to check the replay against its weights), and both reading
    # conventions for either simulator: every presynaptic spike up to T (fum's), and those NEST
    # had delivered (up to T minus its last slice): the figures to compare across simulators.
    w_T, pot, dep, pend, nfac, w_marks, r_marks = replay_all(T)
    w_c = replay_all(nest_cut(d))[0]
    w_rep = w_T if own == T else w_c
    cut = own
    senders = d["senders"]
    span = (T - 1000) * dt / 1000.0  # rates from 100 ms on, as hpc_benchmark.py
    late = d["steps"] >= 1000
    rate_e = np.sum(late & (senders < ne)) / (ne * span)
    rate_i = np.sum(late & (senders >= ne)) / (ni * span)
    n_pre_spk = np.array([len(pre_tr[int(s)]) for s in src])
    n_post_spk = np.array([len(post_tr[int(j)]) for j in tgt])
    L = min(LAG_STEPS, T // 4)  # short test runs: a shorter correlogram
    hist, n_pre_ccg = ccg(d, pre_tr, post_tr, src, tgt, L)
    # Normalised: coincidences per pre spike per bin, over the expectation for independent
    # trains (the mean post rate of the sampled targets, per step).
    post_rate_step = np.mean([len(post_tr[int(j)]) for j in tgt]) / T
    ccg_norm = hist / max(n_pre_ccg, 1) / post_rate_step
    lags = np.arange(-L, L + 1)
    dd = int(dl[0])
    # Linear theory: the mean weight change per synapse = sum over lags of (pairs at that lag)
    # x the window at the synapse (post arrives at tp + d): facilitation if tp + d > t, by
    # lambda JE^mu exp(-(tp + d - t)/tau_plus), depression if tp + d < t, by lambda alpha JE
    # exp(-(t - tp - d)/tau_minus); tp + d == t counts as facilitation (arrive <= t), and the
    # pre spike at t also does not depress with it (strictly before).
    s = (lags + dd) * dt
    win = np.where(s >= 0, lam * je**mu * np.exp(-s / tau_plus), -lam * alpha * je * np.exp(s / tau_minus))
    pairs_per_syn = hist / n * (T / (T - 2 * L))  # scaled to the whole run's pre spikes
    contrib = pairs_per_syn * win  # pA per synapse per lag
    ranges = {"<-20ms": lags * dt < -20, "-20..-d": (lags * dt >= -20) & (lags + dd < 0), "-d..0": (lags + dd >= 0) & (lags <= 0), "0..+5ms": (lags > 0) & (lags * dt <= 5), "+5..+20ms": (lags * dt > 5) & (lags * dt <= 20), ">+20ms": lags * dt > 20}
    flat = (post_rate_step * n_pre_ccg / n) * (T / (T - 2 * L))  # pairs per lag bin if independent
    out = {
        "file": d["path"], "sim": d["sim"], "seed": int(d["seed"]), "synapses": n, "cut_step": cut,
        "rate_e_hz": float(rate_e), "rate_i_hz": float(rate_i),
        "pre_spikes_per_syn": float(n_pre_spk.mean()), "post_spikes_per_syn": float(n_post_spk.mean()),
        "facilitations_per_syn": float(nfac.mean()),
        "w_recorded_drift": float(w_end.mean() / je - 1), "w_replay_drift": float(w_rep.mean() / je - 1),
        "replay_max_abs_diff_pa": float(np.max(np.abs(w_rep - w_end))), "replay_mean_abs_diff_pa": float(np.mean(np.abs(w_rep - w_end))),
        "replay_max_rel_diff": float(np.max(np.abs(w_rep - w_end) / w_end)),
        "drift_all_pre": float(w_T.mean() / je - 1), "drift_nest_read": float(w_c.mean() / je - 1),
        "drift_with_pending": float((w_T + pend).mean() / je - 1),
        "complete_drift_at_ms": {f"{m * dt:g}": float(w_marks[:, k].mean() / je - 1) for k, m in enumerate(marks) if m % 1000 == 0 or m == 500},
        "read_drift_at_ms": {f"{m * dt:g}": float(r_marks[:, k].mean() / je - 1) for k, m in enumerate(marks) if m % 1000 == 0 or m == 500},
        "read_drift_last_half": summary(r_marks[:, [k for k, m in enumerate(marks) if 2 * m > T]].mean(0) / je - 1),
        "complete_minus_read_last_half": summary((w_marks - r_marks)[:, [k for k, m in enumerate(marks) if 2 * m > T]].mean(0) / je),
        "pot_pa": float(pot.mean()), "dep_pa": float(dep.mean()), "pending_pa": float(pend.mean()), "net_pa": float(pot.mean() - dep.mean()),
        "pot_frac": float(pot.mean() / je), "dep_frac": float(dep.mean() / je), "pending_frac": float(pend.mean() / je),
        "ccg_lag0_window_norm": {k: float(ccg_norm[(lags >= a) & (lags <= b)].mean()) for k, (a, b) in {"-50..-20ms": (-500, -200), "-5..0ms": (-50, 0), "0..5ms": (1, 50), "15..20ms": (150, 200), "20..50ms": (200, 500)}.items()},
        "theory_net_pa": float(contrib.sum()), "theory_flat_net_pa": float(flat * win.sum()),
        "theory_by_lag_pa": {k: float(contrib[m].sum()) for k, m in ranges.items()},
        "theory_excess_by_lag_pa": {k: float((contrib[m] - flat * win[m]).sum()) for k, m in ranges.items()},
    }
    return out, (lags * dt, ccg_norm, contrib)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--sample", type=int, help="replay a random sample of this many synapses (default: all)")
    ap.add_argument("--json", help="write the figures as JSON")
    ap.add_argument("--ccg-out", help="write lags, normalised correlograms and drift contributions (.npz)")
    a = ap.parse_args()
    results, curves = [], {}
    for f in a.files:
        r, c = analyse(load(f), a.sample)
        results.append(r)
        curves[f] = c
        print(json.dumps(r, indent=1), flush=True)
    keys = ["rate_e_hz", "pre_spikes_per_syn", "post_spikes_per_syn", "w_recorded_drift", "w_replay_drift", "replay_max_abs_diff_pa", "drift_all_pre", "drift_nest_read", "drift_with_pending", "pot_frac", "dep_frac", "pending_frac", "net_pa", "theory_net_pa", "theory_flat_net_pa"]
    print("\n| file | " + " | ".join(keys) + " |\n|---" * 1 + "|---" * len(keys) + "|")
    for r in results:
        print(f"| {r['sim']} {r['seed']} | " + " | ".join(f"{r[k]:.5g}" for k in keys) + " |")
    ranges = list(results[0]["theory_excess_by_lag_pa"])
    print("\ncorrelation-driven drift (pA per synapse, theory minus independent trains) by lag post - pre:")
    print("| file | " + " | ".join(ranges) + " |\n|---" + "|---" * len(ranges) + "|")
    for r in results:
        print(f"| {r['sim']} {r['seed']} | " + " | ".join(f"{r['theory_excess_by_lag_pa'][k]:+.4f}" for k in ranges) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    if a.ccg_out:
        np.savez(a.ccg_out, files=np.array(a.files), lag_ms=next(iter(curves.values()))[0], ccg=np.array([c[1] for c in curves.values()]), contrib_pa=np.array([c[2] for c in curves.values()]))


if __name__ == "__main__":
    sys.exit(main())
