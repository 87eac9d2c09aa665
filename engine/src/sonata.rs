//! SONATA circuits (the format of BMTK and NEST's `SonataNetwork`): nodes and edges HDF5 files
//! with their CSV type tables, read into the populations and projections of a [`Model`].
//!
//! A model file's `[sonata]` section names a `circuit_config.json` (and optionally a simulation
//! config); [`import`] reads the circuit into the model's populations and projections, and the
//! model then goes through the normal validation, estimate and build. There is no second
//! schema: a SONATA node type is a `lif_cuba` (`nest:iaf_psc_exp`) or `lif_psc_alpha`
//! (`nest:iaf_psc_alpha`) population, or a `spike_source` for `virtual` nodes (its spikes
//! from the simulation config's spike `inputs`), a group of edges a projection whose
//! rule is [`ConnectionRule::Explicit`], its synapses listed one by one in the [`Circuit`] the
//! model carries (the builder lays them out as it lays out drawn ones). `fum run --sonata`
//! writes that model file ([`model_text`]) so a checkpoint holds it and a resumed run reads
//! the same circuit again.
//!
//! Mapping: each (node population, `node_type_id`) becomes one population, its neurons in
//! ascending `node_id`, named after the node population (`<population>:<node_type_id>` where a
//! node population has several types). Each edge population becomes one projection per
//! (source population, target population, sign of the weight), edges in file order: NEST reads
//! a negative weight as inhibitory, fum stores a magnitude on the inhibitory receptor.
//! `spikes.h5` maps the neurons back to their node population and `node_id`.
//! docs/sonata.md lists what is read and what is refused.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use hdf5::types::{VarLenAscii, VarLenUnicode};
use serde_json::Value;

use crate::Model;
use crate::model::{ConnectionRule, Distribution, ModelError, NeuronModel, PopulationSpec, ProjectionSpec, Receptor, SonataSpec};

/// Synapses given one by one: population-local sources and targets, weight magnitudes and
/// delays, in the order the circuit lists them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SynapseList {
    pub pre: Vec<u32>,
    pub post: Vec<u32>,
    pub weight: Vec<f32>,
    pub delay_ms: Vec<f64>,
}

impl SynapseList {
    pub fn len(&self) -> usize {
        self.pre.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pre.is_empty()
    }
    fn push(&mut self, pre: u32, post: u32, weight: f32, delay_ms: f64) {
        self.pre.push(pre);
        self.post.push(post);
        self.weight.push(weight);
        self.delay_ms.push(delay_ms);
    }
}

/// Values given neuron by neuron, in neuron order, where fields would give one value for all
/// or draw them: a population's (a SONATA node group's per-node `V_m`, arrays from Python:
/// `fum.Model.population(..., v_init_mv=array)`) or a Poisson input's, per neuron of its target
/// (`fum.Model.poisson(..., rate_hz=array)`). The builder takes them in place of the draws
/// (`Model::neuron_values`, `Model::input_rates_hz`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NeuronValues {
    /// Initial membrane potential, mV.
    pub v_init_mv: Option<Vec<f64>>,
    /// Bias current, pA (stored per neuron as a drawn `i_e_pa` is).
    pub i_e_pa: Option<Vec<f64>>,
    /// A Poisson input's rate into each target neuron, Hz (stored as a drawn `rate_hz` is).
    pub rate_hz: Option<Vec<f64>>,
}

impl NeuronValues {
    /// Every field, given or not, in one order (for the hash and the estimate).
    pub fn fields(&self) -> [&Option<Vec<f64>>; 3] {
        [&self.v_init_mv, &self.i_e_pa, &self.rate_hz]
    }
}

/// Where a population came from: its node population, node type and ids.
#[derive(Clone, Debug)]
pub struct NodeSet {
    pub population: String,
    pub node_type_id: i64,
    /// SONATA `node_id` of each neuron, ascending.
    pub node_ids: Vec<u64>,
    /// Values given node by node: the initial membrane potential where a node group gives
    /// `dynamics_params/V_m` (as BMTK reads it; the type's `V_m` for the other nodes).
    pub values: NeuronValues,
    /// The node-types CSV and the dynamics_params file, for messages.
    pub types_file: PathBuf,
    pub params_file: Option<PathBuf>,
}

/// Where a projection came from, and its synapses.
#[derive(Clone, Debug)]
pub struct EdgeSet {
    pub population: String,
    pub edges_file: PathBuf,
    pub synapses: SynapseList,
}

/// An imported circuit: one [`NodeSet`] per population and one [`EdgeSet`] per projection of
/// the model, in the model's order.
#[derive(Clone, Debug)]
pub struct Circuit {
    pub nodes: Vec<NodeSet>,
    pub edges: Vec<EdgeSet>,
    /// A hash of everything read (node ids, types, parameters, synapses): part of the model's
    /// hash, so that a checkpoint of another circuit is refused.
    pub digest: u64,
}

impl Circuit {
    /// The SONATA node populations of the recorded populations `recorded` (model indices), in
    /// order of first appearance, each with the populations it holds.
    pub fn report_groups(&self, recorded: &[usize]) -> Vec<(String, Vec<usize>)> {
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for &p in recorded {
            let name = &self.nodes[p].population;
            match groups.iter_mut().find(|(n, _)| n == name) {
                Some((_, members)) => members.push(p),
                None => groups.push((name.clone(), vec![p])),
            }
        }
        groups
    }
}

/// The model's error for a SONATA file: the file, then where in it (population, type id) and
/// the field.
pub(crate) fn error(file: &Path, place: impl Into<String>, message: impl Into<String>) -> ModelError {
    ModelError::Sonata { file: file.display().to_string(), place: place.into(), message: message.into() }
}

/// A config file's JSON, with its manifest's `$NAME` and `${configdir}` substituted in every
/// string and relative paths left relative to the file's folder (see [`resolve`]).
struct Config {
    path: PathBuf,
    json: Value,
}

impl Config {
    fn read(path: &Path) -> Result<Config, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| error(path, "", format!("cannot read: {e}")))?;
        let mut json: Value = serde_json::from_str(&text).map_err(|e| error(path, "", format!("not JSON: {e}")))?;
        let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let mut manifest: Vec<(String, String)> = Vec::new();
        if let Some(m) = json.get("manifest") {
            let Some(m) = m.as_object() else { return Err(error(path, "", "manifest: must be an object of \"$NAME\": \"value\"")) };
            for (k, v) in m {
                let Some(v) = v.as_str() else { return Err(error(path, "", format!("manifest.{k}: must be a string"))) };
                manifest.push((k.trim_start_matches('$').trim_start_matches('{').trim_end_matches('}').to_string(), v.to_string()));
            }
        }
        // Longest names first, so that $BASE does not replace the start of $BASE_DIR.
        manifest.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        let configdir = dir.display().to_string();
        let substitute = |s: &str| -> Result<String, ModelError> {
            let mut s = s.replace("${configdir}", &configdir);
            for _ in 0..16 {
                if !s.contains('$') {
                    return Ok(s);
                }
                let before = s.clone();
                for (k, v) in &manifest {
                    s = s.replace(&format!("${{{k}}}"), v).replace(&format!("${k}"), v);
                }
                s = s.replace("${configdir}", &configdir);
                if s == before {
                    break;
                }
            }
            if s.contains('$') {
                return Err(error(path, "", format!("\"{s}\": a $NAME the manifest does not define (or defines in a cycle)")));
            }
            Ok(s)
        };
        fn walk(v: &mut Value, f: &dyn Fn(&str) -> Result<String, ModelError>) -> Result<(), ModelError> {
            match v {
                Value::String(s) => *s = f(s)?,
                Value::Array(a) => a.iter_mut().try_for_each(|x| walk(x, f))?,
                Value::Object(o) => o.iter_mut().filter(|(k, _)| k.as_str() != "manifest").try_for_each(|(_, x)| walk(x, f))?,
                _ => {}
            }
            Ok(())
        }
        walk(&mut json, &substitute)?;
        Ok(Config { path: path.to_path_buf(), json })
    }

    /// A path the config names: relative ones are relative to the config's folder.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { self.path.parent().unwrap_or(Path::new(".")).join(p) }
    }

    fn string(&self, value: &Value, field: &str) -> Result<String, ModelError> {
        value.as_str().map(str::to_string).ok_or_else(|| error(&self.path, "", format!("{field}: must be a string (got {value})")))
    }
}

/// The configs `path` names: a circuit config (`networks`), a simulation config (`run`), or a
/// config that references either through `network` / `simulation`.
pub struct Configs {
    pub circuit: PathBuf,
    pub simulation: Option<PathBuf>,
}

