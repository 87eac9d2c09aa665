//! Structural plasticity (`[[structural]]`): a run with pruning and regrowth equals a
//! stop-the-world reference applying the same plans at the same steps, delivers through
//! exactly the synapses that exist, is the same for any thread or shard count, resumes from a
//! checkpoint taken across a commit or between snapshot and commit, and gives memory back.

mod common;
use common::*;

use fum::engine::checkpoint::{Checkpoint, Snapshot};
use fum::engine::components::{Clock, NeuronBlock, Shard, SpikeExchange, SynapseBlocks};
use fum::engine::structural::{BlockPlan, BlockSnapshot, Compaction, Structural, StructuralReport, apply_plan, plan_block};
use fum::{DefaultPlugins, Model, Simulation};
use fum_kernels::delivery::to_fixed;


/// Plans every 50 ms, committed 5 ms later: E->E loses its lowest-priority fifth and regrows to
/// 80 per neuron; I->E keeps its 20 strongest per target.
const STRUCTURAL: &str = r#"
[[structural]]
projection = "EE"
every_ms = 50.0
commit_after_ms = 5.0
prune = { lowest_priority_fraction = 0.2 }
regrow = { to_indegree = 80, weight = { uniform = [30.0, 50.0] } }

[[structural]]
projection = "IE"
every_ms = 30.0
commit_after_ms = 20.0
prune = { keep_strongest = 20 }
"#;

fn structural_model() -> Model {
    parse(&format!("{BALANCED}{STRUCTURAL}"))
}

fn report(sim: &Simulation) -> StructuralReport {
    sim.world.resource::<StructuralReport>().clone()
}

/// The same network stepped by hand without the structural plugin: at each snapshot step of a
/// schedule the plans of its sections are computed from the blocks and the spike counts
/// recorded since its last snapshot, and at its commit step they are applied, both between
/// steps with the world stopped.
fn stop_the_world(structural_model: &Model) -> Simulation {
    let rules = Structural::of(structural_model).unwrap();
    let plain = parse(BALANCED);
    let mut sim = Simulation::from_model(&plain, 1, 1).unwrap();
    sim.add_plugins(DefaultPlugins);
    let populations = sim.world.resource::<fum::engine::components::Populations>().0.clone();
    let neurons: u32 = populations.iter().map(|p| p.size).sum();
    let mut counts = vec![vec![0u32; neurons as usize]; rules.schedules.len()];
    let mut pending: Vec<Option<(u64, Vec<Option<BlockPlan>>)>> = vec![None; rules.schedules.len()];
    for step in 0..plain.steps() {
        for (g, schedule) in rules.schedules.iter().enumerate() {
            for phase in 0..2 {
                if let Some((_, plans)) = pending[g].take_if(|(at, _)| *at == step) {
                    let mut q = sim.world.query::<&mut SynapseBlocks>();
                    let mut blocks = q.single_mut(&mut sim.world).unwrap();
                    for (b, p) in blocks.0.iter_mut().zip(plans) {
                        if let Some(p) = p {
                            apply_plan(b, &p, &Compaction::of(&p, &b.row_ptr), &mut Vec::new());
                        }
                    }
                }
                if phase == 1 || !schedule.snapshot_at(step) {
                    break;
                }
                let interval_s = schedule.interval_s(rules.dt_ms);
                let mut q = sim.world.query::<(&Shard, &SynapseBlocks)>();
                let (shard, blocks) = q.single(&sim.world).unwrap();
                let plans = blocks
                    .0
                    .iter()
                    .map(|b| {
                        let rule = rules.rule_in(b.projection, g)?;
                        let tgt = &populations[rule.target];
                        let snap = BlockSnapshot::of(b, shard, tgt.first..tgt.first + tgt.size, tgt.first);
                        Some(plan_block(rule, rules.key, step / schedule.every_steps, &snap, &counts[g], interval_s, rules.dt_ms))
                    })
                    .collect();
                pending[g] = Some((step + schedule.commit_after_steps, plans));
                counts[g].fill(0);
            }
        }
        sim.step();
        for &id in &sim.world.resource::<SpikeExchange>().spikes {
            counts.iter_mut().for_each(|c| c[id as usize] += 1);
        }
    }
    sim
}

