//! The messages between a run and its viewers: per-step summaries ([`Frame`]), the
//! [`Request`]s a viewer sends and the [`Reply`]s it receives. The link that carries them in
//! one process is in [`crate::link`], their encoding on a socket in [`crate::wire`].

use serde::{Deserialize, Serialize};

/// Version of the messages below (and of the wire format in [`crate::wire`]); a viewer and a
/// simulation with different versions refuse to talk. 2: structural plasticity in [`Frame`]
/// and [`Info`].
pub const PROTOCOL_VERSION: u32 = 2;

/// Spike ids one frame holds at most; beyond it ids are dropped (and counted).
pub const MAX_FRAME_SPIKES: usize = 4 << 20;

/// Commits a [`StructureInfo`] lists at most (the latest): what a viewer that attaches late
/// gets of the history.
pub const MAX_STRUCTURE_COMMITS: usize = 1000;

/// A summary of consecutive steps: the spikes of each step, spike counts per population, the
/// membrane potential of watched neurons at each step, and the wall time the steps took.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// The first step covered (0-based step index; its time is `first_step * dt_ms`).
    pub first_step: u64,
    /// Steps covered; 0 for a heartbeat of a paused simulation.
    pub steps: u64,
    /// The spikes of step `first_step + k` are `spikes[spike_ends[k - 1]..spike_ends[k]]`
    /// (from 0 for `k = 0`), global neuron ids in ascending order.
    pub spike_ends: Vec<u32>,
    pub spikes: Vec<u32>,
    /// Spike ids left out of `spikes` because the viewer fell behind.
    pub spikes_dropped: u64,
    /// Spikes per population over the covered steps (exact even when ids were dropped).
    pub population_spikes: Vec<u64>,
    /// Watched neurons (global ids, see [`Request::Watch`]) and their membrane potentials (mV),
    /// one row of `watched.len()` values per step (NaN where not sampled: on a device backend
    /// only some steps are).
    pub watched: Vec<u32>,
    pub membrane_mv: Vec<f32>,
    /// Wall time from the previous frame's end to this frame's end, s.
    pub wall_s: f64,
    /// Whether the simulation was paused when the frame was handed over.
    pub paused: bool,
    /// Structural plasticity of the projections that changed since the previous frame (empty
    /// in most frames: commits are rare), each with the commits since then.
    pub structure: Vec<StructureInfo>,
}

impl Frame {
    /// The spike ids of the `k`-th step covered.
    pub fn step_spikes(&self, k: usize) -> &[u32] {
        let start = if k == 0 { 0 } else { self.spike_ends[k - 1] as usize };
        &self.spikes[start..self.spike_ends[k] as usize]
    }

    /// This frame with the membrane rows of `watched` only, in that order (NaN for neurons it
    /// does not carry): one viewer's traces out of the union a served run samples.
    pub fn watching(mut self, watched: &[u32]) -> Frame {
        if self.watched == watched {
            return self;
        }
        let columns: Vec<Option<usize>> = watched.iter().map(|id| self.watched.iter().position(|w| w == id)).collect();
        let width = self.watched.len();
        let mut membrane_mv = Vec::with_capacity(self.steps as usize * watched.len());
        for k in 0..self.steps as usize {
            let row = &self.membrane_mv[k * width..(k + 1) * width];
            membrane_mv.extend(columns.iter().map(|c| c.map_or(f32::NAN, |c| row[c])));
        }
        self.membrane_mv = membrane_mv;
        self.watched = watched.to_vec();
        self
    }

    /// Appends `later` so that one frame covers both; if `later` does not follow this frame
    /// (steps went unwatched in between), it replaces it.
    pub fn absorb(&mut self, mut later: Frame) {
        let structure = std::mem::take(&mut later.structure);
        self.absorb_steps(later);
        for news in structure {
            merge_structure(&mut self.structure, news);
        }
    }

