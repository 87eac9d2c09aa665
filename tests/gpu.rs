//! The CUDA backend against the CPU backend, through the `fum` binary.
//!
//! Every test but one needs a CUDA GPU: those are ignored in an ordinary run (CI has no GPU, and
//! `cargo test` lists them as ignored, not passed), and `scripts/gpu-check.sh` runs this test
//! binary on the GPU machine with `--include-ignored`, pointing `FUM_BIN` at the carried release
//! binary; there a test fails if no GPU is usable after all. The one that runs everywhere checks
//! what happens without a GPU.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fum_bin() -> PathBuf {
    std::env::var_os("FUM_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fum")), PathBuf::from)
}

/// Runs `fum`; structural commits read back every column the device rebuilt and compare it
/// with the host's (`FUM_CHECK_STRUCTURE`, see `fum_systems::cuda`).
fn fum(args: &[&str]) -> Output {
    fum_with(args, &[])
}

/// [`fum`] with more environment variables.
fn fum_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(fum_bin()).args(args).env("FUM_CHECK_STRUCTURE", "1").envs(env.iter().copied()).output().expect("fum runs");
    assert!(out.status.success(), "fum {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A GPU test run where no GPU is usable fails, naming why, instead of passing.
fn require_cuda() {
    if let Err(e) = fum::run::backend_for(fum::run::BackendChoice::Cuda) {
        panic!("this test needs a usable CUDA GPU: {e}");
    }
}

fn model(name: &str) -> String {
    format!("assets/models/{name}.toml")
}

fn run(model: &str, out: &Path, backend: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["run", model, "--out", out.to_str().unwrap(), "--backend", backend, "--quiet"];
    args.extend_from_slice(extra);
    fum(&args);
    serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap()
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// The plastic weights of the newest checkpoint in `run`, section by section.
fn weights(run: &Path) -> Vec<(String, Vec<u8>)> {
    sections(run, &["weight"])
}

/// The sections of the newest checkpoint in `run` whose names end with one of `suffixes`.
fn sections(run: &Path, suffixes: &[&str]) -> Vec<(String, Vec<u8>)> {
    let newest = fum::engine::checkpoint::list(&run.join("checkpoints")).into_iter().next().expect("a checkpoint");
    let ckpt = fum::engine::checkpoint::Checkpoint::open(&newest).unwrap();
    ckpt.header.sections.iter().filter(|s| suffixes.iter().any(|x| s.name.ends_with(x))).map(|s| (s.name.clone(), ckpt.section(&s.name).unwrap())).collect()
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn cuba_and_coba_models_give_identical_spikes_probes_and_weights_on_both_backends() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    // Vogels-Abbott COBA with both integrators: exponential Euler's exponential is
    // `portable::expf` on both backends, forward Euler takes none.
    let euler = dir.path().join("vogels_abbott_coba_euler.toml");
    let text = std::fs::read_to_string(model("vogels_abbott_coba")).unwrap().replace("model = \"lif_coba\"", "model = \"lif_coba\"\nintegrator = \"euler\"");
    std::fs::write(&euler, text).unwrap();
    let models = ["brunel", "vogels_abbott_cuba", "vogels_abbott_coba", "stdp_balanced"].map(|name| (name, model(name)));
    for (name, path) in models.into_iter().chain([("vogels_abbott_coba_euler", euler.to_str().unwrap().to_string())]) {
        let (cpu, gpu) = (dir.path().join(format!("{name}-cpu")), dir.path().join(format!("{name}-gpu")));
        let extra = ["--duration", "1s", "--checkpoint-every", "1s"];
        run(&path, &cpu, "cpu", &extra);
        let report = run(&path, &gpu, "cuda", &extra);
        assert_eq!(report["backend"], "cuda");
        assert!(same_file(&cpu.join("spikes.h5"), &gpu.join("spikes.h5")), "{name}: spikes differ");
        if cpu.join("probes.h5").exists() {
            assert!(same_file(&cpu.join("probes.h5"), &gpu.join("probes.h5")), "{name}: probes differ");
        }
        assert_eq!(weights(&cpu), weights(&gpu), "{name}: learned weights differ");
    }
}

/// stdp_balanced's E->E rule, and NEST's power law (no upper bound) for it.
const STDP_BALANCED_RULE: &str = "a_plus = 0.005\na_minus = 0.00525\nw_min = 0.0\nw_max = 32.4\nweight_dependence = \"additive\"";
const POWER_LAW: &str = "lambda = 0.01\nalpha = 1.1\nmu = 0.4\nweight_dependence = \"power_law\"";

/// Runs stdp_balanced with `rule` in place of its E->E rule and `precision` weights for 1 s on
/// both backends, checks that the spikes, probes and learned weights are the same bits, and
/// returns the two run folders.
fn stdp_variant_agrees(dir: &Path, name: &str, rule: &str, precision: &str) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(model("stdp_balanced")).unwrap();
    assert!(text.contains(STDP_BALANCED_RULE), "stdp_balanced's rule changed: update this test");
    let text = text.replacen(STDP_BALANCED_RULE, rule, 1).replacen("[simulation]\n", &format!("[simulation]\nweights = \"{precision}\"\n"), 1);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let (cpu, gpu) = (dir.join(format!("{name}-cpu")), dir.join(format!("{name}-gpu")));
    let extra = ["--duration", "1s", "--checkpoint-every", "1s"];
    run(path.to_str().unwrap(), &cpu, "cpu", &extra);
    let report = run(path.to_str().unwrap(), &gpu, "cuda", &extra);
    assert_eq!(report["backend"], "cuda");
    assert!(same_file(&cpu.join("spikes.h5"), &gpu.join("spikes.h5")), "{name}: spikes differ");
    assert!(same_file(&cpu.join("probes.h5"), &gpu.join("probes.h5")), "{name}: probes differ");
    assert_eq!(weights(&cpu), weights(&gpu), "{name}: learned weights differ");
    (cpu, gpu)
}

/// NEST's power-law rule (`stdp_pl_synapse_hom`) on stdp_balanced's E->E synapses, with no upper
/// bound, in f32 and f16 weights: w^mu comes from the portable ln/exp of portable.rs and
/// fum.cu, so the spikes, weight probes and learned weights are the same bits on both backends.
#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn power_law_stdp_gives_identical_spikes_and_weights_on_both_backends() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    for precision in ["f32", "f16"] {
        stdp_variant_agrees(dir.path(), &format!("power_law_{precision}"), POWER_LAW, precision);
    }
}

