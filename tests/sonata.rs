//! SONATA circuits: a circuit holding a model file's synapses builds into the same synapse
//! blocks (rows, targets, delays, weights, in order) and gives the same spikes as the file;
//! mistakes in a circuit's files name the file, the population or type id, and the field.
//! (python/tests/test_sonata.py writes circuits with h5py, an independent writer, and checks
//! `fum run --sonata` against `fum run`.)

mod common;

use std::path::{Path, PathBuf};

use fum::Model;
use fum::engine::components::{Shard, SynapseBlocks};
use hdf5::types::VarLenUnicode;

const TOML: &str = r#"[simulation]
dt_ms = 0.1
duration_ms = 200.0
seed = 3

[[populations]]
name = "E"
size = 160
model = "lif_cuba"
tau_m_ms = 20.0
e_l_mv = -65.0
v_th_mv = -50.0
v_reset_mv = -65.0
i_e_pa = 300.0
v_init_mv = -65.0

[[populations]]
name = "I"
size = 40
model = "lif_cuba"
i_e_pa = 400.0
v_init_mv = -70.0

[[projections]]
name = "p0"
source = "E"
target = "E"
rule = { fixed_probability = 0.1 }
weight = { uniform = [10.0, 40.0] }
delay_ms = { uniform = [0.5, 3.0] }

[[projections]]
name = "p1"
source = "E"
target = "I"
rule = { fixed_indegree = 20 }
weight = 30.0
delay_ms = 1.5

[[projections]]
name = "p2"
source = "I"
target = "E"
receptor = "inhibitory"
rule = { fixed_outdegree = 30 }
weight = { uniform = [50.0, 90.0] }
delay_ms = 0.7

[recording]
spikes = ["E", "I"]
"#;

/// NEST's names of the populations' parameters above.
fn params(population: &str) -> String {
    match population {
        "E" => r#"{"tau_m": 20.0, "E_L": -65.0, "V_th": -50.0, "V_reset": -65.0, "I_e": 300.0, "V_m": -65.0}"#.into(),
        _ => r#"{"I_e": 400.0}"#.into(),
    }
}

/// Every block as (shard, projection, row pointers, targets, delays, weight bits), in order.
#[allow(clippy::type_complexity)]
fn blocks(sim: &mut fum::Simulation) -> Vec<(usize, usize, Vec<u32>, Vec<u32>, Vec<u16>, Vec<u32>)> {
    let mut query = sim.world.query::<(&Shard, &SynapseBlocks)>();
    let mut all: Vec<_> = query
        .iter(&sim.world)
        .flat_map(|(shard, blocks)| {
            blocks.0.iter().map(move |b| {
                let n = b.target.len();
                (shard.index, b.projection, b.row_ptr.to_vec(), b.target.to_vec(), (0..n).map(|k| b.delay.get(k)).collect(), (0..n).map(|k| b.weight.get(k).to_bits()).collect())
            })
        })
        .collect();
    all.sort_by_key(|b| (b.0, b.1));
    all
}

fn string_attr(ds: &hdf5::Dataset, name: &str, value: &str) {
    let value: VarLenUnicode = value.parse().unwrap();
    ds.new_attr::<VarLenUnicode>().create(name).unwrap().write_scalar(&value).unwrap();
}

/// One edge population: (name, source and target node populations, pre, post, signed
/// weights, delays in ms).
type Edges = (String, String, String, Vec<u64>, Vec<u64>, Vec<f64>, Vec<f64>);

/// Writes a circuit of node populations `E` and `I` (one type each, NEST parameters as the
/// TOML model's) and `edges`, with `node_types`/`edge_types` as the CSV tables.
fn write_circuit(dir: &Path, sizes: &[(&str, u64)], node_types: &str, edges: &[Edges], edge_types: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("params")).unwrap();
    for (pop, _) in sizes {
        std::fs::write(dir.join(format!("params/{pop}.json")), params(pop)).unwrap();
    }
    std::fs::write(dir.join("node_types.csv"), node_types).unwrap();
    std::fs::write(dir.join("edge_types.csv"), edge_types).unwrap();
    let file = hdf5::File::create(dir.join("nodes.h5")).unwrap();
    let nodes = file.create_group("nodes").unwrap();
    for (t, &(pop, n)) in sizes.iter().enumerate() {
        let g = nodes.create_group(pop).unwrap();
        g.new_dataset_builder().with_data(&vec![100 + t as i64; n as usize]).create("node_type_id").unwrap();
        g.new_dataset_builder().with_data(&(0..n).collect::<Vec<u64>>()).create("node_id").unwrap();
    }
    let file = hdf5::File::create(dir.join("edges.h5")).unwrap();
    let root = file.create_group("edges").unwrap();
    for (name, src, tgt, pre, post, weight, delay) in edges {
        let g = root.create_group(name).unwrap();
        string_attr(&g.new_dataset_builder().with_data(pre).create("source_node_id").unwrap(), "node_population", src);
        string_attr(&g.new_dataset_builder().with_data(post).create("target_node_id").unwrap(), "node_population", tgt);
        g.new_dataset_builder().with_data(&vec![1i64; pre.len()]).create("edge_type_id").unwrap();
        g.new_dataset_builder().with_data(&vec![0i64; pre.len()]).create("edge_group_id").unwrap();
        g.new_dataset_builder().with_data(&(0..pre.len() as i64).collect::<Vec<_>>()).create("edge_group_index").unwrap();
        let g0 = g.create_group("0").unwrap();
        g0.new_dataset_builder().with_data(weight).create("syn_weight").unwrap();
        g0.new_dataset_builder().with_data(delay).create("delay").unwrap();
    }
    let config = serde_json::json!({
        "manifest": {"$BASE": "${configdir}"},
        "components": {"point_neuron_models_dir": "$BASE/params"},
        "networks": {
            "nodes": [{"nodes_file": "$BASE/nodes.h5", "node_types_file": "$BASE/node_types.csv"}],
            "edges": [{"edges_file": "$BASE/edges.h5", "edge_types_file": "$BASE/edge_types.csv"}]
        }
    });
    std::fs::write(dir.join("circuit_config.json"), config.to_string()).unwrap();
    dir.join("circuit_config.json")
}

