//! Criterion benchmarks of the hot kernels: LIF update (both models), delivery of spike rows
//! into ring buffers, and STDP at presynaptic spikes (with and without pending potentiation,
//! f32 and f16 weights). Sizes follow the Vogels-Abbott network (4000 neurons, 80 synapses per
//! row) and a 60k-neuron shard (the largest power of ten below the u16 target limit).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fum_kernels::delivery::{Ring, RowDelays, deliver_row, ring_slots};
use fum_kernels::lif::{AlphaPropagators, AlphaState, CobaConstants, CubaPropagators, LifInput, LifParameters, LifState, alpha_step, coba_step, collect_spikes, cuba_step};
use fum_kernels::rng::{Key, Purpose};
use fum_kernels::stdp::{NEVER, Pairing, PlasticRow, PostState, Postsynaptic, PreSpike, StdpRule, TraceDecay, WeightDependence, count_spike, on_post_spike, on_pre_row};
use fum_kernels::weight::Weight;
use std::hint::black_box;

const DT: f64 = 0.1;

fn params() -> LifParameters {
    LifParameters { tau_m_ms: 20.0, c_m_pf: 200.0, e_l_mv: -60.0, v_th_mv: -50.0, v_reset_mv: -60.0, t_ref_ms: 5.0, tau_syn_ex_ms: 5.0, tau_syn_in_ms: 10.0 }
}

struct Neurons {
    v: Vec<f32>,
    ex: Vec<f32>,
    inh: Vec<f32>,
    r: Vec<u32>,
    fired: Vec<u8>,
    arriving_ex: Vec<i64>,
    arriving_in: Vec<i64>,
}

fn neurons(n: usize) -> Neurons {
    let mut s = Key::from_seed(1).stream(Purpose::InitialState, 0, 0);
    Neurons {
        v: (0..n).map(|_| (-60.0 + 10.0 * s.uniform()) as f32).collect(),
        ex: (0..n).map(|_| (10.0 * s.uniform()) as f32).collect(),
        inh: (0..n).map(|_| (10.0 * s.uniform()) as f32).collect(),
        r: vec![0; n],
        fired: vec![0; n],
        arriving_ex: vec![0; n],
        arriving_in: vec![0; n],
    }
}

fn lif(c: &mut Criterion) {
    let mut group = c.benchmark_group("lif_update");
    for n in [4_000usize, 100_000] {
        group.throughput(Throughput::Elements(n as u64));
        let cuba = CubaPropagators::new(&params(), DT);
        let mut st = neurons(n);
        group.bench_with_input(BenchmarkId::new("cuba", n), &n, |b, _| {
            let mut spikes = Vec::with_capacity(n);
            b.iter(|| {
                cuba_step(&cuba, LifState { v: &mut st.v, syn_ex: &mut st.ex, syn_in: &mut st.inh, refractory: &mut st.r, fired: &mut st.fired },
                    LifInput { arriving_ex: &mut st.arriving_ex, arriving_in: &mut st.arriving_in, current_pa: 80.0, bias_pa: None });
                spikes.clear();
                collect_spikes(&st.fired, 0, &mut spikes);
                black_box(spikes.len())
            })
        });
        let coba = CobaConstants::new(&params(), 0.0, -80.0, DT);
        let mut st = neurons(n);
        group.bench_with_input(BenchmarkId::new("coba", n), &n, |b, _| {
            let mut spikes = Vec::with_capacity(n);
            b.iter(|| {
                coba_step(&coba, LifState { v: &mut st.v, syn_ex: &mut st.ex, syn_in: &mut st.inh, refractory: &mut st.r, fired: &mut st.fired },
                    LifInput { arriving_ex: &mut st.arriving_ex, arriving_in: &mut st.arriving_in, current_pa: 80.0, bias_pa: None });
                spikes.clear();
                collect_spikes(&st.fired, 0, &mut spikes);
                black_box(spikes.len())
            })
        });
        let alpha = AlphaPropagators::new(&params(), DT);
        let mut st = neurons(n);
        let (mut dex, mut din) = (st.ex.clone(), st.inh.clone());
        group.bench_with_input(BenchmarkId::new("alpha", n), &n, |b, _| {
            let mut spikes = Vec::with_capacity(n);
            b.iter(|| {
                alpha_step(&alpha, LifState { v: &mut st.v, syn_ex: &mut st.ex, syn_in: &mut st.inh, refractory: &mut st.r, fired: &mut st.fired },
                    AlphaState { dsyn_ex: &mut dex, dsyn_in: &mut din },
                    LifInput { arriving_ex: &mut st.arriving_ex, arriving_in: &mut st.arriving_in, current_pa: 80.0, bias_pa: None });
                spikes.clear();
                collect_spikes(&st.fired, 0, &mut spikes);
                black_box(spikes.len())
            })
        });
    }
    group.finish();
}

/// `rows` rows of `per_row` synapses with random targets in `n` neurons and delays 1..=15.
fn rows(n: usize, rows: usize, per_row: usize) -> (Vec<u16>, Vec<u16>, Vec<f32>) {
    let mut s = Key::from_seed(2).stream(Purpose::Connectivity, 0, 0);
    let mut target = Vec::with_capacity(rows * per_row);
    let mut delay = Vec::with_capacity(rows * per_row);
    for _ in 0..rows * per_row {
        target.push(s.below(n as u32) as u16);
        delay.push(1 + s.below(15) as u16);
    }
    let weight = (0..rows * per_row).map(|_| s.uniform() as f32).collect();
    (target, delay, weight)
}

