//! Watching and steering a running simulation: the one API through which a viewer (in the same
//! process, or over a socket with [`crate::serve`]) sees and changes a run.
//!
//! [`channel`] makes the two ends: the [`Observer`], which the simulation thread calls at every
//! step boundary, and the [`ViewerLink`], which the viewer holds. The viewer sees per-step
//! summaries ([`Frame`]s) and [`Reply`]s to its [`Request`]s; it never touches the world.
//!
//! Concurrency contract. The simulation thread owns the world; the observer reads it and
//! applies commands only between steps, so a command never lands in a half-done step. Nothing
//! on the simulation thread waits for the viewer: each step's summary is added to a frame under
//! construction, handed over through a slot that holds one frame at a time. If the viewer has
//! not taken the previous frame, the new steps are merged into it, so a slow viewer receives
//! fewer, larger frames; past [`MAX_FRAME_SPIKES`] spike ids in one frame, further ids are
//! dropped and counted in [`Frame::spikes_dropped`] (population counts stay exact). The slot's
//! lock is only tried: if the viewer holds it, the steps wait for the next hand-over. While no
//! viewer watches ([`Slot::set_watching`]), no frame is built at all: a step costs one atomic
//! load and an empty channel poll. Pausing is the one state in which the simulation thread
//! waits, and it waits for commands, not for a viewer.
//!
//! Device backends (see [`crate::backend`]). On the CPU the observer reads the host columns
//! directly. On a device backend the host holds a step's spikes only some steps after it ran
//! and the neuron and synapse columns only after a sync, which waits for the device: there the
//! observer takes each step's spikes, labelled with their step, from
//! [`StepSpikes`], syncs neuron columns for watched neurons and membrane reads at most every
//! [`DEVICE_NEURONS_INTERVAL`] (the steps between get no membrane row, NaN) and everything for
//! weight histograms at most every [`DEVICE_WEIGHTS_INTERVAL`], and refuses the commands the
//! device baked into its step (Poisson rates, DC currents, STDP on/off).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::time::{Duration, Instant};

use bevy_ecs::prelude::*;
use serde::{Deserialize, Serialize};

use crate::backend::{HostView, StepSpikes, installed, sync_to_host};
use crate::components::{Clock, NeuronBlock, Plasticity, PoissonSources, Population, Populations, Shard, SpikeExchange, SynapseBlocks};
use crate::model::Model;

/// Version of the messages below (and of the wire format in [`crate::serve`]); a viewer and a
/// simulation with different versions refuse to talk.
pub const PROTOCOL_VERSION: u32 = 1;

/// Spike ids one frame holds at most; beyond it ids are dropped (and counted).
pub const MAX_FRAME_SPIKES: usize = 4 << 20;

/// Frames are handed over at most this often (wall time), so that a fast simulation sends a few
/// hundred frames per second rather than one per step.
const HAND_OVER_INTERVAL: Duration = Duration::from_millis(5);

/// How long a paused simulation waits for a command before it publishes a heartbeat frame.
const PAUSED_POLL: Duration = Duration::from_millis(20);

/// Requests answered at one step boundary at most (the rest wait for the next), and neurons one
/// request may name at most: reads are open to any viewer and must not slow the run down.
const MAX_REQUESTS_PER_STEP: usize = 8;
const MAX_NEURONS_PER_REQUEST: usize = 1024;

/// The slowest pace accepted (wall time / biological time), and the largest Poisson mean per
/// step (beyond it counts overflow the fixed-point input).
const MAX_REAL_TIME_FACTOR: f64 = 1e4;
const MAX_POISSON_MEAN_PER_STEP: f64 = 1e6;

/// On a device backend, how often at most the observer copies the neuron columns to the host
/// (watched neurons, membrane reads) and everything (weight histograms): each copy stalls the
/// device's pipeline and moves every neuron's state (every plastic weight), so a watched run
/// samples its neurons about 50 times a second of wall time rather than at every step.
pub const DEVICE_NEURONS_INTERVAL: Duration = Duration::from_millis(20);
pub const DEVICE_WEIGHTS_INTERVAL: Duration = Duration::from_secs(2);

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
}

impl Frame {
    /// The spike ids of the `k`-th step covered.
    pub fn step_spikes(&self, k: usize) -> &[u32] {
        let start = if k == 0 { 0 } else { self.spike_ends[k - 1] as usize };
        &self.spikes[start..self.spike_ends[k] as usize]
    }

