//! Spike sources (`model = "spike_source"`): neurons that fire at listed times, from the model
//! file or a spikes file (SONATA HDF5 or CSV). They fire at exactly their listed steps, drive
//! their targets step-exactly, give the same spikes for any thread or shard count and after a
//! resume, and mistakes name the file, line and field.

mod common;

use std::path::Path;

use fum::Model;

/// Each source drives one `lif_cuba` neuron at rest, with a weight that takes it over threshold
/// in one step: the synaptic current jumps at the end of the step the spike arrives in
/// (spike step + delay), the membrane integrates it in the next step (25 mV) and fires; the
/// current (tau 0.1 ms) has gone (e^-10) when the refractory period (1 ms) ends.
const ONE_TO_ONE: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 20.0

[[populations]]
name = "src"
size = 3
model = "spike_source"
spike_times_ms = [[1.0, 5.0], [], [2.35, 0.3]]

[[populations]]
name = "T"
size = 3
model = "lif_cuba"
tau_syn_ex_ms = 0.1
t_ref_ms = 1.0

[[projections]]
name = "drive"
source = "src"
target = "T"
rule = "one_to_one"
weight = 100000.0
delay_ms = 1.5

[recording]
spikes = ["src", "T"]
"#;

fn parse_at(text: &str, dir: &Path) -> Result<Model, String> {
    Model::parse(text, &dir.join("model.toml")).map_err(|e| e.to_string())
}

/// (population, step, neuron) of every recorded spike, sorted.
fn sorted_spikes(sim: &fum::Simulation) -> Vec<(usize, u32, u32)> {
    let mut s = common::spikes(sim);
    s.sort_unstable();
    s
}

#[test]
fn listed_spikes_fire_at_their_steps_and_drive_their_targets_step_exactly() {
    let model = common::parse(ONE_TO_ONE);
    let sim = common::simulate(&model, 1, 1);
    // 0.3 ms is step 3 (0.3 / 0.1 is 2.9999999999999996 in f64: the grid is in NEST's tics);
    // 2.35 ms lies between steps 23 and 24 and fires at 24, as NEST rounds an off-grid time up.
    let sources = [(3, 2), (10, 0), (24, 2), (50, 0)];
    let delay = 15;
    let mut expected: Vec<(usize, u32, u32)> = sources.iter().map(|&(s, n)| (0, s, n)).collect();
    expected.extend(sources.iter().map(|&(s, n)| (1, s + delay + 1, n)));
    expected.sort_unstable();
    assert_eq!(sorted_spikes(&sim), expected);
}

#[test]
fn spikes_files_in_hdf5_and_csv_give_the_spikes_listed_in_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, times) = common::listed_spikes(6, 4, 20.0);
    common::write_spikes_h5(&dir.path().join("s.h5"), "src", &ids, &times);
    let csv: String = ids.iter().zip(&times).rev().map(|(n, t)| format!("{t} src {n}\n")).collect();
    std::fs::write(dir.path().join("s.csv"), format!("timestamps population node_ids\n{csv}")).unwrap();
    let mut lists = vec![Vec::new(); 6];
    for (&n, &t) in ids.iter().zip(&times) {
        lists[n as usize].push(format!("{t:?}"));
    }
    let inline = lists.iter().map(|l| format!("[{}]", l.join(", "))).collect::<Vec<_>>().join(", ");
    let with = |source: &str| ONE_TO_ONE.replace("size = 3", "size = 6").replace("spike_times_ms = [[1.0, 5.0], [], [2.35, 0.3]]", source);
    let listed = common::simulate(&parse_at(&with(&format!("spike_times_ms = [{inline}]")), dir.path()).unwrap(), 1, 1);
    let spikes = sorted_spikes(&listed);
    assert!(spikes.iter().filter(|s| s.0 == 0).count() >= 20, "the sources fire: {spikes:?}");
    assert!(spikes.iter().filter(|s| s.0 == 1).count() >= 10, "their targets fire: {spikes:?}");
    for source in ["spikes = \"s.h5\"", "spikes = \"s.h5\"\nspikes_population = \"src\"", "spikes = \"s.csv\""] {
        let model = parse_at(&with(source), dir.path()).unwrap();
        assert_eq!(sorted_spikes(&common::simulate(&model, 1, 1)), spikes, "{source}");
    }
}