fn delivery(c: &mut Criterion) {
    let mut group = c.benchmark_group("delivery");
    for (n, per_row) in [(4_000usize, 80usize), (60_000, 1000)] {
        let spikes = 64;
        let (target, delay, weight) = rows(n, spikes, per_row);
        let mut sums = vec![0; ring_slots(15) * n];
        let mut ring = Ring::new(n, &mut sums);
        let weight16: Vec<half::f16> = weight.iter().map(|&w| half::f16::set(w)).collect();
        group.throughput(Throughput::Elements((spikes * per_row) as u64));
        group.bench_with_input(BenchmarkId::new("static_rows_f16", format!("{n}x{per_row}")), &n, |b, _| {
            let mut step = 0u64;
            b.iter(|| {
                for r in 0..spikes {
                    let row = r * per_row..(r + 1) * per_row;
                    deliver_row(&mut ring, step, &target[row.clone()], RowDelays::PerSynapse(&delay[row.clone()]), &weight16[row]);
                }
                step += 1;
            })
        });
        for constant in [false, true] {
            let name = if constant { "static_rows_constant_delay" } else { "static_rows" };
            group.bench_with_input(BenchmarkId::new(name, format!("{n}x{per_row}")), &n, |b, _| {
                let mut step = 0u64;
                b.iter(|| {
                    for r in 0..spikes {
                        let row = r * per_row..(r + 1) * per_row;
                        let d = if constant { RowDelays::Constant(5) } else { RowDelays::PerSynapse(&delay[row.clone()]) };
                        deliver_row(&mut ring, step, &target[row.clone()], d, &weight[row]);
                    }
                    step += 1;
                })
            });
        }
    }
    group.finish();
}

/// 64 presynaptic spikes at step 640 through rows of 80 plastic synapses into 4000 neurons.
/// Every target spiked at 450 + j % 100 and 530 + j % 100 and every source last at
/// 500 + i % 50: with `pending`, each synapse applies one postsynaptic spike's potentiation
/// before its depression (the average at equal pre and post rates; the eager scheme did that
/// work at the postsynaptic spike), without, it only depresses. `dendritic`: NEST's timing,
/// where the delays (1-15 steps) shift the postsynaptic spikes.
fn stdp_rows<W: Weight>(c: &mut Criterion, name: &str, pending: bool, dendritic: bool) {
    let rule = StdpRule { a_plus: 0.005, a_minus: 0.00525, w_min: 0.0, w_max: 1.0, dependence: WeightDependence::Additive, pairing: Pairing::AllToAll, dendritic };
    let decay = TraceDecay::new(20.0, DT);
    let (n, per_row, spikes, history_len) = (4_000usize, 80usize, 64usize, 64usize);
    let (target, delay, weight) = rows(n, n, per_row);
    let mut weight: Vec<W> = weight.into_iter().map(W::set).collect();
    let (mut pre_trace, mut pre_last) = (vec![0.0f32; n], vec![NEVER; n]);
    let (mut post, mut history) = (vec![PostState::SILENT; n], vec![0u32; n * history_len]);
    let mut history_trace = vec![0.0f32; if dendritic { n * history_len } else { 0 }];
    for i in 0..n {
        count_spike(&mut pre_trace, &mut pre_last, i, 500 + (i % 50) as u32, &decay, Pairing::AllToAll);
        for t in [450, 530] {
            let t = t + (i % 100) as u32;
            let t = if pending { t } else { t.min(499) };
            let traces = if dendritic { &mut history_trace[i * history_len..(i + 1) * history_len] } else { &mut [][..] };
            on_post_spike(&mut post[i], &mut history[i * history_len..(i + 1) * history_len], traces, t, &decay, Pairing::AllToAll);
        }
    }
    let fired = vec![0u8; n];
    let post = Postsynaptic { post: &post, decay: &decay, history: &history, history_trace: &history_trace, history_len, fired: &fired };
    let mut sums = vec![0; ring_slots(15) * n];
    let mut ring = Ring::new(n, &mut sums);
    let mut group = c.benchmark_group("stdp");
    group.throughput(Throughput::Elements((spikes * per_row) as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut lost = 0;
            for r in 0..spikes {
                let row = r * per_row..(r + 1) * per_row;
                let plastic = PlasticRow { target: &target[row.clone()], delay: RowDelays::PerSynapse(&delay[row.clone()]), weight: &mut weight[row] };
                lost += on_pre_row(&rule, &mut ring, &PreSpike::of(&pre_trace, &pre_last, r, 640, &decay), plastic, &post);
            }
            black_box(lost)
        })
    });
    group.finish();
}

fn stdp(c: &mut Criterion) {
    stdp_rows::<f32>(c, "on_pre_rows_4000x80_depress_only", false, false);
    stdp_rows::<f32>(c, "on_pre_rows_4000x80_one_pending", true, false);
    stdp_rows::<half::f16>(c, "on_pre_rows_4000x80_one_pending_f16", true, false);
    stdp_rows::<f32>(c, "on_pre_rows_4000x80_one_pending_dendritic", true, true);
    let n = 4_000;
    let mut group = c.benchmark_group("stdp");
    group.throughput(Throughput::Elements(64));
    group.bench_function("push_post_spikes_64", |b| {
        let (mut post, mut history) = (vec![PostState::SILENT; n], vec![0u32; n * 64]);
        let decay = TraceDecay::new(20.0, DT);
        let mut t = 0;
        b.iter(|| {
            t += 1;
            for k in 0..64 {
                let j = k * 61 % n;
                on_post_spike(&mut post[j], &mut history[j * 64..(j + 1) * 64], &mut [], t, &decay, Pairing::AllToAll);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, lif, delivery, stdp);
criterion_main!(benches);