#[test]
fn a_structural_run_equals_the_stop_the_world_reference() {
    let model = structural_model();
    let mut run = simulate(&model, 1, 1);
    let r = report(&run);
    let (ee, ie) = (&r.0["EE"], &r.0["IE"]);
    assert_eq!(ee.commits.len(), 5, "plans at 50..250 ms, committed 5 ms later");
    assert_eq!(ee.commits[0].snapshot_step, 500);
    assert_eq!(ee.commits[0].step, 550);
    assert!(ee.pruned > 10_000 && ee.grown > 10_000 && ie.pruned > 1000, "{ee:?} {ie:?}");
    let mut reference = stop_the_world(&model);
    assert!(spikes(&run) == spikes(&reference), "spikes differ from the stop-the-world reference");
    assert!(synapses(&mut run) == synapses(&mut reference), "structure or weights differ from the stop-the-world reference");
    // And differ from a run without structural plasticity.
    assert!(spikes(&simulate(&parse(BALANCED), 1, 1)) != spikes(&run));
}

#[test]
fn the_same_for_any_thread_and_shard_count() {
    let model = structural_model();
    let mut reference = simulate(&model, 1, 1);
    let (spikes_ref, synapses_ref) = (spikes(&reference), synapses(&mut reference));
    for (threads, shards) in [(2, 1), (1, 3), (2, 3), (2, 8)] {
        let mut sim = simulate(&model, threads, shards);
        assert!(spikes(&sim) == spikes_ref, "spikes differ with {threads} threads and {shards} shards");
        assert!(synapses(&mut sim) == synapses_ref, "synapses differ with {threads} threads and {shards} shards");
        let (a, b) = (report(&sim), report(&reference));
        assert_eq!((a.0["EE"].pruned, a.0["EE"].grown), (b.0["EE"].pruned, b.0["EE"].grown));
    }
}

#[test]
fn checkpoints_across_a_commit_and_between_snapshot_and_commit_resume_identically() {
    let model = structural_model();
    let mut whole = simulate(&model, 2, 3);
    let (spikes_ref, synapses_ref) = (spikes(&whole), synapses(&mut whole));
    // 1200: after the first two commits; 1003 and 1050: a plan pending (snapshot at 1000,
    // commit at 1050, which a resume at 1050 applies first).
    for split in [1200, 1003, 1050] {
        let mut resumed = resumed_at(&model, split, 2, 3);
        assert!(spikes(&resumed) == spikes_ref, "spikes differ after a resume at step {split}");
        assert!(synapses(&mut resumed) == synapses_ref, "synapses differ after a resume at step {split}");
    }
}

/// A tiny network where the synapses that go are known: static all-to-all 8 -> 4 with weights
/// drawn in [0, 2], pruned below 1 at 20 ms, nothing regrown. Every step, the ring slot that
/// this step's spikes land in (delay 3 steps) must hold exactly the weights of the synapses
/// that exist then from the neurons that fired: none through a removed synapse, all through a
/// kept one.
#[test]
fn spikes_travel_through_exactly_the_synapses_that_exist() {
    let model = parse(
        r#"
[simulation]
dt_ms = 0.1
duration_ms = 60.0
seed = 5

[[populations]]
name = "P"
size = 8
model = "lif_cuba"
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 0.0
t_ref_ms = 0.0
tau_m_ms = 10.0
v_init_mv = { uniform = [0.0, 20.0] }

[[populations]]
name = "T"
size = 4
model = "lif_cuba"
v_th_mv = 1e9
v_reset_mv = 0.0
e_l_mv = 0.0

[[projections]]
name = "PT"
source = "P"
target = "T"
rule = "all_to_all"
weight = { uniform = [0.0, 2.0] }
delay_ms = 0.3

[[inputs]]
name = "drive"
kind = "dc"
target = "P"
amplitude_pa = 1000.0

[recording]
spikes = ["P"]

[[structural]]
projection = "PT"
every_ms = 20.0
commit_after_ms = 0.0
prune = { weight_below = 1.0 }
"#,
    );
    let mut sim = Simulation::from_model(&model, 1, 2).unwrap();
    sim.add_plugins(DefaultPlugins);
    // The built synapses (pre, post, weight); those below 1 go at step 200.
    let built: Vec<(u32, u32, f32)> = synapses(&mut sim).into_iter().map(|(_, pre, post, _, w)| (pre, post, f32::from_bits(w))).collect();
    assert_eq!(built.len(), 32);
    let (gone, kept) = (built.iter().filter(|s| s.2 < 1.0).count(), built.iter().filter(|s| s.2 >= 1.0).count());
    assert!(gone > 5 && kept > 5, "{gone} go, {kept} stay");
    let mut checked_after = 0;
    for _ in 0..model.steps() {
        sim.step();
        let step = sim.world.resource::<Clock>().step - 1;
        let fired = sim.world.resource::<SpikeExchange>().spikes.clone();
        let mut q = sim.world.query::<(&Shard, &NeuronBlock)>();
        for (shard, neurons) in q.iter(&sim.world) {
            let n = neurons.len();
            let slot = ((step + 3) as usize) % neurons.ring_slots;
            for global in shard.neurons.clone().filter(|&g| g >= 8) {
                let j = (global - shard.neurons.start) as usize;
                let expected: i64 = built
                    .iter()
                    .filter(|s| s.1 == global && fired.contains(&s.0) && (step < 200 || s.2 >= 1.0))
                    .map(|s| to_fixed(s.2))
                    .sum();
                assert_eq!(neurons.ring_ex[slot * n + j], expected, "step {step}, target {global}");
                if step >= 200 && expected != 0 {
                    checked_after += 1;
                }
            }
        }
    }
    assert!(checked_after > 50, "spikes must arrive after the commit: {checked_after}");
    let r = report(&sim);
    assert_eq!(r.0["PT"].pruned, gone as u64);
    assert_eq!(r.0["PT"].commits[0].step, 200);
}

