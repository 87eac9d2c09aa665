//! `fixed_total_number` (NEST's rule): exactly the total of synapses per projection, the same
//! synapses bit for bit on any number of shards, threads and ranks, in-degrees multinomial and
//! sources uniform, no autapse unless allowed, rows drawn alone (probes) as built, SONATA export,
//! and the model errors.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

use fum::{Model, Simulation};

/// E->E (autapses excluded), E->I and I->E, drawn delays and weights, Poisson drive.
const MODEL: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 100.0
seed = 7

[[populations]]
name = "E"
size = 700
model = "lif_cuba"
tau_m_ms = 20.0
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0
v_init_mv = { uniform = [0.0, 20.0] }

[[populations]]
name = "I"
size = 300
model = "lif_cuba"
tau_m_ms = 10.0
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0

[[projections]]
name = "EE"
source = "E"
target = "E"
rule = { fixed_total_number = 40000 }
weight = { uniform = [20.0, 40.0] }
delay_ms = { uniform = [0.5, 3.0] }

[[projections]]
name = "EI"
source = "E"
target = "I"
rule = { fixed_total_number = 9001 }
weight = 30.0
delay_ms = 1.0

[[projections]]
name = "IE"
source = "I"
target = "E"
rule = { fixed_total_number = 21000 }
receptor = "inhibitory"
weight = 60.0
delay_ms = 0.8

[[inputs]]
name = "drive_E"
kind = "poisson"
target = "E"
rate_hz = 16000.0
weight = 50.0

[[inputs]]
name = "drive_I"
kind = "poisson"
target = "I"
rate_hz = 12000.0
weight = 50.0

[recording]
spikes = ["E", "I"]
"#;

const FIRST: [u32; 2] = [0, 700];

#[test]
fn the_total_is_exact_and_the_synapses_the_same_on_any_sharding() {
    let model = parse(MODEL);
    let mut reference = Simulation::from_model(&model, 1, 1).unwrap();
    let all = synapses(&mut reference);
    for (pi, total) in [40_000, 9001, 21_000].into_iter().enumerate() {
        assert_eq!(all.iter().filter(|s| s.0 == pi).count(), total, "projection {pi}");
    }
    assert!(all.iter().filter(|s| s.0 == 0).all(|s| s.1 != s.2), "E->E has no autapse");
    // Every target gets some of E->E's 57 a neuron, none all of them.
    let mut indegree = [0u32; 700];
    all.iter().filter(|s| s.0 == 0).for_each(|s| indegree[s.2 as usize] += 1);
    assert!(indegree.iter().all(|&d| (20..120).contains(&d)), "{indegree:?}");
    for (threads, shards) in [(1, 2), (2, 3), (2, 7), (1, 1000)] {
        let mut sim = Simulation::from_model(&model, threads, shards).unwrap();
        assert!(synapses(&mut sim) == all, "synapses differ with {threads} threads and {shards} shards");
    }
    // Another seed draws another network of the same totals.
    let mut other = Simulation::from_model(&parse(&MODEL.replace("seed = 7", "seed = 8")), 1, 1).unwrap();
    let other = synapses(&mut other);
    assert_eq!(other.len(), all.len());
    assert!(other != all);
}

#[test]
fn spikes_are_the_same_on_any_sharding() {
    let model = parse(MODEL);
    let reference = spikes(&simulate(&model, 1, 1));
    assert!(reference.len() > 2000, "the network fires: {} spikes", reference.len());
    for (threads, shards) in [(2, 3), (2, 8)] {
        assert!(spikes(&simulate(&model, threads, shards)) == reference, "spikes differ with {threads} threads and {shards} shards");
    }
}