/// NEST's timing (`dendritic_delay`) with the additive rule (f32) and the power law (f16): the
/// device's `deliver_full` reads the targets' histories and their traces as stdp.rs does, so
/// the spikes, probes, learned weights and the histories' traces are the same bits.
#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn dendritic_stdp_gives_identical_spikes_weights_and_histories_on_both_backends() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    for (name, rule, precision) in [("additive", STDP_BALANCED_RULE, "f32"), ("power_law", POWER_LAW, "f16")] {
        let (cpu, gpu) = stdp_variant_agrees(dir.path(), &format!("dendritic_{name}"), &format!("{rule}\ndendritic_delay = true"), precision);
        let histories = |run: &Path| sections(run, &["post_history", "post_history_trace"]);
        assert_eq!(histories(&cpu).len(), 2 * histories(&cpu).iter().filter(|s| s.0.ends_with("post_history")).count(), "{name}: a trace per history");
        assert_eq!(histories(&cpu), histories(&gpu), "{name}: histories or their traces differ");
    }
}

/// `lif_psc_alpha` (NEST's iaf_psc_alpha) and bias currents drawn per neuron, beside `lif_cuba`
/// and forward-Euler `lif_coba` populations with a drawn and a constant bias, and DC inputs
/// that start and stop: the same spikes, probes and checkpointed state (the alpha variables
/// `dsyn_ex`, `dsyn_in` included) on both backends, bit for bit, on one shard and on several.
const ALPHA_NETWORK: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 1000.0
seed = 23

[[populations]]
name = "A"
size = 3000
model = "lif_psc_alpha"
tau_syn_ex_ms = 0.5
tau_syn_in_ms = 2.0
i_e_pa = { uniform = [250.0, 420.0] }
v_init_mv = { uniform = [-70.0, -56.0] }

[[populations]]
name = "C"
size = 700
model = "lif_cuba"
i_e_pa = { normal = [330.0, 40.0] }

[[populations]]
name = "G"
size = 300
model = "lif_coba"
integrator = "euler"
e_l_mv = -60.0
v_th_mv = -50.0
v_reset_mv = -60.0
tau_m_ms = 20.0
c_m_pf = 200.0
tau_syn_ex_ms = 5.0
tau_syn_in_ms = 10.0
i_e_pa = { lognormal = [4.0, 0.4] }

[[projections]]
name = "AA"
source = "A"
target = "A"
rule = { fixed_indegree = 100 }
weight = { uniform = [10.0, 30.0] }
delay_ms = { uniform = [0.5, 2.0] }

[[projections]]
name = "CA"
source = "C"
target = "A"
rule = { fixed_indegree = 50 }
receptor = "inhibitory"
weight = 40.0
delay_ms = 0.8

[[projections]]
name = "AC"
source = "A"
target = "C"
rule = { fixed_probability = 0.02 }
weight = 20.0

[[projections]]
name = "AG"
source = "A"
target = "G"
rule = { fixed_indegree = 40 }
weight = 0.5

[[inputs]]
name = "drive"
kind = "poisson"
target = "A"
rate_hz = 3000.0
weight = 20.0

[[inputs]]
name = "dc"
kind = "dc"
target = "C"
amplitude_pa = 15.0

[[inputs]]
name = "pulse"
kind = "dc"
target = "G"
amplitude_pa = 150.0
start_ms = 200.0
stop_ms = 600.0

[[inputs]]
name = "step"
kind = "dc"
target = "A"
amplitude_pa = -40.0
start_ms = 500.0

[recording]
spikes = ["A", "C", "G"]

[[recording.probes]]
name = "alpha_v"
variable = "v"
population = "A"
neurons = [0, 1, 2, 1500, 2999]

[[recording.probes]]
name = "alpha_current"
variable = "syn_ex"
population = "A"
neurons = [0, 1, 2, 1500, 2999]

[[recording.probes]]
name = "alpha_inhibition"
variable = "syn_in"
population = "A"
neurons = [0, 2999]
"#;

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn alpha_neurons_and_drawn_biases_give_identical_spikes_probes_and_state_on_both_backends() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alpha.toml");
    std::fs::write(&path, ALPHA_NETWORK).unwrap();
    let state = ["/v", "/syn_ex", "/syn_in", "/dsyn_ex", "/dsyn_in", "/refractory"];
    for shards in ["1", "5"] {
        let (cpu, gpu) = (dir.path().join(format!("cpu-{shards}")), dir.path().join(format!("gpu-{shards}")));
        let extra = ["--checkpoint-every", "1s", "--shards", shards];
        let report = run(path.to_str().unwrap(), &cpu, "cpu", &extra);
        for pop in ["A", "C", "G"] {
            assert!(report["rates_hz"][pop].as_f64().unwrap() > 1.0, "{pop} must fire: {}", report["rates_hz"]);
        }
        let report = run(path.to_str().unwrap(), &gpu, "cuda", &extra);
        assert_eq!(report["backend"], "cuda");
        assert!(same_file(&cpu.join("spikes.h5"), &gpu.join("spikes.h5")), "{shards} shards: spikes differ");
        assert!(same_file(&cpu.join("probes.h5"), &gpu.join("probes.h5")), "{shards} shards: probes differ");
        let (a, b) = (sections(&cpu, &state), sections(&gpu, &state));
        assert!(a.iter().any(|(name, _)| name.ends_with("/dsyn_ex")), "the alpha state is checkpointed");
        for ((name, x), (other, y)) in a.iter().zip(&b) {
            assert_eq!(name, other);
            assert!(x == y, "{shards} shards: {name} differs");
        }
        assert_eq!(a.len(), b.len());
    }
    // Resumed on the GPU inside the pulse: the device's currents are those of the resumed step.
    let part = dir.path().join("cpu-then-cuda");
    run(path.to_str().unwrap(), &part, "cpu", &["--stop-after", "400ms"]);
    fum(&["resume", part.to_str().unwrap(), "--backend", "cuda", "--quiet"]);
    assert!(same_file(&dir.path().join("cpu-1/spikes.h5"), &part.join("spikes.h5")), "cpu then cuda: spikes differ");
}

