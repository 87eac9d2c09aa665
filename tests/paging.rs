//! Tiered synapse storage on the CPU (`--host-memory`): whatever the budget, the same spikes and
//! learned weights as a run with every synapse in RAM, through pages spilled to disk.

mod common;

use std::path::Path;
use std::process::Command;

use fum::engine::paging::{self, HostTier, TierOptions};
use fum::{DefaultPlugins, Model, Simulation};

/// Builds `model`, pages it with `budget` bytes for synapse pages of `page_bytes`, runs it
/// to its end; the simulation and its host tier's figures.
fn paged(model: &Model, threads: usize, shards: usize, budget: impl Fn(u64) -> u64, page_bytes: u64, dir: &Path) -> (Simulation, paging::TierStats) {
    let mut sim = Simulation::from_model(model, threads, shards).expect("builds");
    sim.add_plugins(DefaultPlugins);
    let f = paging::footprint(&mut sim.world, false);
    let options = TierOptions { host_bytes: f.fixed + f.rewired + budget(f.pageable), spill_dir: dir.to_path_buf(), page_bytes, device: false };
    let said = paging::enable(&mut sim.world, &options, model.spec.simulation.dt_ms).expect("pages");
    assert!(said.is_some_and(|line| line.contains("spilled")), "the run says it spills");
    sim.run(model.steps(), |_| {});
    let stats = sim.world.resource::<HostTier>().stats.clone();
    assert_eq!(stats.moved.disk_bytes as u64, paging::disk_bytes_held(&mut sim.world), "the tier counts the bytes its pages hold on disk");
    // Read back whole for the comparison.
    paging::fault_in_all(&mut sim.world).unwrap();
    (sim, stats)
}

#[test]
fn any_budget_gives_the_same_spikes_and_learned_weights() {
    // Plastic E->E with drawn delays, static projections of every rule, f32 weights.
    let model = common::parse(common::BALANCED);
    let mut reference = common::simulate(&model, 2, 3);
    let (spikes, weights) = (common::spikes(&reference), common::synapses(&mut reference));
    assert!(spikes.len() > 1000, "the network fires");
    let dir = tempfile::tempdir().unwrap();
    for (threads, shards, share) in [(1, 1, 2), (2, 3, 4), (2, 5, 16)] {
        let (mut sim, stats) = paged(&model, threads, shards, |pageable| pageable / share, 4096, dir.path());
        assert!(stats.moved.faults > 0 && stats.moved.evictions > 0 && stats.moved.writebacks > stats.pages / 2, "pages moved both ways at 1/{share} of the synapses: {stats:?}");
        assert!(stats.moved.disk_bytes > 0 && stats.moved.bytes_in > 0, "{stats:?}");
        assert_eq!(common::spikes(&sim), spikes, "spikes at 1/{share} of the synapses in RAM, {threads} threads, {shards} shards");
        assert_eq!(common::synapses(&mut sim), weights, "synapses and learned weights at 1/{share}");
    }
}

