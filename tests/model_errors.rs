//! Every mistake in a model file gives a message naming the file, the line and the field, and
//! `fum run` writes nothing for an invalid model.

mod common;

use fum::Model;
use std::path::Path;

const VALID: &str = r#"[simulation]
dt_ms = 0.1
duration_ms = 10.0

[[populations]]
name = "E"
size = 10
model = "lif_cuba"
tau_m_ms = 20.0

[[projections]]
name = "EE"
source = "E"
target = "E"
rule = { fixed_probability = 0.5 }
weight = 1.0
delay_ms = 1.0

[[inputs]]
name = "drive"
kind = "poisson"
target = "E"
rate_hz = 100.0
weight = 5.0

[recording]
spikes = ["E"]
"#;

/// Replaces the line `from` with `to`, and returns the text and the 1-based line of the change.
fn mutate(from: &str, to: &str) -> (String, usize) {
    let line = VALID.lines().position(|l| l == from).unwrap_or_else(|| panic!("no line {from}")) + 1;
    (VALID.replacen(from, to, 1), line)
}

#[track_caller]
fn expect_error(from: &str, to: &str, fragments: &[&str]) {
    let (text, line) = mutate(from, to);
    let err = Model::parse(&text, Path::new("bad.toml")).expect_err("the model is invalid").to_string();
    assert!(err.starts_with(&format!("bad.toml:{line}:")), "wrong location in: {err}");
    for f in fragments {
        assert!(err.contains(f), "\"{f}\" missing from: {err}");
    }
}

#[test]
fn the_valid_model_parses() {
    Model::parse(VALID, Path::new("ok.toml")).unwrap();
}

#[test]
fn unknown_field() {
    expect_error("tau_m_ms = 20.0", "tau_mm_ms = 20.0", &["unknown field `tau_mm_ms`"]);
}

#[test]
fn negative_time_constant() {
    expect_error("tau_m_ms = 20.0", "tau_m_ms = -5.0", &["populations[0].tau_m_ms", "must be positive", "-5"]);
}

#[test]
fn delay_shorter_than_dt() {
    expect_error("delay_ms = 1.0", "delay_ms = 0.01", &["projections[0].delay_ms", "shorter than one step"]);
}

#[test]
fn population_that_does_not_exist() {
    expect_error("target = \"E\"", "target = \"X\"", &["projections[0].target", "no population named \"X\""]);
    expect_error("spikes = [\"E\"]", "spikes = [\"Q\"]", &["recording.spikes[0]", "no population named \"Q\""]);
}

#[test]
fn probability_outside_unit_interval() {
    expect_error("rule = { fixed_probability = 0.5 }", "rule = { fixed_probability = 1.5 }", &["projections[0].rule.fixed_probability", "[0, 1]"]);
}

#[test]
fn wrong_type_and_unknown_variant() {
    expect_error("size = 10", "size = \"many\"", &["invalid type"]);
    expect_error("model = \"lif_cuba\"", "model = \"hh\"", &["unknown variant `hh`"]);
}

/// `lif_psc_alpha` and a bias drawn per neuron: the same checks as the other models and
/// distributions, naming the field and the model.
#[test]
fn alpha_model_and_drawn_bias() {
    let alpha = |to: &str| {
        let (text, line) = mutate("tau_m_ms = 20.0", to);
        (text.replacen("model = \"lif_cuba\"", "model = \"lif_psc_alpha\"", 1), line)
    };
    Model::parse(&alpha("i_e_pa = { lognormal = [5.0, 0.5] }").0, Path::new("ok.toml")).expect("valid");
    for (to, fragments) in [
        ("e_ex_mv = 0.0", &["populations[0].e_ex_mv", "\"lif_psc_alpha\" synapses are currents"][..]),
        ("integrator = \"euler\"", &["populations[0].integrator", "\"lif_psc_alpha\" is integrated exactly"]),
        ("i_e_pa = { uniform = [500.0, 100.0] }", &["populations[0].i_e_pa", "low must not exceed high"]),
        ("i_e_pa = { normal = [300.0, -5.0] }", &["populations[0].i_e_pa", "standard deviation must not be negative"]),
        ("i_e_pa = { lognormal = [100.0, 1.0] }", &["populations[0].i_e_pa", "32-bit floats"]),
        ("i_e_pa = { poisson = 3.0 }", &["populations[0].i_e_pa", "{ uniform = [low, high] }"]),
    ] {
        let (text, line) = alpha(to);
        let err = Model::parse(&text, Path::new("bad.toml")).expect_err("the model is invalid").to_string();
        assert!(err.starts_with(&format!("bad.toml:{line}:")), "wrong location in: {err}");
        for f in fragments {
            assert!(err.contains(f), "\"{f}\" missing from: {err}");
        }
    }
    expect_error("model = \"lif_cuba\"", "model = \"iaf_psc_alpha\"", &["unknown variant `iaf_psc_alpha`", "lif_psc_alpha"]);
}

