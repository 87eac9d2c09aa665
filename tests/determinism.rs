//! The same seed gives byte-identical spike trains (and learned weights) whatever the thread
//! and shard count, and from run to run.

mod common;
use common::*;

use fum::Simulation;
use fum::engine::recording::Recorder;

/// [`BALANCED`]: every connection rule, drawn delays and weights, plastic E->E.
fn model() -> fum::Model {
    parse(BALANCED)
}

#[test]
fn spikes_and_weights_identical_across_threads_and_shards() {
    let model = model();
    let mut reference = simulate(&model, 1, 1);
    let spikes_ref = spikes(&reference);
    let synapses_ref = synapses(&mut reference);
    let counts = reference.world.resource::<Recorder>().spike_counts.clone();
    assert!(counts[0] > 1000 && counts[1] > 100, "the network must be active: {counts:?}");
    for threads in [1, 2] {
        for shards in [1, 3, 8] {
            if (threads, shards) == (1, 1) {
                continue;
            }
            let mut sim = simulate(&model, threads, shards);
            assert!(spikes(&sim) == spikes_ref, "spikes differ with {threads} threads and {shards} shards");
            assert!(synapses(&mut sim) == synapses_ref, "synapses or learned weights differ with {threads} threads and {shards} shards");
        }
    }
}

#[test]
fn shards_over_65536_neurons_store_wide_targets_and_give_the_same_spikes_weights_and_rewiring() {
    let model = parse(&wide());
    let wide = |sim: &mut Simulation| {
        let mut q = sim.world.query::<&fum::engine::components::SynapseBlocks>();
        let widths: Vec<bool> = q.iter(&sim.world).flat_map(|b| b.0.iter().map(|b| b.target.is_wide())).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "every block of a shard has the same width");
        widths[0]
    };
    let mut reference = simulate(&model, 2, 2);
    assert!(!wide(&mut reference), "35,000-neuron shards store 2-byte targets");
    // Synapses pruned and grown per projection and commit (bytes differ: targets are wider).
    let report = |sim: &Simulation| -> Vec<(String, Vec<(u64, u64)>)> {
        let r = sim.world.resource::<fum::engine::structural::StructuralReport>();
        r.0.iter().map(|(name, p)| (name.clone(), p.commits.iter().map(|c| (c.pruned, c.grown)).collect())).collect()
    };
    let (spikes_ref, synapses_ref, rewired_ref) = (spikes(&reference), synapses(&mut reference), report(&reference));
    let counts = reference.world.resource::<Recorder>().spike_counts.clone();
    assert!(counts[0] > 5000 && counts[1] > 500, "the network must be active: {counts:?}");
    let (pruned, grown) = rewired_ref.iter().flat_map(|(_, c)| c).fold((0, 0), |(p, g), c| (p + c.0, g + c.1));
    assert!(rewired_ref[0].1.len() == 2 && pruned > 10_000 && grown > 10_000, "two plans pruned and regrew E->E: {rewired_ref:?}");
    for (threads, shards) in [(1, 1), (2, 1), (2, 7)] {
        let mut sim = simulate(&model, threads, shards);
        assert_eq!(wide(&mut sim), shards == 1, "{shards} shards");
        assert!(spikes(&sim) == spikes_ref, "spikes differ with {threads} threads and {shards} shards");
        assert!(synapses(&mut sim) == synapses_ref, "synapses or learned weights differ with {threads} threads and {shards} shards");
        assert_eq!(report(&sim), rewired_ref, "synapses pruned and grown, {shards} shards");
    }
}

#[test]
fn two_runs_are_identical_and_seeds_matter() {
    let model = model();
    let a = spikes(&simulate(&model, 2, 2));
    let b = spikes(&simulate(&model, 2, 2));
    assert!(a == b);
    let mut other = model.clone();
    other.spec.simulation.seed += 1;
    assert!(spikes(&simulate(&other, 2, 2)) != a, "a different seed must give different spikes");
}