    fn absorb_steps(&mut self, later: Frame) {
        if later.steps == 0 {
            self.wall_s += later.wall_s;
            self.paused = later.paused;
            return;
        }
        if self.steps == 0 || later.first_step != self.first_step + self.steps {
            let (wall_s, structure) = (self.wall_s, std::mem::take(&mut self.structure));
            *self = later;
            (self.wall_s, self.structure) = (self.wall_s + wall_s, structure);
            return;
        }
        let base = self.spikes.len() as u32;
        let room = MAX_FRAME_SPIKES.saturating_sub(self.spikes.len());
        let kept = later.spikes.len().min(room);
        self.spikes.extend_from_slice(&later.spikes[..kept]);
        self.spike_ends.extend(later.spike_ends.iter().map(|&e| base + e.min(kept as u32)));
        self.spikes_dropped += later.spikes_dropped + (later.spikes.len() - kept) as u64;
        for (sum, n) in self.population_spikes.iter_mut().zip(&later.population_spikes) {
            *sum += n;
        }
        if self.watched == later.watched {
            self.membrane_mv.extend_from_slice(&later.membrane_mv);
        } else {
            // A new watch list starts with the later steps; rows of the old one would not fit.
            self.membrane_mv = vec![f32::NAN; self.steps as usize * later.watched.len()];
            self.membrane_mv.extend_from_slice(&later.membrane_mv);
            self.watched = later.watched;
        }
        self.steps += later.steps;
        self.wall_s += later.wall_s;
        self.paused = later.paused;
    }
}

/// Adds `news` (later) to the structural plasticity of a projection in `all`: its totals
/// replace the older ones, its commits follow theirs (the latest [`MAX_STRUCTURE_COMMITS`]).
pub fn merge_structure(all: &mut Vec<StructureInfo>, mut news: StructureInfo) {
    match all.iter_mut().find(|s| s.projection == news.projection) {
        Some(older) => {
            let mut commits = std::mem::take(&mut older.recent);
            commits.retain(|c| news.recent.first().is_none_or(|first| c.step < first.step));
            commits.append(&mut news.recent);
            let excess = commits.len().saturating_sub(MAX_STRUCTURE_COMMITS);
            commits.drain(..excess);
            *older = StructureInfo { recent: commits, ..news };
        }
        None => all.push(news),
    }
}

/// Structural plasticity (`[[structural]]`) of one projection over this session of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StructureInfo {
    pub projection: String,
    /// Synapses and their bytes (targets, weights, per-synapse delays, row pointers) now, and
    /// the bytes when the session started.
    pub synapses: u64,
    pub bytes_now: u64,
    pub bytes_at_start: u64,
    /// Totals over the session's commits.
    pub commits: u64,
    pub pruned: u64,
    pub grown: u64,
    /// Seconds the plans took (beside the simulation), and the simulation paused for
    /// snapshots, for commits and, at commits, for plans not yet computed.
    pub planning_s: f64,
    pub snapshot_s: f64,
    pub commit_s: f64,
    pub wait_s: f64,
    /// Commits, oldest first: in a [`Frame`] those since the previous frame, in [`Info`] the
    /// latest (at most [`MAX_STRUCTURE_COMMITS`]).
    pub recent: Vec<CommitInfo>,
}

impl StructureInfo {
    /// Bytes given back since the session started (negative: taken).
    pub fn bytes_freed(&self) -> i64 {
        self.bytes_at_start as i64 - self.bytes_now as i64
    }
}

/// One commit of a projection's structural plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// The step whose start applied it.
    pub step: u64,
    pub pruned: u64,
    pub grown: u64,
    /// The projection's synapses after it.
    pub synapses: u64,
}

/// How fast the simulation runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Speed {
    /// As fast as it can.
    Max,
    /// Slowed down to this real-time factor (wall time / biological time; 1: real time).
    RealTimeFactor(f64),
}