#[test]
fn negative_weight_and_rate() {
    expect_error("weight = 1.0", "weight = -1.0", &["projections[0].weight", "receptor = \"inhibitory\""]);
    expect_error("rate_hz = 100.0", "rate_hz = -100.0", &["inputs[0].rate_hz", "must not be negative"]);
}

#[test]
fn non_finite_distribution_parameters() {
    expect_error("weight = 1.0", "weight = { uniform = [0.0, inf] }", &["projections[0].weight", "must be finite"]);
    expect_error("delay_ms = 1.0", "delay_ms = { normal = [nan, 0.1] }", &["projections[0].delay_ms", "must be finite"]);
    expect_error("tau_m_ms = 20.0", "v_init_mv = { normal = [-60.0, inf] }", &["populations[0].v_init_mv", "must be finite"]);
}

#[test]
fn missing_required_field() {
    let (text, _) = mutate("weight = 1.0", "");
    let err = Model::parse(&text, Path::new("bad.toml")).unwrap_err().to_string();
    assert!(err.contains("missing field `weight`") && err.starts_with("bad.toml:"), "{err}");
}

#[test]
fn cli_reports_the_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (text, line) = mutate("tau_m_ms = 20.0", "tau_m_ms = -5.0");
    let model = dir.path().join("bad.toml");
    std::fs::write(&model, text).unwrap();
    let out = dir.path().join("out");
    let result = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).arg("run").arg(&model).arg("--out").arg(&out).output().unwrap();
    assert_eq!(result.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains(&format!("bad.toml:{line}:")) && stderr.contains("tau_m_ms"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    assert!(!out.exists(), "nothing may be written for an invalid model");
}

#[test]
fn weight_type_and_history_length() {
    let (text, line) = mutate("duration_ms = 10.0", "duration_ms = 10.0\nweights = \"f64\"");
    let err = Model::parse(&text, Path::new("bad.toml")).unwrap_err().to_string();
    assert!(err.starts_with(&format!("bad.toml:{}:", line + 1)) && err.contains("`f32`") && err.contains("`f16`"), "{err}");
    let rule = "[[plasticity]]\nname = \"stdp\"\na_plus = 0.01\na_minus = 0.01\nw_max = 5.0\npost_history = 0\n\n[recording]";
    let (text, line) = mutate("[recording]", rule);
    let err = Model::parse(&text, Path::new("bad.toml")).unwrap_err().to_string();
    assert!(err.starts_with(&format!("bad.toml:{}:", line + 5)) && err.contains("plasticity[0].post_history") && err.contains("[1, 4096]"), "{err}");
    let (text, _) = mutate("[recording]", &rule.replace("post_history = 0", "post_history = 4096"));
    Model::parse(&text, Path::new("ok.toml")).unwrap();
}

/// The error of `text` (which must be refused) and the 1-based line of `needle` in it.
fn error_of(text: &str, needle: &str) -> (String, usize) {
    let line = text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line {needle}")) + 1;
    (Model::parse(text, Path::new("bad.toml")).expect_err("the model is invalid").to_string(), line)
}

/// `fum ARGS...` on `text` written as bad.toml: exit status, stdout, stderr.
fn fum(args: &[&str], text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("bad.toml");
    std::fs::write(&model, text).unwrap();
    // Within 1 GiB of address space: a refusal must come before anything large is allocated.
    let mut command = std::process::Command::new("sh");
    command.args(["-c", "ulimit -v 1048576 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_fum")]).args(args).arg(&model);
    if args[0] == "run" {
        command.arg("--out").arg(dir.path().join("out"));
    }
    let out = command.output().unwrap();
    assert!(!dir.path().join("out").exists(), "nothing may be written for a refused model");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

// Item 6: what used to fail late, at run time, is refused up front.

#[test]
fn threads_beyond_the_cores_are_refused_by_check_and_run() {
    let (text, line) = mutate("duration_ms = 10.0", "duration_ms = 10.0\nthreads = 100000");
    for command in ["check", "run"] {
        let (code, _, stderr) = fum(&[command], &text);
        assert_eq!(code, Some(2), "{command}: {stderr}");
        assert!(stderr.contains(&format!("bad.toml:{}:11: simulation.threads: 100000 threads on", line + 1)) && stderr.contains("per core"), "{command}: {stderr}");
    }
}

#[test]
fn weights_and_currents_that_overflow_f32_are_refused() {
    expect_error("weight = 1.0", "weight = 1e39", &["projections[0].weight", "32-bit floats"]);
    expect_error("weight = 1.0", "weight = { normal = [1.0, 1e38] }", &["projections[0].weight", "32-bit floats"]);
    expect_error("weight = 5.0", "weight = 5e38", &["inputs[0].weight", "32-bit floats"]);
    expect_error("tau_m_ms = 20.0", "i_e_pa = -1e39", &["populations[0].i_e_pa", "32-bit floats"]);
    Model::parse(&mutate("weight = 1.0", "weight = 3e38").0, Path::new("ok.toml")).expect("3e38 fits an f32");
}

#[test]
fn names_hdf5_cannot_hold_or_a_terminal_would_garble_are_refused() {
    for name in ["", ".", "..", "a/b", "a\\u0000b", "tab\\there", "E\\u202ex", "\\u2066E", "bell\\u0007"] {
        let (text, line) = mutate("name = \"E\"", &format!("name = \"{name}\""));
        let err = Model::parse(&text, Path::new("bad.toml")).expect_err(name).to_string();
        assert!(err.starts_with(&format!("bad.toml:{line}:8: populations[0].name: ")) && err.contains("is not a valid name"), "{name}: {err}");
        assert!(!err.chars().any(|c| c.is_control() || ('\u{2066}'..='\u{2069}').contains(&c) || c == '\u{202e}'), "printed raw: {err:?}");
    }
    // A reference to a name with such characters is printed escaped.
    let (text, _) = mutate("target = \"E\"", "target = \"E\\u202e\"");
    let err = Model::parse(&text, Path::new("bad.toml")).unwrap_err().to_string();
    assert!(err.contains("no population named \"E\\u{202e}\""), "{err}");
}

/// The weight probes of the shipped STDP model listed synapses that exist for seed 2 only.
#[test]
fn weight_probes_of_synapses_absent_for_the_seed_are_refused_at_their_entry() {
    let asset = std::fs::read_to_string(common::repo().join("assets/models/stdp_balanced.toml")).unwrap();
    let listed = asset.replace("count = 6", "synapses = [[0, 76], [0, 102], [0, 187]]");
    Model::parse(&listed, Path::new("ok.toml")).expect("these synapses exist for seed 2");
    let reseeded = listed.replace("seed = 2", "seed = 3");
    let (err, line) = error_of(&reseeded, "synapses = [[0, 76]");
    assert!(err.starts_with(&format!("bad.toml:{line}:13: recording.probes[1].synapses[0]: projection \"E_to_E\" has no synapse [0, 76] for seed 3")), "{err}");
    // The same through an override of the seed, as `fum run --seed 3` applies it.
    let mut model = Model::parse(&listed, Path::new("bad.toml")).unwrap();
    model.spec.simulation.seed = 3;
    assert!(model.revalidate().unwrap_err().to_string().contains("recording.probes[1].synapses[0]"));
    // count = N picks N synapses that exist, for any seed.
    for seed in [1, 2, 3, 4, 5] {
        let text = asset.replace("seed = 2", &format!("seed = {seed}"));
        let model = Model::parse(&text, Path::new("ok.toml")).unwrap();
        let probe = &model.spec.recording.probes[1];
        assert_eq!(probe.synapses.len(), 6, "seed {seed}");
        fum::Simulation::from_model(&model, 1, 2).expect("the chosen synapses exist");
    }
    let (err, line) = error_of(&asset.replace("count = 6", "count = 6\nsynapses = [[0, 1]]"), "count = 6");
    assert!(err.starts_with(&format!("bad.toml:{line}:")) && err.contains("give synapses or count, not both"), "{err}");
}

#[test]
fn probes_listing_an_id_twice_are_refused_at_the_repeat() {
    let probe = "[recording]\nspikes = [\"E\"]\n\n[[recording.probes]]\nname = \"v\"\nvariable = \"v\"\npopulation = \"E\"\nneurons = [1, 2, 1]\n";
    let (err, line) = error_of(&VALID.replace("[recording]\nspikes = [\"E\"]\n", probe), "neurons = [1, 2, 1]");
    assert!(err.starts_with(&format!("bad.toml:{line}:18: recording.probes[0].neurons[2]: neuron 1 is listed twice")), "{err}");
}

// Item 7: a model that cannot fit in memory is refused with its sizes, before building.

#[test]
fn models_larger_than_memory_are_refused_before_building() {
    let neurons = VALID.replace("size = 10", "size = 4000000000").replace("rule = { fixed_probability = 0.5 }", "rule = { fixed_indegree = 1 }");
    let synapses = VALID.replace("size = 10", "size = 100000").replace("rule = { fixed_probability = 0.5 }", "rule = { fixed_indegree = 1000000 }");
    for (text, what) in [(&neurons, "4000000000 neurons"), (&synapses, "~100000000000 synapses")] {
        for command in ["check", "run"] {
            let (code, _, stderr) = fum(&[command], text);
            assert_eq!(code, Some(2), "{command}: {stderr}");
            assert!(stderr.contains("the network needs about") && stderr.contains(what) && stderr.contains("available"), "{command}: {stderr}");
            assert!(stderr.contains("error: ") && stderr.contains("bad.toml:"), "{stderr}");
        }
    }
    // Recorded values count too: 100,000 neurons probed at every step of 10^7 steps.
    let ids: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let probe = format!("[recording]\nspikes = [\"E\"]\n\n[[recording.probes]]\nname = \"v\"\nvariable = \"v\"\npopulation = \"E\"\nneurons = [{}]\n", ids.join(", "));
    let text = synapses.replace("rule = { fixed_indegree = 1000000 }", "rule = { fixed_indegree = 1 }").replace("duration_ms = 10.0", "duration_ms = 1000000.0").replace("[recording]\nspikes = [\"E\"]\n", &probe);
    let (code, _, stderr) = fum(&["check"], &text);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the network needs about"), "{stderr}");
}

#[test]
fn check_prints_the_memory_estimate() {
    let (code, stdout, stderr) = fum(&["check"], VALID);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("memory           ~") && stdout.contains("available"), "{stdout}");
}