    /// Appends `later` so that one frame covers both; if `later` does not follow this frame
    /// (steps went unwatched in between), it replaces it.
    pub fn absorb(&mut self, later: Frame) {
        if later.steps == 0 {
            self.wall_s += later.wall_s;
            self.paused = later.paused;
            return;
        }
        if self.steps == 0 || later.first_step != self.first_step + self.steps {
            let wall_s = self.wall_s;
            *self = later;
            self.wall_s += wall_s;
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
    /// Constant current into every neuron of population `population` (model index), pA.
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
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PopulationInfo {
    pub name: String,
    /// Global id of the first neuron; the population's ids are contiguous.
    pub first: u32,
    pub size: u32,
    /// Constant current into every neuron, pA.
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

/// The hand-over slot for frames (see the module's concurrency contract).
#[derive(Debug, Default)]
pub struct Slot {
    frame: Mutex<Option<Frame>>,
    ready: Condvar,
    watching: AtomicBool,
    closed: AtomicBool,
}

impl Slot {
    /// A slot; frames are built only while it is marked as watched.
    pub fn new(watching: bool) -> Arc<Slot> {
        let slot = Slot::default();
        slot.watching.store(watching, Ordering::Relaxed);
        Arc::new(slot)
    }

    /// Adds `frame` to the one waiting, if any. Never waits: false (frame given back) when
    /// the lock is busy.
    pub fn offer(&self, frame: Frame) -> Result<(), Frame> {
        match self.frame.try_lock() {
            Ok(guard) => self.merge(guard, frame),
            Err(TryLockError::WouldBlock) => return Err(frame),
            Err(TryLockError::Poisoned(e)) => self.merge(e.into_inner(), frame),
        }
        Ok(())
    }

    /// Adds `frame` to the one waiting, if any, waiting for the lock (not for the simulation
    /// thread: it uses [`Slot::offer`]).
    pub fn put(&self, frame: Frame) {
        self.merge(self.frame.lock().unwrap_or_else(|e| e.into_inner()), frame);
    }

    fn merge(&self, mut waiting: std::sync::MutexGuard<'_, Option<Frame>>, frame: Frame) {
        match waiting.as_mut() {
            Some(older) => older.absorb(frame),
            None => *waiting = Some(frame),
        }
        drop(waiting);
        self.ready.notify_one();
    }

    /// The waiting frame, if any, without waiting.
    pub fn take(&self) -> Option<Frame> {
        self.frame.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The waiting frame, waiting up to `timeout` for one. `Closed` only once the last frame
    /// has been taken: a frame is put before the slot is closed, and the flag is read under
    /// the lock.
    pub fn take_timeout(&self, timeout: Duration) -> Taken {
        let guard = self.frame.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = self.ready.wait_timeout_while(guard, timeout, |f| f.is_none() && !self.is_closed()).unwrap_or_else(|e| e.into_inner());
        match guard.take() {
            Some(frame) => Taken::Frame(frame),
            None if self.is_closed() => Taken::Closed,
            None => Taken::Nothing,
        }
    }

    /// Whether frames are wanted.
    pub fn set_watching(&self, watching: bool) {
        self.watching.store(watching, Ordering::Relaxed);
    }

    /// Marks the end of the frames (the simulation ended, or the connection closed).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// What [`Slot::take_timeout`] found.
#[derive(Debug)]
pub enum Taken {
    Frame(Frame),
    /// No frame within the time.
    Nothing,
    /// No frame, and none will come.
    Closed,
}

/// A request and where to send its reply.
#[derive(Debug)]
pub struct Envelope {
    pub request: Request,
    pub reply_to: Sender<Reply>,
}

/// Sends requests to the simulation; replies go to the [`ViewerLink`] it came from.
#[derive(Clone, Debug)]
pub struct RequestSender {
    requests: Sender<Envelope>,
    reply_to: Sender<Reply>,
}

impl RequestSender {
    /// Sends a request; false when the simulation is gone.
    pub fn send(&self, request: Request) -> bool {
        self.requests.send(Envelope { request, reply_to: self.reply_to.clone() }).is_ok()
    }

    /// Delivers a reply that did not come from the simulation (a refusal, or one read from a
    /// socket).
    pub fn reply(&self, reply: Reply) {
        self.reply_to.send(reply).ok();
    }
}

/// The viewer's end: frames, replies, and a way to send requests.
#[derive(Debug)]
pub struct ViewerLink {
    pub frames: Arc<Slot>,
    sender: RequestSender,
    replies: Receiver<Reply>,
}

impl ViewerLink {
    /// A link receiving frames from `frames` and sending requests into `requests`.
    pub fn new(frames: Arc<Slot>, requests: Sender<Envelope>) -> Self {
        let (reply_to, replies) = std::sync::mpsc::channel();
        ViewerLink { frames, sender: RequestSender { requests, reply_to }, replies }
    }

    /// Another link to the same simulation, with its own frame slot and replies (one per
    /// socket client).
    pub fn branch(&self, frames: Arc<Slot>) -> ViewerLink {
        ViewerLink::new(frames, self.sender.requests.clone())
    }

    /// Sends a request; false when the simulation is gone.
    pub fn send(&self, request: Request) -> bool {
        self.sender.send(request)
    }

    /// A handle that sends requests (and replies) on this link's behalf from another thread.
    pub fn sender(&self) -> RequestSender {
        self.sender.clone()
    }

    /// A reply that has arrived, if any.
    pub fn try_reply(&self) -> Option<Reply> {
        self.replies.try_recv().ok()
    }

    /// The frame waiting, if any.
    pub fn try_frame(&self) -> Option<Frame> {
        self.frames.take()
    }

    /// Whether the simulation has ended (or the connection to it closed).
    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }
}

impl Drop for ViewerLink {
    fn drop(&mut self) {
        self.frames.set_watching(false);
    }
}

/// The simulation's end; call [`Observer::between_steps`] at every step boundary.
pub struct Observer {
    slot: Arc<Slot>,
    requests: Receiver<Envelope>,
    /// Break the run when the viewer's end is dropped (an in-process window closed).
    stop_when_detached: bool,
    model: String,
    input_names: Vec<(String, String)>,
    projection_names: Vec<String>,
    end_step: u64,
    building: Frame,
    last_hand_over: Instant,
    watched: Vec<u32>,
    /// Pause once this many steps are done (`Some(done)`: paused now).
    pause_at: Option<u64>,
    speed: Speed,
    /// Wall time and step from which a target real-time factor is kept.
    pace_origin: (Instant, u64),
    shards: Option<QueryState<(&'static Shard, &'static NeuronBlock, &'static SynapseBlocks)>>,
    /// Whether the backend has been looked at (at the first step boundary).
    backend_seen: bool,
    /// `Some` on a device backend.
    device: Option<DeviceSyncs>,
}

/// When the observer last brought device columns to the host: wall time and the steps done
/// then (what the host columns hold since).
#[derive(Debug, Default)]
struct DeviceSyncs {
    neurons: Option<(Instant, u64)>,
    everything: Option<(Instant, u64)>,
}

/// The two ends for a run of `model`. `stop_when_detached`: the run stops when the link is
/// dropped (a window closed); otherwise it goes on unobserved.
pub fn channel(model: &Model, stop_when_detached: bool) -> (Observer, ViewerLink) {
    let slot = Slot::new(true);
    let (tx, requests) = std::sync::mpsc::channel();
    let observer = Observer {
        slot: slot.clone(),
        requests,
        stop_when_detached,
        model: model.path.display().to_string(),
        input_names: model.spec.inputs.iter().map(|i| (i.name.clone(), i.target.clone())).collect(),
        projection_names: model.spec.projections.iter().map(|p| p.name.clone()).collect(),
        end_step: model.steps(),
        building: Frame::default(),
        last_hand_over: Instant::now(),
        watched: Vec::new(),
        pause_at: None,
        speed: Speed::Max,
        pace_origin: (Instant::now(), 0),
        shards: None,
        backend_seen: false,
        device: None,
    };
    (observer, ViewerLink::new(slot, tx))
}

impl Observer {
    /// Starts the run paused (a viewer resumes it).
    pub fn start_paused(&mut self) {
        self.pause_at = Some(0);
    }

    /// Records step `done - 1` into the frame, applies commands and answers reads, keeps the
    /// target speed, and waits while paused. `checkpoint` writes a checkpoint of the world and
    /// says where (it is the runner's: only it knows the output folder). Breaks when the
    /// viewer's end is gone and the run should stop with it.
    pub fn between_steps(&mut self, world: &mut World, done: u64, checkpoint: &mut dyn FnMut(&mut World) -> Result<String, String>) -> ControlFlow<()> {
        if !self.backend_seen {
            self.backend_seen = true;
            if installed(world).is_some_and(|b| b.spikes_lag()) {
                self.device = Some(DeviceSyncs::default());
            }
        }
        let watching = self.slot.watching.load(Ordering::Relaxed);
        if watching {
            if self.device.is_some() {
                self.record_device_steps(world, done, false);
            } else {
                self.record_step(world, done);
            }
            if self.last_hand_over.elapsed() >= HAND_OVER_INTERVAL {
                self.hand_over(false);
            }
        } else {
            if self.building.steps > 0 {
                // Nobody watches: a later frame starts afresh rather than after a gap.
                self.building = Frame::default();
            }
            if self.device.is_some() {
                // The device backend stops keeping steps for us.
                world.remove_resource::<StepSpikes>();
            }
        }
        for _ in 0..MAX_REQUESTS_PER_STEP {
            match self.requests.try_recv() {
                Ok(envelope) => self.answer(world, done, envelope, checkpoint),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) if self.stop_when_detached => return ControlFlow::Break(()),
                Err(TryRecvError::Disconnected) => break,
            }
        }
        if watching && self.device.is_some() && self.pause_at.is_some_and(|at| done >= at) {
            // The last steps are still queued on the device: the viewer sees them before the pause.
            self.record_device_steps(world, done, true);
        }
        while self.pause_at.is_some_and(|at| done >= at) {
            self.hand_over(true);
            match self.requests.recv_timeout(PAUSED_POLL) {
                Ok(envelope) => self.answer(world, done, envelope, checkpoint),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) if self.stop_when_detached => return ControlFlow::Break(()),
                Err(RecvTimeoutError::Disconnected) => self.pause_at = None,
            }
            self.pace_origin = (Instant::now(), done);
        }
        if let Speed::RealTimeFactor(factor) = self.speed {
            let dt_ms = world.resource::<Clock>().dt_ms;
            let (t0, step0) = self.pace_origin;
            let due = Duration::from_secs_f64((done - step0) as f64 * dt_ms * 1e-3 * factor);
            if let Some(ahead) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        ControlFlow::Continue(())
    }

    /// CPU backend: step `done - 1` is in `SpikeExchange` and the host columns are current.
    fn record_step(&mut self, world: &mut World, done: u64) {
        let membrane = (!self.watched.is_empty()).then(|| self.watched_membrane(world));
        let spikes = &world.resource::<SpikeExchange>().spikes;
        let populations = &world.resource::<Populations>().0;
        push_step(&mut self.building, &self.watched, done - 1, spikes, populations, membrane.as_deref());
    }

    /// Device backend: the steps the backend has brought back since the last call (see
    /// [`StepSpikes`]), up to a few steps behind `done`. Watched neurons are sampled when the
    /// last sync is older than [`DEVICE_NEURONS_INTERVAL`]; `catch_up` syncs now, so that every
    /// step done is recorded (before a pause).
    fn record_device_steps(&mut self, world: &mut World, done: u64, catch_up: bool) {
        let mut sample = None;
        if catch_up || !self.watched.is_empty() {
            // A sync also brings back every step queued on the device.
            let synced = self.host_neurons(world, done, catch_up);
            if synced == Ok(done) && !self.watched.is_empty() {
                // The state after `done` steps: the row of step `done - 1`.
                sample = Some((done - 1, self.watched_membrane(world)));
            }
        }
        if !world.contains_resource::<StepSpikes>() {
            // From now on the backend keeps the steps it brings back.
            world.init_resource::<StepSpikes>();
        }
        self.take_device_steps(world, sample);
    }

    /// Moves the steps in [`StepSpikes`] into the frame; `sample`: a step and the watched
    /// neurons' potentials at it (the other steps' rows are NaN).
    fn take_device_steps(&mut self, world: &mut World, sample: Option<(u64, Vec<f32>)>) {
        world.resource_scope(|world, mut log: Mut<StepSpikes>| {
            let populations = &world.resource::<Populations>().0;
            for (step, spikes) in log.iter() {
                let row = sample.as_ref().filter(|(at, _)| *at == step).map(|(_, row)| row.as_slice());
                push_step(&mut self.building, &self.watched, step, spikes, populations, row);
            }
            log.clear();
        });
    }

    /// Records the steps a device backend brought back with its last sync, after the last step
    /// boundary (the runner calls this once the run's steps are done and synced).
    pub fn run_ended(&mut self, world: &mut World) {
        if self.device.is_some() && self.slot.watching.load(Ordering::Relaxed) && world.contains_resource::<StepSpikes>() {
            self.take_device_steps(world, None);
        }
    }

    /// The steps done whose neuron state the host holds: `done` on the CPU; on a device backend
    /// the steps done at the last sync, syncing first when `now` or when that sync is older
    /// than [`DEVICE_NEURONS_INTERVAL`].
    fn host_neurons(&mut self, world: &mut World, done: u64, now: bool) -> Result<u64, String> {
        let Some(device) = self.device.as_mut() else { return Ok(done) };
        if now || device.neurons.is_none_or(|(t, _)| t.elapsed() >= DEVICE_NEURONS_INTERVAL) {
            sync_to_host(world, HostView::Neurons)?;
            device.neurons = Some((Instant::now(), done));
        }
        Ok(device.neurons.expect("synced above").1)
    }

    /// As [`Observer::host_neurons`], for every column (weights), synced at most every
    /// [`DEVICE_WEIGHTS_INTERVAL`].
    fn host_everything(&mut self, world: &mut World, done: u64) -> Result<u64, String> {
        let Some(device) = self.device.as_mut() else { return Ok(done) };
        if device.everything.is_none_or(|(t, _)| t.elapsed() >= DEVICE_WEIGHTS_INTERVAL) {
            sync_to_host(world, HostView::Everything)?;
            let now = (Instant::now(), done);
            device.everything = Some(now);
            device.neurons = Some(now);
        }
        Ok(device.everything.expect("synced above").1)
    }

    fn hand_over(&mut self, paused: bool) {
        let now = Instant::now();
        let mut frame = std::mem::take(&mut self.building);
        frame.wall_s = (now - self.last_hand_over).as_secs_f64();
        frame.paused = paused;
        match self.slot.offer(frame) {
            Ok(()) => self.last_hand_over = now,
            Err(mut frame) => {
                // The viewer holds the slot: keep the steps for the next hand-over.
                frame.wall_s = 0.0;
                self.building = frame;
            }
        }
    }

    fn answer(&mut self, world: &mut World, done: u64, envelope: Envelope, checkpoint: &mut dyn FnMut(&mut World) -> Result<String, String>) {
        let reply = match envelope.request {
            Request::Membrane(ids) | Request::Watch(ids) if ids.len() > MAX_NEURONS_PER_REQUEST => {
                Reply::Error(format!("{} neurons asked for; at most {MAX_NEURONS_PER_REQUEST}", ids.len()))
            }
            Request::Info => Reply::Info(self.info(world, done)),
            Request::Membrane(ids) => match self.host_neurons(world, done, false) {
                Ok(step) => Reply::Membrane { step, membrane_mv: self.membrane(world, &ids), neurons: ids },
                Err(e) => Reply::Error(format!("reading the device: {e}")),
            },
            Request::Watch(ids) => {
                let neurons = world.resource::<Populations>().0.iter().map(|p| p.first + p.size).max().unwrap_or(0);
                match ids.iter().find(|&&id| id >= neurons) {
                    Some(bad) => Reply::Error(format!("neuron {bad} does not exist (the network has {neurons} neurons)")),
                    None => {
                        self.watched = ids;
                        Reply::Done(format!("watching {} neurons", self.watched.len()))
                    }
                }
            }
            Request::WeightHistogram { projection, bins } => match self.host_everything(world, done) {
                Ok(step) => self.histogram(world, step, projection, bins.clamp(1, 1024)),
                Err(e) => Reply::Error(format!("reading the device: {e}")),
            },
            Request::Pause => {
                self.pause_at = Some(done);
                Reply::Done(format!("paused at step {done}"))
            }
            Request::Resume => {
                self.pause_at = None;
                Reply::Done(format!("running from step {done}"))
            }
            Request::Step(n) => {
                let at = done.saturating_add(n.max(1));
                self.pause_at = Some(at);
                Reply::Done(format!("stepping to step {at}"))
            }
            Request::Speed(speed) => match speed {
                Speed::RealTimeFactor(f) if !(f > 0.0 && f <= MAX_REAL_TIME_FACTOR) => {
                    Reply::Error(format!("real-time factor {f} is not in (0, {MAX_REAL_TIME_FACTOR}]"))
                }
                _ => {
                    self.speed = speed;
                    self.pace_origin = (Instant::now(), done);
                    Reply::Done(format!("speed {speed:?}"))
                }
            },
            // A device backend uploads these once, into the step it captured (the CUDA backend's
            // graph holds the Poisson means and currents as kernel arguments and fails the run
            // if STDP is switched): changing them there would need a new capture.
            Request::SetPoissonRate { .. } | Request::SetCurrent { .. } | Request::Stdp(_) if installed(world).is_some_and(|b| !b.steerable()) => {
                let backend = installed(world).map_or("device", |b| b.name());
                Reply::Error(format!("Poisson rates, DC currents and STDP on/off are fixed while the run is on the {backend} backend (run on the CPU backend to steer them)"))
            }
            Request::SetPoissonRate { input, rate_hz } => {
                let dt_ms = world.resource::<Clock>().dt_ms;
                let mut sources = world.resource_mut::<PoissonSources>();
                match sources.0.iter_mut().find(|s| u32::from(s.index) == input) {
                    Some(_) if !(rate_hz >= 0.0 && rate_hz * dt_ms * 1e-3 <= MAX_POISSON_MEAN_PER_STEP) => {
                        Reply::Error(format!("rate {rate_hz} Hz is not between 0 and {} Hz", MAX_POISSON_MEAN_PER_STEP / (dt_ms * 1e-3)))
                    }
                    Some(source) => {
                        source.mean_per_step = rate_hz * dt_ms * 1e-3;
                        source.exp_minus_mean = (-source.mean_per_step).exp();
                        Reply::Done(format!("input {input} at {rate_hz} Hz from step {done}"))
                    }
                    None => Reply::Error(format!("input {input} is not a Poisson input of this model")),
                }
            }
            Request::SetCurrent { population, current_pa } => {
                let mut populations = world.resource_mut::<Populations>();
                match populations.0.get_mut(population as usize) {
                    Some(_) if !current_pa.is_finite() => Reply::Error(format!("current {current_pa} pA is not finite")),
                    Some(p) => {
                        p.current_pa = current_pa;
                        Reply::Done(format!("{} at {current_pa} pA from step {done}", p.name))
                    }
                    None => Reply::Error(format!("population {population} does not exist")),
                }
            }
            Request::Stdp(enabled) => {
                world.resource_mut::<Plasticity>().enabled = enabled;
                Reply::Done(format!("STDP {} from step {done}", if enabled { "on" } else { "off" }))
            }
            Request::Checkpoint => match checkpoint(world) {
                Ok(text) => Reply::Done(text),
                Err(text) => Reply::Error(text),
            },
        };
        // A viewer that went away no longer wants its reply.
        envelope.reply_to.send(reply).ok();
    }

    fn shards<'w>(&mut self, world: &'w World) -> Vec<(&'w Shard, &'w NeuronBlock, &'w SynapseBlocks)> {
        let query = self.shards.get_or_insert_with(|| world.try_query().expect("a built world has shards"));
        let mut shards: Vec<_> = query.iter(world).collect();
        shards.sort_unstable_by_key(|(s, _, _)| s.index);
        shards
    }

    fn watched_membrane(&mut self, world: &World) -> Vec<f32> {
        let watched = std::mem::take(&mut self.watched);
        let values = self.membrane(world, &watched);
        self.watched = watched;
        values
    }

    /// Membrane potentials of global ids (NaN for ids outside the network).
    fn membrane(&mut self, world: &World, ids: &[u32]) -> Vec<f32> {
        let shards = self.shards(world);
        ids.iter()
            .map(|&id| {
                let s = shards.partition_point(|(s, _, _)| s.neurons.end <= id);
                shards.get(s).map_or(f32::NAN, |(shard, block, _)| block.v[(id - shard.neurons.start) as usize])
            })
            .collect()
    }

    /// The histogram of the host's weights, which are those after `step` steps.
    fn histogram(&mut self, world: &World, step: u64, projection: u32, bins: u32) -> Reply {
        let plasticity = world.resource::<Plasticity>();
        let Some(rule) = plasticity.projections.iter().find(|p| p.projection == projection as usize).map(|p| p.rule) else {
            return Reply::Error(format!("projection {projection} is not plastic"));
        };
        let (lo, hi) = (rule.w_min, rule.w_max);
        let mut counts = vec![0u64; bins as usize];
        let (mut sum, mut n) = (0.0f64, 0u64);
        let scale = bins as f32 / (hi - lo).max(f32::MIN_POSITIVE);
        for (_, _, blocks) in self.shards(world) {
            for block in blocks.0.iter().filter(|b| b.projection == projection as usize) {
                for k in 0..block.weight.len() {
                    let w = block.weight.get(k);
                    counts[(((w - lo) * scale) as usize).min(bins as usize - 1)] += 1;
                    sum += f64::from(w);
                }
                n += block.weight.len() as u64;
            }
        }
        Reply::WeightHistogram(WeightHistogram { projection, step, w_min: lo, w_max: hi, counts, mean: sum / n.max(1) as f64 })
    }

    fn info(&mut self, world: &World, done: u64) -> Info {
        let dt_ms = world.resource::<Clock>().dt_ms;
        let populations: Vec<PopulationInfo> = world
            .resource::<Populations>()
            .0
            .iter()
            .map(|p| PopulationInfo { name: p.name.clone(), first: p.first, size: p.size, current_pa: p.current_pa })
            .collect();
        let inputs = world
            .resource::<PoissonSources>()
            .0
            .iter()
            .map(|s| {
                let (name, target) = self.input_names[s.index as usize].clone();
                InputInfo { index: u32::from(s.index), name, target, rate_hz: s.mean_per_step / (dt_ms * 1e-3) }
            })
            .collect();
        let plasticity = world.resource::<Plasticity>();
        let plastic_projections = plasticity
            .projections
            .iter()
            .map(|p| ProjectionInfo { index: p.projection as u32, name: self.projection_names[p.projection].clone() })
            .collect();
        let stdp_enabled = plasticity.enabled;
        let (backend, device, synapse_storage) = match installed(world) {
            Some(b) if self.device.is_some() => (b.name().to_string(), Some(b.device()), "device memory"),
            _ => ("cpu".to_string(), None, "host memory"),
        };
        let shards = self
            .shards(world)
            .into_iter()
            .map(|(shard, _, blocks)| ShardInfo {
                index: shard.index as u32,
                first: shard.neurons.start,
                neurons: shard.neurons.len() as u32,
                synapses: blocks.0.iter().map(|b| b.len() as u64).sum(),
                backend: backend.clone(),
                device: device.clone(),
                synapse_storage: synapse_storage.into(),
            })
            .collect();
        Info {
            model: self.model.clone(),
            step: done,
            end_step: self.end_step,
            dt_ms,
            paused: self.pause_at.is_some_and(|at| done >= at),
            speed: Some(self.speed),
            stdp_enabled,
            populations,
            inputs,
            plastic_projections,
            shards,
            memory_bytes: resident_bytes(),
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if self.building.steps > 0 {
            // The last steps: wait for the slot rather than lose them.
            self.slot.put(std::mem::take(&mut self.building));
        }
        self.slot.close();
    }
}

/// Appends step `step` to `frame`: its spikes (ascending global ids), their counts per
/// population, and a row of the watched neurons' membrane potentials (`None`: not sampled, NaN).
fn push_step(frame: &mut Frame, watched: &[u32], step: u64, spikes: &[u32], populations: &[Population], membrane: Option<&[f32]>) {
    if frame.steps == 0 {
        frame.first_step = step;
        frame.population_spikes = vec![0; populations.len()];
    }
    debug_assert_eq!(step, frame.first_step + frame.steps, "steps are recorded in order");
    if frame.watched != watched {
        // A frame has one watch list: earlier rows of a new one are unknown.
        frame.membrane_mv = vec![f32::NAN; frame.steps as usize * watched.len()];
        frame.watched = watched.to_vec();
    }
    frame.steps += 1;
    let kept = spikes.len().min(MAX_FRAME_SPIKES.saturating_sub(frame.spikes.len()));
    frame.spikes.extend_from_slice(&spikes[..kept]);
    frame.spikes_dropped += (spikes.len() - kept) as u64;
    frame.spike_ends.push(frame.spikes.len() as u32);
    if !spikes.is_empty() {
        for (count, pop) in frame.population_spikes.iter_mut().zip(populations) {
            *count += (spikes.partition_point(|&g| g < pop.first + pop.size) - spikes.partition_point(|&g| g < pop.first)) as u64;
        }
    }
    match membrane {
        Some(row) => frame.membrane_mv.extend_from_slice(row),
        None => frame.membrane_mv.extend(std::iter::repeat_n(f32::NAN, watched.len())),
    }
}

/// Resident memory of this process (Linux `/proc/self/status`), bytes; 0 elsewhere.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())))
        .map_or(0, |kb| kb * 1024)
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
    fn the_slot_merges_frames_the_viewer_has_not_taken() {
        let slot = Slot::new(true);
        slot.offer(frame(0, &[&[1]])).unwrap();
        slot.offer(frame(1, &[&[2]])).unwrap();
        let f = slot.take().unwrap();
        assert_eq!((f.steps, f.spikes), (2, vec![1, 2]));
        assert!(slot.take().is_none());
    }

    const MODEL: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 10.0
[[populations]]
name = "N"
size = 20
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
target = "N"
rate_hz = 1000.0
weight = 50.0
"#;

    #[test]
    fn requests_out_of_bounds_are_refused_and_the_rest_applied() {
        let model = Model::parse(MODEL, std::path::Path::new("t.toml")).unwrap();
        let mut sim = crate::Simulation::from_model(&model, 1, 2).unwrap();
        let (mut observer, link) = channel(&model, false);
        let requests = [
            Request::Speed(Speed::RealTimeFactor(1e300)),
            Request::SetPoissonRate { input: 0, rate_hz: 1e300 },
            Request::Watch((0..5000).collect()),
            Request::SetPoissonRate { input: 0, rate_hz: 2000.0 },
            Request::Step(u64::MAX),
            Request::Membrane(vec![3, 25]),
        ];
        for r in &requests {
            link.send(r.clone());
        }
        let mut never = |_: &mut World| Err("no".to_string());
        assert!(observer.between_steps(&mut sim.world, 1, &mut never).is_continue());
        let replies: Vec<Reply> = std::iter::from_fn(|| link.try_reply()).collect();
        assert_eq!(replies.len(), requests.len());
        assert!(replies[..3].iter().all(|r| matches!(r, Reply::Error(_))), "{replies:?}");
        assert!(matches!(&replies[3], Reply::Done(_)) && matches!(&replies[4], Reply::Done(_)));
        let source = &sim.world.resource::<PoissonSources>().0[0];
        assert!((source.mean_per_step - 0.2).abs() < 1e-12 && (source.exp_minus_mean - (-0.2f64).exp()).abs() < 1e-12);
        match &replies[5] {
            Reply::Membrane { membrane_mv, .. } => assert!(membrane_mv[0].is_finite() && membrane_mv[1].is_nan()),
            other => panic!("{other:?}"),
        }
    }

    /// A device backend without a device, for the observer: it brings a step's spikes back two
    /// steps late, and every queued step at a sync, as the CUDA runner does.
    #[derive(Resource, Default)]
    struct FakeDevice {
        queued: std::collections::VecDeque<(u64, Vec<u32>)>,
        syncs: u32,
    }

    fn bring_back(world: &mut World, keep: usize) {
        while world.resource::<FakeDevice>().queued.len() > keep {
            let (step, spikes) = world.resource_mut::<FakeDevice>().queued.pop_front().expect("queued");
            if let Some(mut log) = world.get_resource_mut::<StepSpikes>() {
                log.push(step, &spikes);
            }
        }
    }

    fn fake_sync(world: &mut World, _: HostView) -> Result<(), String> {
        world.resource_mut::<FakeDevice>().syncs += 1;
        bring_back(world, 0);
        Ok(())
    }

    /// The backend of a [`FakeDevice`]: spikes lag, settings are baked in.
    struct FakeBackend(&'static str);

    impl crate::backend::Backend for FakeBackend {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn device(&self) -> String {
            self.0.into()
        }
        fn install(&mut self, sim: &mut crate::Simulation) -> Result<(), crate::backend::InstallError> {
            sim.world.init_resource::<FakeDevice>();
            Ok(())
        }
        fn sync(&mut self, world: &mut World, view: HostView) -> Result<(), String> {
            fake_sync(world, view)
        }
        fn steerable(&self) -> bool {
            false
        }
        fn spikes_lag(&self) -> bool {
            true
        }
    }

    #[test]
    fn on_a_device_backend_frames_label_late_spikes_with_their_steps_and_baked_in_settings_are_refused() {
        let model = Model::parse(MODEL, std::path::Path::new("t.toml")).unwrap();
        let mut sim = crate::Simulation::from_model(&model, 1, 2).unwrap();
        sim.install(Box::new(FakeBackend("test device"))).unwrap();
        let (mut observer, link) = channel(&model, false);
        let steering = [Request::SetPoissonRate { input: 0, rate_hz: 10.0 }, Request::SetCurrent { population: 0, current_pa: 5.0 }, Request::Stdp(false)];
        for r in steering.iter().cloned().chain([Request::Watch(vec![0, 7]), Request::Info]) {
            link.send(r);
        }
        let mut never = |_: &mut World| Err("no".to_string());
        let steps = 100;
        let mut expected = Vec::new();
        for step in 0..steps {
            let spikes: Vec<u32> = (0..20).filter(|&i| (u64::from(i) * 7 + step) % 5 == 0).collect();
            expected.push(spikes.clone());
            sim.world.resource_mut::<FakeDevice>().queued.push_back((step, spikes));
            bring_back(&mut sim.world, 2);
            assert!(observer.between_steps(&mut sim.world, step + 1, &mut never).is_continue());
        }
        // The runner's last sync, then the end of the run.
        fake_sync(&mut sim.world, HostView::Everything).unwrap();
        observer.run_ended(&mut sim.world);
        drop(observer);

        let frame = link.try_frame().expect("the steps' frame");
        assert_eq!((frame.first_step, frame.steps), (0, steps), "every step, from the first");
        for (k, spikes) in expected.iter().enumerate() {
            assert_eq!(frame.step_spikes(k), spikes.as_slice(), "step {k}");
        }
        // The watch list is known from the second boundary on: its first sample (a sync, which
        // also brings back the queued steps) is the state after step 1; the next ones come
        // DEVICE_NEURONS_INTERVAL later, not at every step.
        assert_eq!(frame.watched, [0, 7]);
        let sampled: Vec<bool> = frame.membrane_mv.chunks(2).map(|row| row.iter().all(|v| v.is_finite())).collect();
        assert!(!sampled[0] && sampled[1] && sampled.iter().filter(|&&s| s).count() < 25, "{sampled:?}");
        let syncs = sim.world.resource::<FakeDevice>().syncs;
        assert!((2..25).contains(&syncs), "{syncs} syncs for 100 steps");

        let replies: Vec<Reply> = std::iter::from_fn(|| link.try_reply()).collect();
        assert!(replies[..3].iter().all(|r| matches!(r, Reply::Error(e) if e.contains("fake backend"))), "{replies:?}");
        assert_eq!(sim.world.resource::<PoissonSources>().0[0].mean_per_step, 0.1, "the rate stays");
        match &replies[4] {
            Reply::Info(info) => {
                let shard = &info.shards[0];
                assert_eq!((shard.backend.as_str(), shard.device.as_deref(), shard.synapse_storage.as_str()), ("fake", Some("test device"), "device memory"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_paused_device_run_shows_every_step_done() {
        let model = Model::parse(MODEL, std::path::Path::new("t.toml")).unwrap();
        let mut sim = crate::Simulation::from_model(&model, 1, 2).unwrap();
        sim.install(Box::new(FakeBackend(""))).unwrap();
        let (mut observer, link) = channel(&model, false);
        let mut never = |_: &mut World| Err("no".to_string());
        for step in 0..10 {
            sim.world.resource_mut::<FakeDevice>().queued.push_back((step, vec![step as u32]));
            bring_back(&mut sim.world, 2);
            if step < 9 {
                assert!(observer.between_steps(&mut sim.world, step + 1, &mut never).is_continue());
            }
        }
        // Paused after 10 steps, the viewer sees steps 0 to 9 (two of them still queued on the
        // device before the pause), then resumes the run.
        link.send(Request::Pause);
        let viewer = std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                let Taken::Frame(frame) = link.frames.take_timeout(Duration::from_secs(10)) else { panic!("no paused frame") };
                seen.extend((0..frame.steps as usize).map(|k| (frame.first_step + k as u64, frame.step_spikes(k).to_vec())));
                if frame.paused {
                    link.send(Request::Resume);
                    return seen;
                }
            }
        });
        assert!(observer.between_steps(&mut sim.world, 10, &mut never).is_continue());
        let seen = viewer.join().unwrap();
        assert_eq!(seen, (0..10).map(|s| (s, vec![s as u32])).collect::<Vec<_>>());
    }

    #[test]
    fn reads_are_open_and_commands_steer() {
        assert!(!Request::Info.is_steering() && !Request::Watch(vec![1]).is_steering());
        assert!(Request::Pause.is_steering() && Request::Checkpoint.is_steering());
    }
}