/// Finds the circuit and simulation configs from the file given to `fum run --sonata`.
pub fn configs(path: &Path) -> Result<Configs, ModelError> {
    let top = Config::read(path)?;
    let named = |key: &str| -> Result<Option<PathBuf>, ModelError> { top.json.get(key).map(|v| top.string(v, key).map(|s| top.resolve(&s))).transpose() };
    let circuit = match (top.json.get("networks"), named("network")?) {
        (Some(_), _) => path.to_path_buf(),
        (None, Some(p)) => p,
        (None, None) => return Err(error(path, "", "neither a circuit config (no \"networks\") nor a config naming one (no \"network\")")),
    };
    let simulation = match named("simulation")? {
        Some(p) => Some(p),
        None if top.json.get("run").is_some() => Some(path.to_path_buf()),
        None => None,
    };
    Ok(Configs { circuit: absolute(&circuit), simulation: simulation.map(|p| absolute(&p)) })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The model file `fum run --sonata` runs: `[simulation]` from the simulation config's
/// `run.dt` and `run.tstop` (`duration_ms` overrides it; `fallback_ms` stands in where neither
/// is given, else that is an error), `[sonata]` naming the configs.
pub fn model_text(path: &Path, duration_ms: Option<f64>, fallback_ms: Option<f64>) -> Result<String, ModelError> {
    let configs = configs(path)?;
    let (mut dt, mut tstop) = (None, None);
    if let Some(sim) = &configs.simulation {
        let config = Config::read(sim)?;
        if let Some(run) = config.json.get("run") {
            let number = |key: &str| -> Result<Option<f64>, ModelError> {
                run.get(key).map(|v| v.as_f64().ok_or_else(|| error(sim, "", format!("run.{key}: must be a number (got {v})")))).transpose()
            };
            dt = number("dt")?;
            tstop = number("tstop")?;
            for (key, value) in [("dt", dt), ("tstop", tstop)] {
                if let Some(v) = value.filter(|v| !(*v > 0.0 && v.is_finite())) {
                    return Err(error(sim, "", format!("run.{key}: must be positive and finite (got {v})")));
                }
            }
        }
    }
    let Some(duration) = duration_ms.or(tstop).or(fallback_ms) else {
        return Err(error(path, "", "no duration: give --duration, or a simulation config with run.tstop"));
    };
    let quote = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let mut text = format!("# A SONATA circuit, as `fum run --sonata {}` reads it.\n[simulation]\n", path.display());
    if let Some(dt) = dt {
        text += &format!("dt_ms = {dt:?}\n");
    }
    text += &format!("duration_ms = {duration:?}\n\n[sonata]\ncircuit_config = {}\n", quote(&configs.circuit));
    if let Some(sim) = &configs.simulation {
        text += &format!("simulation_config = {}\n", quote(sim));
    }
    Ok(text)
}

/// What [`import`] adds to a model.
pub struct Imported {
    pub populations: Vec<PopulationSpec>,
    pub projections: Vec<ProjectionSpec>,
    /// The simulation config's current clamps, as DC inputs with their windows.
    pub inputs: Vec<crate::model::InputSpec>,
    pub circuit: Circuit,
}

/// Reads the circuit of a `[sonata]` section (paths relative to the model file `model_path`).
pub fn import(section: &SonataSpec, model_path: &Path) -> Result<Imported, ModelError> {
    let base = model_path.parent().unwrap_or(Path::new("."));
    let circuit_path = base.join(&section.circuit_config);
    let config = Config::read(&circuit_path)?;
    // The inputs of the simulation config, or of a circuit config that is one as well.
    let inputs = match &section.simulation_config {
        Some(sim) => Config::read(&base.join(sim))?,
        None => Config { path: circuit_path.clone(), json: if config.json.get("run").is_some() { config.json.clone() } else { Value::Null } },
    };
    let components = config.json.get("components");
    let dir_of = |key: &str| -> Result<Option<PathBuf>, ModelError> { components.and_then(|c| c.get(key)).map(|v| config.string(v, &format!("components.{key}")).map(|s| config.resolve(&s))).transpose() };
    let neuron_dir = dir_of("point_neuron_models_dir")?;
    let synapse_dir = dir_of("synaptic_models_dir")?;
    let networks = config.json.get("networks").ok_or_else(|| error(&circuit_path, "", "networks: missing"))?;
    let list = |key: &str| -> Result<Vec<Value>, ModelError> {
        match networks.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(v) => Err(error(&circuit_path, "", format!("networks.{key}: must be a list (got {v})"))),
        }
    };
    let file_of = |entry: &Value, key: &str, list: &str, i: usize| -> Result<PathBuf, ModelError> {
        let v = entry.get(key).ok_or_else(|| error(&circuit_path, "", format!("networks.{list}[{i}].{key}: missing")))?;
        Ok(config.resolve(&config.string(v, &format!("networks.{list}[{i}].{key}"))?))
    };

    let mut digest = Digest::new();
    let mut populations = Vec::new();
    let mut nodes = Vec::new();
    // Per node population: node_id -> (population index, local index).
    let mut where_is: HashMap<String, HashMap<u64, (usize, u32)>> = HashMap::new();
    let node_entries = list("nodes")?;
    if node_entries.is_empty() {
        return Err(error(&circuit_path, "", "networks.nodes: the circuit has no nodes"));
    }
    for (i, entry) in node_entries.iter().enumerate() {
        let h5 = file_of(entry, "nodes_file", "nodes", i)?;
        let csv = file_of(entry, "node_types_file", "nodes", i)?;
        let types = TypeTable::read(&csv)?;
        let file = open(&h5)?;
        let root = file.group("nodes").map_err(|_| error(&h5, "", "no /nodes group"))?;
        for pop in root.member_names().map_err(|e| error(&h5, "/nodes", e.to_string()))? {
            if where_is.contains_key(&pop) {
                return Err(error(&h5, format!("population \"{pop}\""), "a node population of this name was read already"));
            }
            let g = root.group(&pop).map_err(|e| error(&h5, format!("/nodes/{pop}"), e.to_string()))?;
            let at = format!("/nodes/{pop}");
            let type_ids: Vec<i64> = read(&g, &h5, &at, "node_type_id")?;
            let n = type_ids.len();
            let node_ids: Vec<u64> = if g.link_exists("node_id") { read(&g, &h5, &at, "node_id")? } else { (0..n as u64).collect() };
            same_len(&h5, &at, "node_id", node_ids.len(), n)?;
            let v_init = node_v_init(&g, &h5, &at, n)?;
            // Per type: (node_id, row in the population's datasets).
            let mut by_type: BTreeMap<i64, Vec<(u64, usize)>> = BTreeMap::new();
            for (row, (&t, &id)) in type_ids.iter().zip(&node_ids).enumerate() {
                by_type.entry(t).or_default().push((id, row));
            }
            let several = by_type.len() > 1;
            let mut ids_here = HashMap::with_capacity(n);
            for (type_id, mut nodes_of_type) in by_type {
                nodes_of_type.sort_unstable();
                let ids: Vec<u64> = nodes_of_type.iter().map(|&(id, _)| id).collect();
                let place = format!("population \"{pop}\", node_type_id {type_id}");
                let row = types.row(type_id).ok_or_else(|| error(&csv, &place, format!("no row of node_type_id {type_id} (used by {} nodes of {})", ids.len(), h5.display())))?;
                let (spec, params_file) = neuron(&types, row, &place, neuron_dir.as_deref(), &config, &mut digest)?;
                let index = populations.len();
                for (local, &id) in ids.iter().enumerate() {
                    if ids_here.insert(id, (index, local as u32)).is_some() {
                        return Err(error(&h5, format!("{at}/node_id"), format!("node_id {id} appears twice")));
                    }
                }
                digest.add(pop.as_bytes());
                digest.add(&type_id.to_le_bytes());
                digest.add(bytemuck::cast_slice(&ids));
                // Per-node V_m where the node group gives it, else the type's (virtual nodes
                // have no membrane).
                let v_init_mv = match spec.v_init_mv {
                    Some(Distribution::Constant(type_v)) => v_init.as_ref().map(|per_row| nodes_of_type.iter().map(|&(_, row)| per_row[row].unwrap_or(type_v)).collect::<Vec<f64>>()),
                    None => None,
                    _ => unreachable!("a node type's V_m is a constant"),
                };
                if let Some(v) = &v_init_mv {
                    digest.add(bytemuck::cast_slice(v));
                }
                let name = if several { format!("{pop}:{type_id}") } else { pop.clone() };
                populations.push(PopulationSpec { name, size: u32::try_from(ids.len()).unwrap_or(u32::MAX), ..spec });
                nodes.push(NodeSet { population: pop.clone(), node_type_id: type_id, node_ids: ids, values: NeuronValues { v_init_mv, ..NeuronValues::default() }, types_file: csv.clone(), params_file });
            }
            where_is.insert(pop, ids_here);
        }
    }

    let mut projections = Vec::new();
    let mut edges = Vec::new();
    for (i, entry) in list("edges")?.iter().enumerate() {
        let h5 = file_of(entry, "edges_file", "edges", i)?;
        let csv = file_of(entry, "edge_types_file", "edges", i)?;
        let types = TypeTable::read(&csv)?;
        let file = open(&h5)?;
        let root = file.group("edges").map_err(|_| error(&h5, "", "no /edges group"))?;
        for pop in root.member_names().map_err(|e| error(&h5, "/edges", e.to_string()))? {
            let g = root.group(&pop).map_err(|e| error(&h5, format!("/edges/{pop}"), e.to_string()))?;
            let at = format!("/edges/{pop}");
            let sources: Vec<u64> = read(&g, &h5, &at, "source_node_id")?;
            let targets: Vec<u64> = read(&g, &h5, &at, "target_node_id")?;
            let type_ids: Vec<i64> = read(&g, &h5, &at, "edge_type_id")?;
            let n = sources.len();
            same_len(&h5, &at, "target_node_id", targets.len(), n)?;
            same_len(&h5, &at, "edge_type_id", type_ids.len(), n)?;
            let node_population = |dataset: &str| -> Result<String, ModelError> {
                let ds = g.dataset(dataset).map_err(|e| error(&h5, format!("{at}/{dataset}"), e.to_string()))?;
                string_attr(&ds, "node_population").ok_or_else(|| error(&h5, format!("{at}/{dataset}"), "attribute node_population: missing (the node population the ids belong to)"))
            };
            let (src_pop, tgt_pop) = (node_population("source_node_id")?, node_population("target_node_id")?);
            let lookup = |name: &str, dataset: &str| {
                where_is.get(name).ok_or_else(|| error(&h5, format!("{at}/{dataset}"), format!("attribute node_population: no node population \"{name}\" in the circuit's nodes")))
            };
            let (src_ids, tgt_ids) = (lookup(&src_pop, "source_node_id")?, lookup(&tgt_pop, "target_node_id")?);
            let per_edge = edge_groups(&g, &h5, &at, n)?;
            // Per edge type, from the CSV, read once.
            let mut per_type: HashMap<i64, Synapse<f64>> = HashMap::new();
            // (source population, target population, inhibitory) -> projection.
            let mut groups: BTreeMap<(usize, usize, bool), SynapseList> = BTreeMap::new();
            for e in 0..n {
                let t = type_ids[e];
                let place = || format!("population \"{pop}\", edge {e}, edge_type_id {t}");
                let typed = match per_type.get(&t) {
                    Some(v) => *v,
                    None => {
                        let row = types.row(t).ok_or_else(|| error(&csv, format!("population \"{pop}\", edge_type_id {t}"), format!("no row of edge_type_id {t} (used by edge {e} of {})", h5.display())))?;
                        let v = synapse_type(&types, row, &format!("population \"{pop}\", edge_type_id {t}"), synapse_dir.as_deref(), &config)?;
                        per_type.insert(t, v);
                        v
                    }
                };
                let weight = per_edge.syn_weight.as_ref().map(|w| w[e]).or(typed.syn_weight).ok_or_else(|| error(&csv, place(), "syn_weight: missing, per edge and per edge type"))?;
                let delay = per_edge.delay.as_ref().map(|d| d[e]).or(typed.delay).ok_or_else(|| error(&csv, place(), "delay: missing, per edge and per edge type"))?;
                let nsyns = per_edge.nsyns.as_ref().map(|k| k[e]).or(typed.nsyns).unwrap_or(1.0);
                // BMTK's point networks connect with weight syn_weight x nsyns.
                let weight = weight * nsyns;
                if !weight.is_finite() || !delay.is_finite() {
                    return Err(error(&h5, place(), format!("syn_weight x nsyns and delay must be finite (got {weight} and {delay})")));
                }
                let &(sp, pre) = src_ids.get(&sources[e]).ok_or_else(|| error(&h5, format!("{at}/source_node_id"), format!("edge {e}: node {} is not in node population \"{src_pop}\"", sources[e])))?;
                let &(tp, post) = tgt_ids.get(&targets[e]).ok_or_else(|| error(&h5, format!("{at}/target_node_id"), format!("edge {e}: node {} is not in node population \"{tgt_pop}\"", targets[e])))?;
                groups.entry((sp, tp, weight < 0.0)).or_default().push(pre, post, weight.abs() as f32, delay);
            }
            let single = groups.len() == 1;
            for ((sp, tp, inhibitory), synapses) in groups {
                let name = if single { pop.clone() } else { format!("{pop}:{}->{}{}", populations[sp].name, populations[tp].name, if inhibitory { ":inhibitory" } else { "" }) };
                digest.add(name.as_bytes());
                digest.add(bytemuck::cast_slice(&synapses.pre));
                digest.add(bytemuck::cast_slice(&synapses.post));
                digest.add(bytemuck::cast_slice(&synapses.weight));
                digest.add(bytemuck::cast_slice(&synapses.delay_ms));
                projections.push(ProjectionSpec {
                    name,
                    source: populations[sp].name.clone(),
                    target: populations[tp].name.clone(),
                    rule: ConnectionRule::Explicit(synapses.len() as u64),
                    receptor: if inhibitory { Receptor::Inhibitory } else { Receptor::Excitatory },
                    weight: span(synapses.weight.iter().map(|&w| f64::from(w))),
                    delay_ms: Some(span(synapses.delay_ms.iter().copied())),
                    plasticity: None,
                    allow_autapses: true,
                    allow_multapses: true,
                });
                edges.push(EdgeSet { population: pop.clone(), edges_file: h5.clone(), synapses });
            }
        }
    }
    let clamps = simulation_inputs(&inputs, &where_is, &mut populations)?;
    // The current clamps are part of the model, as the circuit's files are (the model's hash).
    for c in &clamps {
        for text in [&c.name, &c.target] {
            digest.add(&(text.len() as u64).to_le_bytes());
            digest.add(text.as_bytes());
        }
        [c.amplitude_pa, c.start_ms, c.stop_ms].iter().for_each(|v| digest.add(&v.unwrap_or(0.0).to_le_bytes()));
    }
    Ok(Imported { populations, projections, inputs: clamps, circuit: Circuit { nodes, edges, digest: digest.0 } })
}