#[test]
fn stdp_changes_weights() {
    let model = model();
    let mut sim = simulate(&model, 2, 2);
    let learned = synapses(&mut sim);
    let mut frozen = Simulation::from_model(&model, 2, 2).unwrap();
    let initial = synapses(&mut frozen);
    let changed = learned.iter().zip(&initial).filter(|(a, b)| a.0 == 0 && a.4 != b.4).count();
    assert!(changed > 1000, "only {changed} plastic weights changed");
    assert!(learned.iter().filter(|s| s.0 == 0).all(|s| (0.0..=100.0).contains(&f32::from_bits(s.4))));
}

/// Poisson rates listed per target neuron (from Python: `poisson(..., rate_hz=array)`) take the
/// place of drawn ones: listing the rates the drawn network drew (E's lognormal, I's uniform)
/// gives its per-neuron means and spikes, bit for bit, on any threads and shards.
#[test]
fn poisson_rates_listed_per_neuron_give_the_spikes_of_the_same_rates_drawn() {
    use fum::engine::components::PoissonSources;
    use fum::kernels::rng::{Key, Purpose};
    let text = BALANCED.replacen("rate_hz = 16000.0", "rate_hz = { lognormal = [9.635, 0.3] }", 1).replacen("rate_hz = 2000.0", "rate_hz = { uniform = [1000.0, 3000.0] }", 1);
    let drawn = parse(&text);
    let reference = simulate(&drawn, 1, 1);
    let means = |sim: &Simulation| sim.world.resource::<PoissonSources>().0.iter().map(|s| (s.mean_per_step, s.per_neuron.clone())).collect::<Vec<_>>();
    let spikes_ref = spikes(&reference);
    assert!(spikes_ref.len() > 1000, "{} spikes", spikes_ref.len());
    // The rates the builder draws: input `index`'s distribution, one stream per target neuron.
    let key = Key::from_seed(drawn.spec.simulation.seed);
    let rates = |index: usize| {
        let input = &drawn.spec.inputs[index];
        let size = drawn.spec.populations[drawn.population_index(&input.target).unwrap()].size;
        let rate = input.rate_hz.unwrap();
        (input.name.clone(), fum::engine::sonata::NeuronValues { rate_hz: Some((0..size).map(|j| rate.sample(&mut key.stream(Purpose::InputRate, index as u16, j))).collect()), ..Default::default() })
    };
    let listed_text = text.replacen("rate_hz = { lognormal = [9.635, 0.3] }", "listed = [\"rate_hz\"]", 1).replacen("rate_hz = { uniform = [1000.0, 3000.0] }", "listed = [\"rate_hz\"]", 1);
    let listed = fum::Model::parse_listed(&listed_text, std::path::Path::new("listed.toml"), vec![], vec![], vec![rates(0), rates(1)]).unwrap();
    assert_ne!(listed.hash(), drawn.hash());
    for (threads, shards) in [(1, 1), (2, 1), (1, 3), (2, 3)] {
        let sim = simulate(&listed, threads, shards);
        assert!(means(&sim) == means(&reference), "per-neuron means differ with {threads} threads and {shards} shards");
        assert!(spikes(&sim) == spikes_ref, "spikes differ with {threads} threads and {shards} shards");
    }
}

