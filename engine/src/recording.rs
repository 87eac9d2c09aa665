//! What a run records and how it is written: spikes in the SONATA spike-report layout
//! (`spikes.h5`: `/spikes/<population>/timestamps` in ms and `node_ids`, population-local,
//! sorted by time), probes of state variables and weights (`probes.h5`), all under the run's
//! output folder; and the recording logs a checkpointing run spills its output to.

use bevy_ecs::prelude::*;
use bytemuck::{Pod, Zeroable};
use hdf5::types::VarLenUnicode;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::components::{Shard, SynapseBlocks};
use crate::model::{Model, ProbeVariable};

/// A growing output column. In a run that checkpoints, everything recorded up to the last
/// checkpoint has been appended to a log file (`spilled` elements) and only the rest is in
/// memory (`pending`); the checkpoint stores the cursor, so a resumed run truncates the log
/// there and appends again: no spike is lost or written twice.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded<T: Pod> {
    pub pending: Vec<T>,
    pub spilled: u64,
}

impl<T: Pod> Recorded<T> {
    /// The whole column: the log's first `spilled` elements, then the pending ones.
    pub fn all(&self, log: Option<&Path>) -> std::io::Result<Vec<T>> {
        let mut out = Vec::new();
        if self.spilled > 0 {
            let log = log.ok_or_else(|| std::io::Error::other("recorded data was spilled but no log folder is set"))?;
            let mut bytes = Vec::new();
            std::fs::File::open(log)?.take(self.spilled * std::mem::size_of::<T>() as u64).read_to_end(&mut bytes)?;
            if bytes.len() as u64 != self.spilled * std::mem::size_of::<T>() as u64 {
                return Err(std::io::Error::other(format!("{} is shorter than the recording cursor", log.display())));
            }
            out = bytemuck::pod_collect_to_vec(&bytes);
        }
        out.extend_from_slice(&self.pending);
        Ok(out)
    }
}

/// A [`Recorded`] column seen as bytes, for checkpoints.
pub trait RecordedColumn {
    fn element_bytes(&self) -> usize;
    fn spilled(&self) -> u64;
    fn pending_bytes(&self) -> &[u8];
    /// Moves the pending elements out (as bytes), counting them as spilled.
    fn spill(&mut self) -> Vec<u8>;
    /// Sets the cursor and the pending elements; false if `pending` is not whole elements.
    fn reset(&mut self, spilled: u64, pending: &[u8]) -> bool;
}

impl<T: Pod> RecordedColumn for Recorded<T> {
    fn element_bytes(&self) -> usize {
        std::mem::size_of::<T>()
    }
    fn spilled(&self) -> u64 {
        self.spilled
    }
    fn pending_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.pending)
    }
    fn spill(&mut self) -> Vec<u8> {
        let bytes = bytemuck::cast_slice(&self.pending).to_vec();
        self.spilled += self.pending.len() as u64;
        self.pending.clear();
        bytes
    }
    fn reset(&mut self, spilled: u64, pending: &[u8]) -> bool {
        if !pending.len().is_multiple_of(std::mem::size_of::<T>()) {
            return false;
        }
        self.spilled = spilled;
        self.pending = bytemuck::pod_collect_to_vec(pending);
        true
    }
}

/// Spikes of one recorded population.
#[derive(Clone, Debug)]
pub struct SpikeRecord {
    pub population: usize,
    /// The population's name.
    pub name: String,
    /// Step of each spike and the spiking neuron's index in its population.
    pub steps: Recorded<u32>,
    pub node_ids: Recorded<u32>,
}

/// Where a probed quantity lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeSite {
    /// Shard index and shard-local neuron index.
    Neuron { shard: usize, local: usize },
    /// On a shard another rank holds (`crate::ranks`): rank 0 receives its samples from that
    /// rank at each sampling step.
    Elsewhere,
    /// The first synapse from row `pre` to shard-local target `local` in block `block` of shard
    /// `shard`, at index `synapse` of the block; `None` while it does not exist (structural
    /// plasticity pruned it: its samples are NaN until a synapse from `pre` to `local` grows).
    Synapse { shard: usize, block: usize, pre: u32, local: u32, synapse: Option<usize> },
}