/// The simulation config's `inputs` (`node_set` the node population they drive, by name or
/// through a node set that names only its `population`):
/// - `input_type` "spikes" (BMTK's `module` "h5", "sonata" or "csv"; `input_file`): the spike
///   trains of the `virtual` populations. Each spike's `node_id` is looked up in its node
///   population, which must be virtual; a virtual population no input names stays silent.
/// - `input_type` "current_clamp" (`module` "IClamp"; `amp` in pA, as BMTK's PointNet hands it
///   to NEST's `step_current_generator`, `delay` and `duration` in ms, each a number or a list
///   of one value per pulse): DC inputs from `delay` to `delay + duration` into every fum
///   population of the node population, which must not be virtual. Returned.
///
/// Other input types are refused.
fn simulation_inputs(config: &Config, where_is: &HashMap<String, HashMap<u64, (usize, u32)>>, populations: &mut [PopulationSpec]) -> Result<Vec<crate::model::InputSpec>, ModelError> {
    let mut clamps = Vec::new();
    let path = &config.path;
    let mut trains: BTreeMap<usize, crate::spike_trains::SpikeTrains> = populations.iter().enumerate().filter(|(_, p)| p.model == NeuronModel::SpikeSource).map(|(i, _)| (i, Default::default())).collect();
    let inputs = match config.json.get("inputs") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(v) => return Err(error(path, "inputs", format!("must be an object of named inputs (got {v})"))),
    };
    for (name, input) in &inputs {
        let place = format!("inputs.{name}");
        let field = |key: &str| -> Result<String, ModelError> {
            let v = input.get(key).ok_or_else(|| error(path, &place, format!("{key}: missing")))?;
            v.as_str().map(str::to_string).ok_or_else(|| error(path, &place, format!("{key}: must be a string (got {v})")))
        };
        let kind = field("input_type")?;
        if kind == "current_clamp" {
            clamps.extend(current_clamp(config, name, input, where_is, populations)?);
            continue;
        }
        if kind != "spikes" {
            return Err(error(path, &place, format!("input_type \"{kind}\" is not supported (supported: \"spikes\", spike trains into virtual nodes; \"current_clamp\")")));
        }
        let module = field("module")?;
        if !matches!(module.as_str(), "h5" | "hdf5" | "sonata" | "csv") {
            return Err(error(path, &place, format!("module \"{module}\" is not supported (supported: \"h5\", \"sonata\", \"csv\")")));
        }
        let node_set = field("node_set")?;
        let population = node_population(config, &node_set, where_is).map_err(|m| error(path, &place, format!("node_set \"{node_set}\": {m}")))?;
        let ids = &where_is[&population];
        let listing = crate::spike_trains::read(&config.resolve(&field("input_file")?), Some(&population))?;
        for (k, (&id, &t)) in listing.ids.iter().zip(&listing.times_ms).enumerate() {
            let &(pi, local) = ids.get(&id).ok_or_else(|| listing.error(k, "node_ids", format!("node {id} is not in node population \"{population}\"")))?;
            let Some(list) = trains.get_mut(&pi) else {
                return Err(listing.error(k, "node_ids", format!("node {id} of population \"{population}\" is not virtual: spike inputs drive virtual nodes")));
            };
            list.push(local, t);
        }
    }
    for (pi, list) in trains {
        populations[pi].trains = Some(std::sync::Arc::new(list));
    }
    Ok(clamps)
}