/// Spike sources (one reading a spikes file, one listing its times) drive plastic and static
/// synapses: the same spikes and learned weights on both backends for 1 and 5 shards (the
/// neuron kernel searches the schedule the CPU searches), and a run stopped on the GPU resumes
/// on the CPU to the same spikes (the schedule is looked up from the step, not checkpointed).
#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn spike_sources_give_identical_spikes_and_weights_on_both_backends() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    let model = common::write_spike_sources(dir.path());
    let model = model.to_str().unwrap();
    for shards in ["1", "5"] {
        let (cpu, gpu) = (dir.path().join(format!("cpu-{shards}")), dir.path().join(format!("gpu-{shards}")));
        let extra = ["--checkpoint-every", "300ms", "--shards", shards];
        let report = run(model, &cpu, "cpu", &extra);
        for pop in ["LGN", "cue", "E", "I"] {
            assert!(report["rates_hz"][pop].as_f64().unwrap() > 1.0, "{pop} must fire: {}", report["rates_hz"]);
        }
        let report = run(model, &gpu, "cuda", &extra);
        assert_eq!(report["backend"], "cuda");
        assert!(same_file(&cpu.join("spikes.h5"), &gpu.join("spikes.h5")), "{shards} shards: spikes differ");
        assert_eq!(weights(&cpu), weights(&gpu), "{shards} shards: learned weights differ");
    }
    let part = dir.path().join("cuda-then-cpu");
    run(model, &part, "cuda", &["--stop-after", "150ms"]);
    fum(&["resume", part.to_str().unwrap(), "--backend", "cpu", "--quiet"]);
    assert!(same_file(&dir.path().join("cpu-1/spikes.h5"), &part.join("spikes.h5")), "cuda then cpu: spikes differ");
}

/// Synapses listed one by one (`rule = { explicit = N }`: a SONATA circuit's edges, and
/// Python's `fum.FromList`, which build the same blocks): Vogels-Abbott CUBA exported as a
/// SONATA circuit gives the same spikes on both backends, on 1 and 3 shards.
#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn listed_synapses_give_identical_spikes_on_both_backends() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    let circuit = dir.path().join("circuit");
    fum(&["export", &model("vogels_abbott_cuba"), "--sonata", circuit.to_str().unwrap()]);
    let config = circuit.join("simulation_config.json");
    for shards in ["1", "3"] {
        let (cpu, gpu) = (dir.path().join(format!("cpu-{shards}")), dir.path().join(format!("gpu-{shards}")));
        for (out, backend) in [(&cpu, "cpu"), (&gpu, "cuda")] {
            fum(&["run", "--sonata", config.to_str().unwrap(), "--backend", backend, "--shards", shards, "--duration", "300ms", "--out", out.to_str().unwrap(), "--quiet"]);
        }
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(gpu.join("run.json")).unwrap()).unwrap();
        assert_eq!(report["backend"], "cuda");
        assert!(report["spikes_total"].as_u64().unwrap() > 1000, "the circuit fires: {}", report["spikes_total"]);
        assert!(same_file(&cpu.join("spikes.h5"), &gpu.join("spikes.h5")), "{shards} shards: spikes differ");
    }
}

/// Poisson rates listed per target neuron (Python's `poisson(..., rate_hz=array)`) fill the
/// per-neuron rates a drawn `rate_hz` fills, which the device's source table reads: the same
/// spikes on both backends, on 1 and 3 shards.
#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn listed_poisson_rates_give_identical_spikes_on_both_backends() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    let text = common::BALANCED.replacen("rate_hz = 16000.0", "listed = [\"rate_hz\"]", 1);
    // E's 800 neurons from 8 to 24 kHz, in an order unlike their ids.
    let rates: Vec<f64> = (0..800u32).map(|j| 8000.0 + 20.0 * f64::from((j * 7919) % 800)).collect();
    let values = fum::engine::sonata::NeuronValues { rate_hz: Some(rates), ..Default::default() };
    let model = fum::Model::parse_listed(&text, Path::new("listed.toml"), vec![], vec![], vec![("drive".into(), values)]).unwrap();
    for shards in [1, 3] {
        let out = |backend: &str| dir.path().join(format!("{backend}-{shards}"));
        for (backend, choice) in [("cpu", fum::run::BackendChoice::Cpu), ("cuda", fum::run::BackendChoice::Cuda)] {
            let options = fum::run::RunOptions { out: Some(out(backend)), shards, backend: choice, ..Default::default() };
            let (report, _) = fum::engine::run::run_keeping(&model, &options, fum::run::backend_for, None, |_| {}).unwrap();
            assert!(report.spikes_total > 1000, "{backend}: {} spikes", report.spikes_total);
        }
        assert!(same_file(&out("cpu").join("spikes.h5"), &out("cuda").join("spikes.h5")), "{shards} shards: spikes differ");
    }
}

