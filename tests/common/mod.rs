//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fum::engine::components::{Shard, SynapseBlocks};
use fum::engine::recording::Recorder;
use fum::{DefaultPlugins, Model, Simulation};

/// A small balanced network with Poisson drive, every connection rule, heterogeneous delays
/// and weights, and plastic E->E synapses: it exercises every random stream and every system.
pub const BALANCED: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 300.0
seed = 99

[[populations]]
name = "E"
size = 800
model = "lif_cuba"
tau_m_ms = 20.0
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0
tau_syn_ex_ms = 0.5
tau_syn_in_ms = 0.5
v_init_mv = { uniform = [0.0, 20.0] }

[[populations]]
name = "I"
size = 200
model = "lif_coba"
e_l_mv = -60.0
v_th_mv = -50.0
v_reset_mv = -60.0
e_ex_mv = 0.0
e_in_mv = -80.0
tau_m_ms = 20.0
c_m_pf = 200.0
tau_syn_ex_ms = 5.0
tau_syn_in_ms = 10.0
v_init_mv = { normal = [-55.0, 3.0] }

[[projections]]
name = "EE"
source = "E"
target = "E"
rule = { fixed_indegree = 80 }
weight = { uniform = [40.0, 60.0] }
delay_ms = { uniform = [0.5, 3.0] }
plasticity = "stdp"

[[projections]]
name = "EI"
source = "E"
target = "I"
rule = { fixed_probability = 0.1 }
weight = 2.0
delay_ms = 1.0

[[projections]]
name = "IE"
source = "I"
target = "E"
rule = { fixed_outdegree = 100 }
receptor = "inhibitory"
weight = { normal = [250.0, 20.0] }
delay_ms = 0.8

[[projections]]
name = "II"
source = "I"
target = "I"
rule = "all_to_all"
receptor = "inhibitory"
weight = 0.5

[[plasticity]]
name = "stdp"
a_plus = 0.01
a_minus = 0.0105
w_max = 100.0

[[inputs]]
name = "drive"
kind = "poisson"
target = "E"
rate_hz = 16000.0
weight = 50.0

[[inputs]]
name = "drive_I"
kind = "poisson"
target = "I"
rate_hz = 2000.0
weight = 3.0

[[inputs]]
name = "bias"
kind = "dc"
target = "I"
amplitude_pa = 20.0

[recording]
spikes = ["E", "I"]
"#;

/// [`BALANCED`] at 70,000 neurons, so that one shard holds more than 65,536 of them and stores
/// 4-byte targets (`fum::engine::components::Targets`) while two or more store 2-byte ones:
/// every rule (all_to_all as fixed_total_number), drawn delays, STDP and structural plasticity
/// on E->E (a plan every 20 ms), in-degrees cut to tens, 50 ms.
pub fn wide() -> String {
    let mut text = BALANCED.to_string();
    for (from, to) in [
        ("duration_ms = 300.0", "duration_ms = 50.0"),
        ("size = 800", "size = 60000"),
        ("size = 200", "size = 10000"),
        ("rule = { fixed_indegree = 80 }\nweight = { uniform = [40.0, 60.0] }", "rule = { fixed_indegree = 20 }\nweight = { uniform = [100.0, 200.0] }"),
        ("rule = { fixed_probability = 0.1 }\nweight = 2.0", "rule = { fixed_probability = 0.0005 }\nweight = 8.0"),
        ("fixed_outdegree = 100", "fixed_outdegree = 30"),
        ("rule = \"all_to_all\"", "rule = { fixed_total_number = 50000 }"),
        ("w_max = 100.0", "w_max = 400.0"),
    ] {
        assert!(text.contains(from), "BALANCED holds {from:?}");
        text = text.replace(from, to);
    }
    text + r#"
[[structural]]
projection = "EE"
every_ms = 20.0
commit_after_ms = 5.0
prune = { lowest_priority_fraction = 0.2 }
regrow = { to_indegree = 20, weight = { uniform = [100.0, 200.0] } }
"#
}