/// A `current_clamp` input (see [`simulation_inputs`]) as DC inputs: one per pulse and fum
/// population, named `<input>` where that is one, else `<input>:<pulse>:<population>`.
fn current_clamp(config: &Config, name: &str, input: &Value, where_is: &HashMap<String, HashMap<u64, (usize, u32)>>, populations: &[PopulationSpec]) -> Result<Vec<crate::model::InputSpec>, ModelError> {
    let (path, place) = (&config.path, format!("inputs.{name}"));
    let module = input.get("module").unwrap_or(&Value::Null);
    if module.as_str() != Some("IClamp") {
        return Err(error(path, &place, format!("module {module} is not supported for a current_clamp (supported: \"IClamp\")")));
    }
    // Each of amp, delay, duration: a number, or a list of one per pulse.
    let values = |key: &str| -> Result<Vec<f64>, ModelError> {
        let bad = |v: &Value| error(path, &place, format!("{key}: must be a number or a list of numbers (got {v})"));
        match input.get(key) {
            None => Err(error(path, &place, format!("{key}: missing"))),
            Some(Value::Array(a)) => a.iter().map(|v| v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| bad(v))).collect(),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).map(|x| vec![x]).ok_or_else(|| bad(v)),
        }
    };
    let (amp, delay, duration) = (values("amp")?, values("delay")?, values("duration")?);
    if amp.len() != delay.len() || amp.len() != duration.len() {
        return Err(error(path, &place, format!("amp, delay and duration must list as many pulses ({}, {} and {})", amp.len(), delay.len(), duration.len())));
    }
    if let Some(k) = delay.iter().position(|&d| d < 0.0) {
        return Err(error(path, &place, format!("delay[{k}]: must not be negative (got {})", delay[k])));
    }
    if let Some(k) = duration.iter().position(|&d| d <= 0.0) {
        return Err(error(path, &place, format!("duration[{k}]: must be positive (got {})", duration[k])));
    }
    let node_set = input.get("node_set").and_then(Value::as_str).ok_or_else(|| error(path, &place, "node_set: missing, or not a string".to_string()))?;
    let population = node_population(config, node_set, where_is).map_err(|m| error(path, &place, format!("node_set \"{node_set}\": {m}")))?;
    let mut targets: Vec<usize> = where_is[&population].values().map(|&(pi, _)| pi).collect();
    targets.sort_unstable();
    targets.dedup();
    if let Some(&pi) = targets.iter().find(|&&pi| populations[pi].model == NeuronModel::SpikeSource) {
        return Err(error(path, &place, format!("node_set \"{node_set}\": population \"{}\" is virtual: a current clamp drives neurons", populations[pi].name)));
    }
    let single = amp.len() == 1 && targets.len() == 1;
    let mut clamps = Vec::new();
    for (k, ((&amp, &delay), &duration)) in amp.iter().zip(&delay).zip(&duration).enumerate() {
        for &pi in &targets {
            clamps.push(crate::model::InputSpec {
                name: if single { name.to_string() } else { format!("{name}:{k}:{}", populations[pi].name) },
                kind: crate::model::InputKind::Dc,
                target: populations[pi].name.clone(),
                rate_hz: None,
                listed: Vec::new(),
                weight: None,
                receptor: Default::default(),
                amplitude_pa: Some(amp),
                start_ms: Some(delay),
                stop_ms: Some(delay + duration),
            });
        }
    }
    Ok(clamps)
}

/// The node population a `node_set` names: a population itself, or a node set of the config's
/// `node_sets` (inline or in `node_sets_file`) that selects a whole population.
fn node_population(config: &Config, node_set: &str, where_is: &HashMap<String, HashMap<u64, (usize, u32)>>) -> Result<String, String> {
    if where_is.contains_key(node_set) {
        return Ok(node_set.to_string());
    }
    let sets = match (config.json.get("node_sets"), config.json.get("node_sets_file").and_then(Value::as_str)) {
        (Some(sets), _) => sets.clone(),
        (None, Some(file)) => {
            let file = config.resolve(file);
            let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read node_sets_file {}: {e}", file.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("node_sets_file {}: not JSON: {e}", file.display()))?
        }
        (None, None) => Value::Null,
    };
    let mut populations: Vec<&String> = where_is.keys().collect();
    populations.sort();
    let known = populations.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ");
    let Some(set) = sets.get(node_set) else { return Err(format!("neither a node population ({known}) nor a node set of the config")) };
    match set.as_object().map(|o| (o.len(), o.get("population").and_then(Value::as_str))) {
        Some((1, Some(p))) if where_is.contains_key(p) => Ok(p.to_string()),
        Some((1, Some(p))) => Err(format!("population \"{p}\" is not in the circuit ({known})")),
        _ => Err(format!("a node set other than {{\"population\": name}} is not supported (got {set})")),
    }
}

/// A constant where every value is the same, else the range they span (validated as a
/// distribution would be: delays within [dt, the largest delay], weights finite in `f32`).
pub(crate) fn span(values: impl Iterator<Item = f64>) -> Distribution {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo >= hi { Distribution::Constant(if lo > hi { 0.0 } else { lo }) } else { Distribution::Uniform { uniform: [lo, hi] } }
}

/// FNV-1a 64 over what was read.
struct Digest(u64);