impl ProbeSite {
    /// Finds a synapse site's synapse again in `blocks` (the shard's, after a structural commit
    /// or a restore moved its index).
    pub fn relocate(&mut self, blocks: &SynapseBlocks) {
        if let ProbeSite::Synapse { block, pre, local, synapse, .. } = self {
            let b = &blocks.0[*block];
            let first = b.row_ptr[*pre as usize] as usize;
            // A paged block's row may be on disk (`crate::paging`).
            let targets = crate::paging::row_targets(b, *pre as usize).unwrap_or_default();
            *synapse = targets.iter().position(|&t| u32::from(t) == *local).map(|i| first + i);
        }
    }
}

#[derive(Clone, Debug)]
pub struct Probe {
    pub name: String,
    pub variable: ProbeVariable,
    pub interval_steps: u64,
    /// Population-local neuron ids, or [pre, post] pairs.
    pub labels: Vec<[u32; 2]>,
    pub sites: Vec<ProbeSite>,
    pub times_ms: Recorded<f64>,
    /// Row-major: one row of `sites.len()` values per sample.
    pub values: Recorded<f32>,
}

/// Everything recorded during a run.
#[derive(Resource, Clone, Debug, Default)]
pub struct Recorder {
    pub spikes: Vec<SpikeRecord>,
    pub probes: Vec<Probe>,
    /// Spikes per population (all populations, recorded or not), for mean rates.
    pub spike_counts: Vec<u64>,
    /// Where recorded columns are spilled at checkpoints (`OUT/recording`); none: all in memory.
    pub log_dir: Option<PathBuf>,
    /// The run the logs belong to (written in each log's index).
    pub run_id: u64,
    /// The model's time step.
    pub dt_ms: f64,
}

/// Output recorded before a checkpoint whose logs were lost or damaged: a resumed run goes on
/// without it (recording again from the checkpoint) and says so.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MissingOutput {
    /// "spikes of population E" or "probe membrane".
    pub output: String,
    /// Everything it recorded before this step is missing.
    pub before_step: u64,
    pub before_ms: f64,
    pub reason: String,
}

impl std::fmt::Display for MissingOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} before step {} ({} ms) is missing: {}", self.output, self.before_step, self.before_ms, self.reason)
    }
}

/// Errors writing outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}")]
    Hdf5 { path: String, source: hdf5::Error },
    #[error("cannot write {path}")]
    Io { path: String, source: std::io::Error },
    #[error("recording log: {0}")]
    Log(#[from] std::io::Error),
    #[error("weight probe \"{probe}\": projection \"{projection}\" has no synapse from {pre} to {post}")]
    NoSuchSynapse { probe: String, projection: String, pre: u32, post: u32 },
}

impl Recorder {
    /// Every growing column with the name of its log file.
    pub fn columns_mut(&mut self) -> Vec<(String, &mut dyn RecordedColumn)> {
        let mut columns: Vec<(String, &mut dyn RecordedColumn)> = Vec::new();
        for (r, s) in self.spikes.iter_mut().enumerate() {
            columns.push((format!("spikes-{r}-steps"), &mut s.steps));
            columns.push((format!("spikes-{r}-node_ids"), &mut s.node_ids));
        }
        for (r, p) in self.probes.iter_mut().enumerate() {
            columns.push((format!("probe-{r}-times_ms"), &mut p.times_ms));
            columns.push((format!("probe-{r}-values"), &mut p.values));
        }
        columns
    }

    /// The log file of column `name`.
    pub fn log_path(&self, name: &str) -> Option<PathBuf> {
        self.log_dir.as_ref().map(|d| d.join(format!("{name}.bin")))
    }