/// What a viewer asks of the simulation. Reads are open to every viewer; the others steer the
/// run and, over a socket, need the token (see [`Request::is_steering`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Network description and current settings: answered with [`Reply::Info`].
    Info,
    /// The membrane potential of these global neuron ids now: [`Reply::Membrane`].
    Membrane(Vec<u32>),
    /// Record these neurons' membrane potential at every step into the frames (empty: none).
    Watch(Vec<u32>),
    /// The weight distribution of plastic projection `projection` (model index) in `bins`
    /// bins between the rule's bounds: [`Reply::WeightHistogram`].
    WeightHistogram { projection: u32, bins: u32 },
    Pause,
    Resume,
    /// Run this many steps, then pause.
    Step(u64),
    Speed(Speed),
    /// Rate of Poisson input `input` (model index), Hz.
    SetPoissonRate { input: u32, rate_hz: f64 },
    /// Constant current into every neuron of population `population` (model index), pA; where
    /// the population draws its bias per neuron, the current added to each neuron's bias.
    SetCurrent { population: u32, current_pa: f32 },
    /// STDP weight updates on or off.
    Stdp(bool),
    /// Write a checkpoint at the next step boundary.
    Checkpoint,
}

impl Request {
    /// Whether the request changes the run (rather than reading it).
    pub fn is_steering(&self) -> bool {
        !matches!(self, Request::Info | Request::Membrane(_) | Request::Watch(_) | Request::WeightHistogram { .. })
    }
}

/// An answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Info(Info),
    Membrane { step: u64, neurons: Vec<u32>, membrane_mv: Vec<f32> },
    WeightHistogram(WeightHistogram),
    /// A command was applied; the text says what happened.
    Done(String),
    /// A request was refused or failed; the text says why.
    Error(String),
}

/// The network and the run's current settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub model: String,
    /// Steps done.
    pub step: u64,
    /// The step the run ends at.
    pub end_step: u64,
    pub dt_ms: f64,
    pub paused: bool,
    pub speed: Option<Speed>,
    pub stdp_enabled: bool,
    pub populations: Vec<PopulationInfo>,
    pub inputs: Vec<InputInfo>,
    pub plastic_projections: Vec<ProjectionInfo>,
    pub shards: Vec<ShardInfo>,
    /// Resident memory of the simulating process, bytes (0 where unknown).
    pub memory_bytes: u64,
    /// Per projection under `[[structural]]`: its structural plasticity so far.
    pub structure: Vec<StructureInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PopulationInfo {
    pub name: String,
    /// Global id of the first neuron; the population's ids are contiguous.
    pub first: u32,
    pub size: u32,
    /// Constant current into every neuron, pA (with a bias drawn per neuron, what is added to
    /// each neuron's bias: the DC inputs).
    pub current_pa: f32,
}

/// A Poisson input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputInfo {
    /// Index among the model's inputs (what [`Request::SetPoissonRate`] names).
    pub index: u32,
    pub name: String,
    pub target: String,
    pub rate_hz: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectionInfo {
    /// Index among the model's projections.
    pub index: u32,
    pub name: String,
}

/// Where a shard lives and how large it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: u32,
    pub first: u32,
    pub neurons: u32,
    pub synapses: u64,
    /// "cpu", or a device backend.
    pub backend: String,
    /// The device's name on a device backend.
    pub device: Option<String>,
    /// Where the synapse columns live ("host memory" until storage tiers exist).
    pub synapse_storage: String,
}