impl Digest {
    fn new() -> Digest {
        Digest(0xcbf2_9ce4_8422_2325)
    }
    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn open(path: &Path) -> Result<hdf5::File, ModelError> {
    hdf5::File::open(path).map_err(|e| error(path, "", format!("cannot open as HDF5: {e}")))
}

/// A 1-D dataset `name` of group `g` (at `at` in file `file`), converted to `T`.
fn read<T: hdf5::H5Type>(g: &hdf5::Group, file: &Path, at: &str, name: &str) -> Result<Vec<T>, ModelError> {
    let ds = g.dataset(name).map_err(|_| error(file, format!("{at}/{name}"), "missing"))?;
    if ds.ndim() != 1 {
        return Err(error(file, format!("{at}/{name}"), format!("must be one-dimensional (has shape {:?})", ds.shape())));
    }
    ds.read_raw::<T>().map_err(|e| error(file, format!("{at}/{name}"), format!("cannot read as {}: {e}", std::any::type_name::<T>())))
}

fn same_len(file: &Path, at: &str, name: &str, len: usize, expected: usize) -> Result<(), ModelError> {
    if len == expected { Ok(()) } else { Err(error(file, format!("{at}/{name}"), format!("has {len} entries, the population {expected}"))) }
}

/// A string attribute as h5py (variable-length) or other writers (fixed-length) store it.
fn string_attr(ds: &hdf5::Dataset, name: &str) -> Option<String> {
    let a = ds.attr(name).ok()?;
    if let Ok(s) = a.read_scalar::<VarLenUnicode>() {
        return Some(s.as_str().to_string());
    }
    if let Ok(s) = a.read_scalar::<VarLenAscii>() {
        return Some(s.as_str().to_string());
    }
    a.read_scalar::<hdf5::types::FixedAscii<256>>().ok().map(|s| s.as_str().to_string())
}

/// The per-node initial `V_m` of a node population (by row), where a node group gives it in
/// its `dynamics_params` subgroup. Other per-node dynamics are refused (fum's populations share
/// their parameters); other attributes (positions, tuning angles) do not affect a point neuron
/// and are ignored.
fn node_v_init(g: &hdf5::Group, file: &Path, at: &str, n: usize) -> Result<Option<Vec<Option<f64>>>, ModelError> {
    let refused = |place: String, name: &str| error(file, place, format!("per-node {name} is not supported (per node: dynamics_params/V_m): fum's populations share their parameters; give it per node type in the node-types CSV"));
    let mut v_m: HashMap<i64, Vec<f64>> = HashMap::new();
    let mut groups = 0;
    for member in g.member_names().map_err(|e| error(file, at, e.to_string()))? {
        let Ok(group) = g.group(&member) else { continue };
        groups += 1;
        let here = format!("{at}/{member}");
        for name in group.member_names().map_err(|e| error(file, &here, e.to_string()))? {
            if matches!(name.as_str(), "model_type" | "model_template") || NEST_NAMES.iter().any(|(nest, _)| *nest == name) {
                return Err(refused(format!("{here}/{name}"), &name));
            }
            if name != "dynamics_params" {
                continue;
            }
            let params = group.group(&name).map_err(|e| error(file, format!("{here}/{name}"), e.to_string()))?;
            for param in params.member_names().map_err(|e| error(file, format!("{here}/{name}"), e.to_string()))? {
                if param != "V_m" {
                    return Err(refused(format!("{here}/dynamics_params/{param}"), &param));
                }
                let id: i64 = member.parse().map_err(|_| error(file, &here, "a node group's name must be its node_group_id (an integer)"))?;
                v_m.insert(id, read(&params, file, &format!("{here}/dynamics_params"), "V_m")?);
            }
        }
    }
    if v_m.is_empty() {
        return Ok(None);
    }
    let group_id: Vec<i64> = if g.link_exists("node_group_id") { read(g, file, at, "node_group_id")? } else if groups == 1 { vec![*v_m.keys().next().expect("not empty"); n] } else { return Err(error(file, format!("{at}/node_group_id"), "missing, and the population has several groups")) };
    let group_index: Vec<i64> = if g.link_exists("node_group_index") { read(g, file, at, "node_group_index")? } else if groups == 1 { (0..n as i64).collect() } else { return Err(error(file, format!("{at}/node_group_index"), "missing, and the population has several groups")) };
    same_len(file, at, "node_group_id", group_id.len(), n)?;
    same_len(file, at, "node_group_index", group_index.len(), n)?;
    (0..n)
        .map(|row| {
            let Some(values) = v_m.get(&group_id[row]) else { return Ok(None) };
            let k = usize::try_from(group_index[row]).ok().filter(|&k| k < values.len()).ok_or_else(|| error(file, format!("{at}/node_group_index"), format!("row {row}: index {} outside group {} ({} entries)", group_index[row], group_id[row], values.len())))?;
            if !values[k].is_finite() || values[k].abs() > f64::from(f32::MAX) {
                return Err(error(file, format!("{at}/{}/dynamics_params/V_m", group_id[row]), format!("entry {k}: must be a finite 32-bit float (got {})", values[k])));
            }
            Ok(Some(values[k]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A synapse's values that the circuit may give per edge or per edge type, where given: `T`
/// is `f64` for an edge type, `Vec<f64>` (one per edge) for an edge population.
#[derive(Clone, Copy, Debug, Default)]
struct Synapse<T> {
    syn_weight: Option<T>,
    delay: Option<T>,
    nsyns: Option<T>,
}

/// The per-edge `syn_weight`, `delay` and `nsyns` of an edge population, where its groups
/// have them (each edge's value from its group, by `edge_group_id` and `edge_group_index`).
fn edge_groups(g: &hdf5::Group, file: &Path, at: &str, n: usize) -> Result<Synapse<Vec<f64>>, ModelError> {
    let mut group_names: Vec<String> = Vec::new();
    for member in g.member_names().map_err(|e| error(file, at, e.to_string()))? {
        if g.group(&member).is_ok() && member != "indices" && member != "indicies" {
            group_names.push(member);
        }
    }
    if group_names.is_empty() {
        return Ok(Synapse::default());
    }
    let group_id: Vec<i64> = if g.link_exists("edge_group_id") { read(g, file, at, "edge_group_id")? } else if group_names.len() == 1 { vec![group_names[0].parse().unwrap_or(0); n] } else { return Err(error(file, format!("{at}/edge_group_id"), "missing, and the population has several groups")) };
    let group_index: Vec<i64> = if g.link_exists("edge_group_index") { read(g, file, at, "edge_group_index")? } else if group_names.len() == 1 { (0..n as i64).collect() } else { return Err(error(file, format!("{at}/edge_group_index"), "missing, and the population has several groups")) };
    same_len(file, at, "edge_group_id", group_id.len(), n)?;
    same_len(file, at, "edge_group_index", group_index.len(), n)?;
    // Per group: its datasets of each field.
    let mut columns: HashMap<i64, [Option<Vec<f64>>; 3]> = HashMap::new();
    for name in &group_names {
        let sub = g.group(name).expect("listed as a group");
        let here = format!("{at}/{name}");
        let id: i64 = name.parse().map_err(|_| error(file, &here, "an edge group's name must be its edge_group_id (an integer)"))?;
        let mut fields: [Option<Vec<f64>>; 3] = [None, None, None];
        for member in sub.member_names().map_err(|e| error(file, &here, e.to_string()))? {
            match member.as_str() {
                "syn_weight" => fields[0] = Some(read(&sub, file, &here, "syn_weight")?),
                "delay" => fields[1] = Some(read(&sub, file, &here, "delay")?),
                "nsyns" => fields[2] = Some(read(&sub, file, &here, "nsyns")?),
                "dynamics_params" | "model_template" | "weight_function" | "weight" => {
                    return Err(error(file, format!("{here}/{member}"), format!("per-edge {member} is not supported (per edge: syn_weight, delay, nsyns)")));
                }
                // Positions and other properties that only BMTK's weight functions read.
                _ => {}
            }
        }
        columns.insert(id, fields);
    }
    let mut out: [Option<Vec<f64>>; 3] = [None, None, None];
    for (f, column) in out.iter_mut().enumerate() {
        if !columns.values().any(|c| c[f].is_some()) {
            continue;
        }
        let field = ["syn_weight", "delay", "nsyns"][f];
        let mut values = Vec::with_capacity(n);
        for e in 0..n {
            let fields = columns.get(&group_id[e]).ok_or_else(|| error(file, format!("{at}/edge_group_id"), format!("edge {e}: no group {}", group_id[e])))?;
            let Some(v) = &fields[f] else {
                return Err(error(file, format!("{at}/{}", group_id[e]), format!("{field}: given per edge in another group but not in this one")));
            };
            let k = usize::try_from(group_index[e]).ok().filter(|&k| k < v.len()).ok_or_else(|| error(file, format!("{at}/edge_group_index"), format!("edge {e}: index {} outside group {} ({} entries)", group_index[e], group_id[e], v.len())))?;
            values.push(v[k]);
        }
        *column = Some(values);
    }
    let [syn_weight, delay, nsyns] = out;
    Ok(Synapse { syn_weight, delay, nsyns })
}

/// A space-separated type table (node or edge types), as BMTK writes it: a header row, then a
/// row per type; values with spaces are in double quotes.
struct TypeTable {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    by_id: HashMap<i64, usize>,
}

impl TypeTable {
    fn read(path: &Path) -> Result<TypeTable, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| error(path, "", format!("cannot read: {e}")))?;
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let Some((_, head)) = lines.next() else { return Err(error(path, "", "empty: a type table needs a header row")) };
        let header = split(head);
        let id_key = header.iter().position(|h| h == "node_type_id" || h == "edge_type_id").ok_or_else(|| error(path, "line 1", "the header has no node_type_id or edge_type_id column"))?;
        let mut rows = Vec::new();
        let mut by_id = HashMap::new();
        for (i, line) in lines {
            let row = split(line);
            if row.len() != header.len() {
                return Err(error(path, format!("line {}", i + 1), format!("{} values under {} column names", row.len(), header.len())));
            }
            let id: i64 = row[id_key].parse().map_err(|_| error(path, format!("line {}", i + 1), format!("{}: not an integer: {:?}", header[id_key], row[id_key])))?;
            if by_id.insert(id, rows.len()).is_some() {
                return Err(error(path, format!("line {}", i + 1), format!("{} {id} appears twice", header[id_key])));
            }
            rows.push(row);
        }
        Ok(TypeTable { path: path.to_path_buf(), header, rows, by_id })
    }

    fn row(&self, id: i64) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// Column `key` of row `row`, where present and not empty or NULL/None/nan (pandas' blanks).
    fn get(&self, row: usize, key: &str) -> Option<&str> {
        let c = self.header.iter().position(|h| h == key)?;
        let v = self.rows[row][c].as_str();
        (!matches!(v, "" | "NULL" | "None" | "nan" | "NaN")).then_some(v)
    }

    fn number(&self, row: usize, key: &str, place: &str) -> Result<Option<f64>, ModelError> {
        self.get(row, key).map(|v| v.parse::<f64>().map_err(|_| error(&self.path, place, format!("{key}: not a number: {v:?}")))).transpose()
    }
}

/// Whitespace-separated fields; a field in double quotes may hold spaces.
fn split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut field = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => break,
                    c => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        out.push(field);
    }
    out
}

/// NEST's `iaf_psc_exp` and `iaf_psc_alpha` parameters (the same names, units and defaults)
/// and the `lif_cuba` / `lif_psc_alpha` fields they set: the same units (pF, ms, mV, pA), so
/// the values are taken as they are.
pub const NEST_NAMES: [(&str, &str); 10] = [
    ("C_m", "c_m_pf"),
    ("tau_m", "tau_m_ms"),
    ("t_ref", "t_ref_ms"),
    ("E_L", "e_l_mv"),
    ("V_th", "v_th_mv"),
    ("V_reset", "v_reset_mv"),
    ("tau_syn_ex", "tau_syn_ex_ms"),
    ("tau_syn_in", "tau_syn_in_ms"),
    ("I_e", "i_e_pa"),
    ("V_m", "v_init_mv"),
];

/// The NEST neuron models a node type may name, and the model each becomes.
const TEMPLATES: [(&str, NeuronModel); 2] = [("nest:iaf_psc_exp", NeuronModel::LifCuba), ("nest:iaf_psc_alpha", NeuronModel::LifPscAlpha)];

/// The SONATA `model_template` of a fum neuron model, if it has one.
fn template_of(model: NeuronModel) -> Option<&'static str> {
    TEMPLATES.iter().find(|(_, m)| *m == model).map(|(t, _)| *t)
}

/// The `lif_cuba` or `lif_psc_alpha` population of node-type row `row`, and its
/// dynamics_params file.
fn neuron(types: &TypeTable, row: usize, place: &str, dir: Option<&Path>, config: &Config, digest: &mut Digest) -> Result<(PopulationSpec, Option<PathBuf>), ModelError> {
    let csv = &types.path;
    match types.get(row, "model_type") {
        Some("point_neuron") | Some("point_process") => {}
        Some("virtual") => {
            // A spike source, fed by the simulation config's inputs (`spike_inputs`).
            digest.add(b"virtual");
            return Ok((PopulationSpec { v_init_mv: None, ..nest_defaults(NeuronModel::SpikeSource) }, None));
        }
        Some(other) => return Err(error(csv, place, format!("model_type \"{other}\" is not supported (supported: point_neuron)"))),
        None => return Err(error(csv, place, "model_type: missing")),
    }
    let supported = TEMPLATES.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ");
    let template = types.get(row, "model_template").ok_or_else(|| error(csv, place, format!("model_template: missing (supported: {supported})")))?;
    let Some(&(_, model)) = TEMPLATES.iter().find(|(t, _)| *t == template) else {
        return Err(error(csv, place, format!("model_template \"{template}\" is not supported (supported: {supported})")));
    };
    digest.add(template.as_bytes());
    let mut spec = nest_defaults(model);
    let Some(params) = types.get(row, "dynamics_params") else { return Ok((spec, None)) };
    let path = params_path(params, dir, config);
    let text = std::fs::read_to_string(&path).map_err(|e| error(&path, place, format!("cannot read the dynamics_params file ({} names it): {e}", csv.display())))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| error(&path, place, format!("not JSON: {e}")))?;
    let Some(object) = json.as_object() else { return Err(error(&path, place, "dynamics_params must be a JSON object of NEST parameters")) };
    for (key, value) in object {
        let Some(&(_, field)) = NEST_NAMES.iter().find(|(nest, _)| nest == key) else {
            let known: Vec<&str> = NEST_NAMES.iter().map(|(n, _)| *n).collect();
            return Err(error(&path, place, format!("{key}: not a parameter of {template} that fum supports ({})", known.join(", "))));
        };
        let Some(v) = value.as_f64() else { return Err(error(&path, place, format!("{key}: must be a number (got {value})"))) };
        digest.add(key.as_bytes());
        digest.add(&v.to_le_bytes());
        match field {
            "c_m_pf" => spec.c_m_pf = v,
            "tau_m_ms" => spec.tau_m_ms = v,
            "t_ref_ms" => spec.t_ref_ms = v,
            "e_l_mv" => spec.e_l_mv = v,
            "v_th_mv" => spec.v_th_mv = v,
            "v_reset_mv" => spec.v_reset_mv = v,
            "tau_syn_ex_ms" => spec.tau_syn_ex_ms = v,
            "tau_syn_in_ms" => spec.tau_syn_in_ms = v,
            "i_e_pa" => spec.i_e_pa = Distribution::Constant(v),
            "v_init_mv" => spec.v_init_mv = Some(Distribution::Constant(v)),
            _ => unreachable!("every NEST name maps to a field"),
        }
    }
    Ok((spec, Some(path)))
}