/// Held by each test: HDF5 locks the files it opens (flock), and a `fum` process spawned by one
/// test while another test has a circuit file open inherits that descriptor and its lock, so a
/// third reader of the file would be refused. One test at a time.
static FILES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    FILES.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const NODE_TYPES: &str = "node_type_id model_type model_template dynamics_params\n100 point_neuron nest:iaf_psc_exp E.json\n101 point_neuron nest:iaf_psc_exp I.json\n";
const EDGE_TYPES: &str = "edge_type_id model_template\n1 static_synapse\n";

/// The TOML model's synapses as edge populations `p0`, `p1`, `p2`, in the order of its blocks
/// (shard by shard, row by row), inhibitory weights negative as NEST has them.
fn edges_of(model: &Model, shards: usize) -> Vec<Edges> {
    let mut sim = fum::Simulation::from_model(model, 1, shards).unwrap();
    let dt = model.spec.simulation.dt_ms;
    let mut out: Vec<Edges> = Vec::new();
    for (i, p) in model.spec.projections.iter().enumerate() {
        let sign = if p.receptor == fum::engine::model::Receptor::Inhibitory { -1.0 } else { 1.0 };
        let first = |name: &str| if name == "E" { 0 } else { 160 };
        let mut e: Edges = (p.name.clone(), p.source.clone(), p.target.clone(), vec![], vec![], vec![], vec![]);
        let cut = sim.world.resource::<fum::engine::components::ShardRanges>().0.clone();
        for (shard, _, row_ptr, target, delay, weight) in blocks(&mut sim).into_iter().filter(|b| b.1 == i) {
            let shard_start = cut[shard].start;
            for row in 0..row_ptr.len() - 1 {
                for k in row_ptr[row] as usize..row_ptr[row + 1] as usize {
                    e.3.push(row as u64);
                    e.4.push(u64::from(shard_start + u32::from(target[k]) - first(&p.target)));
                    e.5.push(sign * f64::from(f32::from_bits(weight[k])));
                    e.6.push(f64::from(delay[k]) * dt);
                }
            }
        }
        out.push(e);
    }
    out
}

#[test]
fn a_circuit_of_a_models_synapses_builds_the_same_blocks_and_spikes() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let toml = common::parse(TOML);
    for shards in [1, 3] {
        let edges = edges_of(&toml, shards);
        let config = write_circuit(&dir.path().join(format!("c{shards}")), &[("E", 160), ("I", 40)], NODE_TYPES, &edges, EDGE_TYPES);
        let text = format!("[simulation]\ndt_ms = 0.1\nduration_ms = 200.0\n\n[sonata]\ncircuit_config = {config:?}\n");
        let sonata = Model::parse(&text, &dir.path().join("m.toml")).unwrap();
        assert_eq!(sonata.spec.projections.len(), 3);
        assert_eq!(sonata.expected_synapses(), edges.iter().map(|e| e.3.len()).sum::<usize>() as f64);
        // The partition's graph of shards counts the listed synapses between each pair.
        let ranges = fum::engine::build::equal_cut(200, 4);
        let shard_of = |id: u64| ranges.iter().position(|r| r.contains(&(id as u32))).unwrap();
        let mut counted = std::collections::BTreeMap::new();
        for (_, src, tgt, pre, post, _, _) in &edges {
            let first = |name: &str| if name == "E" { 0 } else { 160 };
            for (&a, &b) in pre.iter().zip(post) {
                let (a, b) = (shard_of(a + first(src)), shard_of(b + first(tgt)));
                if a != b {
                    *counted.entry((a.min(b), a.max(b))).or_insert(0.0) += 1.0;
                }
            }
        }
        assert_eq!(fum::engine::partition::shard_graph(&sonata, &ranges), counted);
        // The same cut for both: a cut by cost sees the rules' expected in-degrees in one and
        // the listed synapses in the other.
        let cut = fum::engine::build::cut(&toml, shards);
        let build = |model| fum::Simulation::from_model_spilled(model, 2, &cut, None, &|_| {}).unwrap();
        let (mut a, mut b) = (build(&toml), build(&sonata));
        assert_eq!(blocks(&mut a), blocks(&mut b), "{shards} shards");
        let (a, b) = (common::simulate(&toml, 2, shards), common::simulate(&sonata, 2, shards));
        assert!(common::spikes(&a).len() > 500, "the network fires");
        assert_eq!(common::spikes(&a), common::spikes(&b));
    }
}

