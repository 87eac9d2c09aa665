//! Watching and steering a running simulation, the simulation's side: the [`Observer`], which
//! builds frames from the world and answers requests. The messages and the link are in
//! `fum_protocol` (re-exported here), the socket server in [`crate::serve`].
//!
//! [`channel`] makes the two ends: the [`Observer`], which the simulation thread calls at every
//! step boundary, and the [`ViewerLink`], which the viewer holds. The viewer sees per-step
//! summaries ([`Frame`]s) and [`Reply`]s to its [`Request`]s; it never touches the world.
//!
//! Concurrency contract. The simulation thread owns the world; the observer reads it and
//! applies commands only between steps, so a command never lands in a half-done step. Nothing
//! on the simulation thread waits for the viewer: each step's summary is added to a frame under
//! construction, handed over through a [`Slot`] (how: `fum_protocol::link`). While no viewer
//! watches, no frame is built at all: a step costs one atomic load and an empty channel poll.
//! Pausing is the one state in which the simulation thread waits, and it waits for commands,
//! not for a viewer. Reads from viewers that may not steer (socket clients without the token)
//! are answered within a time budget ([`READ_SHARE`] of the wall time): beyond it they wait for
//! later step boundaries, so that no number of watchers slows the run by more than that.
//!
//! Device backends (see [`crate::backend`]). On the CPU the observer reads the host columns
//! directly. On a device backend the host holds a step's spikes only some steps after it ran
//! and the neuron and synapse columns only after a sync, which waits for the device: there the
//! observer takes each step's spikes, labelled with their step, from
//! [`StepSpikes`], syncs neuron columns for watched neurons and membrane reads at most every
//! [`DEVICE_NEURONS_INTERVAL`] (the steps between get no membrane row, NaN) and everything for
//! weight histograms at most every [`DEVICE_WEIGHTS_INTERVAL`], and refuses the commands the
//! device baked into its step (Poisson rates, DC currents, STDP on/off).

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use bevy_ecs::prelude::*;

pub use fum_protocol::{
    CommitInfo, Envelope, Frame, Info, InputInfo, MAX_FRAME_SPIKES, MAX_STRUCTURE_COMMITS, PROTOCOL_VERSION, PopulationInfo, ProjectionInfo, Reply, Request, RequestSender, ShardInfo, SimulationEnd, Slot,
    Speed, StructureInfo, Taken, ViewerLink, WeightHistogram,
};

use crate::backend::{HostView, StepSpikes, installed, sync_to_host};
use crate::components::{Clock, NeuronBlock, Plasticity, PoissonSources, Population, Populations, Shard, SpikeExchange, SynapseBlocks};
use crate::model::Model;
use crate::structural::{Structural, StructuralReport};

/// Frames are handed over at most this often (wall time), so that a fast simulation sends a few
/// hundred frames per second rather than one per step.
const HAND_OVER_INTERVAL: Duration = Duration::from_millis(5);

/// How long a paused simulation waits for a command before it publishes a heartbeat frame.
const PAUSED_POLL: Duration = Duration::from_millis(20);

/// Requests answered at one step boundary at most (the rest wait for the next), and neurons one
/// request may name at most: reads are open to any viewer and must not slow the run down.
const MAX_REQUESTS_PER_STEP: usize = 8;
pub const MAX_NEURONS_PER_REQUEST: usize = 1024;