/// A population of `model` with NEST's defaults of iaf_psc_exp and iaf_psc_alpha (the
/// membrane starts at -70 mV, whatever E_L).
fn nest_defaults(model: NeuronModel) -> PopulationSpec {
    PopulationSpec {
        name: String::new(),
        size: 0,
        model,
        tau_m_ms: 10.0,
        c_m_pf: 250.0,
        e_l_mv: -70.0,
        v_th_mv: -55.0,
        v_reset_mv: -70.0,
        t_ref_ms: 2.0,
        tau_syn_ex_ms: 2.0,
        tau_syn_in_ms: 2.0,
        i_e_pa: Distribution::Constant(0.0),
        e_ex_mv: None,
        e_in_mv: None,
        integrator: None,
        v_init_mv: Some(Distribution::Constant(-70.0)),
        listed: Vec::new(),
        syn_ex_init: None,
        syn_in_init: None,
        spikes: None,
        spikes_population: None,
        spike_times_ms: None,
        trains: None,
    }
}

/// A dynamics_params file: absolute, or in the components folder.
fn params_path(name: &str, dir: Option<&Path>, config: &Config) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.map_or_else(|| config.resolve(name), |d| d.join(p))
    }
}

/// The per-type weight, delay and nsyns of edge-type row `row`, after checking its model.
fn synapse_type(types: &TypeTable, row: usize, place: &str, dir: Option<&Path>, config: &Config) -> Result<Synapse<f64>, ModelError> {
    let csv = &types.path;
    if let Some(template) = types.get(row, "model_template").filter(|t| !matches!(*t, "static_synapse" | "nest:static_synapse")) {
        return Err(error(csv, place, format!("model_template \"{template}\" is not supported (supported: static_synapse)")));
    }
    if let Some(f) = types.get(row, "weight_function").filter(|f| *f != "default_weight_fnc") {
        return Err(error(csv, place, format!("weight_function \"{f}\": BMTK's Python weight functions are not supported (give syn_weight per edge)")));
    }
    if let Some(params) = types.get(row, "dynamics_params") {
        let path = params_path(params, dir, config);
        let text = std::fs::read_to_string(&path).map_err(|e| error(&path, place, format!("cannot read the dynamics_params file ({} names it): {e}", csv.display())))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| error(&path, place, format!("not JSON: {e}")))?;
        match json.as_object() {
            Some(o) if o.is_empty() => {}
            Some(o) => {
                let key = o.keys().next().expect("not empty");
                return Err(error(&path, place, format!("{key}: static_synapse parameters in dynamics_params are not supported (give syn_weight and delay per edge or edge type)")));
            }
            None => return Err(error(&path, place, "dynamics_params must be a JSON object")),
        }
    }
    Ok(Synapse { syn_weight: types.number(row, "syn_weight", place)?, delay: types.number(row, "delay", place)?, nsyns: types.number(row, "nsyns", place)? })
}

/// What [`export`] wrote.
pub struct Exported {
    pub circuit_config: PathBuf,
    pub simulation_config: PathBuf,
    pub neurons: u64,
    pub synapses: u64,
}

/// Why a model cannot be written as a SONATA circuit.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Build(#[from] crate::BuildError),
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