// Item 13: parser errors name the field, the key, a line; NaN is not "negative".

#[test]
fn out_of_range_integers_name_their_field() {
    expect_error("size = 10", "size = 1000000000000", &["populations[0].size: invalid value: integer `1000000000000`, expected u32"]);
}

#[test]
fn duplicate_keys_name_the_key() {
    let (text, line) = mutate("tau_m_ms = 20.0", "tau_m_ms = 20.0\nsize = 11");
    let err = Model::parse(&text, Path::new("bad.toml")).unwrap_err().to_string();
    assert!(err.starts_with(&format!("bad.toml:{}:1: duplicate key `size`", line + 1)), "{err}");
}

#[test]
fn keys_nested_too_deeply_give_their_line() {
    let deep = format!("x{} = 1", ".a".repeat(200));
    let (text, line) = mutate("tau_m_ms = 20.0", &deep);
    let err = Model::parse(&text, Path::new("bad.toml")).unwrap_err().to_string();
    assert!(err.starts_with(&format!("bad.toml:{line}:1: recursion limit")), "{err}");
    let (text, line) = mutate("tau_m_ms = 20.0", &format!("x = {}{}", "[".repeat(200), "]".repeat(200)));
    let err = Model::parse(&text, Path::new("bad.toml")).unwrap_err().to_string();
    assert!(err.starts_with(&format!("bad.toml:{line}:")), "{err}");
}