/// A million synapses from 2,000 sources onto 5,000 targets: in-degrees have the multinomial's
/// mean K / N_post and variance K p (1 - p), p = 1 / N_post; sources are uniform (out-degrees
/// multinomial too: a chi-square of about N_pre).
#[test]
fn in_degrees_are_multinomial_and_sources_uniform() {
    let text = "[simulation]\nduration_ms = 1.0\nseed = 3\n\n[[populations]]\nname = \"A\"\nsize = 2000\nmodel = \"lif_cuba\"\n\n[[populations]]\nname = \"B\"\nsize = 5000\nmodel = \"lif_cuba\"\n\n[[projections]]\nname = \"AB\"\nsource = \"A\"\ntarget = \"B\"\nrule = { fixed_total_number = 1000000 }\nweight = 1.0\n";
    let mut sim = Simulation::from_model(&parse(text), 2, 3).unwrap();
    let all = synapses(&mut sim);
    assert_eq!(all.len(), 1_000_000);
    let (mut indegree, mut outdegree) = (vec![0u32; 5000], vec![0u32; 2000]);
    for s in &all {
        indegree[(s.2 - 2000) as usize] += 1;
        outdegree[s.1 as usize] += 1;
    }
    let moments = |d: &[u32]| {
        let n = d.len() as f64;
        let mean = d.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        (mean, d.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / (n - 1.0))
    };
    let (mean, var) = moments(&indegree);
    assert_eq!(mean, 200.0);
    let p = 1.0 / 5000.0;
    let want = 1e6 * p * (1.0 - p);
    // The sample variance of n draws has a relative sd of about sqrt(2 / n): 2 % here.
    assert!((var / want - 1.0).abs() < 5.0 * (2.0f64 / 5000.0).sqrt(), "in-degree variance {var}, multinomial {want}");
    let chi2: f64 = outdegree.iter().map(|&c| (f64::from(c) - 500.0).powi(2) / 500.0).sum();
    assert!((chi2 - 2000.0).abs() < 5.0 * (2.0f64 * 2000.0).sqrt(), "chi-square of the sources {chi2} (2,000 expected)");
    // Multapses are kept, as NEST keeps them: with 200 draws among 2,000 sources about 10 per target.
    let pairs: std::collections::HashSet<(u32, u32)> = all.iter().map(|s| (s.1, s.2)).collect();
    let repeats = all.len() - pairs.len();
    assert!((40_000..60_000).contains(&repeats), "{repeats} multapses");
}

#[test]
fn autapses_only_where_allowed() {
    let text = "[simulation]\nduration_ms = 1.0\n\n[[populations]]\nname = \"A\"\nsize = 50\nmodel = \"lif_cuba\"\n\n[[projections]]\nname = \"AA\"\nsource = \"A\"\ntarget = \"A\"\nrule = { fixed_total_number = 100000 }\nweight = 1.0\n";
    let count = |text: &str| {
        let mut sim = Simulation::from_model(&parse(text), 1, 2).unwrap();
        let all = synapses(&mut sim);
        assert_eq!(all.len(), 100_000);
        all.iter().filter(|s| s.1 == s.2).count()
    };
    assert_eq!(count(text), 0);
    // Allowed, one in 50 of the draws is an autapse.
    let autapses = count(&text.replace("weight = 1.0", "weight = 1.0\nallow_autapses = true"));
    assert!((1600..2400).contains(&autapses), "{autapses} autapses");
    // A population of one with autapses: every synapse is one.
    let one = text.replace("size = 50", "size = 1").replace("weight = 1.0", "weight = 1.0\nallow_autapses = true");
    assert_eq!(count(&one), 100_000);
}

/// The rows the model draws alone before building (what weight probes choose from) are the
/// built ones, and a probe of the first synapses of a projection finds them.
#[test]
fn rows_drawn_alone_are_the_built_rows() {
    let model = parse(MODEL);
    let mut sim = Simulation::from_model(&model, 2, 3).unwrap();
    let all = synapses(&mut sim);
    for (pi, (source, target)) in [(0usize, (0usize, 0usize)), (1, (0, 1)), (2, (1, 0))] {
        for post in [0u32, 150, 299] {
            let mut built: Vec<[u32; 2]> = all.iter().filter(|s| s.0 == pi && s.2 == FIRST[target] + post).map(|s| [s.1 - FIRST[source], post]).collect();
            built.sort_unstable();
            built.dedup();
            assert_eq!(fum::engine::build::synapse_row(&model, pi, post), built, "projection {pi}, target {post}");
        }
    }
    let probed = parse(&format!("{MODEL}\n[[recording.probes]]\nname = \"w\"\nvariable = \"weight\"\nprojection = \"EI\"\ncount = 4\n"));
    let chosen = &probed.spec.recording.probes[0].synapses;
    assert_eq!(chosen.len(), 4);
    assert!(chosen.iter().all(|&[pre, post]| all.iter().any(|s| s.0 == 1 && s.1 == pre && s.2 == 700 + post)), "{chosen:?}");
}