    /// What each pair of [`Recorder::columns_mut`] records (spike steps and ids, probe times
    /// and values: columns that stay in step), in the same order.
    pub fn outputs(&self) -> Vec<String> {
        let spikes = self.spikes.iter().map(|s| format!("spikes of population {}", s.name));
        spikes.chain(self.probes.iter().map(|p| format!("probe {}", p.name))).collect()
    }

    /// Finds every probed synapse again after structural plasticity changed or a checkpoint
    /// restored the structure.
    /// The (shard, block) of every synapse a probe records, sorted, once each.
    pub fn probed_blocks(&self) -> Vec<(usize, usize)> {
        let mut v: Vec<_> = self.probes.iter().flat_map(|p| &p.sites).filter_map(|s| if let ProbeSite::Synapse { shard, block, .. } = *s { Some((shard, block)) } else { None }).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn relocate_synapses(world: &mut World) {
        world.resource_scope(|world, mut recorder: Mut<Recorder>| {
            let mut query = world.query::<(&Shard, &SynapseBlocks)>();
            let mut shards: Vec<(&Shard, &SynapseBlocks)> = query.iter(world).collect();
            shards.sort_by_key(|(s, _)| s.index);
            for site in recorder.probes.iter_mut().flat_map(|p| p.sites.iter_mut()) {
                if let ProbeSite::Synapse { shard, .. } = *site {
                    let at = shards.binary_search_by_key(&shard, |(s, _)| s.index).expect("a probed synapse's shard is held here");
                    site.relocate(shards[at].1);
                }
            }
        });
    }

    /// Prepares recording for `model` in a built `world` (locates probed neurons and synapses).
    pub fn new(model: &Model, world: &mut World) -> Result<Recorder, OutputError> {
        let spec = &model.spec;
        let dt = spec.simulation.dt_ms;
        let mut query = world.query::<(&Shard, &SynapseBlocks)>();
        let mut shards: Vec<(&Shard, &SynapseBlocks)> = query.iter(world).collect();
        shards.sort_by_key(|(s, _)| s.index);
        let first_of = |pop: usize| spec.populations[..pop].iter().map(|p| p.size).sum::<u32>();
        // The held shard (its place among `shards`) of a neuron; none where another rank holds
        // it (`crate::ranks`; in one process every shard is held).
        let shard_of = |id: u32| Some(shards.partition_point(|(s, _)| s.neurons.end <= id)).filter(|&at| shards.get(at).is_some_and(|(s, _)| s.neurons.contains(&id)));

        let mut probes = Vec::new();
        for p in &spec.recording.probes {
            let interval_steps = p.interval_ms.map_or(1, |ms| ((ms / dt).round() as u64).max(1));
            let (labels, sites) = if p.variable == ProbeVariable::Weight {
                let name = p.projection.as_deref().expect("validated");
                let pi = model.projection_index(name).expect("validated");
                let proj = &spec.projections[pi];
                let tgt_first = first_of(model.population_index(&proj.target).expect("validated"));
                let mut sites = Vec::new();
                for &[pre, post] in &p.synapses {
                    let id = tgt_first + post;
                    let Some(at) = shard_of(id) else {
                        sites.push(ProbeSite::Elsewhere);
                        continue;
                    };
                    let (s, blocks) = shards[at];
                    let block = blocks.0.iter().position(|b| b.projection == pi).expect("a shard has a block of every projection into it");
                    let mut site = ProbeSite::Synapse { shard: s.index, block, pre, local: id - s.neurons.start, synapse: None };
                    site.relocate(blocks);
                    if matches!(site, ProbeSite::Synapse { synapse: None, .. }) {
                        return Err(OutputError::NoSuchSynapse { probe: p.name.clone(), projection: name.into(), pre, post });
                    }
                    sites.push(site);
                }
                (p.synapses.clone(), sites)
            } else {
                let pop = model.population_index(p.population.as_deref().expect("validated")).expect("validated");
                let first = first_of(pop);
                let sites = p
                    .neurons
                    .iter()
                    .map(|&n| match shard_of(first + n) {
                        Some(at) => ProbeSite::Neuron { shard: shards[at].0.index, local: (first + n - shards[at].0.neurons.start) as usize },
                        None => ProbeSite::Elsewhere,
                    })
                    .collect();
                (p.neurons.iter().map(|&n| [n, n]).collect(), sites)
            };
            probes.push(Probe { name: p.name.clone(), variable: p.variable, interval_steps, labels, sites, times_ms: Recorded::default(), values: Recorded::default() });
        }
        let spikes = spec
            .recording
            .spikes
            .iter()
            .map(|name| SpikeRecord { population: model.population_index(name).expect("validated"), name: name.clone(), steps: Recorded::default(), node_ids: Recorded::default() })
            .collect();
        Ok(Recorder { spikes, probes, spike_counts: vec![0; spec.populations.len()], log_dir: None, run_id: 0, dt_ms: dt })
    }

    /// The spikes of recorded population `r` (`spikes[r]`), as `spikes.h5` holds them: times
    /// (ms, step x dt as [`step_times`] computes it) and population-local ids, sorted by time;
    /// what was spilled is read back from the logs.
    pub fn spike_train(&self, r: usize) -> std::io::Result<(Vec<f64>, Vec<u64>)> {
        let rec = &self.spikes[r];
        let steps = rec.steps.all(self.log_path(&format!("spikes-{r}-steps")).as_deref())?;
        let ids = rec.node_ids.all(self.log_path(&format!("spikes-{r}-node_ids")).as_deref())?;
        let time_of = step_times(self.dt_ms);
        Ok((steps.iter().map(|&s| time_of(u64::from(s))).collect(), ids.iter().map(|&n| u64::from(n)).collect()))
    }

    /// The samples of probe `r` (`probes[r]`), as `probes.h5` holds them: sampling times (ms,
    /// the same round times as the spikes) and values (row-major, one row of `sites.len()` per
    /// sample); what was spilled is read back from the logs.
    pub fn probe_samples(&self, r: usize) -> std::io::Result<(Vec<f64>, Vec<f32>)> {
        let p = &self.probes[r];
        let (dt_ms, time_of) = (self.dt_ms, step_times(self.dt_ms));
        let times = p.times_ms.all(self.log_path(&format!("probe-{r}-times_ms")).as_deref())?;
        let values = p.values.all(self.log_path(&format!("probe-{r}-values")).as_deref())?;
        Ok((times.iter().map(|&t| time_of((t / dt_ms).round() as u64)).collect(), values))
    }

    /// Writes `spikes.h5` (SONATA spike report) for the recorded populations, by way of a
    /// temporary file (see [`write_atomically`]).
    pub fn write_spikes(&self, path: &Path, model: &Model) -> Result<(), OutputError> {
        let err = |source| OutputError::Hdf5 { path: path.display().to_string(), source };
        write_hdf5(path, |file| {
            let spikes = file.create_group("spikes").map_err(err)?;
            if let Some(circuit) = &model.circuit {
                return self.write_sonata_spikes(&spikes, circuit, err);
            }
            for (r, rec) in self.spikes.iter().enumerate() {
                let (timestamps, node_ids) = self.spike_train(r)?;
                // Recorded step by step, each step's spikes by id: sorted by time as recorded.
                let group = spikes.create_group(&model.spec.populations[rec.population].name).map_err(err)?;
                group.new_attr::<Sorting>().create("sorting").and_then(|a| a.write_scalar(&Sorting::by_time)).map_err(err)?;
                let ts = group.new_dataset_builder().with_data(&timestamps).create("timestamps").map_err(err)?;
                write_str_attr(&ts, "units", "ms").map_err(err)?;
                group.new_dataset_builder().with_data(&node_ids).create("node_ids").map_err(err)?;
            }
            Ok(())
        })
    }

    /// The spikes of a SONATA circuit's model under its node populations and `node_id`s (the
    /// populations of one node population's types merged), sorted by time, then id.
    fn write_sonata_spikes(&self, spikes: &hdf5::Group, circuit: &crate::sonata::Circuit, err: impl Fn(hdf5::Error) -> OutputError) -> Result<(), OutputError> {
        let recorded: Vec<usize> = self.spikes.iter().map(|s| s.population).collect();
        for (name, members) in circuit.report_groups(&recorded) {
            let mut train: Vec<(f64, u64)> = Vec::new();
            for p in members {
                let r = recorded.iter().position(|&q| q == p).expect("a recorded population");
                let (times, ids) = self.spike_train(r)?;
                let node_ids = &circuit.nodes[p].node_ids;
                train.extend(times.into_iter().zip(ids.into_iter().map(|i| node_ids[i as usize])));
            }
            train.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let (timestamps, node_ids): (Vec<f64>, Vec<u64>) = train.into_iter().unzip();
            let group = spikes.create_group(&name).map_err(&err)?;
            group.new_attr::<Sorting>().create("sorting").and_then(|a| a.write_scalar(&Sorting::by_time)).map_err(&err)?;
            let ts = group.new_dataset_builder().with_data(&timestamps).create("timestamps").map_err(&err)?;
            write_str_attr(&ts, "units", "ms").map_err(&err)?;
            group.new_dataset_builder().with_data(&node_ids).create("node_ids").map_err(&err)?;
        }
        Ok(())
    }

    /// Writes `probes.h5`: `/<probe>/time_ms`, `/<probe>/values` (samples x sites) and
    /// `/<probe>/node_ids` (neuron ids) or `/<probe>/pre_post` (pairs, for weights), by way of
    /// a temporary file (see [`write_atomically`]).
    pub fn write_probes(&self, path: &Path) -> Result<(), OutputError> {
        let err = |source| OutputError::Hdf5 { path: path.display().to_string(), source };
        write_hdf5(path, |file| {
            for (r, p) in self.probes.iter().enumerate() {
                let (times, values) = self.probe_samples(r)?;
                let group = file.create_group(&p.name).map_err(err)?;
                let variable = match p.variable {
                    ProbeVariable::V => "v_mv",
                    ProbeVariable::SynEx => "syn_ex",
                    ProbeVariable::SynIn => "syn_in",
                    ProbeVariable::Weight => "weight",
                };
                write_str_attr(&group, "variable", variable).map_err(err)?;
                group.new_dataset_builder().with_data(&times).create("time_ms").map_err(err)?;
                group.new_dataset_builder().with_data(&ndarray_2d(&values, p.sites.len())).create("values").map_err(err)?;
                if p.variable == ProbeVariable::Weight {
                    group.new_dataset_builder().with_data(&ndarray_2d(&p.labels.iter().flatten().copied().collect::<Vec<_>>(), 2)).create("pre_post").map_err(err)?;
                } else {
                    let ids: Vec<u64> = p.labels.iter().map(|l| u64::from(l[0])).collect();
                    group.new_dataset_builder().with_data(&ids).create("node_ids").map_err(err)?;
                }
            }
            Ok(())
        })
    }
}

/// SONATA's spike sorting, an HDF5 enum on each population group (libsonata reads it as
/// `none`, `by_id`, `by_time`).
#[derive(hdf5::H5Type, Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
#[allow(non_camel_case_types)]
pub enum Sorting {
    none = 0,
    by_id = 1,
    by_time = 2,
}

/// The time of `step` in ms, the double nearest to step x dt computed in decimal: with dt 0.1,
/// step 19998 is 1999.8, where `step as f64 * dt` gives 1999.8000000000002.
pub fn step_time_ms(step: u64, dt: f64) -> f64 {
    step_times(dt)(step)
}

/// [`step_time_ms`] for one dt, worked out once. dt is taken as the decimal fraction m / 10^e
/// it was written as (e <= 15); step x m is exact below 2^53, and one division rounds once.
/// A dt with no such form (1e-300) falls back to step x dt.
pub fn step_times(dt: f64) -> impl Fn(u64) -> f64 {
    let decimal = (0..=15).map(|e| (dt * 10f64.powi(e), 10f64.powi(e))).find(|&(m, _)| m == m.round() && m.abs() < 1e15);
    move |step| match decimal {
        Some((m, scale)) if (step as f64) * m.abs() < 9e15 => step as f64 * m / scale,
        _ => step as f64 * dt,
    }
}

/// Writes an HDF5 file through `write` with [`write_atomically`].
fn write_hdf5(path: &Path, write: impl FnOnce(&hdf5::File) -> Result<(), OutputError>) -> Result<(), OutputError> {
    let named = |source| OutputError::Hdf5 { path: path.display().to_string(), source };
    write_atomically(
        path,
        |tmp| {
            let file = hdf5::File::create(tmp).map_err(named)?;
            write(&file)?;
            file.close().map_err(named)
        },
        |source| OutputError::Io { path: path.display().to_string(), source },
    )
}

/// Writes a file as a whole or not at all: `write` fills `.NAME.tmp` in the same folder, which
/// is fsynced and renamed to `path`, and the folder fsynced, so that neither a crash nor a
/// full disk leaves a short file under the final name. On failure the temporary file is
/// removed; `io_error` names the file in the errors of these steps.
pub fn write_atomically<E>(path: &Path, write: impl FnOnce(&Path) -> Result<(), E>, io_error: impl Fn(std::io::Error) -> E) -> Result<(), E> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(|| "output".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = write(&tmp).and_then(|()| {
        let publish = || -> std::io::Result<()> {
            File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, path)?;
            File::open(dir)?.sync_all()
        };
        publish().map_err(&io_error)
    });
    if result.is_err() && tmp.is_file() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn ndarray_2d<T: Clone>(flat: &[T], columns: usize) -> ndarray::Array2<T> {
    let columns = columns.max(1);
    ndarray::Array2::from_shape_vec((flat.len() / columns, columns), flat.to_vec()).expect("rows of equal length")
}

fn write_str_attr(location: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    let value: VarLenUnicode = value.parse().expect("no NUL in attribute values");
    location.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&value)
}