#[test]
fn the_same_spikes_for_any_thread_or_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::load(common::write_spike_sources(dir.path())).unwrap();
    let reference = common::spikes(&common::simulate(&model, 1, 1));
    let per_population = |p: usize| reference.iter().filter(|s| s.0 == p).count();
    // Every listed spike fires, at the 0.1 ms step at or after its time (in hundredths of a
    // ms), but those after 299.9 ms, whose step 3000 lies past the run's last.
    let (ids, times) = common::listed_spikes(100, 20, 300.0);
    let steps: std::collections::HashSet<(u64, u64)> = ids.iter().zip(&times).map(|(&n, &t)| (n, ((t * 100.0).round() as u64).div_ceil(10))).collect();
    assert_eq!(per_population(0), steps.iter().filter(|s| s.1 < 3000).count());
    assert!(per_population(0) < ids.len());
    assert_eq!(per_population(1), 3);
    assert!(per_population(2) > 1000 && per_population(3) > 200, "E and I fire: {} and {}", per_population(2), per_population(3));
    for (threads, shards) in [(2, 3), (2, 7), (1, 16)] {
        assert_eq!(common::spikes(&common::simulate(&model, threads, shards)), reference, "{threads} threads, {shards} shards");
    }
}

#[test]
fn a_resumed_run_gives_the_spikes_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::write_spike_sources(dir.path());
    let fum = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).args(args).output().unwrap();
        assert!(out.status.success(), "fum {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (whole, part) = (dir.path().join("whole"), dir.path().join("part"));
    let model = model.to_str().unwrap();
    fum(&["run", model, "--out", whole.to_str().unwrap(), "--quiet"]);
    fum(&["run", model, "--out", part.to_str().unwrap(), "--quiet", "--checkpoint-every", "100ms", "--stop-after", "150ms", "--shards", "3"]);
    fum(&["resume", part.to_str().unwrap(), "--quiet"]);
    let pops = [("LGN", 0), ("cue", 100), ("E", 102), ("I", 502)];
    let spikes = common::spikes_h5(&whole.join("spikes.h5"), &pops, 0.1);
    assert!(spikes.iter().any(|&(step, id)| step > 2000 && id < 100), "LGN fires after the stop");
    assert_eq!(spikes, common::spikes_h5(&part.join("spikes.h5"), &pops, 0.1));
    // A changed spikes file is another model: its checkpoint is not resumed.
    let (ids, times) = common::listed_spikes(100, 21, 300.0);
    common::write_spikes_h5(&dir.path().join("lgn.h5"), "lgn", &ids, &times);
    let again = dir.path().join("again");
    fum(&["run", model, "--out", again.to_str().unwrap(), "--quiet", "--checkpoint-every", "100ms", "--stop-after", "150ms"]);
    common::write_spikes_h5(&dir.path().join("lgn.h5"), "lgn", &ids[..ids.len() - 1], &times[..ids.len() - 1]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).args(["resume", again.to_str().unwrap(), "--quiet"]).output().unwrap();
    assert!(!out.status.success(), "a checkpoint of other spike trains resumed");
}

/// The message of loading `text` as `model.toml` in `dir`.
#[track_caller]
fn refused(text: &str, dir: &Path) -> String {
    parse_at(text, dir).err().expect("refused")
}

