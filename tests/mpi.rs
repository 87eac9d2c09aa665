//! Runs of several processes (`mpirun -np N fum run`, cargo feature `mpi`, README "Several
//! processes"): the same spikes and probes as one process on 2 and 3 ranks (oversubscribed on CI's two
//! cores), with and without STDP, and with structural plasticity (also resumed with a plan
//! pending), with contiguous and METIS partitions, exchanging every step or (without
//! plasticity) once per epoch, with each rank's times (its wait for the slowest rank apart)
//! and spike bytes in run.json; METIS
//! keeps a clustered network's modules on their ranks, whose spikes then go only where they are
//! read (routed), STDP and structural plasticity included; a checkpoint of 3 ranks resumes on 2
//! (and on one process) identically; spike sources and a SONATA circuit give one process's
//! spikes too; what ranks cannot do yet is refused with a message; a signal stops every rank
//! after the same step, with the outputs; a killed rank ends the run, named.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;

use common::{probed_across, without_probes};

fn mpirun(np: usize, args: &[&str]) -> Command {
    common::mpirun(Path::new(env!("CARGO_BIN_EXE_fum")), np, args)
}

/// One multi-process test at a time: each starts up to three processes on CI's two cores, and
/// the signal tests time what they do.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits up to 60 s for `ready`.
fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let t = Instant::now();
    while !ready() {
        assert!(t.elapsed() < Duration::from_secs(60), "waited a minute for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The processes whose command line contains `pattern`, oldest first (from /proc: no procps
/// needed).
fn processes(pattern: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(pattern)))
        .collect();
    pids.sort_unstable();
    pids
}

/// Sends `signal` (a name: INT, KILL) to `pid` with the shell's kill.
fn signal(pid: u32, signal: &str) {
    assert!(Command::new("sh").args(["-c", &format!("kill -{signal} {pid}")]).status().unwrap().success(), "kill -{signal} {pid}");
}

fn ok(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `fum run MODEL` for `duration` on 4 shards of one thread, quietly, into `out`, then `extra`:
/// the same arguments for one process and for every rank count.
fn run_args(model: &str, duration: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    ["run", model, "--duration", duration, "--shards", "4", "--threads", "1", "--quiet", "--out", out.to_str().unwrap()].iter().chain(extra).map(|a| a.to_string()).collect()
}

fn run_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap()
}