/// One population driven hard by Poisson input (100 ms), its spikes recorded: fast enough to
/// outrun real time on one thread.
pub const DRIVEN: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 100.0
seed = 3

[[populations]]
name = "driven"
size = 200
model = "lif_cuba"
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0
tau_m_ms = 20.0
tau_syn_ex_ms = 0.5
tau_syn_in_ms = 0.5

[[inputs]]
name = "drive"
kind = "poisson"
target = "driven"
rate_hz = 20000.0
weight = 50.0

[recording]
spikes = ["driven"]
"#;

/// A small network that fires (300 + 75 neurons, Poisson drive, 200 ms), recorded and probed.
pub const SMALL_NETWORK: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 200.0
seed = 7

[[populations]]
name = "exc"
size = 300
model = "lif_cuba"
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0
tau_m_ms = 20.0
tau_syn_ex_ms = 0.5
tau_syn_in_ms = 0.5
v_init_mv = { uniform = [0.0, 20.0] }

[[populations]]
name = "inh"
size = 75
model = "lif_cuba"
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0
tau_m_ms = 20.0
tau_syn_ex_ms = 0.5
tau_syn_in_ms = 0.5

[[projections]]
name = "e"
source = "exc"
target = "inh"
rule = { fixed_indegree = 30 }
weight = 50.0
delay_ms = 1.5

[[projections]]
name = "i"
source = "inh"
target = "exc"
rule = { fixed_indegree = 10 }
receptor = "inhibitory"
weight = 200.0
delay_ms = 1.5

[[inputs]]
name = "drive"
kind = "poisson"
target = "exc"
rate_hz = 20000.0
weight = 50.0

[recording]
spikes = ["exc", "inh"]

[[recording.probes]]
name = "membrane"
variable = "v"
population = "exc"
neurons = [0, 5]
interval_ms = 1.0
"#;

/// A valid model at the limits: one population of 2^32 - 1 neurons, as many distinct sources
/// per neuron, a dt of 1e-300 ms with just under 2^32 steps (line 4), delays in such steps,
/// weights up to the largest f32. It describes far more synapses than memory holds: `fum check`
/// refuses it for memory, without building.
pub const AT_THE_LIMITS: &str = r#"
[simulation]
dt_ms = 1e-300
duration_ms = 4e-291
seed = 18446744073709551615

[[populations]]
name = "A"
size = 4294967295
model = "lif_cuba"
t_ref_ms = 1e300

[[projections]]
name = "AA"
source = "A"
target = "A"
rule = { fixed_indegree = 4294967295 }
allow_multapses = false
weight = { uniform = [0.0, 3.4e38] }
delay_ms = { uniform = [1e-300, 1.023e-297] }

[[projections]]
name = "all"
source = "A"
target = "A"
rule = "all_to_all"
weight = { normal = [1e38, 2e37] }
delay_ms = { normal = [1e-298, 1e300] }

[recording]
spikes = ["A"]
"#;

/// `n` populations of one neuron, and `n` one_to_one projections, the i-th onto population
/// n - 1 - i (a name looked up far from where it is defined).
pub fn many_populations(n: usize) -> String {
    let mut text = String::from("[simulation]\nduration_ms = 1.0\n");
    for i in 0..n {
        text += &format!("[[populations]]\nname = \"p{i}\"\nsize = 1\nmodel = \"lif_cuba\"\n");
    }
    for i in 0..n {
        let p = n - 1 - i;
        text += &format!("[[projections]]\nname = \"q{i}\"\nsource = \"p{p}\"\ntarget = \"p{p}\"\nrule = \"one_to_one\"\nweight = 1.0\n");
    }
    text
}

/// A `fum run ... --serve 0` child, the address it serves on, its steering token and the
/// later lines of its stderr.
pub struct Served {
    pub child: std::process::Child,
    pub addr: String,
    pub token: String,
    pub stderr: std::sync::mpsc::Receiver<String>,
}