/// Pruning half of a projection halves its bytes (targets and weights; row pointers stay).
#[test]
fn pruning_half_gives_half_the_bytes_back() {
    let model = parse(&format!(
        "{}{}",
        BALANCED.replace("duration_ms = 300.0", "duration_ms = 70.0"),
        r#"
[[structural]]
projection = "EE"
every_ms = 50.0
prune = { keep_strongest = 40 }
"#
    ));
    let sim = simulate(&model, 2, 2);
    let r = &report(&sim).0["EE"];
    assert_eq!(r.commits.len(), 1);
    assert_eq!(r.pruned, 800 * 40);
    let ratio = r.bytes_now as f64 / r.bytes_at_start as f64;
    assert!((0.45..0.56).contains(&ratio), "bytes {} -> {} ({ratio})", r.bytes_at_start, r.bytes_now);
}

/// A model whose `[[structural]]` section is `section`, parsed: the error, which must name the
/// file, the line of `at` (a line of the section) and the fragments.
#[track_caller]
fn expect_error(section: &str, at: &str, fragments: &[&str]) {
    let base = BALANCED.replace("rule = \"all_to_all\"", "rule = \"one_to_one\"").replace("name = \"II\"\nsource = \"I\"\ntarget = \"I\"", "name = \"II\"\nsource = \"I\"\ntarget = \"I\"\nallow_multapses = false");
    let text = format!("{base}\n[[structural]]\n{section}\n");
    let line = text.lines().position(|l| l.starts_with(at)).expect("the line is in the model") + 1;
    let err = Model::parse(&text, std::path::Path::new("bad.toml")).expect_err("the model is invalid").to_string();
    assert!(err.starts_with(&format!("bad.toml:{line}:")), "wrong location (line {line}) in: {err}");
    for f in fragments {
        assert!(err.contains(f), "\"{f}\" missing from: {err}");
    }
}