#[test]
fn an_exported_model_runs_with_the_same_spikes() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.toml");
    std::fs::write(&model, TOML.replace("duration_ms = 200.0", "duration_ms = 100.0")).unwrap();
    let fum = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let circuit = dir.path().join("circuit");
    let said = fum(&["export".as_ref(), model.as_os_str(), "--sonata".as_ref(), circuit.as_os_str()]);
    assert!(said.contains("200 neurons"), "{said}");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fum(&["run".as_ref(), model.as_os_str(), "--out".as_ref(), a.as_os_str(), "--quiet".as_ref()]);
    fum(&["run".as_ref(), "--sonata".as_ref(), circuit.join("simulation_config.json").as_os_str(), "--out".as_ref(), b.as_os_str(), "--quiet".as_ref(), "--shards".as_ref(), "3".as_ref()]);
    let pops = [("E", 0), ("I", 160)];
    let spikes = common::spikes_h5(&a.join("spikes.h5"), &pops, 0.1);
    assert!(spikes.len() > 200, "the network fires");
    assert_eq!(spikes, common::spikes_h5(&b.join("spikes.h5"), &pops, 0.1));
    // A membrane potential drawn per neuron is exported node by node.
    std::fs::write(&model, TOML.replace("duration_ms = 200.0", "duration_ms = 100.0").replace("v_init_mv = -65.0", "v_init_mv = { uniform = [-65.0, -50.0] }")).unwrap();
    let (circuit, a, b) = (dir.path().join("c2"), dir.path().join("a2"), dir.path().join("b2"));
    fum(&["export".as_ref(), model.as_os_str(), "--sonata".as_ref(), circuit.as_os_str()]);
    fum(&["run".as_ref(), model.as_os_str(), "--out".as_ref(), a.as_os_str(), "--quiet".as_ref()]);
    fum(&["run".as_ref(), "--sonata".as_ref(), circuit.join("simulation_config.json").as_os_str(), "--out".as_ref(), b.as_os_str(), "--quiet".as_ref()]);
    let spikes = common::spikes_h5(&a.join("spikes.h5"), &pops, 0.1);
    assert!(spikes.len() > 200, "the network fires");
    assert_eq!(spikes, common::spikes_h5(&b.join("spikes.h5"), &pops, 0.1));
    // A DC input that starts and stops is exported as a current clamp and imported again.
    let pulse = "[[inputs]]\nname = \"pulse\"\nkind = \"dc\"\ntarget = \"E\"\namplitude_pa = 300.0\nstart_ms = 30.0\nstop_ms = 60.0\n\n[recording]";
    std::fs::write(&model, TOML.replace("duration_ms = 200.0", "duration_ms = 100.0").replacen("[recording]", pulse, 1)).unwrap();
    let (circuit, a, b, c) = (dir.path().join("c3"), dir.path().join("a3"), dir.path().join("b3"), dir.path().join("c3run"));
    fum(&["export".as_ref(), model.as_os_str(), "--sonata".as_ref(), circuit.as_os_str()]);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(circuit.join("simulation_config.json")).unwrap()).unwrap();
    assert_eq!(config["inputs"]["pulse"], serde_json::json!({"input_type": "current_clamp", "module": "IClamp", "node_set": "E", "amp": 300.0, "delay": 30.0, "duration": 30.0}));
    fum(&["run".as_ref(), model.as_os_str(), "--out".as_ref(), a.as_os_str(), "--quiet".as_ref()]);
    fum(&["run".as_ref(), "--sonata".as_ref(), circuit.join("simulation_config.json").as_os_str(), "--out".as_ref(), b.as_os_str(), "--quiet".as_ref()]);
    let pulsed = common::spikes_h5(&a.join("spikes.h5"), &pops, 0.1);
    assert_eq!(pulsed, common::spikes_h5(&b.join("spikes.h5"), &pops, 0.1));
    assert_ne!(pulsed, common::spikes_h5(&dir.path().join("a").join("spikes.h5"), &pops, 0.1), "the pulse changes the spikes");
    // The same pulse as BMTK lists pulses: amp, delay and duration of each.
    let mut listed = config.clone();
    listed["inputs"]["pulse"] = serde_json::json!({"input_type": "current_clamp", "module": "IClamp", "node_set": "E", "amp": [300.0], "delay": [30.0], "duration": [30.0]});
    std::fs::write(circuit.join("simulation_config.json"), listed.to_string()).unwrap();
    fum(&["run".as_ref(), "--sonata".as_ref(), circuit.join("simulation_config.json").as_os_str(), "--out".as_ref(), c.as_os_str(), "--quiet".as_ref()]);
    assert_eq!(pulsed, common::spikes_h5(&c.join("spikes.h5"), &pops, 0.1));
    // The clamps are part of the model: another target is another hash.
    let hash = |config: &serde_json::Value| {
        let path = circuit.join("simulation_hash.json");
        std::fs::write(&path, config.to_string()).unwrap();
        Model::parse(&fum::engine::sonata::model_text(&path, None, None).unwrap(), &path).unwrap().hash()
    };
    let mut other = listed.clone();
    other["inputs"]["pulse"]["node_set"] = "I".into();
    assert_ne!(hash(&listed), hash(&other), "a clamp's target is in the model hash");
    // What a circuit cannot say is refused.
    std::fs::write(&model, TOML.replace("v_init_mv = -70.0", "v_init_mv = -70.0\nsyn_ex_init = 5.0")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).args(["export".as_ref(), model.as_os_str(), "--sonata".as_ref(), dir.path().join("c").as_os_str()]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("population \"I\" starts with synaptic currents"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Initial potentials listed per neuron (from Python) are exported node by node, as drawn ones
/// are, and so again from the circuit read back; the circuit gives the listed model's spikes.
/// A bias listed per neuron, which a SONATA point circuit cannot say, is refused.
#[test]
fn values_listed_per_neuron_are_exported_node_by_node() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let text = TOML.replace("duration_ms = 200.0", "duration_ms = 100.0");
    // Multiples of 3/32 mV: exact in the f32 the exporter reads back from the built network.
    let v: Vec<f64> = (0..160).map(|k| -65.0 + 0.09375 * f64::from(k)).collect();
    let values = |v_init_mv, i_e_pa| vec![("E".to_string(), fum::engine::sonata::NeuronValues { v_init_mv, i_e_pa, rate_hz: None })];
    let listed = Model::parse_listed(&text.replacen("v_init_mv = -65.0", "listed = [\"v_init_mv\"]", 1), &dir.path().join("m.toml"), vec![], values(Some(v.clone()), None), vec![]).unwrap();
    let read = |circuit: &Path| Model::parse(&format!("[simulation]\nduration_ms = 100.0\n\n[sonata]\ncircuit_config = {:?}\n", circuit.join("circuit_config.json")), &dir.path().join("e.toml")).unwrap();
    fum::engine::sonata::export(&listed, &dir.path().join("c")).unwrap();
    let circuit = read(&dir.path().join("c"));
    assert_eq!(circuit.neuron_values(0).and_then(|n| n.v_init_mv.clone()), Some(v.clone()));
    let spikes = common::spikes(&common::simulate(&listed, 1, 1));
    assert!(spikes.len() > 200, "the network fires");
    assert_eq!(spikes, common::spikes(&common::simulate(&circuit, 1, 2)));
    fum::engine::sonata::export(&circuit, &dir.path().join("again")).unwrap();
    assert_eq!(read(&dir.path().join("again")).neuron_values(0).and_then(|n| n.v_init_mv.clone()), Some(v));
    let bias = Model::parse_listed(&text.replacen("i_e_pa = 300.0", "listed = [\"i_e_pa\"]", 1), &dir.path().join("m.toml"), vec![], values(None, Some(vec![250.0; 159].into_iter().chain([300.0]).collect())), vec![]).unwrap();
    let refused = fum::engine::sonata::export(&bias, &dir.path().join("refused")).err().expect("refused").to_string();
    assert!(refused.contains("population \"E\" has an i_e_pa per neuron, drawn or listed"), "{refused}");
}

/// `fum check --sonata` on a circuit: its error message (empty if it is valid).
fn check(config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).args(["check", "--sonata"]).arg(config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.success(), stderr.is_empty(), "{stderr}");
    stderr
}