#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the mpi feature and Open MPI (cargo test --features mpi; README: Several processes)")]
fn two_and_three_ranks_give_the_spikes_and_probes_of_one_process() {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir().unwrap();
    // Brunel (static, 12,500 neurons) and the balanced network with STDP on E->E, with their
    // probes (membranes, learning weights) and one of neurons in the last shards; and that
    // network with delays of 1.5 ms (whose STDP runs in epochs cut short where the weights
    // are probed, every 10 steps) and NEST's dendritic timing.
    let asset = |name: &str| std::fs::read_to_string(format!("assets/models/{name}.toml")).unwrap();
    let slow = asset("stdp_balanced").replace("delay_ms = 0.1", "delay_ms = 1.5").replace("pairing = \"all_to_all\"", "pairing = \"all_to_all\"\ndendritic_delay = true");
    for (name, text, i_neurons) in [("brunel", asset("brunel"), 2500), ("stdp_balanced", asset("stdp_balanced"), 800), ("stdp_slow", slow, 800)] {
        let model = probed_across(name, &text, dir.path(), i_neurons);
        let model = model.to_str().unwrap();
        let args = |out: &Path| run_args(model, "100ms", out, &[]);
        let one = dir.path().join(format!("{name}-1"));
        ok(Command::new(env!("CARGO_BIN_EXE_fum")).args(args(&one)).output().unwrap(), "one process");
        let reference = run_json(&one);
        assert!(reference["spikes_total"].as_u64().unwrap() > 1000, "{name} is active: {}", reference["spikes_total"]);
        for (np, partition) in [(2, "contiguous"), (3, "contiguous"), (2, "metis"), (3, "metis")] {
            let out = dir.path().join(format!("{name}-{np}-{partition}"));
            ok(mpirun(np, &[]).args(args(&out)).args(["--time-stages", "--partition", partition]).output().unwrap(), &format!("{name} on {np} ranks, {partition}"));
            assert_eq!(std::fs::read(one.join("spikes.h5")).unwrap(), std::fs::read(out.join("spikes.h5")).unwrap(), "{name}: spikes differ on {np} ranks, {partition}");
            assert_eq!(std::fs::read(one.join("probes.h5")).unwrap(), std::fs::read(out.join("probes.h5")).unwrap(), "{name}: probes differ on {np} ranks, {partition}");
            let report = run_json(&out);
            assert_eq!(report["partition"]["method"], partition);
            // 1.5 ms delays: epochs of 7 steps, each exchanged beside the next; 0.1 ms: every step.
            assert_eq!(report["partition"]["exchange_every_steps"], if name == "stdp_balanced" { 1 } else { 7 });
            assert_eq!(report["ranks"], np, "{name}: run.json counts the ranks");
            for key in ["neurons", "synapses", "plastic_synapses", "shards"] {
                assert_eq!(report["network"][key], reference["network"][key], "{name} on {np} ranks: network.{key} sums the ranks'");
            }
            assert_eq!(report["synaptic_events"], reference["synaptic_events"]);
            // How the shards were split: every synapse on one rank, some of them local.
            let partition = &report["partition"];
            let parts = partition["ranks"].as_array().expect("partition.ranks");
            assert_eq!(parts.len(), np);
            assert_eq!(parts.iter().map(|r| r["synapses"].as_u64().unwrap()).sum::<u64>(), reference["network"]["synapses"].as_u64().unwrap());
            let (locality, imbalance) = (partition["locality"].as_f64().unwrap(), partition["imbalance"].as_f64().unwrap());
            assert!(locality > 0.0 && locality < 1.0 && (1.0..=2.0).contains(&imbalance), "{partition}");
            // Each rank's times, the exchange among its stages.
            let ranks = report["timing"]["ranks"].as_array().expect("timing.ranks");
            assert_eq!(ranks.len(), np);
            assert!(ranks.iter().all(|r| r["simulate_s"].as_f64() > Some(0.0) && r["stages_s"]["exchange"].as_f64() > Some(0.0)), "{ranks:?}");
            // Of the exchange, the wait for the slowest rank (a barrier before each collective).
            assert!(ranks.iter().all(|r| (0.0..=r["stages_s"]["exchange"].as_f64().unwrap()).contains(&r["exchange_wait_s"].as_f64().unwrap())), "{ranks:?}");
            assert!(ranks.iter().all(|r| r["spike_bytes_sent"].as_u64() > Some(0)), "{ranks:?}");
            // Only rank 0 writes.
            let mut written: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            written.sort();
            assert_eq!(written, ["probes.h5", "run.json", "spikes.h5"]);
        }
    }
}

/// Spike sources (a SONATA spikes file and listed times, STDP from them), and the SONATA
/// circuit exported from the static variant (virtual nodes fed by the simulation config's
/// spike input): on 2 and 3 ranks the spikes of one process.
#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the mpi feature and Open MPI (cargo test --features mpi; README: Several processes)")]
fn spike_sources_and_sonata_circuits_on_ranks_give_the_spikes_of_one_process() {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir().unwrap();
    let plastic = common::write_spike_sources(dir.path());
    let static_model = dir.path().join("static.toml");
    std::fs::write(&static_model, common::SPIKE_SOURCES.replace("plasticity = \"stdp\"\n", "")).unwrap();
    let circuit = dir.path().join("circuit");
    ok(Command::new(env!("CARGO_BIN_EXE_fum")).arg("export").arg(&static_model).arg("--sonata").arg(&circuit).output().unwrap(), "export");
    let config = circuit.join("simulation_config.json");
    for (name, input) in [("spike sources", vec![plastic.to_str().unwrap()]), ("SONATA circuit", vec!["--sonata", config.to_str().unwrap()])] {
        let args = |out: &Path| -> Vec<String> {
            let mut args = run_args(input[0], "200ms", out, &[]);
            args.splice(1..2, input.iter().map(|a| a.to_string()));
            args
        };
        let one = dir.path().join(format!("{name}-1"));
        ok(Command::new(env!("CARGO_BIN_EXE_fum")).args(args(&one)).output().unwrap(), &format!("{name}, one process"));
        assert!(run_json(&one)["spikes_total"].as_u64().unwrap() > 500, "{name}: the network fires");
        for (np, partition) in [(2, "contiguous"), (3, "metis")] {
            let out = dir.path().join(format!("{name}-{np}"));
            ok(mpirun(np, &[]).args(args(&out)).args(["--partition", partition]).output().unwrap(), &format!("{name} on {np} ranks"));
            assert_eq!(std::fs::read(one.join("spikes.h5")).unwrap(), std::fs::read(out.join("spikes.h5")).unwrap(), "{name}: spikes differ on {np} ranks, {partition}");
        }
    }
}