/// Writes `model` as a SONATA circuit under `dir`, as BMTK lays one out (`network/nodes.h5`,
/// `edges.h5` and their type tables, `components/` with NEST parameters, `circuit_config.json`
/// and `simulation_config.json`): one node population and type per population (node ids its
/// local ids), one edge population per projection with the synapses the model builds for its
/// seed, weights signed as NEST has them. `fum run --sonata` gives the model's spikes again.
/// A membrane potential drawn or listed per neuron goes to each node's `dynamics_params/V_m`. A
/// `spike_source` becomes a node population of `virtual` nodes, its spikes a spikes file
/// (`inputs/<population>.h5`) that the simulation config's `inputs` feed into it. Refused:
/// what SONATA point circuits (as fum reads them) cannot say: `lif_coba`, a bias current drawn
/// or listed per neuron, initial synaptic currents, plasticity, Poisson inputs. DC inputs for the whole
/// run are added to `I_e`; those that start or stop become `current_clamp` inputs.
pub fn export(model: &Model, dir: &Path) -> Result<Exported, ExportError> {
    let spec = &model.spec;
    let refuse = |what: String| Err(ExportError::Unsupported(format!("{}: {what}: a SONATA point circuit cannot say this", model.path.display())));
    for p in spec.populations.iter().filter(|p| p.model != NeuronModel::SpikeSource) {
        if template_of(p.model).is_none() {
            return refuse(format!("population \"{}\" is {} (exported: lif_cuba as nest:iaf_psc_exp, lif_psc_alpha as nest:iaf_psc_alpha)", p.name, p.model.name()));
        }
        if !matches!(p.i_e_pa, Distribution::Constant(_)) {
            return refuse(format!("population \"{}\" has an i_e_pa per neuron, drawn or listed (exported: a constant I_e per node type)", p.name));
        }
        if [p.syn_ex_init, p.syn_in_init].iter().any(|d| d.is_some_and(|d| d != Distribution::Constant(0.0))) {
            return refuse(format!("population \"{}\" starts with synaptic currents (exported: syn_ex_init and syn_in_init 0)", p.name));
        }
    }
    if let Some(p) = spec.projections.iter().find(|p| p.plasticity.is_some()) {
        return refuse(format!("projection \"{}\" is plastic (exported: static synapses)", p.name));
    }
    if let Some(i) = spec.inputs.iter().find(|i| i.kind == crate::model::InputKind::Poisson) {
        return refuse(format!("input \"{}\" is Poisson (exported: spike sources, as virtual nodes with their spikes)", i.name));
    }
    if !spec.structural.is_empty() {
        return refuse("[[structural]] plasticity".into());
    }
    let write_err = |path: &Path, e: &dyn std::fmt::Display| ExportError::Write { path: path.display().to_string(), message: e.to_string() };
    let network = dir.join("network");
    let neurons_dir = dir.join("components/point_neuron_models");
    let synapses_dir = dir.join("components/synaptic_models");
    for d in [&network, &neurons_dir, &synapses_dir] {
        std::fs::create_dir_all(d).map_err(|e| write_err(d, &e))?;
    }
    let write = |path: PathBuf, text: String| std::fs::write(&path, text).map_err(|e| write_err(&path, &e));
    let h5 = |path: &Path, e: hdf5::Error| write_err(path, &e);

    // The network as built: initial membrane potentials and synapses.
    let mut world = crate::build::build_world(model, 1)?;
    let mut v_init = vec![0f32; spec.populations.iter().map(|p| p.size as usize).sum()];
    for (shard, neurons) in world.query::<(&crate::components::Shard, &crate::components::NeuronBlock)>().iter(&world) {
        v_init[shard.neurons.start as usize..shard.neurons.end as usize].copy_from_slice(&neurons.v);
    }
    let firsts: Vec<u32> = spec.populations.iter().scan(0u32, |at, p| Some(std::mem::replace(at, *at + p.size))).collect();

    // Nodes: type 100 + i for population i.
    let mut types = String::from("node_type_id model_type model_template dynamics_params pop_name\n");
    let nodes_path = network.join("nodes.h5");
    let file = hdf5::File::create(&nodes_path).map_err(|e| h5(&nodes_path, e))?;
    let root = file.create_group("nodes").map_err(|e| h5(&nodes_path, e))?;
    let inputs_dir = dir.join("inputs");
    let mut inputs = serde_json::Map::new();
    for (i, p) in spec.populations.iter().enumerate() {
        if let Some(trains) = &p.trains {
            // Virtual nodes, and their spikes as listed (ms), which the import rounds again.
            types += &format!("{} virtual NULL NULL {}\n", 100 + i, quote(&p.name));
            let g = root.create_group(&p.name).map_err(|e| h5(&nodes_path, e))?;
            let n = p.size as usize;
            g.new_dataset_builder().with_data(&vec![100 + i as u64; n]).create("node_type_id").map_err(|e| h5(&nodes_path, e))?;
            g.new_dataset_builder().with_data(&(0..n as u64).collect::<Vec<_>>()).create("node_id").map_err(|e| h5(&nodes_path, e))?;
            std::fs::create_dir_all(&inputs_dir).map_err(|e| write_err(&inputs_dir, &e))?;
            let path = inputs_dir.join(format!("{}.h5", p.name));
            let file = hdf5::File::create(&path).map_err(|e| h5(&path, e))?;
            let spikes = file.create_group("spikes").and_then(|g| g.create_group(&p.name)).map_err(|e| h5(&path, e))?;
            let ids: Vec<u64> = trains.neurons.iter().map(|&n| u64::from(n)).collect();
            spikes.new_dataset_builder().with_data(&ids).create("node_ids").map_err(|e| h5(&path, e))?;
            let times = spikes.new_dataset_builder().with_data(&trains.times_ms).create("timestamps").map_err(|e| h5(&path, e))?;
            string_attr_write(&times, "units", "ms").map_err(|e| h5(&path, e))?;
            if inputs.insert(p.name.clone(), serde_json::json!({"input_type": "spikes", "module": "sonata", "input_file": format!("inputs/{}.h5", p.name), "node_set": p.name})).is_some() {
                return refuse(format!("population \"{}\" and an input share the name its spikes input would have", p.name));
            }
            continue;
        }
        // DC inputs for the whole run join I_e; those that start or stop are current clamps.
        let dc_inputs = spec.inputs.iter().filter(|d| d.kind == crate::model::InputKind::Dc && d.target == p.name);
        let dc: f64 = dc_inputs.clone().filter(|d| d.start_ms.is_none() && d.stop_ms.is_none()).filter_map(|d| d.amplitude_pa).sum();
        // (One that starts after the run's end never flows, and is left out.)
        for d in dc_inputs.filter(|d| d.start_ms.is_some() || d.stop_ms.is_some()).filter(|d| d.start_ms.unwrap_or(0.0) < spec.simulation.duration_ms) {
            let start = d.start_ms.unwrap_or(0.0);
            let duration = d.stop_ms.unwrap_or(spec.simulation.duration_ms) - start;
            let clamp = serde_json::json!({"input_type": "current_clamp", "module": "IClamp", "node_set": p.name, "amp": d.amplitude_pa, "delay": start, "duration": duration});
            if inputs.insert(d.name.clone(), clamp).is_some() {
                return refuse(format!("input \"{}\" has the name of a spike source's input: rename one", d.name));
            }
        }
        let v_m = match p.v_init_mv {
            Some(Distribution::Constant(v)) => v,
            _ => p.e_l_mv,
        };
        let i_e = match p.i_e_pa {
            Distribution::Constant(i_e) => i_e,
            _ => unreachable!("refused above"),
        };
        let params = serde_json::json!({
            "C_m": p.c_m_pf, "tau_m": p.tau_m_ms, "t_ref": p.t_ref_ms, "E_L": p.e_l_mv, "V_th": p.v_th_mv, "V_reset": p.v_reset_mv,
            "tau_syn_ex": p.tau_syn_ex_ms, "tau_syn_in": p.tau_syn_in_ms, "I_e": i_e + dc, "V_m": v_m,
        });
        write(neurons_dir.join(format!("{}.json", p.name)), serde_json::to_string_pretty(&params).expect("numbers"))?;
        let template = template_of(p.model).expect("refused above");
        types += &format!("{} point_neuron {template} {} {}\n", 100 + i, quote(&format!("{}.json", p.name)), quote(&p.name));
        let g = root.create_group(&p.name).map_err(|e| h5(&nodes_path, e))?;
        let n = p.size as usize;
        g.new_dataset_builder().with_data(&vec![100 + i as u64; n]).create("node_type_id").map_err(|e| h5(&nodes_path, e))?;
        g.new_dataset_builder().with_data(&(0..n as u64).collect::<Vec<_>>()).create("node_id").map_err(|e| h5(&nodes_path, e))?;
        g.new_dataset_builder().with_data(&vec![0u32; n]).create("node_group_id").map_err(|e| h5(&nodes_path, e))?;
        g.new_dataset_builder().with_data(&(0..n as u64).collect::<Vec<_>>()).create("node_group_index").map_err(|e| h5(&nodes_path, e))?;
        let g0 = g.create_group("0").map_err(|e| h5(&nodes_path, e))?;
        if !matches!(p.v_init_mv, None | Some(Distribution::Constant(_))) || model.neuron_values(i).is_some_and(|v| v.v_init_mv.is_some()) {
            // Drawn or listed per neuron: each node's V_m as the model builds it.
            let first = firsts[i] as usize;
            let v: Vec<f64> = v_init[first..first + n].iter().map(|&v| f64::from(v)).collect();
            let params = g0.create_group("dynamics_params").map_err(|e| h5(&nodes_path, e))?;
            params.new_dataset_builder().with_data(&v).create("V_m").map_err(|e| h5(&nodes_path, e))?;
        }
    }
    drop(root);
    drop(file);
    write(network.join("node_types.csv"), types)?;

    // Edges: the synapses as built, block by block, row by row.
    let dt = spec.simulation.dt_ms;
    let mut per_projection: Vec<EdgeColumns> = vec![EdgeColumns::default(); spec.projections.len()];
    let mut shards = world.query::<(&crate::components::Shard, &crate::components::SynapseBlocks)>();
    let mut parts: Vec<_> = shards.iter(&world).collect();
    parts.sort_by_key(|(shard, _)| shard.index);
    for (shard, blocks) in parts {
        for b in &blocks.0 {
            let proj = &spec.projections[b.projection];
            let target_first = firsts[model.population_index(&proj.target).expect("validated")];
            let sign = if b.receptor == Receptor::Inhibitory { -1.0 } else { 1.0 };
            let out = &mut per_projection[b.projection];
            let row_ptr = b.row_ptr.to_vec();
            let targets = b.target.to_vec();
            for row in 0..b.source_size as usize {
                let start = row_ptr[row] as usize;
                for (offset, &target) in targets[start..row_ptr[row + 1] as usize].iter().enumerate() {
                    out.source.push(row as u64);
                    out.target.push(u64::from(shard.neurons.start + u32::from(target) - target_first));
                    out.syn_weight.push(sign * f64::from(b.weight.get(start + offset)));
                    out.delay.push(f64::from(b.delay.get(start + offset)) * dt);
                }
            }
        }
    }
    let edges_path = network.join("edges.h5");
    let file = hdf5::File::create(&edges_path).map_err(|e| h5(&edges_path, e))?;
    let root = file.create_group("edges").map_err(|e| h5(&edges_path, e))?;
    let mut edge_types = String::from("edge_type_id model_template dynamics_params\n");
    let mut synapses = 0u64;
    for (i, (p, EdgeColumns { source: pre, target: post, syn_weight: weight, delay })) in spec.projections.iter().zip(per_projection).enumerate() {
        edge_types += &format!("{} static_synapse static_synapse.json\n", 100 + i);
        synapses += pre.len() as u64;
        let g = root.create_group(&p.name).map_err(|e| h5(&edges_path, e))?;
        let n = pre.len();
        let ds = g.new_dataset_builder().with_data(&pre).create("source_node_id").map_err(|e| h5(&edges_path, e))?;
        string_attr_write(&ds, "node_population", &p.source).map_err(|e| h5(&edges_path, e))?;
        let ds = g.new_dataset_builder().with_data(&post).create("target_node_id").map_err(|e| h5(&edges_path, e))?;
        string_attr_write(&ds, "node_population", &p.target).map_err(|e| h5(&edges_path, e))?;
        g.new_dataset_builder().with_data(&vec![100 + i as u32; n]).create("edge_type_id").map_err(|e| h5(&edges_path, e))?;
        g.new_dataset_builder().with_data(&vec![0u32; n]).create("edge_group_id").map_err(|e| h5(&edges_path, e))?;
        g.new_dataset_builder().with_data(&(0..n as u64).collect::<Vec<_>>()).create("edge_group_index").map_err(|e| h5(&edges_path, e))?;
        let g0 = g.create_group("0").map_err(|e| h5(&edges_path, e))?;
        g0.new_dataset_builder().with_data(&weight).create("syn_weight").map_err(|e| h5(&edges_path, e))?;
        g0.new_dataset_builder().with_data(&delay).create("delay").map_err(|e| h5(&edges_path, e))?;
    }
    drop(root);
    drop(file);
    write(network.join("edge_types.csv"), edge_types)?;
    write(synapses_dir.join("static_synapse.json"), "{}\n".into())?;

    let circuit = serde_json::json!({
        "manifest": {"$BASE_DIR": "${configdir}", "$NETWORK_DIR": "$BASE_DIR/network", "$COMPONENTS_DIR": "$BASE_DIR/components"},
        "components": {"point_neuron_models_dir": "$COMPONENTS_DIR/point_neuron_models", "synaptic_models_dir": "$COMPONENTS_DIR/synaptic_models"},
        "networks": {
            "nodes": [{"nodes_file": "$NETWORK_DIR/nodes.h5", "node_types_file": "$NETWORK_DIR/node_types.csv"}],
            "edges": [{"edges_file": "$NETWORK_DIR/edges.h5", "edge_types_file": "$NETWORK_DIR/edge_types.csv"}],
        },
    });
    let mut simulation = serde_json::json!({
        "target_simulator": "NEST",
        "network": "circuit_config.json",
        "run": {"tstop": spec.simulation.duration_ms, "dt": dt},
    });
    if !inputs.is_empty() {
        simulation["inputs"] = Value::Object(inputs);
    }
    let (circuit_config, simulation_config) = (dir.join("circuit_config.json"), dir.join("simulation_config.json"));
    write(circuit_config.clone(), serde_json::to_string_pretty(&circuit).expect("JSON") + "\n")?;
    write(simulation_config.clone(), serde_json::to_string_pretty(&simulation).expect("JSON") + "\n")?;
    Ok(Exported { circuit_config, simulation_config, neurons: spec.populations.iter().map(|p| u64::from(p.size)).sum(), synapses })
}