fn fum(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fum")).args(args).output().unwrap();
    assert!(out.status.success(), "fum {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `fum export --sonata` writes the drawn synapses (multapses included): the circuit runs with
/// the model's spikes. (A SONATA point circuit holds no Poisson inputs: constant currents drive
/// the network here.)
#[test]
fn an_exported_model_runs_with_the_same_spikes() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.toml");
    let driven = MODEL.split("[[inputs]]").next().unwrap().replace("v_init_mv = { uniform = [0.0, 20.0] }", "v_init_mv = { uniform = [0.0, 20.0] }\ni_e_pa = 450.0").replace("tau_m_ms = 10.0", "tau_m_ms = 10.0\ni_e_pa = 600.0\nv_init_mv = { uniform = [0.0, 20.0] }");
    std::fs::write(&model, format!("{driven}[recording]\nspikes = [\"E\", \"I\"]\n")).unwrap();
    let circuit = dir.path().join("circuit");
    let said = fum(&["export".as_ref(), model.as_os_str(), "--sonata".as_ref(), circuit.as_os_str()]);
    assert!(said.contains("1000 neurons"), "{said}");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fum(&["run".as_ref(), model.as_os_str(), "--out".as_ref(), a.as_os_str(), "--quiet".as_ref()]);
    fum(&["run".as_ref(), "--sonata".as_ref(), circuit.join("simulation_config.json").as_os_str(), "--out".as_ref(), b.as_os_str(), "--quiet".as_ref(), "--shards".as_ref(), "3".as_ref()]);
    let pops = [("E", 0), ("I", 700)];
    let spikes = spikes_h5(&a.join("spikes.h5"), &pops, 0.1);
    assert!(spikes.len() > 2000, "the network fires");
    assert_eq!(spikes, spikes_h5(&b.join("spikes.h5"), &pops, 0.1));
}

/// One process and 2 or 3 ranks (each drawing only its shards' in-degrees) give the same spikes.
#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the mpi feature and Open MPI (cargo test --features mpi; README: Several processes)")]
fn ranks_give_the_spikes_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.toml");
    std::fs::write(&model, MODEL).unwrap();
    let run = |out: &Path| -> Vec<std::ffi::OsString> { ["run".as_ref(), model.as_os_str(), "--shards".as_ref(), "5".as_ref(), "--threads".as_ref(), "1".as_ref(), "--quiet".as_ref(), "--out".as_ref(), out.as_os_str()].iter().map(|a| a.to_os_string()).collect() };
    let one = dir.path().join("one");
    fum(&run(&one).iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    for np in [2, 3] {
        let out = dir.path().join(format!("ranks{np}"));
        let done = mpirun(Path::new(env!("CARGO_BIN_EXE_fum")), np, &[]).args(run(&out)).output().unwrap();
        assert!(done.status.success(), "{np} ranks: {}", String::from_utf8_lossy(&done.stderr));
        assert_eq!(std::fs::read(one.join("spikes.h5")).unwrap(), std::fs::read(out.join("spikes.h5")).unwrap(), "spikes differ on {np} ranks");
    }
}

fn error_of(text: &str) -> String {
    Model::parse(text, Path::new("bad.toml")).expect_err("the model is invalid").to_string()
}

#[test]
fn mistakes_are_refused_naming_the_field() {
    let one_rule = |rule: &str| MODEL.replacen("rule = { fixed_total_number = 40000 }", rule, 1);
    let line = |text: &str, what: &str| text.lines().position(|l| l.starts_with(what)).unwrap() + 1;

    let text = one_rule("rule = { fixed_total_number = 40000 }\nallow_multapses = false");
    let err = error_of(&text);
    assert!(err.starts_with(&format!("bad.toml:{}:", line(&text, "allow_multapses"))), "{err}");
    assert!(err.contains("projections[0].allow_multapses") && err.contains("cannot exclude multapses"), "{err}");

    let text = one_rule("rule = { fixed_total_number = 5 }").replacen("size = 700", "size = 1", 1);
    let err = error_of(&text);
    assert!(err.starts_with(&format!("bad.toml:{}:", line(&text, "rule = { fixed_total_number = 5 }"))), "{err}");
    assert!(err.contains("projections[0].rule.fixed_total_number") && err.contains("allow_autapses = true"), "{err}");
    // None requested, or autapses allowed: valid.
    Model::parse(&one_rule("rule = { fixed_total_number = 0 }").replacen("size = 700", "size = 1", 1), Path::new("ok.toml")).unwrap();
    Model::parse(&one_rule("rule = { fixed_total_number = 5 }\nallow_autapses = true").replacen("size = 700", "size = 1", 1), Path::new("ok.toml")).unwrap();

    let err = error_of(&one_rule("rule = { fixed_total_number = 3006477106500 }"));
    assert!(err.contains("projections[0].rule.fixed_total_number") && err.contains("in-degree"), "{err}");
    let err = error_of(&one_rule("rule = { fixed_total_number = -1 }"));
    assert!(err.contains("projections[0].rule") && err.contains("invalid value"), "{err}");
    let err = error_of(&one_rule("rule = { fixed_total_number = 1.5 }"));
    assert!(err.contains("projections[0].rule") && err.contains("invalid type"), "{err}");
}