/// The index of a recording log `NAME.bin` is `NAME.idx`: a header (magic, the run's id) and
/// one record per chunk appended at a checkpoint (its start, length and CRC-32), so that a
/// resumed run can tell a log that holds what was recorded from one lost, cut or overwritten,
/// and a log of another run from its own.
const INDEX_MAGIC: &[u8; 8] = b"FUMLOGI\0";
const INDEX_HEADER: u64 = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Chunk {
    start: u64,
    len: u64,
    crc32: u32,
    _pad: u32,
}

const CHUNK_BYTES: u64 = std::mem::size_of::<Chunk>() as u64;

impl Chunk {
    fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

pub fn index_path(log: &Path) -> PathBuf {
    log.with_extension("idx")
}

/// The run id in the index of `log`, if it has a readable one.
pub fn log_run_id(log: &Path) -> Option<u64> {
    let mut header = [0u8; INDEX_HEADER as usize];
    File::open(index_path(log)).ok()?.read_exact(&mut header).ok()?;
    (&header[..8] == INDEX_MAGIC).then(|| u64::from_le_bytes(header[8..].try_into().expect("8 bytes")))
}

/// Appends `chunk`, which starts at byte `offset` of `log`, to the log and a record of it to
/// the index, both synced; both are cut back to `offset` first (a killed earlier write may
/// have left more).
pub fn append_chunk(log: &Path, run_id: u64, offset: u64, chunk: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().create(true).truncate(false).write(true).open(log)?;
    f.set_len(offset)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(chunk)?;
    f.sync_data()?;
    let (mut index, records) = open_index(log, run_id)?;
    let kept = cut_records(&mut index, records, offset)?;
    index.seek(SeekFrom::Start(INDEX_HEADER + kept * CHUNK_BYTES))?;
    index.write_all(bytemuck::bytes_of(&Chunk { start: offset, len: chunk.len() as u64, crc32: crc32fast::hash(chunk), _pad: 0 }))?;
    index.sync_data()
}

/// The index of `log` opened for writing, created for `run_id` if it has no header; and its
/// number of whole records. An index of another run is an error (never overwritten).
fn open_index(log: &Path, run_id: u64) -> std::io::Result<(File, u64)> {
    let path = index_path(log);
    let mut index = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
    let len = index.metadata()?.len();
    if len < INDEX_HEADER {
        index.set_len(0)?;
        index.write_all(INDEX_MAGIC)?;
        index.write_all(&run_id.to_le_bytes())?;
        return Ok((index, 0));
    }
    match log_run_id(log) {
        Some(id) if id == run_id => Ok((index, (len - INDEX_HEADER) / CHUNK_BYTES)),
        Some(id) => Err(std::io::Error::other(format!("{} belongs to run {id:016x}, not to this run ({run_id:016x})", path.display()))),
        None => Err(std::io::Error::other(format!("{} is not a recording log index", path.display()))),
    }
}

/// Drops the trailing records of an index (`records` of them) that end past `offset`; the
/// number kept. Records are in log order, so this reads one record in the usual case.
fn cut_records(index: &mut File, mut records: u64, offset: u64) -> std::io::Result<u64> {
    while records > 0 {
        let mut last = Chunk::zeroed();
        index.seek(SeekFrom::Start(INDEX_HEADER + (records - 1) * CHUNK_BYTES))?;
        index.read_exact(bytemuck::bytes_of_mut(&mut last))?;
        if last.end() <= offset {
            break;
        }
        records -= 1;
    }
    index.set_len(INDEX_HEADER + records * CHUNK_BYTES)?;
    Ok(records)
}

/// Cuts `log` and its index back to `bytes` (output recorded after a checkpoint, to be
/// recorded again); nothing to do for a log that does not exist.
pub fn cut_log(log: &Path, run_id: u64, bytes: u64) -> std::io::Result<()> {
    if !log.exists() {
        return Ok(());
    }
    OpenOptions::new().write(true).open(log)?.set_len(bytes)?;
    if bytes == 0 {
        // Nothing of the log is kept: an index of a lost log starts again.
        return match std::fs::remove_file(index_path(log)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let (mut index, records) = open_index(log, run_id)?;
    cut_records(&mut index, records, bytes).map(drop)
}

/// Checks that the first `bytes` of `log` are what its index recorded, chunk by chunk; why not.
pub fn verify_log(log: &Path, run_id: u64, bytes: u64) -> Result<(), String> {
    let name = log.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let index = std::fs::read(index_path(log)).map_err(|e| format!("its index {}: {e}", index_path(log).display()))?;
    if index.len() < INDEX_HEADER as usize || &index[..8] != INDEX_MAGIC {
        return Err(format!("{name}: its index is damaged"));
    }
    let id = u64::from_le_bytes(index[8..16].try_into().expect("8 bytes"));
    if id != run_id {
        return Err(format!("{name} belongs to run {id:016x}"));
    }
    let mut file = File::open(log).map_err(|e| format!("{name}: {e}"))?;
    let mut pos = 0;
    let mut buffer = Vec::new();
    for record in index[INDEX_HEADER as usize..].chunks_exact(CHUNK_BYTES as usize) {
        if pos == bytes {
            break;
        }
        let chunk: Chunk = bytemuck::pod_read_unaligned(record);
        if chunk.start != pos || chunk.end() > bytes {
            return Err(format!("{name}: its index does not cover bytes {pos}..{bytes} chunk by chunk"));
        }
        buffer.clear();
        (&mut file).take(chunk.len).read_to_end(&mut buffer).map_err(|e| format!("{name}: {e}"))?;
        if buffer.len() as u64 != chunk.len {
            return Err(format!("{name} holds {} bytes, the checkpoint needs {bytes}", pos + buffer.len() as u64));
        }
        if crc32fast::hash(&buffer) != chunk.crc32 {
            return Err(format!("{name}: checksum mismatch in the chunk at bytes {pos}..{}", chunk.end()));
        }
        pos = chunk.end();
    }
    if pos < bytes {
        return Err(format!("{name}: its index records {pos} of the {bytes} bytes the checkpoint needs"));
    }
    Ok(())
}