/// The share of the run's wall time that answering the reads of viewers that may not steer
/// may take, and the most that can be saved up for a burst of them; reads beyond wait (at most
/// [`MAX_DEFERRED`], later ones are refused).
pub const READ_SHARE: f64 = 0.01;
const READ_BURST_S: f64 = 0.005;
const MAX_DEFERRED: usize = 256;

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
    /// Stay paused at the model's end, answering requests, until the viewer goes (a window
    /// shows the final state rather than closing the run under the user).
    hold_at_end: bool,
    /// Wall time spent paused, which the run's timing leaves out.
    paused_s: f64,
    speed: Speed,
    /// Wall time and step from which a target real-time factor is kept.
    pace_origin: (Instant, u64),
    shards: Option<QueryState<(&'static Shard, &'static NeuronBlock, &'static SynapseBlocks)>>,
    /// Whether the backend has been looked at (at the first step boundary).
    backend_seen: bool,
    /// `Some` on a device backend.
    device: Option<DeviceSyncs>,
    /// Reads of viewers that may not steer: the time they may still take, and those waiting.
    budget: ReadBudget,
    deferred: VecDeque<Envelope>,
    /// Structural commits of this session already put into frames.
    commits_sent: usize,
}

/// Time that reads may take, in seconds (negative: overspent): refilled at [`READ_SHARE`] of
/// the wall time, up to [`READ_BURST_S`].
#[derive(Debug)]
struct ReadBudget {
    balance_s: f64,
    refilled: Instant,
}

impl ReadBudget {
    fn new() -> Self {
        ReadBudget { balance_s: READ_BURST_S, refilled: Instant::now() }
    }

    fn allows(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * READ_SHARE;
        self.balance_s = (self.balance_s + earned).min(READ_BURST_S);
        self.refilled = now;
        self.balance_s > 0.0
    }

    fn charge(&mut self, spent: Duration) {
        self.balance_s -= spent.as_secs_f64();
    }
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
    let (SimulationEnd { frames: slot, requests }, link) = fum_protocol::channel();
    let observer = Observer {
        slot,
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
        hold_at_end: false,
        paused_s: 0.0,
        speed: Speed::Max,
        pace_origin: (Instant::now(), 0),
        shards: None,
        backend_seen: false,
        device: None,
        budget: ReadBudget::new(),
        deferred: VecDeque::new(),
        commits_sent: 0,
    };
    (observer, link)
}

impl Observer {
    /// Starts the run paused (a viewer resumes it).
    pub fn start_paused(&mut self) {
        self.pause_at = Some(0);
    }

    /// Paces the run at `speed` from the start (a viewer may change it).
    pub fn set_speed(&mut self, speed: Speed) {
        self.speed = speed;
    }

    /// Holds the run at its last step, paused, until the viewer's end is dropped.
    pub fn hold_at_end(&mut self) {
        self.hold_at_end = true;
    }

    /// Whether the run waits at the boundary after `done` steps.
    fn paused(&self, done: u64) -> bool {
        self.pause_at.is_some_and(|at| done >= at) || (self.hold_at_end && done >= self.end_step)
    }

    /// The boundary before the first step of the session (`done` steps so far): waits there if
    /// started paused, so that a viewer sees and steers step `done` before anything runs.
    pub fn before_first_step(&mut self, world: &mut World, done: u64, checkpoint: &mut dyn FnMut(&mut World) -> Result<String, String>) -> ControlFlow<()> {
        self.see_backend(world);
        self.pace_origin = (Instant::now(), done);
        self.wait_while_paused(world, done, checkpoint)
    }

    /// Wall time the run has spent paused so far.
    pub fn paused_s(&self) -> f64 {
        self.paused_s
    }

    fn see_backend(&mut self, world: &World) {
        if !self.backend_seen {
            self.backend_seen = true;
            if installed(world).is_some_and(|b| b.spikes_lag()) {
                self.device = Some(DeviceSyncs::default());
            }
        }
    }

    /// Answers requests while paused. A signal (see `run::interrupt_flag`) ends the wait, so
    /// that the runner can checkpoint and stop a paused run as it does a running one.
    fn wait_while_paused(&mut self, world: &mut World, done: u64, checkpoint: &mut dyn FnMut(&mut World) -> Result<String, String>) -> ControlFlow<()> {
        if !self.paused(done) {
            // Most boundaries: no clock reads, no flag lookups.
            return ControlFlow::Continue(());
        }
        let interrupted = crate::run::interrupt_flag();
        let since = Instant::now();
        let result = self.answer_while_paused(world, done, checkpoint, &interrupted);
        self.paused_s += since.elapsed().as_secs_f64();
        result
    }