#[test]
fn invalid_utf8_is_reported_once_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let mut bytes = b"[simulation]\nduration_ms = 1.0\n# caf".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
    std::fs::write(&path, bytes).unwrap();
    let err = Model::load(&path).unwrap_err().to_string();
    assert!(err.ends_with("bad.toml:3:6: invalid UTF-8: a model file is UTF-8 text"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).arg("check").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.matches("UTF-8").count(), 2, "once, with its line: {stderr}");
}

#[test]
fn not_a_number_is_not_called_negative() {
    expect_error("rate_hz = 100.0", "rate_hz = nan", &["inputs[0].rate_hz", "must be a finite number (got NaN)"]);
    expect_error("rate_hz = 100.0", "rate_hz = -inf", &["inputs[0].rate_hz", "must be a finite number (got -inf)"]);
    expect_error("rate_hz = 100.0", "rate_hz = -1.0", &["inputs[0].rate_hz", "must not be negative (got -1)"]);
}

/// Rates drawn per neuron: from distributions without negative draws, with valid parameters.
#[test]
fn drawn_rates() {
    expect_error("rate_hz = 100.0", "rate_hz = { normal = [100.0, 10.0] }", &["inputs[0].rate_hz", "uniform or lognormal"]);
    expect_error("rate_hz = 100.0", "rate_hz = { uniform = [-1.0, 10.0] }", &["inputs[0].rate_hz", "must not be negative (got -1)"]);
    expect_error("rate_hz = 100.0", "rate_hz = { lognormal = [4.0, -0.5] }", &["inputs[0].rate_hz", "sigma must not be negative"]);
    expect_error("rate_hz = 100.0", "rate_hz = { lognormal = [inf, 0.5] }", &["inputs[0].rate_hz", "must be finite"]);
    expect_error("rate_hz = 100.0", "rate_hz = { gamma = [1.0, 2.0] }", &["inputs[0]", "lognormal = [mu, sigma]"]);
}