/// `--device-memory` below what the network needs: the synapses stay in pinned host memory that
/// the kernels read over the bus, with the device's row cache of the most active rows in what
/// memory is left (none at the least limit, a third of the synapses' bytes at the other), with
/// the same spikes, probes and learned weights as the CPU's; run.json says how much went there,
/// the bus's measured bandwidth and what the cache served. Brunel's drive is drawn per neuron
/// (so the per-neuron Poisson rates are checked against the CPU's too).
/// A shard of more than 65,536 neurons stores 4-byte targets, which the device's delivery, STDP,
/// structural planning and compaction, and the host tier's row cache read: the 70,000-neuron
/// `common::wide()` network (STDP and rewiring on E->E) on one shard gives the spikes of the CPU
/// on two (2-byte targets), and the structure and weights of the CPU on one, also with its
/// static blocks in host memory.
#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn four_byte_targets_give_identical_spikes_weights_and_structure_on_both_backends() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.toml");
    std::fs::write(&path, common::wide().replace("duration_ms = 50.0", "duration_ms = 200.0")).unwrap();
    let path = path.to_str().unwrap();
    let extra = ["--checkpoint-every", "200ms"];
    let (narrow, wide) = (dir.path().join("cpu-2"), dir.path().join("cpu-1"));
    let report = run(path, &narrow, "cpu", &[&extra[..], &["--shards", "2"]].concat());
    let commits = report["structural"]["EE"]["commits"].as_array().unwrap();
    assert!(commits.len() >= 9 && commits.iter().all(|c| c["grown"].as_u64() > Some(0)), "{commits:?}");
    let static_bytes = run(path, &wide, "cpu", &[&extra[..], &["--shards", "1"]].concat())["network"]["bytes_static_synapses"].as_u64().unwrap();
    assert!(same_file(&narrow.join("spikes.h5"), &wide.join("spikes.h5")), "CPU, 1 and 2 shards: spikes differ");
    let structure = ["row_ptr", "target", "delay", "weight"];
    let gpu = dir.path().join("cuda-1");
    let whole = run(path, &gpu, "cuda", &[&extra[..], &["--shards", "1"]].concat());
    assert!(same_file(&narrow.join("spikes.h5"), &gpu.join("spikes.h5")), "CUDA, 1 shard: spikes differ");
    assert_eq!(sections(&wide, &structure), sections(&gpu, &structure), "CUDA, 1 shard: structure or weights differ");
    // Half the static blocks' bytes too many (the rewired E->E stays on the device): every
    // static block goes to host memory, and the half they free beyond the excess holds a row
    // cache. The upload keeps 8 MiB spare.
    let m = &whole["gpu"]["device_bytes"];
    let limit = m["neuron_bytes"].as_u64().unwrap() + m["index_bytes"].as_u64().unwrap() + m["plasticity_bytes"].as_u64().unwrap() + m["synapse_bytes"].as_u64().unwrap() - static_bytes / 2 + (8 << 20);
    let mapped = dir.path().join("cuda-mapped");
    let r = run(path, &mapped, "cuda", &[&extra[..], &["--shards", "1", "--device-memory", &format!("{limit}B")]].concat());
    assert!(r["gpu"]["mapped_host"]["synapses"].as_u64().is_some_and(|n| n > 0), "synapses went to host memory: {}", r["gpu"]);
    assert!(same_file(&narrow.join("spikes.h5"), &mapped.join("spikes.h5")), "CUDA, 1 shard, host tier: spikes differ");
    assert_eq!(sections(&wide, &structure), sections(&mapped, &structure), "CUDA, host tier: structure or weights differ");
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn a_network_larger_than_its_device_memory_reads_synapses_from_host_memory() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    // Brunel's drive drawn per neuron (lognormal, the same mean): skewed rates, as in cortex.
    let skewed = dir.path().join("brunel_skewed.toml");
    let text = std::fs::read_to_string(model("brunel")).unwrap().replace("rate_hz = 20000.0", "rate_hz = { lognormal = [9.898, 0.1] }");
    assert!(text.contains("lognormal"), "brunel's drive is drawn per neuron");
    std::fs::write(&skewed, text).unwrap();
    for (name, path) in [("stdp_balanced", model("stdp_balanced")), ("brunel_skewed", skewed.to_str().unwrap().to_string())] {
        let (cpu, gpu) = (dir.path().join(format!("{name}-cpu")), dir.path().join(format!("{name}-mapped")));
        // Four shards whatever the machine's cores: the row cache's tables grow with the shards.
        let extra = ["--duration", "500ms", "--checkpoint-every", "500ms", "--shards", "4"];
        run(&path, &cpu, "cpu", &extra);
        // Every synapse block on the host: the least that fits (the upload keeps 8 MiB spare).
        let whole = run(&path, &dir.path().join(format!("{name}-whole")), "cuda", &["--duration", "1ms", "--shards", "4"]);
        let m = &whole["gpu"]["device_bytes"];
        let least = m["neuron_bytes"].as_u64().unwrap() + m["index_bytes"].as_u64().unwrap() + m["plasticity_bytes"].as_u64().unwrap() + (8 << 20) + 1024;
        // Then a third of the synapses' bytes more: the row cache holds the most active rows.
        for (limit, cached) in [(least, false), (least + m["synapse_bytes"].as_u64().unwrap() / 3, true)] {
            let gpu = gpu.join(if cached { "cached" } else { "uncached" });
            let report = run(&path, &gpu, "cuda", &[&extra[..], &["--device-memory", &format!("{limit}B")]].concat());
            let mapped = &report["gpu"]["mapped_host"];
            assert!(mapped["synapses"].as_u64().is_some_and(|n| n > 0), "{name}: synapses went to host memory: {mapped}");
            assert!(mapped["link_bytes_per_s"].as_f64().unwrap() > 1e9, "{name}: the bus was measured: {mapped}");
            let cache = &mapped["row_cache"];
            if cached {
                // Rankings come at doubling intervals, stretched further while they take over 2 %
                // of the wall time (row_cache.rs), so how many is the machine's: at least two.
                assert!(cache["rankings"].as_u64() > Some(1) && cache["bytes_in"].as_u64() > Some(0), "{name}: the cache ranked and moved rows: {cache}");
                let hit = cache["hit_rate"].as_f64().unwrap();
                assert!(hit > 0.1 && hit < 1.0, "{name}: a third of the synapses' bytes serve part of the reads: {cache}");
            } else {
                assert_eq!(cache["slots"], 0, "{name}: no room for a cache: {cache}");
            }
            assert!(same_file(&cpu.join("spikes.h5"), &gpu.join("spikes.h5")), "{name} (cached: {cached}): spikes differ");
            if cpu.join("probes.h5").exists() {
                assert!(same_file(&cpu.join("probes.h5"), &gpu.join("probes.h5")), "{name} (cached: {cached}): probes differ");
            }
            assert_eq!(weights(&cpu), weights(&gpu), "{name} (cached: {cached}): learned weights differ");
        }
    }
}