/// An edge population's datasets as written: node ids, signed weights, delays in ms.
#[derive(Clone, Default)]
struct EdgeColumns {
    source: Vec<u64>,
    target: Vec<u64>,
    syn_weight: Vec<f64>,
    delay: Vec<f64>,
}

/// A value of a type table, quoted where it holds a space.
fn quote(value: &str) -> String {
    if value.contains(char::is_whitespace) || value.contains('"') { format!("\"{}\"", value.replace('"', "\"\"")) } else { value.to_string() }
}

fn string_attr_write(ds: &hdf5::Dataset, name: &str, value: &str) -> hdf5::Result<()> {
    let value: VarLenUnicode = value.parse().map_err(|_| hdf5::Error::from("a NUL in a name"))?;
    ds.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_tables_split_on_spaces_and_keep_quoted_values() {
        assert_eq!(split("100  point_neuron \"a b\" x.json"), ["100", "point_neuron", "a b", "x.json"]);
        assert_eq!(split("1 \"say \"\"hi\"\"\" NULL"), ["1", "say \"hi\"", "NULL"]);
        assert!(split("   ").is_empty());
    }

    #[test]
    fn manifest_names_are_substituted_longest_first_and_through_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("circuit_config.json");
        std::fs::write(&path, r#"{"manifest": {"$BASE": "/nowhere", "$BASE_DIR": "${configdir}", "$NET": "$BASE_DIR/network"}, "networks": {"nodes": [{"nodes_file": "${NET}/n.h5", "node_types_file": "$BASE/t.csv"}]}}"#).unwrap();
        let config = Config::read(&path).unwrap();
        let nodes = &config.json["networks"]["nodes"][0];
        assert_eq!(nodes["nodes_file"], format!("{}/network/n.h5", dir.path().display()));
        assert_eq!(nodes["node_types_file"], "/nowhere/t.csv");
        std::fs::write(&path, r#"{"manifest": {"$A": "$B", "$B": "$A"}, "networks": {"nodes": ["$A"]}}"#).unwrap();
        assert!(Config::read(&path).err().unwrap().to_string().contains("a $NAME the manifest does not define (or defines in a cycle)"));
    }

    #[test]
    fn equal_values_make_a_constant_and_others_their_range() {
        assert_eq!(span([1.5, 1.5].into_iter()), Distribution::Constant(1.5));
        assert_eq!(span([2.0, 0.5, 1.0].into_iter()), Distribution::Uniform { uniform: [0.5, 2.0] });
    }
}