#[test]
fn invalid_structural_sections_are_refused_with_file_line_and_field() {
    expect_error("projection = \"XX\"\nevery_ms = 10.0\nprune = { weight_below = 1.0 }", "projection", &["structural[0].projection", "no projection named \"XX\"", "EE"]);
    expect_error("projection = \"EE\"\nevery_ms = -1.0\nprune = { weight_below = 1.0 }", "every_ms", &["structural[0].every_ms", "positive"]);
    expect_error("projection = \"EE\"\nevery_ms = 0.01\nprune = { weight_below = 1.0 }", "every_ms", &["shorter than one step"]);
    expect_error("projection = \"EE\"\nevery_ms = 10.0\ncommit_after_ms = 20.0\nprune = { weight_below = 1.0 }", "commit_after_ms", &["structural[0].commit_after_ms", "must not exceed every_ms"]);
    expect_error("projection = \"EE\"\nevery_ms = 10.0\nprune = { lowest_priority_fraction = 1.5 }", "prune", &["structural[0].prune.lowest_priority_fraction", "[0, 1]"]);
    expect_error("projection = \"EE\"\nevery_ms = 10.0\nprune = { weight_below = -1.0 }", "prune", &["structural[0].prune.weight_below", "negative"]);
    expect_error("projection = \"EE\"\nevery_ms = 10.0\nprune = { strongest = 3 }", "prune", &["unknown variant `strongest`"]);
    expect_error("projection = \"EE\"\nevery_ms = 10.0\nprune = { keep_strongest = 3 }\nregrow = { to_indegree = 3, wieght = 1.0 }", "regrow", &["wieght"]);
    expect_error("projection = \"II\"\nevery_ms = 10.0\nprune = { keep_strongest = 3 }\nregrow = { to_indegree = 3 }", "regrow", &["structural[0].regrow", "one_to_one"]);
    expect_error("projection = \"EE\"\nevery_ms = 10.0\nprune = { keep_strongest = 3 }\nregrow = { to_indegree = 3, weight = { uniform = [-2.0, 1.0] } }", "regrow", &["structural[0].regrow.weight", "magnitudes"]);
}

#[test]
fn one_section_per_projection_any_schedules_and_enough_distinct_sources() {
    let with = |sections: &str| Model::parse(&format!("{BALANCED}{sections}"), std::path::Path::new("m.toml")).map(|_| ()).map_err(|e| e.to_string());
    let twice = "\n[[structural]]\nprojection = \"EE\"\nevery_ms = 10.0\nprune = { keep_strongest = 3 }\n[[structural]]\nprojection = \"EE\"\nevery_ms = 10.0\nprune = { keep_strongest = 3 }\n";
    let err = with(twice).unwrap_err();
    assert!(err.contains("structural[1].projection") && err.contains("one per projection"), "{err}");
    let schedules = "\n[[structural]]\nprojection = \"EE\"\nevery_ms = 10.0\nprune = { keep_strongest = 3 }\n[[structural]]\nprojection = \"IE\"\nevery_ms = 20.0\nprune = { keep_strongest = 3 }\n";
    with(schedules).unwrap();
    let model = parse(&format!("{BALANCED}{schedules}"));
    assert_eq!(Structural::of(&model).unwrap().schedules.len(), 2, "sections with their own every_ms have their own schedules");
    let distinct = BALANCED.replace("rule = { fixed_indegree = 80 }", "rule = { fixed_indegree = 80 }\nallow_multapses = false");
    let err = Model::parse(&format!("{distinct}\n[[structural]]\nprojection = \"EE\"\nevery_ms = 10.0\nprune = {{ keep_strongest = 3 }}\nregrow = {{ to_indegree = 800 }}\n"), std::path::Path::new("m.toml")).unwrap_err().to_string();
    assert!(err.contains("structural[0].regrow.to_indegree") && err.contains("799 available"), "{err}");
}