/// Counts of weights in equal bins over `[w_min, w_max]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightHistogram {
    pub projection: u32,
    pub step: u64,
    pub w_min: f32,
    pub w_max: f32,
    pub counts: Vec<u64>,
    pub mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(first_step: u64, steps: &[&[u32]]) -> Frame {
        let mut f = Frame { first_step, steps: steps.len() as u64, population_spikes: vec![0], ..Frame::default() };
        for s in steps {
            f.spikes.extend_from_slice(s);
            f.spike_ends.push(f.spikes.len() as u32);
            f.population_spikes[0] += s.len() as u64;
        }
        f
    }

    #[test]
    fn absorbing_keeps_every_step_in_order() {
        let mut a = frame(10, &[&[1, 2], &[]]);
        a.absorb(frame(12, &[&[3], &[4, 5]]));
        assert_eq!((a.first_step, a.steps), (10, 4));
        let steps: Vec<&[u32]> = (0..4).map(|k| a.step_spikes(k)).collect();
        assert_eq!(steps, [&[1, 2][..], &[], &[3], &[4, 5]]);
        assert_eq!(a.population_spikes, [5]);
    }

    #[test]
    fn a_frame_after_a_gap_replaces_the_older_one() {
        let mut a = frame(10, &[&[1, 2]]);
        a.absorb(frame(50, &[&[3]]));
        assert_eq!((a.first_step, a.steps, a.spikes), (50, 1, vec![3]));
    }

    #[test]
    fn a_heartbeat_takes_the_later_frame_and_the_wall_time() {
        let mut beat = Frame { wall_s: 0.5, paused: true, ..Frame::default() };
        beat.absorb(Frame { wall_s: 0.25, ..frame(3, &[&[7]]) });
        assert_eq!((beat.first_step, beat.steps, beat.wall_s, beat.paused), (3, 1, 0.75, false));
    }

    #[test]
    fn a_frame_for_one_watch_list_keeps_its_columns_and_nan_for_the_others() {
        let f = Frame { steps: 2, watched: vec![3, 5, 9], membrane_mv: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], ..frame(0, &[&[], &[]]) };
        let mine = f.watching(&[9, 4, 3]);
        assert_eq!(mine.watched, [9, 4, 3]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&mine.membrane_mv), bits(&[3.0, f32::NAN, 1.0, 6.0, f32::NAN, 4.0]));
        assert!(frame(0, &[&[1]]).watching(&[]).membrane_mv.is_empty());
    }

    fn structure(commits: &[(u64, u64)]) -> StructureInfo {
        let recent: Vec<CommitInfo> = commits.iter().map(|&(step, pruned)| CommitInfo { step, pruned, grown: 1, synapses: 100 - pruned }).collect();
        StructureInfo { projection: "EE".into(), commits: recent.len() as u64, pruned: commits.iter().map(|c| c.1).sum(), recent, ..StructureInfo::default() }
    }

    #[test]
    fn absorbed_frames_keep_the_latest_totals_and_every_commit_once() {
        let mut a = Frame { structure: vec![structure(&[(10, 3)])], ..frame(10, &[&[1]]) };
        // A heartbeat, then a frame after a gap: the commits stay.
        a.absorb(Frame { structure: vec![structure(&[(11, 2)])], ..Frame::default() });
        a.absorb(Frame { structure: vec![structure(&[(11, 2), (20, 4)])], ..frame(50, &[&[3]]) });
        assert_eq!(a.first_step, 50);
        let [ee] = a.structure.as_slice() else { panic!("{:?}", a.structure) };
        assert_eq!(ee.recent.iter().map(|c| (c.step, c.pruned)).collect::<Vec<_>>(), [(10, 3), (11, 2), (20, 4)]);
        assert_eq!(ee.pruned, 6, "the latest totals");
        let mut long = vec![structure(&[])];
        merge_structure(&mut long, structure(&(0..MAX_STRUCTURE_COMMITS as u64 + 5).map(|s| (s, 1)).collect::<Vec<_>>()));
        assert_eq!((long[0].recent.len(), long[0].recent[0].step), (MAX_STRUCTURE_COMMITS, 5), "the latest commits");
    }

    #[test]
    fn reads_are_open_and_commands_steer() {
        assert!(!Request::Info.is_steering() && !Request::Watch(vec![1]).is_steering());
        assert!(Request::Pause.is_steering() && Request::Checkpoint.is_steering());
    }
}