/// Poisson rates drawn per neuron (`rate_hz = { lognormal = [mu, sigma] }`): the draws follow
/// the distribution, do not depend on the shards, and drive each neuron at its own rate (the
/// neurons drawn the highest rates fire far more than those drawn the lowest); the spikes are the
/// same on any threads and shards.
#[test]
fn per_neuron_poisson_rates() {
    use fum::engine::components::PoissonSources;
    let (mu, sigma) = (9.635f64, 0.3f64);
    let text = BALANCED.replacen("rate_hz = 16000.0", &format!("rate_hz = {{ lognormal = [{mu}, {sigma}] }}"), 1);
    assert_ne!(text, BALANCED, "the E drive is drawn per neuron");
    let model = parse(&text);
    let dt = model.spec.simulation.dt_ms;
    let reference = simulate(&model, 1, 1);
    let drawn = |sim: &Simulation| sim.world.resource::<PoissonSources>().0[0].per_neuron.clone().expect("rates drawn per neuron");
    let rates: Vec<f64> = drawn(&reference).iter().map(|r| r[0] / (dt * 1e-3)).collect();
    let n = rates.len() as f64;
    let mean = rates.iter().sum::<f64>() / n;
    let log_mean = rates.iter().map(|r| r.ln()).sum::<f64>() / n;
    let log_std = (rates.iter().map(|r| (r.ln() - log_mean).powi(2)).sum::<f64>() / n).sqrt();
    // Sampling error of a mean of n draws: a few sigma / sqrt(n).
    assert!((log_mean - mu).abs() < 4.0 * sigma / n.sqrt(), "mean of ln(rate) {log_mean} against mu {mu}");
    assert!((log_std - sigma).abs() < 0.1 * sigma, "std of ln(rate) {log_std} against sigma {sigma}");
    assert!((mean / (mu + sigma * sigma / 2.0).exp() - 1.0).abs() < 0.02, "mean rate {mean} Hz");
    // Neurons ranked by their drawn rate: the top tenth against the bottom tenth.
    let mut counts = vec![0u32; rates.len()];
    for (pop, _, id) in spikes(&reference) {
        if pop == 0 {
            counts[id as usize] += 1;
        }
    }
    let mut order: Vec<usize> = (0..rates.len()).collect();
    order.sort_by(|&a, &b| rates[a].total_cmp(&rates[b]));
    let tenth = order.len() / 10;
    let fired = |ids: &[usize]| ids.iter().map(|&i| f64::from(counts[i])).sum::<f64>() / ids.len() as f64;
    let (low, high) = (fired(&order[..tenth]), fired(&order[order.len() - tenth..]));
    assert!(high > 3.0 * low && high > 1.0, "the most driven tenth fires {high} spikes per neuron, the least {low}");
    let spikes_ref = spikes(&reference);
    for (threads, shards) in [(2, 3), (1, 8)] {
        let sim = simulate(&model, threads, shards);
        assert_eq!(drawn(&sim), drawn(&reference), "drawn rates differ on {shards} shards");
        assert!(spikes(&sim) == spikes_ref, "spikes differ with {threads} threads and {shards} shards");
    }
}

/// [`BALANCED`] with NEST's power-law rule (`stdp_pl_synapse_hom` with `hpc_benchmark`'s
/// lambda, alpha, mu and tau_plus; no upper bound) on E->E: the same spikes and learned weights
/// on any threads and shards, and the weights move, stay finite and not negative.
#[test]
fn power_law_stdp_is_identical_across_threads_and_shards() {
    power_law_is_identical_across_threads_and_shards(false);
}

/// The same with NEST's timing (`dendritic_delay`): each target's history keeps its traces,
/// read across shards' boundaries as the spike steps are; the learned weights differ from the
/// timing at the neurons.
#[test]
fn dendritic_power_law_stdp_is_identical_across_threads_and_shards() {
    let dendritic = power_law_is_identical_across_threads_and_shards(true);
    let somatic = synapses(&mut simulate(&power_law_model(false), 1, 1));
    assert!(dendritic != somatic, "the timing should change the learned weights");
}

/// [`BALANCED`] with the power law on E->E (see above), with or without a dendritic delay.
fn power_law_model(dendritic: bool) -> fum::Model {
    let rule = "a_plus = 0.01\na_minus = 0.0105\nw_max = 100.0";
    let power_law = format!("weight_dependence = \"power_law\"\nlambda = 0.1\nalpha = 0.0513\nmu = 0.4\ntau_plus_ms = 15.0\ntau_minus_ms = 30.0\ndendritic_delay = {dendritic}");
    let text = BALANCED.replacen(rule, &power_law, 1);
    assert_ne!(text, BALANCED);
    parse(&text)
}