/// `--host-memory` under the GPU: the host's copies of the synapses are paged to disk within
/// the budget (which counts the pinned host tier of a network larger than `--device-memory`
/// too), the device is filled page by page, and spikes, probes and learned weights are the
/// CPU's; a run stopped at a checkpoint resumes paged, with the same spikes. Brunel pages every
/// synapse column; stdp_balanced all but its plastic weights, which the device writes.
#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn host_memory_pages_the_host_copies_of_a_device_network() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    for name in ["brunel", "stdp_balanced"] {
        let cpu = dir.path().join(format!("{name}-cpu"));
        let extra = ["--duration", "400ms", "--checkpoint-every", "200ms", "--shards", "4"];
        let reference = run(&model(name), &cpu, "cpu", &extra);
        let n = &reference["network"];
        let (synapses, static_synapses) = (n["synapses"].as_u64().unwrap(), n["static_synapses"].as_u64().unwrap());
        // What a device leaves to page: 2-byte targets, 4-byte static weights.
        let pageable = 2 * synapses + 4 * static_synapses;
        let whole = run(&model(name), &dir.path().join(format!("{name}-whole")), "cuda", &["--duration", "1ms", "--shards", "4"]);
        let m = &whole["gpu"]["device_bytes"];
        // Half the synapses on the device (the upload keeps 8 MiB spare).
        let limit = m["neuron_bytes"].as_u64().unwrap() + m["index_bytes"].as_u64().unwrap() + m["plasticity_bytes"].as_u64().unwrap() + m["synapse_bytes"].as_u64().unwrap() / 2 + (8 << 20);
        for (device_limit, label) in [(None, "on the device"), (Some(limit), "half in pinned host memory")] {
            let gpu = dir.path().join(format!("{name}-{}", device_limit.is_some()));
            let spill = dir.path().join("spill");
            let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            let mut pinned = 0;
            if let Some(limit) = device_limit {
                args.extend(["--device-memory".into(), format!("{limit}B")]);
                let probe = run(&model(name), &dir.path().join(format!("{name}-pinned")), "cuda", &["--duration", "1ms", "--shards", "4", "--device-memory", &format!("{limit}B")]);
                pinned = probe["gpu"]["mapped_host"]["bytes"].as_u64().unwrap();
                assert!(pinned > 0, "{name}: synapses went to pinned host memory");
            }
            // Half the pageable bytes too few.
            let host = n["bytes_total"].as_u64().unwrap() - pageable / 2 + pinned;
            args.extend(["--host-memory".into(), format!("{host}B"), "--spill-dir".into(), spill.to_str().unwrap().into()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let report = run(&model(name), &gpu, "cuda", &args);
            let tier = &report["storage"]["host"];
            assert_eq!(tier["paged_bytes"].as_u64(), Some(pageable), "{name} ({label}): {tier}");
            assert!(tier["peak_resident_bytes"].as_u64() <= tier["budget_bytes"].as_u64() && tier["writebacks"].as_u64() > Some(0), "{name} ({label}): pages went to disk within the budget: {tier}");
            assert!(same_file(&cpu.join("spikes.h5"), &gpu.join("spikes.h5")), "{name} ({label}): spikes differ");
            if cpu.join("probes.h5").exists() {
                assert!(same_file(&cpu.join("probes.h5"), &gpu.join("probes.h5")), "{name} ({label}): probes differ");
            }
            assert_eq!(weights(&cpu), weights(&gpu), "{name} ({label}): learned weights differ");
            let part = dir.path().join(format!("{name}-{}-part", device_limit.is_some()));
            run(&model(name), &part, "cuda", &[&args[..], &["--stop-after", "200ms"]].concat());
            fum(&["resume", part.to_str().unwrap(), "--quiet"]);
            assert!(same_file(&cpu.join("spikes.h5"), &part.join("spikes.h5")), "{name} ({label}): resumed paged, spikes differ");
        }
    }
}

/// Structural plasticity on the device: the host plans and commits, the device counts the
/// spikes co-activity reads and rebuilds its blocks. Spikes, probes (weight probes following
/// their synapses through commits among them), learned weights and the structure left (row
/// pointers, targets, per-synapse delays, weights of every block) are byte-identical to the
/// CPU's, on 1 and 3 shards, and a CUDA run resumed across commits (from a checkpoint with a
/// plan pending) gives the same spikes.
#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn structural_plasticity_is_identical_on_both_backends() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    // Plans every 100 ms (commit 30 ms later) that replace the lowest-priority 5 % of E->E,
    // whose delays are drawn, so regrown synapses draw theirs.
    let text = std::fs::read_to_string(model("stdp_structural")).unwrap()
        .replace("every_ms = 500.0", "every_ms = 100.0")
        .replace("commit_after_ms = 250.0", "commit_after_ms = 30.0")
        .replacen("delay_ms = 0.1\nplasticity", "delay_ms = { uniform = [0.1, 2.0] }\nplasticity", 1);
    assert!(text.contains("uniform = [0.1, 2.0] }\nplasticity"), "the model's E->E is plastic with a drawn delay");
    // Weights of E->E synapses followed through their pruning (NaN) and regrowth.
    let text = text + "\n[[recording.probes]]\nname = \"w\"\nvariable = \"weight\"\nprojection = \"E_to_E\"\ncount = 200\ninterval_ms = 1.0\n";
    let path = dir.path().join("structural.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap();
    let extra = ["--duration", "1s", "--checkpoint-every", "1s"];
    let cpu = dir.path().join("cpu");
    // One shard, so that the structure compares block for block with the device's on one.
    let report = run(path, &cpu, "cpu", &[&extra[..], &["--shards", "1"]].concat());
    let commits = report["structural"]["E_to_E"]["commits"].as_array().unwrap();
    assert!(commits.len() >= 9 && commits.iter().all(|c| c["pruned"].as_u64() > Some(0) && c["grown"].as_u64() > Some(0)), "{commits:?}");
    let structure = ["row_ptr", "target", "delay", "weight"];
    for shards in ["1", "3"] {
        let gpu = dir.path().join(format!("cuda-{shards}"));
        let r = run(path, &gpu, "cuda", &[&extra[..], &["--shards", shards]].concat());
        assert_eq!(r["backend"], "cuda");
        assert_eq!(r["structural"]["E_to_E"]["pruned"], report["structural"]["E_to_E"]["pruned"]);
        assert!(same_file(&cpu.join("spikes.h5"), &gpu.join("spikes.h5")), "{shards} shards: spikes differ");
        assert!(same_file(&cpu.join("probes.h5"), &gpu.join("probes.h5")), "{shards} shards: probes differ");
        if shards == "1" {
            assert_eq!(sections(&cpu, &structure), sections(&gpu, &structure), "structure or weights differ");
        }
    }
    // Where the device cannot plan (its scratch does not fit), the host plans for it: the same.
    let host = dir.path().join("cuda-host-planned");
    fum_with(&["run", path, "--out", host.to_str().unwrap(), "--backend", "cuda", "--quiet", "--duration", "1s", "--shards", "3"], &[("FUM_PLAN_ON_HOST", "1")]);
    assert!(same_file(&cpu.join("spikes.h5"), &host.join("spikes.h5")), "planned on the host for the device: spikes differ");
    assert!(same_file(&cpu.join("probes.h5"), &host.join("probes.h5")), "planned on the host for the device: probes differ");
    let part = dir.path().join("resumed");
    run(path, &part, "cuda", &["--duration", "1s", "--checkpoint-every", "50ms", "--stop-after", "420ms"]);
    fum(&["resume", part.to_str().unwrap(), "--backend", "cuda", "--quiet"]);
    assert!(same_file(&cpu.join("spikes.h5"), &part.join("spikes.h5")), "resumed on CUDA: spikes differ");
}