/// Starts `bin run ARGS --serve 0` and reads where it serves from its first line of stderr.
pub fn serve_run(bin: &Path, args: &[&str]) -> Served {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(bin).arg("run").args(args).args(["--serve", "0"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().expect("fum run prints where it serves").unwrap();
    // "serving on ADDR (fum view --attach ADDR); steering token TOKEN"
    let addr = line.strip_prefix("serving on ").and_then(|r| r.split_whitespace().next()).unwrap_or_else(|| panic!("{line}")).to_string();
    let token = line.rsplit(' ').next().unwrap().to_string();
    let (tx, stderr) = std::sync::mpsc::channel();
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    Served { child, addr, token, stderr }
}

/// The spikes of a run's spikes.h5 as (step, global id), sorted; `populations`: each recorded
/// population's name and first global id.
pub fn spikes_h5(path: &Path, populations: &[(&str, u32)], dt_ms: f64) -> Vec<(u64, u32)> {
    let file = hdf5::File::open(path).unwrap();
    let mut all = Vec::new();
    for &(name, first) in populations {
        let group = file.group(&format!("spikes/{name}")).unwrap();
        let times: Vec<f64> = group.dataset("timestamps").unwrap().read_raw().unwrap();
        let ids: Vec<u64> = group.dataset("node_ids").unwrap().read_raw().unwrap();
        all.extend(times.iter().zip(&ids).map(|(&t, &n)| ((t / dt_ms).round() as u64, first + n as u32)));
    }
    all.sort_unstable();
    all
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether assets/models/`name` is exactly what `benchmarks/models/<script>` writes (the assets
/// generated from NEST's parameters); skips, saying so, where python3 cannot run.
pub fn assert_generated(name: &str, script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(name);
    let script = repo().join("benchmarks/models").join(script);
    let status = match std::process::Command::new("python3").arg(&script).arg(&out).status() {
        Ok(status) => status,
        Err(e) => {
            println!("skipped: cannot run python3 ({e}), so the generator's output is not compared");
            return;
        }
    };
    assert!(status.success(), "{} failed: {status}", script.display());
    let written = std::fs::read_to_string(&out).unwrap();
    let asset = std::fs::read_to_string(repo().join("assets/models").join(name)).unwrap();
    assert!(written == asset, "assets/models/{name} differs from what {} writes: rerun `python3 {} assets/models/{name}`", script.display(), script.strip_prefix(repo()).unwrap().display());
}

pub fn asset(name: &str) -> Model {
    Model::load(repo().join("assets/models").join(name)).expect("asset models are valid")
}

pub fn parse(text: &str) -> Model {
    Model::parse(text, Path::new("test.toml")).expect("test model is valid")
}

/// Builds and runs `model` to its end with the given threads and shards.
pub fn simulate(model: &Model, threads: usize, shards: usize) -> Simulation {
    let mut sim = Simulation::from_model(model, threads, shards).expect("builds");
    sim.add_plugins(DefaultPlugins);
    sim.run(model.steps(), |_| {});
    sim
}

/// Recorded spikes as (population index, step, population-local id), in recording order.
pub fn spikes(sim: &Simulation) -> Vec<(usize, u32, u32)> {
    let rec = sim.world.resource::<Recorder>();
    rec.spikes
        .iter()
        .flat_map(|r| r.steps.pending.iter().zip(&r.node_ids.pending).map(move |(&s, &n)| (r.population, s, n)))
        .collect()
}

/// Every synapse as (projection, global pre, global post, delay in steps, weight bits as
/// f32), sorted: a canonical view of the network whatever the sharding.
pub fn synapses(sim: &mut Simulation) -> Vec<(usize, u32, u32, u16, u32)> {
    let mut query = sim.world.query::<(&Shard, &SynapseBlocks)>();
    let mut all = Vec::new();
    for (shard, blocks) in query.iter(&sim.world) {
        for b in &blocks.0 {
            for row in 0..b.source_size as usize {
                for k in b.row_ptr[row] as usize..b.row_ptr[row + 1] as usize {
                    all.push((b.projection, b.source_first + row as u32, shard.neurons.start + b.target.get(k), b.delay.get(k), b.weight.get(k).to_bits()));
                }
            }
        }
    }
    all.sort_unstable();
    all
}

/// Mean firing rate (Hz) and mean ISI coefficient of variation of a recorded population,
/// ignoring spikes before `from_ms`.
pub fn rate_and_cv(sim: &Simulation, population: usize, size: u32, from_ms: f64, to_ms: f64, dt_ms: f64) -> (f64, f64) {
    let mut trains: Vec<Vec<f64>> = vec![Vec::new(); size as usize];
    for (pop, step, id) in spikes(sim) {
        let t = f64::from(step) * dt_ms;
        if pop == population && t >= from_ms {
            trains[id as usize].push(t);
        }
    }
    let count: usize = trains.iter().map(Vec::len).sum();
    let rate = count as f64 / (f64::from(size) * (to_ms - from_ms) * 1e-3);
    let cvs: Vec<f64> = trains
        .iter()
        .filter(|t| t.len() > 3)
        .map(|t| {
            let isi: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
            let mean = isi.iter().sum::<f64>() / isi.len() as f64;
            let var = isi.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / isi.len() as f64;
            var.sqrt() / mean
        })
        .collect();
    (rate, cvs.iter().sum::<f64>() / cvs.len().max(1) as f64)
}

/// `mpirun` of `bin` on `np` ranks with what CI's machine needs: more ranks than cores
/// (yielding while they wait), and root allowed.
pub fn mpirun(bin: &Path, np: usize, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("mpirun");
    c.args(["--oversubscribe", "--mca", "mpi_yield_when_idle", "1", "-np", &np.to_string()]).arg(bin);
    c.args(args).env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

/// Asset `name` without its probes, in `dir`.
pub fn without_probes(name: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(format!("assets/models/{name}.toml")).unwrap();
    // Every [[recording.probes]] table: from its header to the next table's.
    let mut probes = false;
    let text: String = text
        .lines()
        .filter(|line| {
            if line.starts_with('[') {
                probes = line.trim() == "[[recording.probes]]";
            }
            !probes
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(!text.contains("[[recording.probes]]"), "{name}'s probes are gone");
    assert!(text.contains("spikes = [\"E\", \"I\"]"), "{name} records its spikes");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A network driven by spike sources: `LGN` (100 neurons) reads its spikes from `lgn.h5`
/// ([`write_spike_sources`] writes both), `cue` lists its own; they drive `E` and `I` through
/// static and plastic synapses.
pub const SPIKE_SOURCES: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 300.0
seed = 5

[[populations]]
name = "LGN"
size = 100
model = "spike_source"
spikes = "lgn.h5"

[[populations]]
name = "cue"
size = 2
model = "spike_source"
spike_times_ms = [[20.0, 150.0], [75.05]]

[[populations]]
name = "E"
size = 400
model = "lif_cuba"
tau_m_ms = 20.0
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0
tau_syn_ex_ms = 0.5
tau_syn_in_ms = 0.5

[[populations]]
name = "I"
size = 100
model = "lif_cuba"
tau_m_ms = 20.0
e_l_mv = 0.0
v_th_mv = 20.0
v_reset_mv = 10.0
tau_syn_ex_ms = 0.5
tau_syn_in_ms = 0.5

[[projections]]
name = "LGN_E"
source = "LGN"
target = "E"
rule = { fixed_indegree = 20 }
weight = { uniform = [400.0, 800.0] }
delay_ms = { uniform = [1.0, 3.0] }
plasticity = "stdp"

[[projections]]
name = "cue_E"
source = "cue"
target = "E"
rule = "all_to_all"
weight = 2000.0
delay_ms = 2.0

[[projections]]
name = "EE"
source = "E"
target = "E"
rule = { fixed_indegree = 40 }
weight = 60.0
delay_ms = 1.5

[[projections]]
name = "EI"
source = "E"
target = "I"
rule = { fixed_indegree = 40 }
weight = 200.0
delay_ms = 1.0

[[projections]]
name = "IE"
source = "I"
target = "E"
rule = { fixed_indegree = 20 }
receptor = "inhibitory"
weight = 300.0
delay_ms = 0.8

[[plasticity]]
name = "stdp"
a_plus = 0.01
a_minus = 0.0105
w_max = 1000.0

[recording]
spikes = ["LGN", "cue", "E", "I"]
"#;

/// Spike times of `n` neurons, `per_neuron` each within `duration_ms`, in hundredths of a ms
/// (mostly off a 0.1 ms grid), listed neuron by neuron (not sorted by time), from a fixed formula.
pub fn listed_spikes(n: u64, per_neuron: u64, duration_ms: f64) -> (Vec<u64>, Vec<f64>) {
    let hundredths = (duration_ms * 100.0) as u64;
    let (mut ids, mut times) = (Vec::new(), Vec::new());
    for id in 0..n {
        for k in 0..per_neuron {
            ids.push(id);
            times.push(((id * 7919 + k * 104_729 + k * k * 31) % hundredths) as f64 / 100.0);
        }
    }
    (ids, times)
}

/// Writes a SONATA spikes file: `/spikes/<population>/node_ids` and `timestamps` (ms).
pub fn write_spikes_h5(path: &Path, population: &str, ids: &[u64], times_ms: &[f64]) {
    let file = hdf5::File::create(path).unwrap();
    let g = file.create_group("spikes").unwrap().create_group(population).unwrap();
    g.new_dataset_builder().with_data(ids).create("node_ids").unwrap();
    let ds = g.new_dataset_builder().with_data(times_ms).create("timestamps").unwrap();
    let units: hdf5::types::VarLenUnicode = "ms".parse().unwrap();
    ds.new_attr::<hdf5::types::VarLenUnicode>().create("units").unwrap().write_scalar(&units).unwrap();
}

/// Writes [`SPIKE_SOURCES`] as `model.toml` in `dir` with its `lgn.h5`; returns the model's path.
pub fn write_spike_sources(dir: &Path) -> PathBuf {
    let (ids, times) = listed_spikes(100, 20, 300.0);
    write_spikes_h5(&dir.join("lgn.h5"), "lgn", &ids, &times);
    std::fs::write(dir.join("model.toml"), SPIKE_SOURCES).unwrap();
    dir.join("model.toml")
}

/// Runs `model` to `split` steps, checkpoints through a file, restores into a freshly built
/// world of the same threads and shards and runs on to the model's end.
pub fn resumed_at(model: &Model, split: u64, threads: usize, shards: usize) -> Simulation {
    use fum::engine::checkpoint::{Checkpoint, Snapshot};
    let dir = tempfile::tempdir().unwrap();
    let mut first = Simulation::from_model(model, threads, shards).unwrap();
    first.add_plugins(DefaultPlugins);
    first.run(split, |_| {});
    let path = Snapshot::take(&mut first.world, &model.source, model.hash(), serde_json::Value::Null).unwrap().write(dir.path(), 1).unwrap();
    drop(first);
    let mut second = Simulation::from_model(model, threads, shards).unwrap();
    Checkpoint::open(&path).unwrap().restore(&mut second.world, model.hash()).unwrap();
    second.add_plugins(DefaultPlugins);
    second.run(model.steps(), |_| {});
    second
}

/// The model `text` (saved as `name`) with one more probe, of the synaptic currents of I neurons at both ends
/// and the middle of the population (the last shards: another rank's than the asset's own
/// probes, which are of the first neurons).
pub fn probed_across(name: &str, text: &str, dir: &Path, i_neurons: u32) -> std::path::PathBuf {
    let path = dir.join(format!("{name}-probed.toml"));
    let probe = format!("\n[[recording.probes]]\nname = \"across\"\nvariable = \"syn_ex\"\npopulation = \"I\"\nneurons = [0, {}, {}]\ninterval_ms = 0.2\n", i_neurons / 2, i_neurons - 1);
    std::fs::write(&path, text.to_string() + &probe).unwrap();
    path
}