fn small_edges(weight: f64) -> Vec<Edges> {
    vec![("EI".into(), "E".into(), "I".into(), vec![0, 1, 2], vec![0, 0, 1], vec![weight; 3], vec![1.0; 3])]
}

#[track_caller]
fn expect(dir: &Path, node_types: &str, edges: &[Edges], edge_types: &str, fragments: &[&str]) {
    let config = write_circuit(dir, &[("E", 10), ("I", 5)], node_types, edges, edge_types);
    let err = check(&config);
    for f in fragments {
        assert!(err.contains(f), "\"{f}\" missing from: {err}");
    }
}

#[test]
fn a_valid_circuit_checks() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let config = write_circuit(dir.path(), &[("E", 10), ("I", 5)], NODE_TYPES, &small_edges(-5.0), EDGE_TYPES);
    assert_eq!(check(&config), "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).args(["check", "--sonata"]).arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("projection EI") && stdout.contains("E -> I: ~3 synapses"), "{stdout}");
}

#[test]
fn unsupported_neuron_model() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let types = NODE_TYPES.replace("101 point_neuron nest:iaf_psc_exp", "101 point_neuron nest:iaf_cond_alpha");
    expect(dir.path(), &types, &small_edges(1.0), EDGE_TYPES, &["node_types.csv: population \"I\", node_type_id 101: model_template \"nest:iaf_cond_alpha\" is not supported (supported: nest:iaf_psc_exp, nest:iaf_psc_alpha)"]);
}