/// Every pruning rule, with and without multapses, f32 and f16 weights, drawn regrowth
/// weights, two schedules at once: the device's plans (kernels/cuda/fum.cu `plan_select`,
/// `plan_regrow`) are the host's, so spikes and counts agree with the CPU's, on 1 and 3 shards.
#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn every_structural_rule_plans_the_same_on_both_backends() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(model("stdp_structural")).unwrap().replace("every_ms = 500.0", "every_ms = 100.0").replace("commit_after_ms = 250.0", "commit_after_ms = 30.0");
    // The last case adds a section on E->I with a schedule of its own: two plans overlap, each
    // with its own spike counts.
    let e_to_i = "\n[[structural]]\nprojection = \"E_to_I\"\nevery_ms = 70.0\ncommit_after_ms = 20.0\nprune = { lowest_priority_fraction = 0.1 }\nregrow = { to_indegree = 64 }\n";
    let rules = [
        ("keep", "prune = { keep_strongest = 60 }\nregrow = { to_indegree = 66, weight = { normal = [16.2, 3.0] } }", false, ""),
        ("below", "prune = { weight_below = 16.0 }\nregrow = { to_indegree = 64, weight = { uniform = [10.0, 20.0] } }", true, ""),
        ("priority", "prune = { lowest_priority_fraction = 0.2 }\nregrow = { to_indegree = 70, weight = 16.2 }", false, ""),
        ("two schedules", "prune = { lowest_priority_fraction = 0.2 }\nregrow = { to_indegree = 70, weight = 16.2 }", false, e_to_i),
    ];
    for (name, rule, f16, more) in rules {
        let mut text = base.replace("prune = { lowest_priority_fraction = 0.05 }\nregrow = { to_indegree = 64, weight = 16.2 }", rule) + more;
        assert!(text.contains(rule), "{name}: the model's rule was replaced");
        if name == "below" {
            text = text.replacen("plasticity = \"stdp_ee\"", "plasticity = \"stdp_ee\"\nallow_multapses = true", 1);
        }
        if f16 {
            text = text.replacen("seed = 2", "seed = 2\nweights = \"f16\"", 1);
        }
        let path = dir.path().join(format!("{}.toml", name.replace(' ', "_")));
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap();
        let cpu = dir.path().join(format!("{}-cpu", name.replace(' ', "_")));
        let report = run(path, &cpu, "cpu", &["--duration", "500ms"]);
        let commits = report["structural"]["E_to_E"]["commits"].as_array().unwrap();
        assert!(commits.len() >= 4 && commits.iter().all(|c| c["pruned"].as_u64() > Some(0) && c["grown"].as_u64() > Some(0)), "{name}: {commits:?}");
        for shards in ["1", "3"] {
            let gpu = dir.path().join(format!("{}-cuda-{shards}", name.replace(' ', "_")));
            let r = run(path, &gpu, "cuda", &["--duration", "500ms", "--shards", shards]);
            for (projection, field) in [("E_to_E", "pruned"), ("E_to_E", "grown"), ("E_to_I", "pruned"), ("E_to_I", "grown")] {
                assert_eq!(r["structural"][projection][field], report["structural"][projection][field], "{name}, {shards} shards: {projection} {field}");
            }
            assert!(same_file(&cpu.join("spikes.h5"), &gpu.join("spikes.h5")), "{name}, {shards} shards: spikes differ");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn a_checkpoint_resumes_on_the_other_backend() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    run(&model("brunel"), &whole, "cpu", &["--duration", "400ms"]);
    for (first, second) in [("cpu", "cuda"), ("cuda", "cpu")] {
        let part = dir.path().join(format!("{first}-then-{second}"));
        run(&model("brunel"), &part, first, &["--duration", "400ms", "--stop-after", "200ms"]);
        fum(&["resume", part.to_str().unwrap(), "--backend", second, "--quiet"]);
        assert!(same_file(&whole.join("spikes.h5"), &part.join("spikes.h5")), "{first} then {second}: spikes differ");
    }
}

/// `fum run --backend cuda --serve`: the runner reads a step's spikes two steps late (and
/// several at once when it syncs), yet an attached client receives every step with its own
/// spikes, those of spikes.h5, to the run's end; traced potentials are sampled, not copied
/// every step; the weight histogram and shard map come from the device; steering that the
/// captured step holds (STDP on/off, Poisson rates) is refused and leaves the run as it was.
#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn a_served_cuda_run_streams_the_spikes_it_writes() {
    use fum::engine::observe::{Reply, Request, Taken};
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    let (served, plain) = (dir.path().join("served"), dir.path().join("plain"));
    let mut run_served = common::serve_run(&fum_bin(), &[&model("stdp_balanced"), "--duration", "3s", "--backend", "cuda", "--quiet", "--out", served.to_str().unwrap()]);
    let (link, steering) = fum::engine::serve::attach(&run_served.addr, Some(run_served.token.clone())).unwrap();
    assert!(steering);
    for request in [Request::Info, Request::Watch(vec![0, 3999]), Request::Stdp(false), Request::SetPoissonRate { input: 0, rate_hz: 0.0 }] {
        link.send(request);
    }

    let (mut received, mut replies) = (Vec::new(), Vec::new());
    let (mut next_step, mut rows, mut sampled_rows) = (None, 0, 0);
    loop {
        while let Some(reply) = link.try_reply() {
            // The server answers `Watch` itself, so its reply may come before the run's `Info`.
            if let Reply::Info(info) = &reply
                && !replies.iter().any(|r| matches!(r, Reply::Info(_)))
            {
                link.send(Request::WeightHistogram { projection: info.plastic_projections[0].index, bins: 16 });
            }
            replies.push(reply);
        }
        let frame = match link.frames.take_timeout(std::time::Duration::from_millis(50)) {
            Taken::Frame(frame) => frame,
            Taken::Nothing => continue,
            Taken::Closed => break,
        };
        if frame.steps == 0 {
            continue;
        }
        if let Some(next) = next_step {
            assert_eq!(frame.first_step, next, "frames follow each other without gaps");
        }
        next_step = Some(frame.first_step + frame.steps);
        for k in 0..frame.steps as usize {
            received.extend(frame.step_spikes(k).iter().map(|&id| (frame.first_step + k as u64, id)));
        }
        if frame.watched.len() == 2 {
            rows += frame.steps;
            sampled_rows += frame.membrane_mv.chunks(2).filter(|row| row.iter().all(|v| v.is_finite())).count() as u64;
        }
    }
    replies.extend(std::iter::from_fn(|| link.try_reply()));
    assert!(run_served.child.wait().unwrap().success());
    assert_eq!(next_step, Some(30_000), "the client saw the run to its end");
    assert!(sampled_rows > 0 && sampled_rows * 10 < rows, "{sampled_rows} of {rows} steps sampled");

    let Some(Reply::Info(info)) = replies.iter().find(|r| matches!(r, Reply::Info(_))) else { panic!("{replies:?}") };
    assert!(info.shards.iter().all(|s| s.backend == "cuda" && s.device.is_some()), "{:?}", info.shards);
    let refused = replies.iter().filter(|r| matches!(r, Reply::Error(e) if e.contains("cuda backend"))).count();
    assert_eq!(refused, 2, "{replies:?}");
    assert!(replies.iter().any(|r| matches!(r, Reply::WeightHistogram(h) if h.counts.iter().sum::<u64>() > 100_000)), "{replies:?}");

    let populations: Vec<(&str, u32)> = info.populations.iter().map(|p| (p.name.as_str(), p.first)).collect();
    let first = received.first().map_or(u64::MAX, |s| s.0);
    let written: Vec<(u64, u32)> = common::spikes_h5(&served.join("spikes.h5"), &populations, info.dt_ms).into_iter().filter(|s| s.0 >= first).collect();
    assert!(received.len() > 10_000, "the client saw the run ({} spikes)", received.len());
    assert!(received == written, "the spikes received differ from spikes.h5 ({} received, {} written)", received.len(), written.len());
    // Refused steering and the observer's syncs leave the run as it was.
    run(&model("stdp_balanced"), &plain, "cuda", &["--duration", "3s"]);
    assert!(same_file(&served.join("spikes.h5"), &plain.join("spikes.h5")), "a served, watched run wrote other spikes");
}

