//! What a run records and how it is written: spikes in the SONATA spike-report layout
//! (`spikes.h5`: `/spikes/<population>/timestamps` in ms and `node_ids`, population-local),
//! probes of state variables and weights (`probes.h5`), all under the run's output folder.

use bevy_ecs::prelude::*;
use bytemuck::Pod;
use hdf5::types::VarLenUnicode;
use std::io::Read;
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
    /// Step of each spike and the spiking neuron's index in its population.
    pub steps: Recorded<u32>,
    pub node_ids: Recorded<u32>,
}

/// Where a probed quantity lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeSite {
    /// Shard index and shard-local neuron index.
    Neuron { shard: usize, local: usize },
    /// Shard index, index of the block within the shard, synapse index within the block.
    Synapse { shard: usize, block: usize, synapse: usize },
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
}

/// Errors writing outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: {source}")]
    Hdf5 { path: String, source: hdf5::Error },
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

    /// Prepares recording for `model` in a built `world` (locates probed neurons and synapses).
    pub fn new(model: &Model, world: &mut World) -> Result<Recorder, OutputError> {
        let spec = &model.spec;
        let dt = spec.simulation.dt_ms;
        let mut query = world.query::<(&Shard, &SynapseBlocks)>();
        let mut shards: Vec<(&Shard, &SynapseBlocks)> = query.iter(world).collect();
        shards.sort_by_key(|(s, _)| s.index);
        let first_of = |pop: usize| spec.populations[..pop].iter().map(|p| p.size).sum::<u32>();
        let shard_of = |id: u32| shards.partition_point(|(s, _)| s.neurons.end <= id);

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
                    let shard = shard_of(id);
                    let (s, blocks) = shards[shard];
                    let found = blocks.0.iter().enumerate().find(|(_, b)| b.projection == pi).and_then(|(bi, b)| {
                        let row = b.row_ptr[pre as usize] as usize..b.row_ptr[pre as usize + 1] as usize;
                        let local = (id - s.neurons.start) as usize;
                        row.into_iter().find(|&k| usize::from(b.target[k]) == local).map(|k| (bi, k))
                    });
                    let Some((block, synapse)) = found else {
                        return Err(OutputError::NoSuchSynapse { probe: p.name.clone(), projection: name.into(), pre, post });
                    };
                    sites.push(ProbeSite::Synapse { shard, block, synapse });
                }
                (p.synapses.clone(), sites)
            } else {
                let pop = model.population_index(p.population.as_deref().expect("validated")).expect("validated");
                let first = first_of(pop);
                let sites = p
                    .neurons
                    .iter()
                    .map(|&n| {
                        let shard = shard_of(first + n);
                        ProbeSite::Neuron { shard, local: (first + n - shards[shard].0.neurons.start) as usize }
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
            .map(|name| SpikeRecord { population: model.population_index(name).expect("validated"), steps: Recorded::default(), node_ids: Recorded::default() })
            .collect();
        Ok(Recorder { spikes, probes, spike_counts: vec![0; spec.populations.len()], log_dir: None })
    }

    /// Writes `spikes.h5` (SONATA spike report) for the recorded populations.
    pub fn write_spikes(&self, path: &Path, model: &Model) -> Result<(), OutputError> {
        let dt = model.spec.simulation.dt_ms;
        let err = |source| OutputError::Hdf5 { path: path.display().to_string(), source };
        let file = hdf5::File::create(path).map_err(err)?;
        let spikes = file.create_group("spikes").map_err(err)?;
        write_str_attr(&spikes, "sorting", "by_time").map_err(err)?;
        for (r, rec) in self.spikes.iter().enumerate() {
            let group = spikes.create_group(&model.spec.populations[rec.population].name).map_err(err)?;
            let steps = rec.steps.all(self.log_path(&format!("spikes-{r}-steps")).as_deref())?;
            let ids = rec.node_ids.all(self.log_path(&format!("spikes-{r}-node_ids")).as_deref())?;
            let timestamps: Vec<f64> = steps.iter().map(|&s| f64::from(s) * dt).collect();
            let node_ids: Vec<u64> = ids.iter().map(|&n| u64::from(n)).collect();
            let ts = group.new_dataset_builder().with_data(&timestamps).create("timestamps").map_err(err)?;
            write_str_attr(&ts, "units", "ms").map_err(err)?;
            group.new_dataset_builder().with_data(&node_ids).create("node_ids").map_err(err)?;
        }
        Ok(())
    }

    /// Writes `probes.h5`: `/<probe>/time_ms`, `/<probe>/values` (samples x sites) and
    /// `/<probe>/ids` (neuron ids, or [pre, post] pairs for weights).
    pub fn write_probes(&self, path: &Path) -> Result<(), OutputError> {
        let err = |source| OutputError::Hdf5 { path: path.display().to_string(), source };
        let file = hdf5::File::create(path).map_err(err)?;
        for (r, p) in self.probes.iter().enumerate() {
            let group = file.create_group(&p.name).map_err(err)?;
            let times = p.times_ms.all(self.log_path(&format!("probe-{r}-times_ms")).as_deref())?;
            let values = p.values.all(self.log_path(&format!("probe-{r}-values")).as_deref())?;
            let variable = match p.variable {
                ProbeVariable::V => "v_mv",
                ProbeVariable::SynEx => "syn_ex",
                ProbeVariable::SynIn => "syn_in",
                ProbeVariable::Weight => "weight",
            };
            write_str_attr(&group, "variable", variable).map_err(err)?;
            group.new_dataset_builder().with_data(&times).create("time_ms").map_err(err)?;
            let values = ndarray_2d(&values, p.sites.len());
            group.new_dataset_builder().with_data(&values).create("values").map_err(err)?;
            if p.variable == ProbeVariable::Weight {
                group.new_dataset_builder().with_data(&ndarray_2d(&p.labels.iter().flatten().copied().collect::<Vec<_>>(), 2)).create("pre_post").map_err(err)?;
            } else {
                let ids: Vec<u32> = p.labels.iter().map(|l| l[0]).collect();
                group.new_dataset_builder().with_data(&ids).create("node_ids").map_err(err)?;
            }
        }
        Ok(())
    }
}

fn ndarray_2d<T: Clone>(flat: &[T], columns: usize) -> ndarray::Array2<T> {
    let columns = columns.max(1);
    ndarray::Array2::from_shape_vec((flat.len() / columns, columns), flat.to_vec()).expect("rows of equal length")
}

fn write_str_attr(location: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    let value: VarLenUnicode = value.parse().expect("no NUL in attribute values");
    location.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&value)
}