    fn answer_while_paused(&mut self, world: &mut World, done: u64, checkpoint: &mut dyn FnMut(&mut World) -> Result<String, String>, interrupted: &AtomicBool) -> ControlFlow<()> {
        while self.paused(done) && !interrupted.load(Ordering::Relaxed) {
            // Paused, reads cost the run nothing: answer those that waited.
            while let Some(envelope) = self.deferred.pop_front() {
                self.answer(world, done, envelope, checkpoint);
            }
            self.hand_over(true);
            match self.requests.recv_timeout(PAUSED_POLL) {
                Ok(envelope) => self.answer(world, done, envelope, checkpoint),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) if self.stop_when_detached => return ControlFlow::Break(()),
                Err(RecvTimeoutError::Disconnected) => {
                    self.pause_at = None;
                    self.hold_at_end = false;
                }
            }
            self.pace_origin = (Instant::now(), done);
        }
        ControlFlow::Continue(())
    }

    /// Records step `done - 1` into the frame, applies commands and answers reads, keeps the
    /// target speed, and waits while paused. `checkpoint` writes a checkpoint of the world and
    /// says where (it is the runner's: only it knows the output folder). Breaks when the
    /// viewer's end is gone and the run should stop with it.
    pub fn between_steps(&mut self, world: &mut World, done: u64, checkpoint: &mut dyn FnMut(&mut World) -> Result<String, String>) -> ControlFlow<()> {
        self.see_backend(world);
        let watching = self.slot.is_watching();
        if watching {
            if self.device.is_some() {
                self.record_device_steps(world, done, false);
            } else {
                self.record_step(world, done);
            }
            self.record_structure(world);
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
        self.answer_deferred(world, done, checkpoint);
        for _ in 0..MAX_REQUESTS_PER_STEP {
            match self.requests.try_recv() {
                Ok(envelope) => self.take(world, done, envelope, checkpoint),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) if self.stop_when_detached => return ControlFlow::Break(()),
                Err(TryRecvError::Disconnected) => break,
            }
        }
        if watching && self.device.is_some() && self.paused(done) {
            // The last steps are still queued on the device: the viewer sees them before the pause.
            self.record_device_steps(world, done, true);
        }
        self.wait_while_paused(world, done, checkpoint)?;
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

    /// Structural commits since the last call, into the frame: commits are rare, so most steps
    /// cost a look at the report's length.
    fn record_structure(&mut self, world: &World) {
        let commits = world.get_resource::<StructuralReport>().and_then(|r| r.0.values().next()).map_or(0, |r| r.commits.len());
        if commits > self.commits_sent {
            for news in self.structure(world, self.commits_sent) {
                fum_protocol::merge_structure(&mut self.building.structure, news);
            }
            self.commits_sent = commits;
        }
    }

    /// Structural plasticity of each projection under `[[structural]]` (none without), with its
    /// commits from the `from`-th on (at most the latest [`MAX_STRUCTURE_COMMITS`]). A commit
    /// applies between steps, so the synapses counted now are those after the latest commit.
    fn structure(&mut self, world: &World, from: usize) -> Vec<StructureInfo> {
        let (Some(report), Some(structural)) = (world.get_resource::<StructuralReport>(), world.get_resource::<Structural>()) else { return Vec::new() };
        let shards = self.shards(world);
        report
            .0
            .iter()
            .map(|(name, r)| {
                let projection = structural.rules.iter().find(|rule| &rule.name == name).map(|rule| rule.projection);
                let synapses: u64 = shards.iter().flat_map(|(_, _, blocks)| blocks.0.iter()).filter(|b| Some(b.projection) == projection).map(|b| b.len() as u64).sum();
                // Synapses after each commit, counted back from now.
                let mut after = synapses;
                let first = from.max(r.commits.len().saturating_sub(MAX_STRUCTURE_COMMITS)).min(r.commits.len());
                let mut recent: Vec<CommitInfo> = r.commits[first..]
                    .iter()
                    .rev()
                    .map(|c| {
                        let commit = CommitInfo { step: c.step, pruned: c.pruned, grown: c.grown, synapses: after };
                        after = after + c.pruned - c.grown;
                        commit
                    })
                    .collect();
                recent.reverse();
                StructureInfo {
                    projection: name.clone(),
                    synapses,
                    bytes_now: r.bytes_now,
                    bytes_at_start: r.bytes_at_start,
                    commits: r.commits.len() as u64,
                    pruned: r.pruned,
                    grown: r.grown,
                    planning_s: r.planning_s,
                    snapshot_s: r.snapshot_s,
                    commit_s: r.commit_s,
                    wait_s: r.wait_s,
                    recent,
                }
            })
            .collect()
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
        if self.device.is_some() && self.slot.is_watching() && world.contains_resource::<StepSpikes>() {
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

    /// Answers a request now, or defers it: reads of a viewer that may not steer wait behind
    /// earlier ones and for the budget.
    fn take(&mut self, world: &mut World, done: u64, envelope: Envelope, checkpoint: &mut dyn FnMut(&mut World) -> Result<String, String>) {
        if envelope.steering {
            self.answer(world, done, envelope, checkpoint);
        } else if self.deferred.is_empty() && self.budget.allows(Instant::now()) {
            self.answer_budgeted(world, done, envelope, checkpoint);
        } else if self.deferred.len() < MAX_DEFERRED {
            self.deferred.push_back(envelope);
        } else {
            let busy = format!("{:?} refused: {MAX_DEFERRED} requests of viewers without the token are waiting; ask again later", envelope.request);
            envelope.reply_to.send(Reply::Error(busy)).ok();
        }
    }

    /// Answers deferred reads while the budget allows.
    fn answer_deferred(&mut self, world: &mut World, done: u64, checkpoint: &mut dyn FnMut(&mut World) -> Result<String, String>) {
        while !self.deferred.is_empty() && self.budget.allows(Instant::now()) {
            let envelope = self.deferred.pop_front().expect("not empty");
            self.answer_budgeted(world, done, envelope, checkpoint);
        }
    }

    fn answer_budgeted(&mut self, world: &mut World, done: u64, envelope: Envelope, checkpoint: &mut dyn FnMut(&mut World) -> Result<String, String>) {
        let start = Instant::now();
        self.answer(world, done, envelope, checkpoint);
        self.budget.charge(start.elapsed());
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
            Request::Resume | Request::Step(_) if self.hold_at_end && done >= self.end_step => {
                Reply::Error(format!("the run has reached its end (step {done}); closing the viewer ends it"))
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
            // graph holds the Poisson means as kernel arguments and fails the run if STDP is
            // switched): changing them there would need a new capture. (Currents it could take:
            // it rewrites a population's entry where the model's DC inputs change.)
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
                        source.set_rate(rate_hz, dt_ms);
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
                        // The viewer's current replaces the model's DC inputs and their times.
                        p.current_pa = current_pa;
                        p.current_changes = std::sync::Arc::from([]);
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
        let shards = self.shards(world);
        // A paged block's resident synapses only (`crate::paging`).
        let weights = || {
            shards.iter().flat_map(|(_, _, blocks)| blocks.0.iter().filter(|b| b.projection == projection as usize)).flat_map(|block| crate::paging::resident_ranges(block).into_iter().flatten().map(|k| block.weight.get_resident(k)))
        };
        let lo = rule.w_min;
        // A rule without an upper bound (a power law without w_max) spans the largest weight.
        let hi = if rule.w_max < f32::MAX { rule.w_max } else { weights().fold(lo, f32::max) };
        let mut counts = vec![0u64; bins as usize];
        let (mut sum, mut n) = (0.0f64, 0u64);
        let scale = bins as f32 / (hi - lo).max(f32::MIN_POSITIVE);
        for w in weights() {
            counts[(((w - lo) * scale) as usize).min(bins as usize - 1)] += 1;
            sum += f64::from(w);
            n += 1;
        }
        Reply::WeightHistogram(WeightHistogram { projection, step, w_min: lo, w_max: hi, counts, mean: sum / n.max(1) as f64 })
    }

    fn info(&mut self, world: &World, done: u64) -> Info {
        let dt_ms = world.resource::<Clock>().dt_ms;
        let populations: Vec<PopulationInfo> = world
            .resource::<Populations>()
            .0
            .iter()
            .map(|p| PopulationInfo { name: p.name.clone(), first: p.first, size: p.size, current_pa: p.current_at(done) })
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
            paused: self.paused(done),
            speed: Some(self.speed),
            stdp_enabled,
            populations,
            inputs,
            plastic_projections,
            shards,
            memory_bytes: resident_bytes(),
            structure: self.structure(world, 0),
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
            *count += fum_kernels::spikes::in_range(spikes, pop.first..pop.first + pop.size).len() as u64;
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
        // The CPU draws from the new rate's table: P(0) = exp(-0.2) = 0.8187, P(<= 1) = 0.9825.
        assert_eq!([0.5, 0.9, 0.99].map(|u| source.cdf.sample(u)), [0, 1, 2]);
        match &replies[5] {
            Reply::Membrane { membrane_mv, .. } => assert!(membrane_mv[0].is_finite() && membrane_mv[1].is_nan()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_read_budget_refills_at_its_share_of_the_wall_time() {
        let mut budget = ReadBudget::new();
        let t0 = budget.refilled;
        assert!(budget.allows(t0));
        budget.charge(Duration::from_millis(15));
        // 10 ms overspent: earned back at READ_SHARE in 1 s of wall time.
        assert!(!budget.allows(t0 + Duration::from_millis(900)));
        assert!(budget.allows(t0 + Duration::from_millis(1100)));
        // Saving up stops at the burst.
        assert!(budget.allows(t0 + Duration::from_secs(3600)) && budget.balance_s <= READ_BURST_S);
    }

    #[test]
    fn over_budget_reads_of_viewers_that_may_not_steer_wait_and_the_others_do_not() {
        let model = Model::parse(MODEL, std::path::Path::new("t.toml")).unwrap();
        let mut sim = crate::Simulation::from_model(&model, 1, 2).unwrap();
        let (mut observer, link) = channel(&model, false);
        let watcher = link.branch(Slot::new(false), false);
        let mut never = |_: &mut World| Err("no".to_string());
        observer.budget.balance_s = -1e6;
        for _ in 0..MAX_DEFERRED + 1 {
            watcher.send(Request::Info);
        }
        link.send(Request::Info);
        let mut done = 0;
        while observer.deferred.len() < MAX_DEFERRED || link.try_reply().is_none() {
            done += 1;
            assert!(observer.between_steps(&mut sim.world, done, &mut never).is_continue());
            assert!(done < 100, "{} deferred", observer.deferred.len());
        }
        assert!(matches!(watcher.try_reply(), Some(Reply::Error(e)) if e.contains("waiting")), "one request too many is refused");
        assert!(watcher.try_reply().is_none(), "the others wait");
        // Paused, the run loses nothing to reads: the waiting ones are answered.
        link.send(Request::Pause);
        let resume = link.sender();
        let waiting = std::thread::spawn(move || {
            let replies: Vec<Reply> = (0..MAX_DEFERRED).map(|_| loop {
                if let Some(r) = watcher.try_reply() { break r; }
                std::thread::sleep(Duration::from_millis(1));
            }).collect();
            resume.send(Request::Resume);
            replies
        });
        assert!(observer.between_steps(&mut sim.world, done + 1, &mut never).is_continue());
        assert!(waiting.join().unwrap().iter().all(|r| matches!(r, Reply::Info(_))));
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
}