/// The estimate `fum check` prints and `fum run` checks is what the builder allocates.
#[test]
fn the_memory_estimate_matches_the_built_network() {
    for name in ["stdp_balanced.toml", "vogels_abbott_coba.toml", "brunel.toml"] {
        let model = common::asset(name);
        let estimate = fum::engine::estimate::Estimate::of(&model, 2, 2);
        let mut sim = fum::Simulation::from_model(&model, 2, 2).unwrap();
        let built = fum::engine::report::NetworkStats::measure(&mut sim.world).bytes_total as f64;
        let ratio = estimate.network_bytes / built;
        assert!((0.95..1.05).contains(&ratio), "{name}: estimated {} bytes, built {built}", estimate.network_bytes);
        assert!(estimate.host_bytes >= estimate.network_bytes);
    }
    // lif_psc_alpha's two more variables and a drawn bias (12 bytes per neuron): a network of
    // few synapses, where they are a visible part of the total.
    let text = common::SMALL_NETWORK.replace("model = \"lif_cuba\"", "model = \"lif_psc_alpha\"\ni_e_pa = { normal = [100.0, 10.0] }");
    assert_ne!(text, common::SMALL_NETWORK);
    let model = common::parse(&text);
    let estimate = fum::engine::estimate::Estimate::of(&model, 2, 2);
    let built = fum::engine::report::NetworkStats::measure(&mut fum::Simulation::from_model(&model, 2, 2).unwrap().world).bytes_total as f64;
    let plain = fum::engine::estimate::Estimate::of(&common::parse(common::SMALL_NETWORK), 2, 2).network_bytes;
    assert!((0.95..1.05).contains(&(estimate.network_bytes / built)), "alpha: estimated {} bytes, built {built}", estimate.network_bytes);
    assert_eq!(estimate.network_bytes - plain, 12.0 * 375.0, "12 bytes more per neuron");
}

#[test]
fn integrator_of_a_current_based_population_or_unknown() {
    expect_error("tau_m_ms = 20.0", "integrator = \"euler\"", &["populations[0].integrator", "\"lif_coba\"", "integrated exactly"]);
    expect_error("tau_m_ms = 20.0", "integrator = \"rk4\"", &["populations[0].integrator", "unknown variant `rk4`", "exponential_euler"]);
}

/// [`VALID`] with E->E plastic under a `[[plasticity]]` rule of the given fields.
fn with_rule(fields: &str) -> String {
    let plastic = VALID.replacen("delay_ms = 1.0\n", "delay_ms = 1.0\nplasticity = \"pl\"\n", 1);
    plastic.replacen("[recording]", &format!("[[plasticity]]\nname = \"pl\"\n{fields}\n\n[recording]"), 1)
}