/// The plastic weights of the newest checkpoint in `run`, section by section.
fn weights(run: &Path) -> Vec<(String, Vec<u8>)> {
    let newest = fum::engine::checkpoint::list(&run.join("checkpoints")).into_iter().next().expect("a checkpoint");
    let ckpt = fum::engine::checkpoint::Checkpoint::open(&newest).unwrap();
    ckpt.header.sections.iter().filter(|s| s.name.ends_with("/weight")).map(|s| (s.name.clone(), ckpt.section(&s.name).unwrap())).collect()
}

/// Rank 0 gathers every rank's shards into one checkpoint, the format of one process's: one of
/// 3 ranks (stopped half-way) resumes on 2 to the spikes and learned weights of one process
/// that ran through, and one process resumes it too. Brunel exchanges in epochs of 7 steps:
/// checkpoints every 500 steps and the stop at step 1000 end epochs early.
#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the mpi feature and Open MPI (cargo test --features mpi; README: Several processes)")]
fn a_checkpoint_of_three_ranks_resumes_on_two_and_on_one() {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir().unwrap();
    for name in ["stdp_balanced", "brunel"] {
        let model = without_probes(name, dir.path());
        let model = model.to_str().unwrap();
        let run = |out: &Path, extra: &[&str]| run_args(model, "200ms", out, extra);
        let one = dir.path().join(format!("{name}-one"));
        ok(Command::new(env!("CARGO_BIN_EXE_fum")).args(run(&one, &["--checkpoint-every", "200ms"])).output().unwrap(), "one process");
        // METIS's shards on 3 ranks, the contiguous ranges of 2 after.
        let parts = dir.path().join(format!("{name}-parts"));
        ok(mpirun(3, &[]).args(run(&parts, &["--checkpoint-every", "50ms", "--stop-after", "100ms", "--partition", "metis"])).output().unwrap(), "3 ranks, stopped at 100 ms");
        assert!(!parts.join("spikes.h5").exists(), "a stopped run writes its outputs when it ends");
        let again = dir.path().join(format!("{name}-again"));
        copy_dir(&parts, &again);
        ok(mpirun(2, &["resume", parts.to_str().unwrap(), "--threads", "1", "--quiet"]).output().unwrap(), "resumed on 2 ranks");
        ok(Command::new(env!("CARGO_BIN_EXE_fum")).args(["resume", again.to_str().unwrap(), "--quiet"]).output().unwrap(), "resumed by one process");
        for resumed in [&parts, &again] {
            assert_eq!(std::fs::read(one.join("spikes.h5")).unwrap(), std::fs::read(resumed.join("spikes.h5")).unwrap(), "{}: spikes differ", resumed.display());
            assert_eq!(weights(&one), weights(resumed), "{}: learned weights differ", resumed.display());
        }
    }
}

/// Synapses pruned and grown per projection and per commit, from run.json's `structural`.
fn rewired(report: &serde_json::Value) -> Vec<(String, u64, u64, Vec<(u64, u64)>)> {
    let projections = report["structural"].as_object().expect("run.json has structural");
    projections
        .iter()
        .map(|(name, p)| {
            let commits = p["commits"].as_array().unwrap().iter().map(|c| (c["pruned"].as_u64().unwrap(), c["grown"].as_u64().unwrap())).collect();
            (name.clone(), p["pruned"].as_u64().unwrap(), p["grown"].as_u64().unwrap(), commits)
        })
        .collect()
}

