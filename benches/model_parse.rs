//! How long model parsing takes where it once did not keep up: a model of many populations and
//! projections (validation looked names up by linear scans, quadratic in the entries; the time
//! per entry should stay flat as they grow), and what `fum check` computes from a model at the
//! limits (2^32 - 1 neurons, just under 2^32 steps), which must not grow with the sizes it
//! describes. tests/fuzz.rs checks what these give; this measures how long they take.
//!
//! cargo bench --bench model_parse

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fum::Model;
use std::hint::black_box;
use std::path::Path;

fn many_entries(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_many");
    group.sample_size(10);
    for n in [10_000usize, 20_000, 40_000] {
        let text = common::many_populations(n);
        group.throughput(Throughput::Elements(2 * n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| b.iter(|| Model::parse(black_box(text), Path::new("many.toml")).unwrap()));
    }
    group.finish();
}

fn at_the_limits(c: &mut Criterion) {
    let mut group = c.benchmark_group("check_at_the_limits");
    group.bench_function("valid", |b| {
        b.iter(|| {
            let model = Model::parse(black_box(common::AT_THE_LIMITS), Path::new("limits.toml")).unwrap();
            (model.expected_synapses(), model.steps())
        })
    });
    let past = common::AT_THE_LIMITS.replacen("duration_ms = 4e-291", "duration_ms = 4.3e-291", 1);
    group.bench_function("one_step_too_many", |b| b.iter(|| Model::parse(black_box(&past), Path::new("limits.toml")).unwrap_err()));
    group.finish();
}

criterion_group!(benches, many_entries, at_the_limits);
criterion_main!(benches);