/// A checkpoint restored into a paged world writes the spilled pages where they are: the
/// spikes and weights of one run, and the tier's disk bytes and the pages' priorities follow
/// the pages rewritten.
#[test]
fn a_checkpoint_restores_into_pages_and_the_tier_counts_what_it_wrote() {
    use fum::engine::checkpoint::{Checkpoint, Snapshot};
    let model = common::parse(common::BALANCED);
    let mut reference = common::simulate(&model, 2, 3);
    let dir = tempfile::tempdir().unwrap();
    let pager = |sim: &mut Simulation| {
        let f = paging::footprint(&mut sim.world, false);
        let options = TierOptions { host_bytes: f.fixed + f.rewired + f.pageable / 4, spill_dir: dir.path().to_path_buf(), page_bytes: 4096, device: false };
        paging::enable(&mut sim.world, &options, model.spec.simulation.dt_ms).expect("pages");
    };
    let mut first = Simulation::from_model(&model, 2, 3).unwrap();
    first.add_plugins(DefaultPlugins);
    pager(&mut first);
    first.run(1500, |_| {});
    let path = Snapshot::take(&mut first.world, &model.source, model.hash(), serde_json::Value::Null).unwrap().write(dir.path(), 1).unwrap();
    drop(first);
    let mut second = Simulation::from_model(&model, 2, 3).unwrap();
    second.add_plugins(DefaultPlugins);
    pager(&mut second);
    Checkpoint::open(&path).unwrap().restore(&mut second.world, model.hash()).unwrap();
    second.run(model.steps(), |_| {});
    let stats = second.world.resource::<HostTier>().stats.clone();
    assert!(stats.moved.faults > 0, "{stats:?}");
    assert_eq!(stats.moved.disk_bytes as u64, paging::disk_bytes_held(&mut second.world), "the tier counts the pages the restore rewrote");
    paging::fault_in_all(&mut second.world).unwrap();
    let spikes: Vec<_> = common::spikes(&second).into_iter().filter(|s| s.1 >= 1500).collect();
    assert_eq!(spikes, common::spikes(&reference).into_iter().filter(|s| s.1 >= 1500).collect::<Vec<_>>());
    assert_eq!(common::synapses(&mut second), common::synapses(&mut reference));
}

#[test]
fn f16_weights_and_constant_delays_page_too() {
    let text = common::BALANCED.replace("seed = 99", "seed = 99\nweights = \"f16\"").replace("delay_ms = { uniform = [0.5, 3.0] }", "delay_ms = 1.5");
    let model = common::parse(&text);
    let mut reference = common::simulate(&model, 2, 2);
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, stats) = paged(&model, 2, 2, |pageable| pageable / 3, 2048, dir.path());
    assert!(stats.moved.faults > 0, "{stats:?}");
    assert_eq!(common::spikes(&sim), common::spikes(&reference));
    assert_eq!(common::synapses(&mut sim), common::synapses(&mut reference));
}

fn fum(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fum")).args(args).output().unwrap()
}

/// [`fum`], which must succeed.
fn fum_ok(args: &[&str]) -> std::process::Output {
    let out = fum(args);
    assert!(out.status.success(), "fum {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn run_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap()
}

/// The balanced network five times larger (5,000 neurons, 1.8 M synapses, 11.5 MB of them; STDP
/// on E->E), 60 ms.
fn larger() -> String {
    common::BALANCED.replace("size = 800", "size = 4000").replace("size = 200", "size = 1000").replace("duration_ms = 300.0", "duration_ms = 60.0")
}

#[test]
fn a_network_four_times_the_host_memory_runs_through_disk_pages() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("larger.toml");
    std::fs::write(&model, larger()).unwrap();
    let (all, spilled) = (dir.path().join("all"), dir.path().join("spilled"));
    fum_ok(&["run", model.to_str().unwrap(), "--out", all.to_str().unwrap(), "--quiet"]);
    let network = &run_json(&all)["network"];
    let synapse_bytes = network["bytes_static_synapses"].as_u64().unwrap() + network["bytes_plastic_synapses"].as_u64().unwrap();
    let fixed = network["bytes_total"].as_u64().unwrap() - synapse_bytes;
    let host_memory = format!("{}B", fixed + synapse_bytes / 4);
    let spill_dir = dir.path().join("pages");
    let out = fum_ok(&["run", model.to_str().unwrap(), "--out", spilled.to_str().unwrap(), "--host-memory", &host_memory, "--spill-dir", spill_dir.to_str().unwrap()]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stderr.contains("the rest spilled to"), "the run says it spills: {stderr}");
    assert!(stdout.contains("host tier"), "the summary has the host tier: {stdout}");
    let host = &run_json(&spilled)["storage"]["host"];
    let budget = host["budget_bytes"].as_u64().unwrap();
    assert!(budget * 4 <= host["paged_bytes"].as_u64().unwrap() + 4096, "synapses need 4x the budget: {host}");
    assert!(host["peak_resident_bytes"].as_u64().unwrap() <= budget, "resident pages never exceeded the budget: {host}");
    assert!(host["faults"].as_u64().unwrap() > 0 && host["disk_bytes"].as_u64().unwrap() > 0, "{host}");
    assert!(host["stall_s"].as_f64().unwrap() > 0.0 && host["bytes_moved_per_s"].as_f64().unwrap() > 0.0, "{host}");
    assert_eq!(std::fs::read_dir(&spill_dir).unwrap().count(), 0, "spill files are unnamed: nothing is left behind");
    let populations = [("E", 0), ("I", 4000)];
    let spikes = common::spikes_h5(&all.join("spikes.h5"), &populations, 0.1);
    assert!(spikes.len() > 2000, "the network fires: {}", spikes.len());
    assert_eq!(common::spikes_h5(&spilled.join("spikes.h5"), &populations, 0.1), spikes, "the same spikes through disk pages");
}