/// Structural plasticity across ranks: each rank plans and commits its own shards at the
/// model's steps, from every neuron's spike counts (gathered at the snapshot), so 2 and 3 ranks
/// prune and regrow what one process does, to the same spikes, probes (weights probed on every
/// rank's shards through the commits) and learned weights; a
/// checkpoint of 3 ranks taken with a plan pending (after its snapshot at 500 ms, before its
/// commit at 750 ms) resumes on 2 to them too.
#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the mpi feature and Open MPI (cargo test --features mpi; README: Several processes)")]
fn structural_plasticity_across_ranks_commits_what_one_process_does() {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir().unwrap();
    // Its membrane probes, one of I neurons on the last ranks, and the weights of E->E synapses
    // into each of the four shards (they exist for the model's seed; pruned, they read NaN).
    let asset = std::fs::read_to_string("assets/models/stdp_structural.toml").unwrap();
    let weights_probe = "\n[[recording.probes]]\nname = \"w\"\nvariable = \"weight\"\nprojection = \"E_to_E\"\nsynapses = [[3, 1700], [69, 2500], [76, 3199], [116, 3199]]\ninterval_ms = 1.0\n";
    let model = probed_across("stdp_structural", &(asset + weights_probe), dir.path(), 800);
    let model = model.to_str().unwrap();
    let run = |out: &Path, extra: &[&str]| run_args(model, "800ms", out, extra);
    let one = dir.path().join("one");
    ok(Command::new(env!("CARGO_BIN_EXE_fum")).args(run(&one, &["--checkpoint-every", "800ms"])).output().unwrap(), "one process");
    let reference = rewired(&run_json(&one));
    assert!(reference.iter().any(|(_, pruned, grown, commits)| *pruned > 0 && *grown > 0 && !commits.is_empty()), "a commit pruned and regrew: {reference:?}");
    for (np, partition) in [(2, "contiguous"), (3, "contiguous"), (3, "metis")] {
        let out = dir.path().join(format!("ranks-{np}-{partition}"));
        ok(mpirun(np, &[]).args(run(&out, &["--checkpoint-every", "800ms", "--partition", partition])).output().unwrap(), &format!("{np} ranks, {partition}"));
        assert_eq!(rewired(&run_json(&out)), reference, "{np} ranks, {partition}: synapses pruned and grown (summed over the ranks)");
        assert!(std::fs::read(one.join("spikes.h5")).unwrap() == std::fs::read(out.join("spikes.h5")).unwrap(), "{np} ranks, {partition}: spikes differ");
        assert!(std::fs::read(one.join("probes.h5")).unwrap() == std::fs::read(out.join("probes.h5")).unwrap(), "{np} ranks, {partition}: probes differ");
        assert_eq!(weights(&one), weights(&out), "{np} ranks, {partition}: learned weights differ");
    }
    let parts = dir.path().join("parts");
    ok(mpirun(3, &[]).args(run(&parts, &["--checkpoint-every", "200ms", "--stop-after", "650ms"])).output().unwrap(), "3 ranks, stopped with a plan pending");
    ok(mpirun(2, &["resume", parts.to_str().unwrap(), "--threads", "1", "--quiet"]).output().unwrap(), "resumed on 2 ranks");
    assert!(std::fs::read(one.join("spikes.h5")).unwrap() == std::fs::read(parts.join("spikes.h5")).unwrap(), "resumed with a plan pending: spikes differ");
    assert!(std::fs::read(one.join("probes.h5")).unwrap() == std::fs::read(parts.join("probes.h5")).unwrap(), "resumed with a plan pending: probes differ");
    assert_eq!(weights(&one), weights(&parts), "resumed with a plan pending: learned weights differ");
}

/// The clustered model (six modules whose E populations come first in id order): METIS puts
/// each module's shards on one rank, so more than 95 % of the synapses have their source on
/// their target's rank, against about half for contiguous ranges; the spikes are one process's
/// either way.
#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the mpi feature and Open MPI (cargo test --features mpi; README: Several processes)")]
fn metis_keeps_the_modules_of_a_clustered_network_on_their_ranks() {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = "assets/models/clustered.toml";
    let args = |out: &Path, partition: &str| ["run", model, "--duration", "100ms", "--threads", "1", "--quiet", "--partition", partition, "--out", out.to_str().unwrap()].map(String::from);
    let one = dir.path().join("one");
    ok(Command::new(env!("CARGO_BIN_EXE_fum")).args(args(&one, "contiguous")).output().unwrap(), "one process");
    assert!(run_json(&one)["spikes_total"].as_u64().unwrap() > 1000, "the modules are active");
    for np in [2, 3] {
        let mut locality = Vec::new();
        for partition in ["contiguous", "metis"] {
            let out = dir.path().join(format!("{np}-{partition}"));
            ok(mpirun(np, &[]).args(args(&out, partition)).output().unwrap(), &format!("{np} ranks, {partition}"));
            assert_eq!(std::fs::read(one.join("spikes.h5")).unwrap(), std::fs::read(out.join("spikes.h5")).unwrap(), "{np} ranks, {partition}: spikes differ");
            let report = &run_json(&out)["partition"];
            assert!(report["imbalance"].as_f64().unwrap() < 1.05, "{np} ranks, {partition}: balanced: {report}");
            locality.push(report["locality"].as_f64().unwrap());
        }
        assert!(locality[1] > 0.95 && locality[0] < 0.8, "{np} ranks: locality contiguous {}, metis {}", locality[0], locality[1]);
    }
}