/// Each case (fields, a text on the line the error names, fragments of the message) made into
/// a model by `text`: its error names that line and holds the fragments.
#[track_caller]
fn expect_errors(cases: &[(String, &str, &[&str])], text: impl Fn(&str) -> String) {
    for (fields, needle, fragments) in cases {
        let (err, line) = error_of(&text(fields), needle);
        assert!(err.starts_with(&format!("bad.toml:{line}:")), "{fields}: wrong location in: {err}");
        for f in fragments.iter() {
            assert!(err.contains(f), "{fields}: \"{f}\" missing from: {err}");
        }
    }
}

#[test]
fn power_law_rules_take_nests_names_and_refuse_the_other_rules_amplitudes() {
    use fum_kernels::stdp::WeightDependence;
    let nest = "weight_dependence = \"power_law\"\nlambda = 0.1\nalpha = 0.0513\nmu = 0.4\ntau_plus_ms = 15.0";
    let model = Model::parse(&with_rule(nest), Path::new("ok.toml")).unwrap();
    let rule = model.spec.plasticity[0].rule();
    assert_eq!(rule.dependence, WeightDependence::PowerLaw { mu: 0.4 });
    assert_eq!((rule.a_plus, rule.a_minus), (0.1, (0.1f64 * 0.0513) as f32), "a_plus is lambda, a_minus lambda alpha");
    assert_eq!((rule.w_min, rule.w_max), (0.0, f32::MAX), "no upper bound unless w_max is given, as in NEST");
    let bounded = Model::parse(&with_rule(&format!("{nest}\nw_max = 80.0")), Path::new("ok.toml")).unwrap();
    assert_eq!(bounded.spec.plasticity[0].rule().w_max, 80.0);

    let cases: [(String, &str, &[&str]); 7] = [
        (format!("{nest}\na_plus = 0.01"), "a_plus", &["plasticity[0].a_plus", "lambda", "alpha"]),
        (nest.replace("mu = 0.4", "mu = 1.5"), "mu = 1.5", &["plasticity[0].mu", "[0, 1]", "1.5"]),
        (nest.replace("mu = 0.4", "mu = -0.1"), "mu = -0.1", &["plasticity[0].mu", "negative"]),
        (nest.replace("alpha = 0.0513", "alpha = -1.0"), "alpha", &["plasticity[0].alpha", "negative"]),
        (nest.replace("lambda = 0.1\n", ""), "[[plasticity]]", &["plasticity[0]", "\"power_law\" needs lambda"]),
        ("a_plus = 0.01\na_minus = 0.01\nw_max = 5.0\nmu = 0.4".into(), "mu = 0.4", &["plasticity[0].mu", "power_law", "a_plus"]),
        ("a_plus = 0.01\na_minus = 0.01".into(), "[[plasticity]]", &["plasticity[0]", "\"additive\" needs w_max"]),
    ];
    expect_errors(&cases, with_rule);
}

#[test]
fn dc_windows_start_before_they_stop_and_belong_to_dc_inputs() {
    let dc = "kind = \"dc\"\ntarget = \"E\"\namplitude_pa = 50.0";
    let text = |fields: &str| VALID.replace("kind = \"poisson\"\ntarget = \"E\"\nrate_hz = 100.0\nweight = 5.0", fields);
    Model::parse(&text(&format!("{dc}\nstart_ms = 2.0\nstop_ms = 2.1")), Path::new("ok.toml")).unwrap();
    let cases: [(String, &str, &[&str]); 4] = [
        (format!("{dc}\nstart_ms = 5.0\nstop_ms = 5.0"), "stop_ms", &["inputs[0].stop_ms", "a step after start_ms"]),
        (format!("{dc}\nstop_ms = 0.04"), "stop_ms", &["inputs[0].stop_ms", "a step after start_ms"]),
        (format!("{dc}\nstart_ms = -1.0"), "start_ms", &["inputs[0].start_ms", "negative"]),
        ("kind = \"poisson\"\ntarget = \"E\"\nrate_hz = 100.0\nweight = 5.0\nstart_ms = 1.0".into(), "start_ms", &["inputs[0].start_ms", "kind = \"dc\""]),
    ];
    expect_errors(&cases, text);
}