/// `nest:iaf_psc_alpha` node types become `lif_psc_alpha` populations with their NEST
/// parameters, and give the spikes of the model file they came from; `fum export` writes such a
/// population back as `nest:iaf_psc_alpha`, and refuses a bias drawn per neuron.
#[test]
fn iaf_psc_alpha_nodes_are_lif_psc_alpha_populations() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let alpha = TOML.replace("model = \"lif_cuba\"", "model = \"lif_psc_alpha\"");
    let toml = common::parse(&alpha);
    let types = NODE_TYPES.replace("nest:iaf_psc_exp", "nest:iaf_psc_alpha");
    let config = write_circuit(&dir.path().join("c"), &[("E", 160), ("I", 40)], &types, &edges_of(&toml, 1), EDGE_TYPES);
    let text = format!("[simulation]\ndt_ms = 0.1\nduration_ms = 200.0\n\n[sonata]\ncircuit_config = {config:?}\n");
    let sonata = Model::parse(&text, &dir.path().join("m.toml")).unwrap();
    assert!(sonata.spec.populations.iter().all(|p| p.model == fum::engine::model::NeuronModel::LifPscAlpha));
    let e = &sonata.spec.populations[0];
    assert_eq!((e.tau_m_ms, e.e_l_mv, e.v_th_mv, e.i_e_pa), (20.0, -65.0, -50.0, fum::engine::model::Distribution::Constant(300.0)));
    let (a, b) = (common::simulate(&toml, 2, 3), common::simulate(&sonata, 1, 2));
    assert!(common::spikes(&a).len() > 500, "the network fires");
    assert_eq!(common::spikes(&a), common::spikes(&b));

    let model = dir.path().join("model.toml");
    std::fs::write(&model, alpha.replace("duration_ms = 200.0", "duration_ms = 100.0")).unwrap();
    let export = |circuit: &Path| std::process::Command::new(env!("CARGO_BIN_EXE_fum")).args(["export".as_ref(), model.as_os_str(), "--sonata".as_ref(), circuit.as_os_str()]).output().unwrap();
    let out = export(&dir.path().join("exported"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = std::fs::read_to_string(dir.path().join("exported/network/node_types.csv")).unwrap();
    assert_eq!(csv.matches("nest:iaf_psc_alpha").count(), 2, "{csv}");
    let exported = Model::parse(&format!("[simulation]\nduration_ms = 100.0\n\n[sonata]\ncircuit_config = {:?}\n", dir.path().join("exported/circuit_config.json")), &dir.path().join("e.toml")).unwrap();
    let original = common::parse(&std::fs::read_to_string(&model).unwrap());
    assert_eq!(common::spikes(&common::simulate(&exported, 1, 1)), common::spikes(&common::simulate(&original, 1, 1)));
    std::fs::write(&model, alpha.replace("i_e_pa = 400.0", "i_e_pa = { uniform = [380.0, 420.0] }")).unwrap();
    let out = export(&dir.path().join("refused"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("population \"I\" has an i_e_pa per neuron, drawn or listed"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unsupported_synapse_model_and_parameter() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    expect(&dir.path().join("a"), NODE_TYPES, &small_edges(1.0), "edge_type_id model_template\n1 stdp_synapse\n", &["edge_types.csv: population \"EI\", edge_type_id 1: model_template \"stdp_synapse\" is not supported (supported: static_synapse)"]);
    std::fs::create_dir_all(dir.path().join("b/params")).unwrap();
    let config = write_circuit(&dir.path().join("b"), &[("E", 10), ("I", 5)], NODE_TYPES, &small_edges(1.0), EDGE_TYPES);
    std::fs::write(dir.path().join("b/params/I.json"), r#"{"I_e": 1.0, "gsl_error_tol": 1e-6}"#).unwrap();
    let err = check(&config);
    assert!(err.contains("I.json: population \"I\", node_type_id 101: gsl_error_tol: not a parameter of nest:iaf_psc_exp that fum supports"), "{err}");
}

#[test]
fn missing_fields() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let no_type = NODE_TYPES.lines().take(2).collect::<Vec<_>>().join("\n");
    expect(&dir.path().join("a"), &no_type, &small_edges(1.0), EDGE_TYPES, &["node_types.csv: population \"I\", node_type_id 101: no row of node_type_id 101 (used by 5 nodes of"]);
    let config = write_circuit(&dir.path().join("b"), &[("E", 10), ("I", 5)], NODE_TYPES, &small_edges(1.0), EDGE_TYPES);
    let file = hdf5::File::open_rw(dir.path().join("b/edges.h5")).unwrap();
    file.unlink("edges/EI/0/syn_weight").unwrap();
    drop(file);
    assert!(check(&config).contains("edge_types.csv: population \"EI\", edge 0, edge_type_id 1: syn_weight: missing, per edge and per edge type"), "{}", check(&config));
    let file = hdf5::File::open_rw(dir.path().join("b/edges.h5")).unwrap();
    file.dataset("edges/EI/target_node_id").unwrap().delete_attr("node_population").unwrap();
    drop(file);
    assert!(check(&config).contains("edges.h5: /edges/EI/target_node_id: attribute node_population: missing"), "{}", check(&config));
}

#[test]
fn inconsistent_files() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // A target outside its node population.
    let edges = vec![("EI".into(), "E".into(), "I".into(), vec![0], vec![7], vec![1.0], vec![1.0])];
    expect(&dir.path().join("a"), NODE_TYPES, &edges, EDGE_TYPES, &["edges.h5: /edges/EI/target_node_id: edge 0: node 7 is not in node population \"I\""]);
    // Not an HDF5 file.
    let config = write_circuit(&dir.path().join("b"), &[("E", 10), ("I", 5)], NODE_TYPES, &small_edges(1.0), EDGE_TYPES);
    std::fs::write(dir.path().join("b/nodes.h5"), "not hdf5").unwrap();
    assert!(check(&config).contains("nodes.h5: cannot open as HDF5"), "{}", check(&config));
    // A delay below one step, told in the circuit's terms.
    let edges = vec![("EI".into(), "E".into(), "I".into(), vec![0], vec![1], vec![1.0], vec![0.01])];
    expect(&dir.path().join("c"), NODE_TYPES, &edges, EDGE_TYPES, &["edges.h5: population \"EI\" (projection \"EI\"): delay: a delay of 0.01 ms is shorter than one step"]);
    // V_reset above V_th, told as NEST's parameter.
    std::fs::create_dir_all(dir.path().join("d")).unwrap();
    let config = write_circuit(&dir.path().join("d"), &[("E", 10), ("I", 5)], NODE_TYPES, &small_edges(1.0), EDGE_TYPES);
    std::fs::write(dir.path().join("d/params/I.json"), r#"{"V_reset": -40.0}"#).unwrap();
    assert!(check(&config).contains("I.json: population \"I\", node_type_id 101: V_reset: must be below V_th (-55 mV)"), "{}", check(&config));
}

#[test]
fn per_node_dynamics_other_than_v_m_are_refused() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let config = write_circuit(dir.path(), &[("E", 10), ("I", 5)], NODE_TYPES, &small_edges(1.0), EDGE_TYPES);
    let file = hdf5::File::open_rw(dir.path().join("nodes.h5")).unwrap();
    let params = file.group("nodes/I").unwrap().create_group("0").unwrap().create_group("dynamics_params").unwrap();
    params.new_dataset_builder().with_data(&[-60.0f64; 5]).create("V_m").unwrap();
    drop((params, file));
    assert_eq!(check(&config), "");
    let file = hdf5::File::open_rw(dir.path().join("nodes.h5")).unwrap();
    file.group("nodes/I/0/dynamics_params").unwrap().new_dataset_builder().with_data(&[5.0f64; 5]).create("tau_m").unwrap();
    drop(file);
    let err = check(&config);
    assert!(err.contains("nodes.h5: /nodes/I/0/dynamics_params/tau_m: per-node tau_m is not supported (per node: dynamics_params/V_m)"), "{err}");
}

/// A virtual node population `LGN` of 3 nodes (ids 0, 1, 2), each driving one point neuron of
/// `T` hard enough to fire it in one step, and a simulation config whose `inputs` is `input`.
fn write_virtual_circuit(dir: &Path, input: serde_json::Value) -> PathBuf {
    let types = "node_type_id model_type model_template dynamics_params\n100 virtual NULL NULL\n101 point_neuron nest:iaf_psc_exp T.json\n";
    let edges: Vec<Edges> = vec![("LGN_T".into(), "LGN".into(), "T".into(), vec![0, 1, 2], vec![0, 1, 2], vec![100_000.0; 3], vec![1.5; 3])];
    write_circuit(dir, &[("LGN", 3), ("T", 3)], types, &edges, EDGE_TYPES);
    // A synaptic current gone within a step or so, and a refractory period of 10 steps.
    std::fs::write(dir.join("params/T.json"), r#"{"tau_syn_ex": 0.1, "t_ref": 1.0}"#).unwrap();
    let sim = serde_json::json!({"network": "circuit_config.json", "run": {"tstop": 10.0, "dt": 0.1}, "inputs": input});
    std::fs::write(dir.join("simulation_config.json"), sim.to_string()).unwrap();
    dir.join("simulation_config.json")
}

fn spikes_input(module: &str, file: &str, node_set: &str) -> serde_json::Value {
    serde_json::json!({"lgn": {"input_type": "spikes", "module": module, "input_file": file, "node_set": node_set}})
}

/// Spikes of `config` (a simulation config) simulated: (population, step, neuron), sorted.
fn run_sonata(config: &Path, shards: usize) -> Vec<(usize, u32, u32)> {
    let text = fum::engine::sonata::model_text(config, None, None).unwrap();
    let model = Model::parse(&text, config).unwrap();
    let mut spikes = common::spikes(&common::simulate(&model, 2, shards));
    spikes.sort_unstable();
    spikes
}

/// BMTK drives a circuit through virtual nodes: each becomes a spike source that fires at the
/// times its input file lists (h5 or csv, the node set by population name or through a node
/// set), and its edges carry them: a spike at step s through a 15-step delay fires its target
/// at step s + 16 (the current jumps at the end of step s + 15, the membrane integrates it in
/// the next), whatever the shards.
#[test]
fn virtual_nodes_driven_by_spike_inputs_fire_their_targets_step_exactly() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // Node 2 at 0.3 ms and 4.0 ms, node 0 at 1.25 ms (off the grid: step 13); node 1 silent.
    let (ids, times) = (vec![2u64, 0, 2], vec![0.3, 1.25, 4.0]);
    let expected: Vec<(usize, u32, u32)> = [(3, 2), (13, 0), (40, 2)].iter().flat_map(|&(s, n)| [(0, s, n), (1, s + 16, n)]).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let a = dir.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    common::write_spikes_h5(&a.join("lgn.h5"), "LGN", &ids, &times);
    let config = write_virtual_circuit(&a, spikes_input("h5", "lgn.h5", "LGN"));
    for shards in [1, 2, 5] {
        assert_eq!(run_sonata(&config, shards), expected, "{shards} shards");
    }
    // CSV as BMTK writes it, through a node set naming the population.
    let b = dir.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    let rows: String = ids.iter().zip(&times).map(|(n, t)| format!("{t} LGN {n}\n")).collect();
    std::fs::write(b.join("lgn.csv"), format!("timestamps population node_ids\n{rows}")).unwrap();
    let config = write_virtual_circuit(&b, spikes_input("csv", "lgn.csv", "thalamus"));
    let mut sim: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    sim["node_sets"] = serde_json::json!({"thalamus": {"population": "LGN"}});
    std::fs::write(&config, sim.to_string()).unwrap();
    assert_eq!(run_sonata(&config, 3), expected);
    // spikes.h5 names the virtual nodes' population and node ids, as BMTK's report does.
    let out = dir.path().join("run");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).args(["run".as_ref(), "--sonata".as_ref(), config.as_os_str(), "--out".as_ref(), out.as_os_str(), "--quiet".as_ref()]).status().unwrap();
    assert!(status.success());
    let listed = common::spikes_h5(&out.join("spikes.h5"), &[("LGN", 0), ("T", 3)], 0.1);
    assert_eq!(listed, expected.iter().map(|&(p, s, n)| (u64::from(s), 3 * p as u32 + n)).collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>());
}

#[test]
fn spike_inputs_that_cannot_be_read_are_refused_naming_the_file_and_field() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let case = |name: &str, input: serde_json::Value, spikes: Option<(&str, &[u64])>| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        if let Some((population, ids)) = spikes {
            common::write_spikes_h5(&d.join("lgn.h5"), population, ids, &vec![1.0; ids.len()]);
        }
        check(&write_virtual_circuit(&d, input))
    };
    let e = case("a", serde_json::json!({"clamp": {"input_type": "voltage_clamp", "module": "SEClamp", "node_set": "T"}}), None);
    assert!(e.contains("simulation_config.json: inputs.clamp: input_type \"voltage_clamp\" is not supported (supported: \"spikes\", spike trains into virtual nodes; \"current_clamp\")"), "{e}");
    let clamp = |fields: serde_json::Value| {
        let mut c = serde_json::json!({"input_type": "current_clamp", "module": "IClamp", "node_set": "T", "amp": 100.0, "delay": 1.0, "duration": 2.0});
        fields.as_object().unwrap().iter().for_each(|(k, v)| c[k] = v.clone());
        serde_json::json!({ "clamp": c })
    };
    let e = case("a2", clamp(serde_json::json!({"node_set": "LGN"})), None);
    assert!(e.contains("inputs.clamp: node_set \"LGN\": population \"LGN\" is virtual: a current clamp drives neurons"), "{e}");
    let e = case("a3", clamp(serde_json::json!({"amp": [100.0, 50.0]})), None);
    assert!(e.contains("inputs.clamp: amp, delay and duration must list as many pulses (2, 1 and 1)"), "{e}");
    let e = case("a4", clamp(serde_json::json!({"module": "SEClamp"})), None);
    assert!(e.contains("inputs.clamp: module \"SEClamp\" is not supported for a current_clamp (supported: \"IClamp\")"), "{e}");
    let e = case("a5", clamp(serde_json::json!({"duration": "long"})), None);
    assert!(e.contains("inputs.clamp: duration: must be a number or a list of numbers (got \"long\")"), "{e}");
    let e = case("a6", clamp(serde_json::json!({"delay": [1.0, -2.0], "amp": [1.0, 2.0], "duration": [1.0, 1.0]})), None);
    assert!(e.contains("simulation_config.json: inputs.clamp: delay[1]: must not be negative (got -2)"), "{e}");
    let e = case("a7", clamp(serde_json::json!({"duration": 0.0})), None);
    assert!(e.contains("simulation_config.json: inputs.clamp: duration[0]: must be positive (got 0)"), "{e}");
    let e = case("a8", clamp(serde_json::json!({"module": 3})), None);
    assert!(e.contains("inputs.clamp: module 3 is not supported for a current_clamp"), "{e}");
    let e = case("b", spikes_input("nwb", "lgn.nwb", "LGN"), None);
    assert!(e.contains("inputs.lgn: module \"nwb\" is not supported (supported: \"h5\", \"sonata\", \"csv\")"), "{e}");
    let e = case("c", spikes_input("h5", "lgn.h5", "V1"), None);
    assert!(e.contains("inputs.lgn: node_set \"V1\": neither a node population (LGN, T) nor a node set of the config"), "{e}");
    let e = case("d", spikes_input("h5", "lgn.h5", "LGN"), None);
    assert!(e.contains("lgn.h5: cannot read the spikes file"), "{e}");
    let e = case("e", spikes_input("h5", "lgn.h5", "LGN"), Some(("LGN", &[0, 7])));
    assert!(e.contains("lgn.h5: /spikes/LGN/node_ids[1]: node 7 is not in node population \"LGN\""), "{e}");
    let e = case("f", spikes_input("h5", "lgn.h5", "T"), Some(("T", &[1])));
    assert!(e.contains("lgn.h5: /spikes/T/node_ids[0]: node 1 of population \"T\" is not virtual: spike inputs drive virtual nodes"), "{e}");
    let e = case("g", spikes_input("h5", "lgn.h5", "LGN"), Some(("lgn", &[1])));
    assert!(e.contains("lgn.h5: /spikes: no population \"LGN\" (the file has: lgn)"), "{e}");
    // Edges into virtual nodes, told in the circuit's terms.
    let d = dir.path().join("h");
    std::fs::create_dir_all(&d).unwrap();
    let types = "node_type_id model_type model_template dynamics_params\n100 virtual NULL NULL\n101 point_neuron nest:iaf_psc_exp T.json\n";
    let edges: Vec<Edges> = vec![("T_LGN".into(), "T".into(), "LGN".into(), vec![0], vec![1], vec![1.0], vec![1.0])];
    let e = check(&write_circuit(&d, &[("LGN", 3), ("T", 3)], types, &edges, EDGE_TYPES));
    assert!(e.contains("edges.h5: population \"T_LGN\" (projection \"T_LGN\"): target_node_id: population \"LGN\" is a spike_source: it receives no synapses"), "{e}");
}