/// Every section and the structure checksums of the checkpoint of `step` in `run`, but the run's
/// settings (which hold `--host-memory`).
fn checkpoint(run: &Path, step: u64) -> (Vec<Vec<u32>>, Vec<(String, Vec<u8>)>) {
    let path = run.join("checkpoints").join(format!("ckpt-{step:09}"));
    let c = fum::engine::checkpoint::Checkpoint::open(&path).unwrap();
    let sections = c.header.sections.iter().map(|s| (s.name.clone(), c.section(&s.name).unwrap())).collect();
    (c.header.structure.clone(), sections)
}

#[test]
fn a_paged_run_checkpoints_what_it_would_unpaged_and_resumes_to_the_same_spikes() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("balanced.toml");
    std::fs::write(&model, common::BALANCED.replace("duration_ms = 300.0", "duration_ms = 120.0")).unwrap();
    let (all, parts) = (dir.path().join("all"), dir.path().join("parts"));
    fum_ok(&["run", model.to_str().unwrap(), "--out", all.to_str().unwrap(), "--quiet", "--checkpoint-every", "20ms", "--keep-checkpoints", "10"]);
    let network = &run_json(&all)["network"];
    let host_memory = format!("{}B", network["bytes_total"].as_u64().unwrap() - 200_000);
    let args = ["run", model.to_str().unwrap(), "--out", parts.to_str().unwrap(), "--quiet", "--host-memory", &host_memory, "--checkpoint-every", "20ms", "--keep-checkpoints", "10", "--stop-after", "50ms"];
    fum_ok(&args);
    // Spilled pages are read where they are: the checkpoint is the unpaged run's, byte for byte.
    // (A periodic checkpoint may be superseded when the writer is busy: compare those both runs
    // have, step 0's always among them, taken with most pages spilled.)
    let steps = |run: &Path| fum::engine::checkpoint::list(&run.join("checkpoints")).into_iter().map(|p| fum::engine::checkpoint::Checkpoint::open(&p).unwrap().header.step).collect::<Vec<u64>>();
    let common_steps: Vec<u64> = steps(&parts).into_iter().filter(|s| steps(&all).contains(s)).collect();
    assert!(common_steps.contains(&0), "both runs checkpoint step 0: {common_steps:?}");
    for step in common_steps {
        assert_eq!(checkpoint(&parts, step), checkpoint(&all, step), "the checkpoint of step {step}");
    }
    fum_ok(&["resume", parts.to_str().unwrap(), "--quiet"]);
    let resumed = run_json(&parts);
    assert!(resumed["storage"]["host"]["faults"].as_u64().unwrap() > 0, "the resumed session pages too: {}", resumed["storage"]);
    let populations = [("E", 0), ("I", 800)];
    assert_eq!(common::spikes_h5(&parts.join("spikes.h5"), &populations, 0.1), common::spikes_h5(&all.join("spikes.h5"), &populations, 0.1));
}