/// Ranks on GPUs (`mpirun -np N fum run --backend cuda`, `FUM_BIN` built with `--features mpi`)
/// give the spikes, probes, learned weights and rewired structure of one GPU: 2 ranks (NCCL
/// between GPUs of their own, or MPI through host memory where they share one), 2 ranks with
/// `FUM_EXCHANGE=mpi`, and 3; on two GPUs or more also 2 ranks each shown only its own GPU
/// (`CUDA_VISIBLE_DEVICES`). The structural model plans on each rank's GPU from every rank's
/// spike counts and commits twice (pruning and regrowing E->E, weights probed through it).
#[test]
#[ignore = "needs a CUDA GPU, mpirun and FUM_BIN built with --features mpi; scripts/gpu-check.sh runs it with --include-ignored"]
fn ranks_on_gpus_give_the_spikes_probes_weights_and_structure_of_one_gpu() {
    require_cuda();
    let gpus = fum::kernels::cuda::device_count().unwrap();
    if gpus < 2 {
        eprintln!("one GPU: ranks share it, so their spikes go over MPI; NCCL's path needs two GPUs and is not run here");
    }
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(model("stdp_structural")).unwrap().replace("every_ms = 500.0", "every_ms = 40.0").replace("commit_after_ms = 250.0", "commit_after_ms = 15.0");
    assert!(text.contains("every_ms = 40.0") && text.contains("commit_after_ms = 15.0"), "the model plans every 40 ms");
    // Weights of E->E synapses into E neurons of three of the six shards (they exist for the
    // model's seed; pruned, they read NaN), followed through the commits.
    let text = text + "\n[[recording.probes]]\nname = \"w\"\nvariable = \"weight\"\nprojection = \"E_to_E\"\nsynapses = [[3, 1700], [69, 2500], [76, 3199], [116, 3199]]\ninterval_ms = 1.0\n";
    let asset = |name: &str| std::fs::read_to_string(model(name)).unwrap();
    // Each with its own probes (of the first neurons, rank 0's) and one of I neurons in the last
    // shards (other ranks'), which rank 0 gathers.
    // STDP with 1 ms delays: the ranks gather their spikes in epochs of 10 steps (the shortest
    // delay), and replay each epoch's deliveries and STDP bookkeeping step by step; weight
    // probes every 15 steps cut some epochs short (brunel: epochs of 15, without STDP).
    let epochs = asset("stdp_balanced").replace("delay_ms = 0.1", "delay_ms = 1.0") + "\n[[recording.probes]]\nname = \"w\"\nvariable = \"weight\"\nprojection = \"E_to_E\"\ncount = 4\ninterval_ms = 1.5\n";
    assert_eq!(epochs.matches("delay_ms = 1.0").count(), 4, "every projection of stdp_balanced has 0.1 ms delays");
    let models = [("brunel", asset("brunel"), 2500, 15), ("stdp_balanced", asset("stdp_balanced"), 800, 1), ("structural", text, 800, 1), ("stdp_epochs", epochs, 800, 10)];
    for (name, text, i_neurons, epoch) in models {
        let path = common::probed_across(name, &text, dir.path(), i_neurons);
        let model = path.to_str().unwrap();
        let extra = ["--duration", "100ms", "--shards", "6", "--checkpoint-every", "50ms"];
        let one = dir.path().join(format!("{name}-1"));
        let reference = run(model, &one, "cuda", &extra);
        // (ranks, FUM_EXCHANGE, each rank shown only its own GPU through CUDA_VISIBLE_DEVICES,
        // as clusters do: ranks are told apart by their GPUs' PCI addresses, not device counts)
        let mut cases = vec![(2, None, false), (2, Some("mpi"), false), (3, None, false)];
        if gpus >= 2 {
            cases.push((2, None, true));
        }
        for (np, exchange, one_visible) in cases {
            let out = dir.path().join(format!("{name}-{np}-{exchange:?}-{one_visible}"));
            let mut args = vec!["run", model, "--out", out.to_str().unwrap(), "--backend", "cuda", "--quiet"];
            args.extend_from_slice(&extra);
            let bin = fum_bin();
            let visible = ["-c", "CUDA_VISIBLE_DEVICES=$OMPI_COMM_WORLD_LOCAL_RANK exec \"$0\" \"$@\"", bin.to_str().unwrap()];
            let mut mpirun = match one_visible {
                false => common::mpirun(&bin, np, &args),
                true => common::mpirun(Path::new("sh"), np, &[&visible[..], &args[..]].concat()),
            };
            mpirun.env("NCCL_NVLS_ENABLE", "0");
            if let Some(e) = exchange {
                mpirun.env("FUM_EXCHANGE", e);
            }
            let done = mpirun.output().expect("mpirun runs");
            assert!(done.status.success(), "{name} on {np} ranks: {}", String::from_utf8_lossy(&done.stderr));
            let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
            assert_eq!(report["ranks"], np, "run.json counts the ranks (is FUM_BIN built with --features mpi?)");
            let path = report["gpu"]["ranks_exchange"].as_str().expect("gpu.ranks_exchange");
            eprintln!("{name} on {np} ranks: spikes over {path}{}", if one_visible { " (a GPU visible to each rank)" } else { "" });
            let expected = exchange.unwrap_or(if np <= gpus { "nccl" } else { "mpi" });
            assert_eq!(path, expected, "{np} ranks on {gpus} GPUs, FUM_EXCHANGE={exchange:?}, one visible GPU each: {one_visible}");
            assert_eq!(report["partition"]["exchange_every_steps"], epoch, "{name}: steps per exchange");
            assert_eq!(report["spikes_total"], reference["spikes_total"], "{name} on {np} ranks ({path})");
            assert!(same_file(&one.join("spikes.h5"), &out.join("spikes.h5")), "{name}: spikes differ on {np} ranks ({path})");
            assert!(same_file(&one.join("probes.h5"), &out.join("probes.h5")), "{name}: probes differ on {np} ranks ({path})");
            assert_eq!(sections(&one, &["row_ptr", "target", "weight"]), sections(&out, &["row_ptr", "target", "weight"]), "{name}: weights or structure differ on {np} ranks ({path})");
            if name == "structural" {
                assert_eq!(report["structural"]["E_to_E"]["pruned"], reference["structural"]["E_to_E"]["pruned"], "{np} ranks ({path}): pruned synapses");
                assert_eq!(report["structural"]["E_to_E"]["grown"], reference["structural"]["E_to_E"]["grown"], "{np} ranks ({path}): grown synapses");
            }
        }
        if name == "structural" {
            let commits = reference["structural"]["E_to_E"]["commits"].as_array().unwrap();
            assert!(commits.len() == 2 && commits.iter().all(|c| c["pruned"].as_u64() > Some(0) && c["grown"].as_u64() > Some(0)), "{commits:?}");
        }
    }
}