/// A weight probe on a pruned and regrown projection follows the synapse from its pre to its
/// post neuron: every sample is that synapse's weight, NaN while no such synapse exists; the
/// samples are the same for any thread and shard count.
#[test]
fn weight_probes_follow_their_synapse_through_commits() {
    let probe = "\n[[recording.probes]]\nname = \"w\"\nvariable = \"weight\"\nprojection = \"EE\"\ncount = 60\n";
    let model = parse(&format!("{BALANCED}{probe}{STRUCTURAL}"));
    let samples = |sim: &Simulation| -> (Vec<[u32; 2]>, Vec<u32>) {
        let p = &sim.world.resource::<fum::engine::recording::Recorder>().probes[0];
        (p.labels.clone(), p.values.pending.iter().map(|v| v.to_bits()).collect())
    };
    let mut sim = simulate(&model, 1, 1);
    let (labels, values) = samples(&sim);
    let n = labels.len();
    assert_eq!(values.len(), n * model.steps() as usize, "a sample per step");
    // The last sample (after the last step's plasticity) is each pair's synapse in the final
    // network, or NaN if it has none.
    let last: Vec<f32> = values[values.len() - n..].iter().map(|&b| f32::from_bits(b)).collect();
    let synapses = synapses(&mut sim);
    let e = 0; // E is the first population: population-local ids are global ids.
    let mut gone = 0;
    for ([pre, post], w) in labels.iter().zip(&last) {
        // (Multapses are allowed: the probe follows the first of its row, one of these.)
        let weights: Vec<u32> = synapses.iter().filter(|s| s.0 == 0 && s.1 == pre + e && s.2 == post + e).map(|s| s.4).collect();
        if weights.is_empty() {
            assert!(w.is_nan(), "synapse {pre} -> {post} is gone: its last sample is NaN, not {w}");
            gone += 1;
        } else {
            assert!(weights.contains(&w.to_bits()), "synapse {pre} -> {post}: the last sample {w} is not its weight");
        }
    }
    assert!(gone > 0 && gone < n, "{gone} of {n} probed synapses pruned by the end: the test sees both");
    // Before the first commit (step 550) no sample is NaN; right after it, some are.
    let at = |step: usize| &values[step * n..(step + 1) * n];
    assert!(at(549).iter().all(|&b| !f32::from_bits(b).is_nan()));
    assert!(at(550).iter().any(|&b| f32::from_bits(b).is_nan()));
    for (threads, shards) in [(2, 3), (1, 8)] {
        assert!(samples(&simulate(&model, threads, shards)).1 == values, "weight samples differ with {threads} threads and {shards} shards");
    }
}

/// Regrowth respects allow_autapses and allow_multapses, and tops every target up to the
/// in-degree; the plan is a function of its inputs alone.
#[test]
fn regrowth_draws_distinct_sources_without_autapses() {
    let text = BALANCED.replace("rule = { fixed_indegree = 80 }", "rule = { fixed_indegree = 80 }\nallow_multapses = false");
    let model = parse(&format!("{text}\n[[structural]]\nprojection = \"EE\"\nevery_ms = 50.0\nprune = {{ keep_strongest = 10 }}\nregrow = {{ to_indegree = 300 }}\n"));
    let mut sim = simulate(&model, 2, 3);
    let r = &report(&sim).0["EE"];
    assert!(r.grown > 800 * 200, "{r:?}");
    let mut ee: Vec<(u32, u32)> = synapses(&mut sim).into_iter().filter(|s| s.0 == 0).map(|s| (s.2, s.1)).collect();
    let n = ee.len();
    ee.sort_unstable();
    ee.dedup();
    assert_eq!(ee.len(), n, "no multapse");
    assert!(ee.iter().all(|&(post, pre)| post != pre), "no autapse");
    for post in 0..800 {
        assert_eq!(ee.iter().filter(|s| s.0 == post).count(), 300, "target {post} topped up to 300");
    }
}

fn fum() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_fum"))
}

