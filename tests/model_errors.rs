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
