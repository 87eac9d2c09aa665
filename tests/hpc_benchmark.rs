//! assets/models/hpc_benchmark.toml, NEST's `hpc_benchmark` network (iaf_psc_alpha neurons,
//! power-law STDP on E->E): it validates with NEST's sizes, is exactly what its generator
//! (benchmarks/models/hpc_benchmark.py) writes, and a small version of it runs with its
//! plasticity at work. benchmarks/peers/hpc_benchmark.py compares it with NEST.

mod common;
use common::*;


#[test]
fn hpc_benchmark_validates_with_nests_sizes() {
    let model = asset("hpc_benchmark.toml");
    let sizes: Vec<(&str, u32)> = model.spec.populations.iter().map(|p| (p.name.as_str(), p.size)).collect();
    assert_eq!(sizes, [("E", 9000), ("I", 2250)]);
    assert_eq!(model.expected_synapses(), 11_250.0 * 11_250.0);
    assert_eq!(model.spec.plasticity.len(), 1);
    assert_eq!(model.spec.projections.iter().filter(|p| p.plasticity.is_some()).map(|p| p.name.as_str()).collect::<Vec<_>>(), ["E_to_E"]);
}

#[test]
fn hpc_benchmark_is_what_its_generator_writes() {
    assert_generated("hpc_benchmark.toml", "hpc_benchmark.py");
}

/// A tenth of the neurons and of the in-degrees (1,125 neurons, 1,265,625 synapses), 200 ms on
/// two threads: both populations fire, and the power law moves the E->E weights away from
/// their initial JE (both ways: potentiation and depression) while the static ones stay put.
#[test]
fn hpc_benchmark_scaled_down_runs_and_learns() {
    let mut model = asset("hpc_benchmark.toml");
    for p in &mut model.spec.populations {
        p.size /= 10;
    }
    for p in &mut model.spec.projections {
        if let fum::engine::model::ConnectionRule::FixedIndegree(k) = &mut p.rule {
            *k /= 10;
        }
    }
    model.spec.simulation.duration_ms = 200.0;
    model.revalidate().unwrap();
    let mut sim = simulate(&model, 2, 0);
    let mut counts = [0u64; 2];
    for (population, _, _) in spikes(&sim) {
        counts[population] += 1;
    }
    let rates = [counts[0] as f64 / (900.0 * 0.2), counts[1] as f64 / (225.0 * 0.2)];
    assert!(rates.iter().all(|r| (0.5..200.0).contains(r)), "rates {rates:?} Hz");
    let je = 45.609600316540956f32;
    let plastic: Vec<f32> = synapses(&mut sim).iter().filter(|s| s.0 == 0).map(|s| f32::from_bits(s.4)).collect();
    assert_eq!(plastic.len(), 900 * 900);
    let (up, down) = (plastic.iter().filter(|&&w| w > je).count(), plastic.iter().filter(|&&w| w < je).count());
    assert!(up > 0 && down > 0, "{up} weights rose, {down} fell");
    assert!(plastic.iter().all(|w| w.is_finite() && *w >= 0.0));
    let static_ee: Vec<f32> = synapses(&mut sim).iter().filter(|s| s.0 == 2).map(|s| f32::from_bits(s.4)).collect();
    assert!(static_ee.iter().all(|&w| w == je), "E->I weights are static");
}
