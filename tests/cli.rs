//! `fum run` end to end: the SONATA spike file read back by an independent HDF5 reader holds
//! exactly the spikes the engine produced, and run.json carries the summary.

mod common;
use common::*;

use std::process::Command;

#[test]
fn run_writes_sonata_spikes_probes_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("small.toml");
    std::fs::write(&model_path, SMALL_NETWORK).unwrap();
    let out = dir.path().join("run");
    let status = Command::new(env!("CARGO_BIN_EXE_fum"))
        .args(["run", model_path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "2", "--shards", "3", "--quiet"])
        .status()
        .unwrap();
    assert!(status.success());

    let expected = spikes(&simulate(&parse(SMALL_NETWORK), 1, 1));
    assert!(expected.len() > 500, "the test network must fire");
    let file = hdf5::File::open(out.join("spikes.h5")).unwrap();
    let mut read = Vec::new();
    for (pop, name) in ["exc", "inh"].iter().enumerate() {
        let group = file.group(&format!("spikes/{name}")).unwrap();
        assert_eq!(group.attr("sorting").unwrap().read_scalar::<fum::engine::recording::Sorting>().unwrap(), fum::engine::recording::Sorting::by_time);
        let ts = group.dataset("timestamps").unwrap();
        let units: hdf5::types::VarLenUnicode = ts.attr("units").unwrap().read_scalar().unwrap();
        assert_eq!(units.as_str(), "ms");
        let times: Vec<f64> = ts.read_raw().unwrap();
        let ids: Vec<u64> = group.dataset("node_ids").unwrap().read_raw().unwrap();
        assert_eq!(times.len(), ids.len());
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "sorted by time");
        read.extend(times.iter().zip(&ids).map(|(&t, &n)| (pop, (t / 0.1).round() as u32, n as u32)));
    }
    assert!(read == expected, "spikes.h5 differs from the engine's spikes");

    let probes = hdf5::File::open(out.join("probes.h5")).unwrap();
    let values = probes.dataset("membrane/values").unwrap();
    assert_eq!(values.shape(), vec![200, 2]);
    let v: Vec<f32> = values.read_raw().unwrap();
    assert!(v.iter().all(|&x| (0.0..20.0).contains(&x)), "membrane potentials between rest and threshold");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(report["network"]["neurons"], 375);
    assert_eq!(report["network"]["shards"], 3);
    assert_eq!(report["threads"], 2);
    assert_eq!(report["spikes_total"], expected.len() as u64);
    assert_eq!(report["network"]["bytes_per_static_synapse"], 6.0);
    assert_eq!(report["stdp_history_overflows"], 0);
    for key in ["build_s", "simulate_s", "real_time_factor"] {
        assert!(report["timing"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert!(report["rates_hz"]["exc"].as_f64().unwrap() > 1.0);
}

#[test]
fn check_prints_the_size() {
    let output = Command::new(env!("CARGO_BIN_EXE_fum")).args(["check", repo().join("assets/models/brunel.toml").to_str().unwrap()]).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("12500 neurons") && text.contains("~15625000"), "{text}");
}