#[test]
fn a_budget_below_the_fixed_state_is_refused_with_the_sizes() {
    let model = common::repo().join("assets/models/brunel.toml");
    let out = fum(&["run", model.to_str().unwrap(), "--duration", "1ms", "--host-memory", "1MB"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--host-memory 1.0 MB: the network needs") && stderr.contains("besides its pageable synapses") && stderr.contains("synapse pages at least"), "{stderr}");
    let out = fum(&["run", model.to_str().unwrap(), "--duration", "1ms", "--host-memory", "lots"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a size such as 8GB"));
}

#[test]
fn a_network_larger_than_its_host_memory_is_spilled_while_it_is_built() {
    // Brunel: 94 MB of synapses; 64 shards keep the blocks being built (and their drafts) small.
    let model = common::repo().join("assets/models/brunel.toml");
    let dir = tempfile::tempdir().unwrap();
    let (all, spilled) = (dir.path().join("all"), dir.path().join("spilled"));
    let run = |out: &Path, more: &[&str]| fum_ok(&[&["run", model.to_str().unwrap(), "--duration", "5ms", "--shards", "64", "--quiet", "--out", out.to_str().unwrap()], more].concat());
    run(&all, &[]);
    let whole = run_json(&all);
    let n = &whole["network"];
    let synapse_bytes = n["bytes_static_synapses"].as_u64().unwrap();
    let host_memory = format!("{}B", n["bytes_total"].as_u64().unwrap() - synapse_bytes + 16_000_000);
    run(&spilled, &["--host-memory", &host_memory]);
    let paged = run_json(&spilled);
    // The peak when built: later, the spill files' pages read through memory maps count in the
    // resident set too (page cache, ~35 MB here), and would blur what building held.
    let built = |run: &serde_json::Value| run["host_peak_rss_built_bytes"].as_u64().unwrap();
    let (rss_all, rss_paged) = (built(&whole), built(&paged));
    assert!(rss_paged + synapse_bytes / 2 < rss_all, "the synapses never sat whole in memory: peak {rss_paged} B paged against {rss_all} B with {synapse_bytes} B of synapses");
    assert_eq!(paged["spikes_total"], whole["spikes_total"]);
    let spikes = |run: &Path| common::spikes_h5(&run.join("spikes.h5"), &[("E", 0), ("I", 10000)], 0.1);
    assert_eq!(spikes(&spilled), spikes(&all));
}

#[test]
fn a_network_larger_than_its_host_memory_resumes_without_sitting_whole_in_memory() {
    // The balanced network at 10,000 neurons with 400 plastic E->E inputs a neuron: 26 MB of
    // plastic synapses (their weights are in the checkpoint) and 35 MB of static ones, in 64
    // shards (small blocks being built); 16 ms, stopped at 8 and resumed (at a quarter of its
    // synapses in memory, STDP faults most plastic pages in at every step: ~0.1 s a step).
    let text = common::BALANCED
        .replace("size = 800", "size = 8000")
        .replace("size = 200", "size = 2000")
        .replace("rule = { fixed_indegree = 80 }", "rule = { fixed_indegree = 400 }")
        .replace("duration_ms = 300.0", "duration_ms = 16.0");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.toml");
    std::fs::write(&model, text).unwrap();
    // A checkpoint at the end too (160 steps): the learned weights to compare.
    let run = |out: &Path, more: &[&str]| fum_ok(&[&["run", model.to_str().unwrap(), "--shards", "64", "--quiet", "--checkpoint-every", "16ms", "--out", out.to_str().unwrap()], more].concat());
    let (whole, unpaged, paged) = (dir.path().join("whole"), dir.path().join("unpaged"), dir.path().join("paged"));
    run(&whole, &[]);
    let n = &run_json(&whole)["network"];
    let synapse_bytes = n["bytes_static_synapses"].as_u64().unwrap() + n["bytes_plastic_synapses"].as_u64().unwrap();
    let host_memory = format!("{}B", n["bytes_total"].as_u64().unwrap() - synapse_bytes + synapse_bytes / 4);
    run(&unpaged, &["--stop-after", "8ms"]);
    run(&paged, &["--stop-after", "8ms", "--host-memory", &host_memory]);
    for out in [&unpaged, &paged] {
        fum_ok(&["resume", out.to_str().unwrap(), "--quiet"]);
    }
    // What the resumed sessions held when their first step began: built and restored.
    let built = |run: &Path| run_json(run)["host_peak_rss_built_bytes"].as_u64().unwrap();
    let (rss_unpaged, rss_paged) = (built(&unpaged), built(&paged));
    assert!(rss_paged + synapse_bytes / 2 < rss_unpaged, "the resumed network never sat whole in memory: peak {rss_paged} B paged against {rss_unpaged} B with {synapse_bytes} B of synapses");
    let host = &run_json(&paged)["storage"]["host"];
    assert!(host["faults"].as_u64().unwrap() > 0 && host["peak_resident_bytes"].as_u64().unwrap() <= host["budget_bytes"].as_u64().unwrap(), "{host}");
    let spikes = |run: &Path| common::spikes_h5(&run.join("spikes.h5"), &[("E", 0), ("I", 8000)], 0.1);
    assert!(spikes(&whole).len() > 300, "the network fires: {}", spikes(&whole).len());
    assert_eq!(spikes(&paged), spikes(&whole), "resumed through pages: the spikes of one run");
    assert_eq!(spikes(&unpaged), spikes(&whole));
    // The weights restored into spilled pages, learned on: every section of the last checkpoint.
    assert_eq!(checkpoint(&paged, 160), checkpoint(&whole, 160), "the state at the end");
}

#[test]
fn weight_probes_and_spikes_of_a_paged_plastic_network_are_the_unpaged_ones() {
    // stdp_balanced: 1.9 MB of synapses, six probed E->E weights (their pages stay resident).
    let model = common::repo().join("assets/models/stdp_balanced.toml");
    let dir = tempfile::tempdir().unwrap();
    let (all, paged) = (dir.path().join("all"), dir.path().join("paged"));
    let run = |out: &Path, more: &[&str]| fum_ok(&[&["run", model.to_str().unwrap(), "--duration", "200ms", "--quiet", "--out", out.to_str().unwrap()], more].concat());
    run(&all, &[]);
    let n = &run_json(&all)["network"];
    let synapse_bytes = n["bytes_static_synapses"].as_u64().unwrap() + n["bytes_plastic_synapses"].as_u64().unwrap();
    run(&paged, &["--host-memory", &format!("{}B", n["bytes_total"].as_u64().unwrap() - synapse_bytes + 700_000)]);
    assert!(run_json(&paged)["storage"]["host"]["faults"].as_u64().unwrap() > 0, "pages moved");
    for file in ["spikes.h5", "probes.h5"] {
        assert!(std::fs::read(all.join(file)).unwrap() == std::fs::read(paged.join(file)).unwrap(), "{file} differs");
    }
}

#[test]
fn four_byte_targets_page_too() {
    // One shard of 70,000 neurons stores 4-byte targets; its static blocks page.
    let model = common::parse(&common::wide());
    let mut reference = common::simulate(&model, 2, 1);
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, stats) = paged(&model, 2, 1, |pageable| pageable / 3, 4096, dir.path());
    assert!(stats.moved.faults > 0 && stats.moved.disk_bytes > 0, "{stats:?}");
    assert_eq!(common::spikes(&sim), common::spikes(&reference));
    assert_eq!(common::synapses(&mut sim), common::synapses(&mut reference));
}