#[test]
fn without_a_usable_gpu_cuda_fails_with_a_message_and_auto_falls_back() {
    // CUDA_VISIBLE_DEVICES="" hides every GPU, so this runs on any machine.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(fum_bin())
        .args(["run", &model("vogels_abbott_cuba"), "--duration", "20ms", "--backend", "cuda", "--quiet", "--out"])
        .arg(dir.path().join("cuda"))
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--backend cuda") && (stderr.contains("no CUDA device") || stderr.contains("no CUDA driver")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.path().join("cuda").exists(), "nothing is written when the backend is unavailable");
    let out = Command::new(fum_bin())
        .args(["run", &model("vogels_abbott_cuba"), "--duration", "20ms", "--backend", "auto", "--quiet"])
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("backend: cpu"), "{stderr}");
}

#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn the_device_health_check_finds_a_weight_outside_its_bounds_and_a_non_finite_state() {
    require_cuda();
    use fum::engine::components::{NeuronBlock, SynapseBlocks, Weights};
    use fum::engine::health::{HealthMonitor, WEIGHT_CHECK_EVERY};
    let model = fum::Model::load(model("stdp_balanced")).unwrap();
    for tamper in ["nothing", "weight", "state"] {
        let mut sim = fum::Simulation::from_model(&model, 1, 1).unwrap();
        if tamper == "weight" {
            let mut query = sim.world.query::<&mut SynapseBlocks>();
            let mut blocks = query.iter_mut(&mut sim.world).next().unwrap();
            let block = blocks.0.iter_mut().find(|b| b.plastic.is_some()).unwrap();
            let Weights::F32(w) = &mut block.weight else { panic!("f32 weights") };
            w[7] = 99.0;
        }
        if tamper == "state" {
            sim.world.query::<&mut NeuronBlock>().iter_mut(&mut sim.world).next().unwrap().v[3] = f32::NAN;
        }
        sim.install(fum::run::backend_for(fum::run::BackendChoice::Cuda).unwrap()).unwrap();
        let mut health = HealthMonitor::new(10, 1000.0, &sim.world);
        let checked = health.check(&mut sim.world, 10 * WEIGHT_CHECK_EVERY).map_err(|e| e.to_string());
        match tamper {
            "nothing" => assert!(checked.is_ok(), "{checked:?}"),
            "weight" => assert!(checked.unwrap_err().contains("weight 99 outside [0, 32.4]")),
            _ => assert!(checked.unwrap_err().contains("neuron 3: membrane potential is NaN")),
        }
    }
    // lif_psc_alpha's second variables are checked on the device too.
    let model = fum::Model::parse(ALPHA_NETWORK, std::path::Path::new("alpha.toml")).unwrap();
    let mut sim = fum::Simulation::from_model(&model, 1, 1).unwrap();
    sim.world.query::<&mut NeuronBlock>().iter_mut(&mut sim.world).next().unwrap().dsyn_ex.as_mut().expect("dsyn_ex")[4] = f32::NAN;
    sim.install(fum::run::backend_for(fum::run::BackendChoice::Cuda).unwrap()).unwrap();
    let mut health = HealthMonitor::new(10, 1e6, &sim.world);
    let checked = health.check(&mut sim.world, 10).map_err(|e| e.to_string());
    assert!(checked.as_ref().is_err_and(|e| e.contains("excitatory synaptic derivative is NaN")), "{checked:?}");
}

/// `--time-stages` and `--monitor` on the GPU: the device's time per stage (events between the
/// stages' kernels) and NVML's samples reach run.json, and neither changes a spike.
#[test]
#[ignore = "needs a CUDA GPU; scripts/gpu-check.sh runs it with --include-ignored"]
fn stage_times_and_monitoring_on_the_gpu_leave_the_spikes_alone() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    let (plain, timed) = (dir.path().join("plain"), dir.path().join("timed"));
    run(&model("stdp_balanced"), &plain, "cuda", &["--duration", "500ms"]);
    let report = run(&model("stdp_balanced"), &timed, "cuda", &["--duration", "500ms", "--time-stages", "--monitor"]);
    assert!(same_file(&plain.join("spikes.h5"), &timed.join("spikes.h5")), "timing changed the spikes");
    let stages = report["timing"]["stages_s"].as_object().expect("stage times");
    assert_eq!(stages.len(), 7);
    let simulate_s = report["timing"]["simulate_s"].as_f64().unwrap();
    let sum: f64 = stages.values().map(|v| v.as_f64().unwrap()).sum();
    for stage in ["input", "update", "exchange", "deliver", "plasticity", "record"] {
        assert!(stages[stage].as_f64().unwrap() > 0.0, "{stage}: {stages:?}");
    }
    assert!(sum <= simulate_s, "device stage times {sum} s within the simulate time {simulate_s} s");
    let monitor = &report["monitor"];
    assert!(monitor["samples"].as_u64().unwrap() >= 2 && monitor["power_w"]["mean"].as_f64().unwrap() > 0.0, "{monitor}");
    assert!(report["energy_per_synaptic_event_j"].as_f64().unwrap() > 0.0);
}