#[test]
fn mistakes_name_the_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let at = |line: usize, rest: &str| format!("{}:{line}:", d.join("model.toml").display()) + rest;
    let e = refused(&ONE_TO_ONE.replace("[[1.0, 5.0], [], [2.35, 0.3]]", "[[1.0, 5.0], [-2.0]]"), d);
    assert!(e.starts_with(&at(10, "")) && e.ends_with("populations[0].spike_times_ms: 2 lists of times for 3 neurons (one list per neuron)"), "{e}");
    let e = refused(&ONE_TO_ONE.replace("[2.35, 0.3]", "[2.35, -0.3]"), d);
    assert!(e.ends_with("populations[0].spike_times_ms[2][1]: a spike time must be finite and not negative (got -0.3)"), "{e}");
    let e = refused(&ONE_TO_ONE.replace("spike_times_ms = [[1.0, 5.0], [], [2.35, 0.3]]", ""), d);
    assert!(e.contains("populations[0]: a spike_source needs spikes = \"file\" (SONATA HDF5 or CSV) or spike_times_ms"), "{e}");
    let e = refused(&ONE_TO_ONE.replace("model = \"spike_source\"", "model = \"spike_source\"\nspikes = \"s.h5\""), d);
    assert!(e.contains("populations[0].spike_times_ms: give spikes (a file) or spike_times_ms, not both"), "{e}");
    let e = refused(&ONE_TO_ONE.replace("model = \"spike_source\"", "model = \"spike_source\"\ntau_m_ms = 5.0"), d);
    assert!(e.starts_with(&at(10, "")) && e.ends_with("populations[0].tau_m_ms: a spike_source has no membrane: it fires at its listed times only"), "{e}");
    let e = refused(&ONE_TO_ONE.replace("model = \"lif_cuba\"", "model = \"lif_cuba\"\nspike_times_ms = [[1.0]]"), d);
    assert!(e.ends_with("populations[1].spike_times_ms: belongs to model = \"spike_source\"; a lif_cuba neuron fires by its membrane"), "{e}");
    let e = refused(&ONE_TO_ONE.replace("source = \"src\"\ntarget = \"T\"", "source = \"T\"\ntarget = \"src\""), d);
    assert!(e.ends_with("projections[0].target: population \"src\" is a spike_source: it receives no synapses"), "{e}");
    let e = refused(&(ONE_TO_ONE.to_string() + "\n[[inputs]]\nname = \"x\"\nkind = \"dc\"\ntarget = \"src\"\namplitude_pa = 1.0\n"), d);
    assert!(e.ends_with("inputs[0].target: population \"src\" is a spike_source: it takes no input"), "{e}");

    // Spikes files: the file, the dataset or line, the problem.
    let with_file = |file: &str| ONE_TO_ONE.replace("spike_times_ms = [[1.0, 5.0], [], [2.35, 0.3]]", &format!("spikes = \"{file}\""));
    let e = refused(&with_file("none.h5"), d);
    assert!(e.starts_with(&format!("{}: cannot read the spikes file", d.join("none.h5").display())), "{e}");
    common::write_spikes_h5(&d.join("s.h5"), "src", &[0, 3], &[1.0, 2.0]);
    let e = refused(&with_file("s.h5"), d);
    assert!(e.ends_with("s.h5: /spikes/src/node_ids[1]: node id 3 is outside population \"src\" of 3 neurons"), "{e}");
    common::write_spikes_h5(&d.join("s.h5"), "src", &[0, 2], &[1.0, f64::NAN]);
    let e = refused(&with_file("s.h5"), d);
    assert!(e.ends_with("s.h5: /spikes/src/timestamps[1]: a spike time must be finite (got NaN)"), "{e}");
    let e = refused(&with_file("s.h5").replace("spikes = \"s.h5\"", "spikes = \"s.h5\"\nspikes_population = \"lgn\""), d);
    assert!(e.ends_with("s.h5: /spikes: no population \"lgn\" (the file has: src)"), "{e}");
    std::fs::write(d.join("s.csv"), "timestamps node_ids\n1.0 0\n2.0 1 7\n").unwrap();
    let e = refused(&with_file("s.csv"), d);
    assert!(e.ends_with("s.csv: line 3: 3 values under 2 column names"), "{e}");
    std::fs::write(d.join("s.csv"), "timestamps node_ids\n1.0 0\n2.0 x\n").unwrap();
    let e = refused(&with_file("s.csv"), d);
    assert!(e.ends_with("s.csv: line 3: node_ids: not a node id: \"x\""), "{e}");
}

/// `fum check` says how many listed spikes fire, and names those that will not as listed.
#[test]
fn check_counts_the_spikes_that_fire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.toml");
    std::fs::write(&path, ONE_TO_ONE.replace("[2.35, 0.3]", "[2.35, 0.3, 2.31, 25.0]")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).arg("check").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("spike source src              4 spikes in the run (1 merged into a spike of the same neuron and step; 1 after the run's end)\n"), "{stdout}");
}
