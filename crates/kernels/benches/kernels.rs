//! Criterion benchmarks of the hot kernels: LIF update (both models), delivery of spike rows
//! into ring buffers, and the two halves of STDP. Sizes follow the Vogels-Abbott network
//! (4000 neurons, 80 synapses per row) and a 100k-neuron shard.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fum_kernels::delivery::{Ring, deliver_row, pack};
use fum_kernels::lif::{CobaConstants, CubaPropagators, LifInput, LifParameters, LifState, coba_step, collect_spikes, cuba_step};
use fum_kernels::rng::{Key, Purpose};
use fum_kernels::stdp::{Pairing, StdpRule, TraceDecay, Traces, WeightDependence, on_post, on_pre_row};
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
                    LifInput { arriving_ex: &mut st.arriving_ex, arriving_in: &mut st.arriving_in, current_pa: 80.0 });
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
                    LifInput { arriving_ex: &mut st.arriving_ex, arriving_in: &mut st.arriving_in, current_pa: 80.0 });
                spikes.clear();
                collect_spikes(&st.fired, 0, &mut spikes);
                black_box(spikes.len())
            })
        });
    }
    group.finish();
}

/// `rows` rows of `per_row` synapses with random targets in `n` neurons and delays 1..=15.
fn rows(n: usize, rows: usize, per_row: usize) -> (Vec<u32>, Vec<f32>) {
    let mut s = Key::from_seed(2).stream(Purpose::Connectivity, 0, 0);
    let packed = (0..rows * per_row).map(|_| pack(s.below(n as u32), 1 + s.below(15))).collect();
    let weight = (0..rows * per_row).map(|_| s.uniform() as f32).collect();
    (packed, weight)
}

fn delivery(c: &mut Criterion) {
    let mut group = c.benchmark_group("delivery");
    for (n, per_row) in [(4_000usize, 80usize), (100_000, 1000)] {
        let spikes = 64;
        let (packed, weight) = rows(n, spikes, per_row);
        let mut ring = Ring::new(n, 15);
        group.throughput(Throughput::Elements((spikes * per_row) as u64));
        group.bench_with_input(BenchmarkId::new("static_rows", format!("{n}x{per_row}")), &n, |b, _| {
            let mut step = 0u64;
            b.iter(|| {
                for r in 0..spikes {
                    let row = r * per_row..(r + 1) * per_row;
                    deliver_row(&mut ring, step, &packed[row.clone()], &weight[row]);
                }
                step += 1;
            })
        });
    }
    group.finish();
}

fn stdp(c: &mut Criterion) {
    let mut group = c.benchmark_group("stdp");
    let rule = StdpRule { a_plus: 0.005, a_minus: 0.00525, w_min: 0.0, w_max: 1.0, dependence: WeightDependence::Additive, pairing: Pairing::AllToAll };
    let decay = TraceDecay::new(20.0, DT);
    let (n, per_row, spikes) = (4_000usize, 80usize, 64usize);
    let (packed, mut weight) = rows(n, n, per_row);
    let mut traces = Traces::new(n);
    for i in 0..n {
        traces.spike(i, (i % 500) as u32, &decay, Pairing::AllToAll);
    }
    let mut ring = Ring::new(n, 15);
    group.throughput(Throughput::Elements((spikes * per_row) as u64));
    group.bench_function("on_pre_rows_4000x80", |b| {
        b.iter(|| {
            for r in 0..spikes {
                let row = r * per_row..(r + 1) * per_row;
                on_pre_row(&rule, &mut ring, 600, &packed[row.clone()], &mut weight[row], &traces, &decay);
            }
        })
    });
    // Transposed index of the same synapses: incoming synapses of each target, ascending.
    let row_ptr: Vec<u32> = (0..=n).map(|r| (r * per_row) as u32).collect();
    let mut incoming: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (s, &p) in packed.iter().enumerate() {
        incoming[fum_kernels::delivery::target(p)].push(s as u32);
    }
    let posts: Vec<usize> = (0..spikes).map(|i| i * 61 % n).collect();
    let per_post: usize = posts.iter().map(|&p| incoming[p].len()).sum();
    group.throughput(Throughput::Elements(per_post as u64));
    group.bench_function("on_post_4000x80", |b| {
        b.iter(|| {
            for &p in &posts {
                on_post(&rule, 600, &incoming[p], &row_ptr, &mut weight, &traces, &decay);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, lif, delivery, stdp);
criterion_main!(benches);