/// The clustered model with STDP inside module 1 and on the ring's link from module 5 into
/// module 0, and structural plasticity inside module 1, in `dir`.
fn clustered_plastic(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string("assets/models/clustered.toml").unwrap();
    let text = ["E1_to_E1", "E5_to_E0"].iter().fold(text, |t, name| t.replace(&format!("name = \"{name}\"\n"), &format!("name = \"{name}\"\nplasticity = \"stdp\"\n")));
    let extra = "\n[[plasticity]]\nname = \"stdp\"\ntau_plus_ms = 20.0\ntau_minus_ms = 20.0\na_plus = 0.01\na_minus = 0.0105\nw_min = 0.0\nw_max = 600.0\n\n\
                 [[structural]]\nprojection = \"E1_to_E1\"\nevery_ms = 100.0\ncommit_after_ms = 50.0\nprune = { lowest_priority_fraction = 0.05 }\nregrow = { to_indegree = 160, weight = 300.0 }\n";
    let path = dir.join("clustered_plastic.toml");
    std::fs::write(&path, text + extra).unwrap();
    path
}

/// Routed exchange (each spike only to the ranks that read it, and to rank 0): on the clustered
/// network split by METIS the ranks exchange less than with contiguous ranges, and, with STDP
/// (whose sources go whole to every rank that learns from them) and structural plasticity
/// (which may grow a synapse from any source), 2 and 3 ranks learn, rewire and fire what one
/// process does; a checkpoint of 3 routed ranks resumes on 2 alike.
#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the mpi feature and Open MPI (cargo test --features mpi; README: Several processes)")]
fn routed_exchange_sends_less_and_learns_and_rewires_what_one_process_does() {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir().unwrap();
    let bytes = |report: &serde_json::Value| -> u64 { report["timing"]["ranks"].as_array().unwrap().iter().map(|r| r["spike_bytes_received"].as_u64().unwrap()).sum() };
    // The static model, in epochs: METIS routes; the bytes received fall against contiguous.
    let model = "assets/models/clustered.toml";
    for np in [2, 3] {
        let mut received = Vec::new();
        for partition in ["contiguous", "metis"] {
            let out = dir.path().join(format!("static-{np}-{partition}"));
            ok(mpirun(np, &[]).args(["run", model, "--duration", "50ms", "--threads", "1", "--quiet", "--partition", partition, "--out", out.to_str().unwrap()]).output().unwrap(), "static");
            let report = run_json(&out);
            received.push(bytes(&report));
            if partition == "metis" {
                assert_eq!(report["partition"]["exchange"], "routed", "{np} ranks: {}", report["partition"]);
                assert!(report["partition"]["routed_fraction"].as_f64().unwrap() < 0.7, "{}", report["partition"]);
            }
        }
        assert!(received[1] * 10 < received[0] * 8, "{np} ranks: bytes received, contiguous {} against metis {}", received[0], received[1]);
    }
    // STDP and structural plasticity, in epochs of 7 steps.
    let model = clustered_plastic(dir.path());
    let model = model.to_str().unwrap();
    let run = |out: &Path, extra: &[&str]| ["run", model, "--duration", "300ms", "--threads", "1", "--quiet", "--checkpoint-every", "100ms", "--out", out.to_str().unwrap()].iter().chain(extra).map(|a| a.to_string()).collect::<Vec<_>>();
    let one = dir.path().join("one");
    ok(Command::new(env!("CARGO_BIN_EXE_fum")).args(run(&one, &[])).output().unwrap(), "one process");
    let reference = run_json(&one);
    assert!(rewired(&reference).iter().any(|(_, pruned, grown, _)| *pruned > 0 && *grown > 0), "a commit pruned and regrew");
    for np in [2, 3] {
        let out = dir.path().join(format!("plastic-{np}"));
        ok(mpirun(np, &[]).args(run(&out, &["--partition", "metis"])).output().unwrap(), &format!("{np} ranks"));
        let report = run_json(&out);
        assert_eq!((&report["partition"]["exchange"], &report["partition"]["exchange_every_steps"]), (&"routed".into(), &7.into()), "{np} ranks");
        assert_eq!(std::fs::read(one.join("spikes.h5")).unwrap(), std::fs::read(out.join("spikes.h5")).unwrap(), "{np} ranks: spikes differ");
        assert_eq!(weights(&one), weights(&out), "{np} ranks: learned weights differ");
        assert_eq!(rewired(&report), rewired(&reference), "{np} ranks: synapses pruned and grown");
    }
    let parts = dir.path().join("parts");
    ok(mpirun(3, &[]).args(run(&parts, &["--partition", "metis", "--stop-after", "150ms"])).output().unwrap(), "3 ranks, stopped");
    ok(mpirun(2, &["resume", parts.to_str().unwrap(), "--threads", "1", "--quiet"]).output().unwrap(), "resumed on 2 ranks");
    assert_eq!(std::fs::read(one.join("spikes.h5")).unwrap(), std::fs::read(parts.join("spikes.h5")).unwrap(), "resumed: spikes differ");
    assert_eq!(weights(&one), weights(&parts), "resumed: learned weights differ");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() { copy_dir(&entry.path(), &target) } else { std::fs::copy(entry.path(), target).map(|_| ()).unwrap() }
    }
}