/// Runs [`power_law_model`] on several thread and shard counts, checks that nothing differs and
/// that the weights moved both ways; returns the synapses learned.
fn power_law_is_identical_across_threads_and_shards(dendritic: bool) -> Vec<(usize, u32, u32, u16, u32)> {
    let model = power_law_model(dendritic);
    let mut reference = simulate(&model, 1, 1);
    let (spikes_ref, synapses_ref) = (spikes(&reference), synapses(&mut reference));
    let initial = synapses(&mut Simulation::from_model(&model, 1, 1).unwrap());
    let plastic = |s: &[(usize, u32, u32, u16, u32)]| s.iter().filter(|s| s.0 == 0).map(|s| f32::from_bits(s.4)).collect::<Vec<_>>();
    let (learned, before) = (plastic(&synapses_ref), plastic(&initial));
    let changed = learned.iter().zip(&before).filter(|(a, b)| a != b).count();
    assert!(changed > 1000, "only {changed} plastic weights changed");
    assert!(learned.iter().all(|w| w.is_finite() && *w >= 0.0));
    assert!(learned.iter().zip(&before).any(|(a, b)| a > b) && learned.iter().zip(&before).any(|(a, b)| a < b), "both potentiation and depression");
    for (threads, shards) in [(1, 3), (2, 1), (2, 8)] {
        let mut sim = simulate(&model, threads, shards);
        assert!(spikes(&sim) == spikes_ref, "dendritic {dendritic}: spikes differ with {threads} threads and {shards} shards");
        assert!(synapses(&mut sim) == synapses_ref, "dendritic {dendritic}: synapses or learned weights differ with {threads} threads and {shards} shards");
    }
    synapses_ref
}

/// A network built once and run in several calls (`run::build`, then `run::run_built` with the
/// model lengthened each time: the Python package's `Simulation.run`) steps on where it
/// stopped: its spikes, learned weights and report are those of one run of the whole duration,
/// and what was recorded accumulates.
#[test]
fn a_built_network_run_in_three_calls_equals_one_run() {
    use fum::engine::run::{Phase, build, run_built, run_keeping};
    let model = model();
    let options = fum::run::RunOptions { threads: 2, shards: 3, ..Default::default() };
    let (whole_report, mut whole) = run_keeping(&model, &options, fum::run::backend_for, None, |_| {}).unwrap();
    let phases = std::sync::Mutex::new(Vec::new());
    let mut sim = build(&model, &options, fum::run::backend_for, |p| phases.lock().unwrap().push(p.phase.clone())).unwrap();
    let phases = phases.into_inner().unwrap();
    // Building as it starts and as each of the 3 shards is done, then placing.
    let built: Vec<usize> = phases.iter().map_while(|p| if let Phase::Building { neurons: 1000, shards: 3, built, .. } = p { Some(*built) } else { None }).collect();
    assert_eq!(built, [0, 1, 2, 3], "{phases:?}");
    assert_eq!(phases[4..], [Phase::Placing { backend: "cpu" }], "{phases:?}");
    let steps = model.steps();
    let mut report = None;
    for end in [steps / 4, steps / 4 + 1, steps] {
        let mut upto = model.clone();
        upto.spec.simulation.duration_ms = end as f64 * model.spec.simulation.dt_ms;
        let (r, next) = run_built(&upto, &options, sim, |_| {}).unwrap();
        assert_eq!((r.end_step, r.outcome), (end, fum::run::Outcome::Finished));
        (sim, report) = (next, Some(r));
    }
    let report = report.unwrap();
    assert!(spikes(&sim) == spikes(&whole), "the spikes of three calls differ from one run's");
    assert!(synapses(&mut sim) == synapses(&mut whole), "the learned weights of three calls differ from one run's");
    assert_eq!((report.rates_hz, report.spikes_total), (whole_report.rates_hz, whole_report.spikes_total));
}