/// `fum export` writes a spike source as virtual nodes with its spikes file, fed through the
/// simulation config's inputs; the circuit gives the model's spikes.
#[test]
fn spike_sources_export_as_virtual_nodes_with_their_spikes() {
    let _files = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let model = common::write_spike_sources(dir.path());
    let circuit = dir.path().join("circuit");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).args(["export".as_ref(), model.as_os_str(), "--sonata".as_ref(), circuit.as_os_str()]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("projection \"LGN_E\" is plastic"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&model, common::SPIKE_SOURCES.replace("plasticity = \"stdp\"\n", "")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fum")).args(["export".as_ref(), model.as_os_str(), "--sonata".as_ref(), circuit.as_os_str()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = std::fs::read_to_string(circuit.join("network/node_types.csv")).unwrap();
    assert_eq!(csv.matches(" virtual ").count(), 2, "{csv}");
    let original = Model::load(&model).unwrap();
    let exported = Model::parse(&fum::engine::sonata::model_text(&circuit.join("simulation_config.json"), None, None).unwrap(), &circuit.join("simulation_config.json")).unwrap();
    // The circuit lists its node populations by name (HDF5 sorts them): compare by name.
    let named = |model: &Model, threads, shards| {
        let mut spikes: Vec<(String, u32, u32)> = common::spikes(&common::simulate(model, threads, shards)).into_iter().map(|(p, s, n)| (model.spec.populations[p].name.clone(), s, n)).collect();
        spikes.sort_unstable();
        spikes
    };
    let spikes = named(&original, 2, 3);
    assert!(spikes.iter().filter(|s| s.0 == "E").count() > 1000 && spikes.iter().filter(|s| s.0 == "cue").count() == 3, "the network fires");
    assert!(named(&exported, 1, 2) == spikes, "the exported circuit's spikes differ");
}