#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the mpi feature and Open MPI (cargo test --features mpi; README: Several processes)")]
fn what_ranks_cannot_do_yet_is_refused_by_rank_0() {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir().unwrap();
    let plain = without_probes("brunel", dir.path());
    let plain = plain.to_str().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    for (args, says) in [
        (vec!["run", plain, "--backend", "auto", "--out", out], "--backend auto"),
        (vec!["run", plain, "--host-memory", "1GB", "--out", out], "--host-memory"),
        (vec!["run", plain, "--backend", "cuda", "--partition", "metis", "--out", out], "--partition metis on GPUs"),
    ] {
        let result = mpirun(2, &args).output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{args:?} must fail");
        assert!(stderr.contains(says) && stderr.contains("not supported yet in a run of several processes"), "{args:?}: {stderr}");
        assert_eq!(stderr.matches("error:").count(), 1, "rank 0 alone says it: {stderr}");
    }
}

#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the mpi feature and Open MPI (cargo test --features mpi; README: Several processes)")]
fn a_signal_stops_every_rank_after_the_same_step_and_a_killed_rank_ends_the_run() {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = without_probes("brunel", dir.path());
    let model = model.to_str().unwrap();
    // SIGINT to mpirun reaches every rank; they agree in the next exchange and stop together,
    // and rank 0 writes the outputs so far.
    let out = dir.path().join("signalled");
    let mut run = mpirun(2, &["run", model, "--duration", "100s", "--threads", "1", "--quiet", "--out", out.to_str().unwrap()]).spawn().unwrap();
    // mpirun and both ranks, and rank 0's output folder: the ranks' signal handlers are in
    // place (they are set before the folder is made).
    let pattern = format!("--out {}", out.display());
    wait_for("the ranks to start", || processes(&pattern).len() >= 3 && out.exists());
    std::thread::sleep(Duration::from_secs(1));
    signal(run.id(), "INT");
    run.wait().unwrap();
    let report = run_json(&out);
    assert_eq!(report["outcome"], "interrupted", "{report}");
    assert!(report["end_step"].as_u64() > Some(0));
    // SIGKILL to one rank: mpirun ends the others and names it.
    let out = dir.path().join("killed");
    let run = mpirun(2, &["run", model, "--duration", "100s", "--threads", "1", "--quiet", "--out", out.to_str().unwrap()]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pattern = format!("run {model} --duration 100s --threads 1 --quiet --out {}", out.display());
    wait_for("the ranks to start", || processes(&pattern).len() >= 3 && out.exists());
    std::thread::sleep(Duration::from_secs(1));
    // The newest of mpirun and its two ranks is a rank.
    signal(*processes(&pattern).last().expect("the ranks"), "KILL");
    let t = Instant::now();
    let result = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(t.elapsed() < Duration::from_secs(10), "the run ended {:?} after the kill", t.elapsed());
    assert!(!result.status.success());
    assert!(stderr.contains("rank") && stderr.contains("signal 9"), "mpirun names the killed rank: {stderr}");
}