/// End to end through the CLI, with checkpoints written every 2 ms by the background writer
/// while plans (every 10 ms, committed 3 ms later) are computed and committed: runs stopped at
/// several points (a plan pending or not) and resumed give the uninterrupted run's spikes, and
/// run.json reports the commits; `--backend cuda` refuses the model.
#[test]
fn stop_and_resume_through_the_cli_around_commits() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.toml");
    let text = BALANCED.replace("duration_ms = 300.0", "duration_ms = 60.0");
    let sections = STRUCTURAL.replace("every_ms = 50.0", "every_ms = 10.0").replace("commit_after_ms = 5.0", "commit_after_ms = 3.0");
    std::fs::write(&model, format!("{text}{sections}")).unwrap();
    let run = |out: &std::path::Path, extra: &[&str]| {
        let o = fum().args(["run", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--quiet"]).args(extra).output().unwrap();
        assert!(o.status.success() || o.status.code() == Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let whole = dir.path().join("whole");
    run(&whole, &["--checkpoint-every", "2ms"]);
    let populations = [("E", 0), ("I", 800)];
    let expected = spikes_h5(&whole.join("spikes.h5"), &populations, 0.1);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(whole.join("run.json")).unwrap()).unwrap();
    let commits = report["structural"]["EE"]["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 5);
    assert_eq!((commits[0]["snapshot_step"].as_u64(), commits[0]["step"].as_u64()), (Some(100), Some(130)));
    for stop in ["11ms", "13ms", "25ms", "41ms"] {
        let out = dir.path().join(format!("stop-{stop}"));
        run(&out, &["--checkpoint-every", "2ms", "--stop-after", stop]);
        let o = fum().args(["resume", out.to_str().unwrap(), "--quiet"]).output().unwrap();
        assert!(o.status.success(), "resume after {stop}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(spikes_h5(&out.join("spikes.h5"), &populations, 0.1) == expected, "spikes differ after a stop at {stop}");
    }
}

/// Format version 4 adds only what structural plasticity needs: a version 3 checkpoint (a model
/// without `[[structural]]`) is read as is, an older one is refused with a message.
#[test]
fn version_3_checkpoints_are_read_and_older_ones_refused() {
    let model = parse(&BALANCED.replace("duration_ms = 300.0", "duration_ms = 20.0"));
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Simulation::from_model(&model, 1, 1).unwrap();
    sim.add_plugins(DefaultPlugins);
    sim.run(100, |_| {});
    let path = Snapshot::take(&mut sim.world, &model.source, model.hash(), serde_json::Value::Null).unwrap().write(dir.path(), 1).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    for (version, readable) in [(3u32, true), (2, false)] {
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        match Checkpoint::open(&path) {
            Ok(c) => {
                assert!(readable, "version {version} must be refused");
                let mut fresh = Simulation::from_model(&model, 1, 1).unwrap();
                c.restore(&mut fresh.world, model.hash()).unwrap();
            }
            Err(e) => {
                assert!(!readable, "version {version}: {e}");
                assert!(e.to_string().contains("format version 2"), "{e}");
            }
        }
    }
}

/// Many commits (a plan every 1 ms, committed 0.7 ms later) while the checkpoint writer saves
/// every 0.5 ms: every checkpoint the run left, taken at a snapshot step (phase 0) or with a
/// plan pending (phase 5), resumes to the uninterrupted run's spikes.
#[test]
fn checkpoints_racing_many_commits_all_resume_identically() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.toml");
    // Long enough that, however fast the machine runs the steps against the writer, more than
    // ten checkpoints outlive superseding (40 ms left 10 or fewer on a 2-core CI machine).
    let text = BALANCED.replace("duration_ms = 300.0", "duration_ms = 200.0");
    let sections = STRUCTURAL.replace("every_ms = 50.0", "every_ms = 1.0").replace("commit_after_ms = 5.0", "commit_after_ms = 0.7");
    std::fs::write(&model, format!("{text}{sections}")).unwrap();
    let whole = dir.path().join("whole");
    let o = fum()
        .args(["run", model.to_str().unwrap(), "--out", whole.to_str().unwrap(), "--threads", "2", "--shards", "3", "--quiet", "--checkpoint-every", "0.5ms", "--keep-checkpoints", "1000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let populations = [("E", 0), ("I", 800)];
    let expected = spikes_h5(&whole.join("spikes.h5"), &populations, 0.1);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(whole.join("run.json")).unwrap()).unwrap();
    assert_eq!(report["structural"]["EE"]["commits"].as_array().unwrap().len(), 199);
    let checkpoints = fum::engine::checkpoint::list(&whole.join("checkpoints"));
    // Checkpoints due while the writer is busy are superseded: those left fall at various
    // phases of the plan cycle (snapshot at steps 10k, commit at 10k + 7).
    assert!(checkpoints.len() > 10, "{} checkpoints", checkpoints.len());
    let mut phases = std::collections::BTreeSet::new();
    for (i, ckpt) in checkpoints.iter().enumerate() {
        let step: u64 = ckpt.file_name().unwrap().to_str().unwrap().trim_start_matches("ckpt-").parse().unwrap();
        phases.insert(step % 10);
        let copy = dir.path().join(format!("copy-{i}"));
        copy_dir(&whole, &copy);
        for newer in &checkpoints[..i] {
            std::fs::remove_file(copy.join("checkpoints").join(newer.file_name().unwrap())).unwrap();
        }
        let o = fum().args(["resume", copy.to_str().unwrap(), "--quiet"]).output().unwrap();
        assert!(o.status.success(), "resume from {}: {}", ckpt.display(), String::from_utf8_lossy(&o.stderr));
        assert!(spikes_h5(&copy.join("spikes.h5"), &populations, 0.1) == expected, "spikes differ after resuming from {}", ckpt.display());
    }
    assert!(phases.contains(&0) && phases.contains(&5), "checkpoints at phases {phases:?}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
