//! The CUDA backend's step: the whole step captured once as a CUDA graph and replayed every
//! step, and the host side that reads recorded spikes and probes back without stalling the
//! device. [`CudaBackend`] uploads a built (or restored) world (`fum_engine::device`) and
//! replaces the CPU step systems with the one exclusive system that replays the graph.
//!
//! Concurrency contract: the host launches step `t`'s graph and returns; it reads step `t - 2`'s
//! staging slot (after waiting on that step's event, normally long complete), so up to two
//! steps are queued on the device at any time. Three slots make that safe: the slot step `t`
//! writes was read when the host handled step `t - 3`. Across ranks in epochs (`EpochRun`) a
//! step's spikes are recorded when its epoch is replayed: the host reads an epoch's slots after
//! launching the next epoch's replay, so two epochs' steps are queued, in twice an epoch's
//! slots. Anything that reads host columns between steps first calls `sync_to_host`, which
//! waits for the device and drains every pending step (and runs the last step's STDP
//! bookkeeping, which each step otherwise leaves to the next: `CudaRunner::late_stdp`); in an
//! epoch's middle the plastic state it reads is that of the last epoch's end (every read that
//! needs it whole falls at an epoch's end: `Epochs::drains_at`; the health check reads the
//! recorded spikes and the weights as they are, as on CPU ranks).
//! Structural planning runs on a second, lower-priority stream, ordered after its snapshot by an
//! event and read back by plan threads; it touches only its own buffers and structure that
//! changes only at commits, which wait for it (see `CudaRunner::plan_structure`).

use std::collections::VecDeque;
use std::sync::Arc;

use bevy_ecs::prelude::*;
use cudarc::driver::{CudaEvent, CudaGraph, CudaStream, LaunchConfig, PinnedHostSlice, PushKernelArg, sys};

use fum_engine::backend::{Backend, DeviceStats, HostView, InstallError, StepSpikes, report_failure};
use fum_engine::components::{Clock, Plasticity, Populations, SpikeExchange, SynapseBlocks};
use fum_engine::recording::Recorder;
use fum_engine::components::{Shard, Weights};
use fum_engine::model::Prune;
use fum_engine::structural::{BlockPlan, Compaction, DevicePlan, DevicePlanJob, Draws, Prepared, Rebuilt, Structural, block_targets, regrow_need};
use fum_engine::{Plugin, Simulation, Stage};

use fum_engine::device::{DeviceContext, DeviceNetwork, ptr};
use fum_engine::state::{self, Columns};
use fum_kernels::cuda::{CudaError, Gpu};

use crate::cuda_ranks::RankSpikes;

/// Staging slots for recorded output without epochs (see the module comment).
const SLOTS: usize = 3;
/// Steps the host reads behind the device.
const LAG: usize = SLOTS - 1;
/// `record`'s parts (fum.cu): spikes, probes of neuron state, weight probes, the clock's advance.
const RECORD_SPIKES: u32 = 1;
const RECORD_STATE: u32 = 2;
const RECORD_WEIGHTS: u32 = 4;
const RECORD_ADVANCE: u32 = 8;
/// Pinned memory for the staging slots of epochs across GPU ranks (`CudaRunner::start_epochs`).
const EPOCH_STAGING_BYTES: usize = 1 << 30;
/// The mark after a step's last stage (`Marks`): the time after it counts to no stage.
const END: usize = fum_engine::Stage::ALL.len();

/// The device network, its captured step and the staging area, held as a resource.
#[derive(Resource)]
pub struct CudaRunner {
    pub gpu: Arc<Gpu>,
    pub net: DeviceNetwork,
    /// The step's graph, or its front and back with the spikes of ranks gathered over MPI
    /// between them (`crate::cuda_ranks`).
    graphs: Vec<CudaGraph>,
    events: Vec<CudaEvent>,
    /// The step captured again with an event before each stage and after the last, replayed
    /// instead of `graphs` while stages are timed (`StageTimes`); made at the first timed step.
    timed: Option<(Vec<CudaGraph>, Marks)>,
    /// Across ranks in epochs, the step's graphs instead of `graphs` (made at the first step).
    epoch: Option<EpochRun>,
    /// The exchange with the other ranks' GPUs; `None` for a process on its own.
    pub ranks: Option<RankSpikes>,
    /// Owns the staging memory `staging_ptr` points into.
    _staging: PinnedHostSlice<u32>,
    /// Its address (host and device alike under unified addressing).
    staging_ptr: *mut u32,
    slot_words: usize,
    /// Staging slots (and `events`): `SLOTS`, or two epochs' steps.
    slots: usize,
    multiprocessors: u32,
    pending: VecDeque<u64>,
    /// A step ran whose STDP bookkeeping is left to the next (`late_stdp`, `drain`).
    late_pending: bool,
    /// Where structural plans run beside the steps (see `plan_structure`).
    plan_stream: Arc<CudaStream>,
    /// The health check's count of values outside their bounds, allocated once: allocating
    /// it at each check made the step loop wait up to 23 ms behind a structural plan's
    /// allocations (H200, 1M-neuron STDP network).
    outside: cudarc::driver::CudaSlice<u32>,
    /// Structural schedules whose spike counts (for co-activity) each step adds to; 0: none.
    count_spikes: u32,
    /// Steps replayed, and the seconds spent capturing the graph.
    pub steps: u64,
    pub capture_s: f64,
    /// Seconds spent copying the network to the device (part of the build time).
    pub upload_s: f64,
    /// Free device memory lost from before the upload to after the graph upload.
    pub device_bytes_measured: u64,
}

// SAFETY: the runner is used by one thread at a time: the exclusive step system and the
// between-steps sync of the run loop, which never overlap. cudarc's graph and pinned-memory
// handles are raw pointers without thread affinity (the context is bound on every call).
unsafe impl Send for CudaRunner {}
unsafe impl Sync for CudaRunner {}

/// Replaces the CPU step systems: one exclusive system in `Stage::Update` replays the graph.
/// Structural plasticity keeps its step-start hook; the device plans (`plan_structure`) and
/// compacts (`rebuild_blocks`) for it.
pub struct CudaPlugin;

impl Plugin for CudaPlugin {
    fn build(&self, sim: &mut Simulation) {
        sim.add_systems(cuda_step.in_set(Stage::Update));
        sim.add_plugins((crate::StructuralPlugin { count_on_host: false }, crate::ClockPlugin));
    }
}

/// The CUDA backend on one GPU: steps captured as a graph, state in device memory, spikes read
/// back some steps late, Poisson rates, currents and STDP on/off baked into the graph.
pub struct CudaBackend {
    pub gpu: Arc<Gpu>,
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn device(&self) -> String {
        self.gpu.label()
    }

    fn install(&mut self, sim: &mut Simulation) -> Result<(), InstallError> {
        Ok(install(sim, self.gpu.clone())?)
    }

    fn sync(&mut self, world: &mut World, view: HostView) -> Result<(), String> {
        sync_to_host(world, view)
    }

    fn check(&mut self, world: &mut World, weights: bool) -> Option<Result<bool, String>> {
        Some(check(world, weights))
    }

    fn times_stages(&self) -> bool {
        true
    }

    fn stats(&self, world: &World) -> Option<DeviceStats> {
        world.get_resource::<CudaRunner>().map(CudaRunner::stats)
    }

    fn structure_changed(&mut self, world: &mut World, blocks: &[Rebuilt]) -> Result<(), String> {
        world.resource_scope(|world, mut runner: Mut<CudaRunner>| runner.rebuild_blocks(world, blocks)).map_err(|e| e.to_string())
    }

    fn plan_structure(&mut self, world: &mut World, schedule: usize, plan: u64) -> Option<Result<Vec<Vec<Option<DevicePlanJob>>>, String>> {
        world.resource_scope(|world, mut runner: Mut<CudaRunner>| runner.plan_structure(world, schedule, plan)).map(|r| r.map_err(|e| e.to_string()))
    }

    fn steerable(&self) -> bool {
        false
    }

    fn spikes_lag(&self) -> bool {
        true
    }
}

/// Uploads `sim`'s network (built or restored) to `gpu` and makes the simulation step there.
fn install(sim: &mut Simulation, gpu: Arc<Gpu>) -> Result<(), CudaError> {
    // The step's stream goes first when structural planning (the plan stream) runs beside it.
    // A raw driver call: the context must be this thread's (a test may open the GPU on another).
    gpu.ctx.bind_to_thread()?;
    let (least, greatest) = cudarc::driver::result::stream::get_priority_range()?;
    let stream = gpu.ctx.new_stream_with_priority(greatest)?;
    let plan_stream = gpu.ctx.new_stream_with_priority(least)?;
    let (free, _) = gpu.ctx.mem_get_info()?;
    let uploading = std::time::Instant::now();
    // What the card holds for the network: its free memory less what placing and stepping it
    // takes beyond the columns' bytes, or less where `--device-memory` says.
    let usable = (free as u64).saturating_sub(DeviceNetwork::slack_bytes(&mut sim.world));
    let limit = sim.world.get_resource::<fum_engine::backend::DeviceMemoryLimit>().map_or(usable, |l| l.0.min(usable));
    let gb = |b: u64| format!("{:.2} GB", b as f64 / 1e9);
    let net = DeviceNetwork::upload_world(stream.clone(), &mut sim.world, limit, &gpu.label()).map_err(|e| match e {
        CudaError::Driver(d) if d.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => CudaError::Unsupported(format!(
            "{} ran out of memory placing the network in at most {} of its {} free (or the host, pinning the synapses kept in its memory); a smaller --device-memory keeps more synapses in host memory, where the host has room for them",
            gpu.label(),
            gb(limit),
            gb(free as u64)
        )),
        e => e,
    })?;
    if let Some(m) = &net.mapped {
        eprintln!(
            "the network needs {} of device memory and has {}: {} of synapses ({} blocks) stay in pinned host memory, read by the kernels over the bus ({:.1} GB/s)",
            gb(m.needed_bytes),
            gb(m.limit_bytes),
            gb(m.bytes),
            m.blocks,
            m.link_bytes_per_s / 1e9
        );
    }
    let upload_s = uploading.elapsed().as_secs_f64();
    let slot_words = 1 + net.total as usize + net.probe_sites();
    let (staging, staging_ptr, events) = staging(&gpu, SLOTS, slot_words)?;
    let multiprocessors = gpu.ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
    let ranks = RankSpikes::new(&gpu, &stream, net.shards.base(), net.n)?;
    // Thread blocks of `deliver`, spread over the synapse blocks by their synapses
    // (`DeviceNetwork::spread_deliver`). Without plastic blocks, as many as the GPU holds at
    // once: launching thread blocks that find no spike is most of a small static network's
    // delivery (microcircuit, H100: 16 a multiprocessor 0.514 RTF, one wave 0.492), at some cost
    // to a large one (1M neurons static: 1.10 against 1.16). With plastic blocks, 16 a
    // multiprocessor: their rows cost far more than static ones, and one wave waits for the
    // slowest (1M-neuron STDP network, spread evenly: 1.90 RTF, one wave 2.59).
    let deliver_blocks = if net.n_plastic_blocks > 0 {
        multiprocessors * 16
    } else {
        multiprocessors * gpu.kernels.deliver.occupancy_max_active_blocks_per_multiprocessor(256, 0, None)?.max(1)
    };
    let mut net = net;
    net.spread_deliver(deliver_blocks)?;
    let mut runner = CudaRunner {
        gpu: gpu.clone(),
        net,
        graphs: Vec::new(),
        events,
        timed: None,
        epoch: None,
        ranks,
        _staging: staging,
        staging_ptr,
        slot_words,
        slots: SLOTS,
        multiprocessors,
        plan_stream,
        outside: stream.alloc_zeros::<u32>(1)?,
        pending: VecDeque::new(),
        late_pending: false,
        count_spikes: sim.world.get_resource::<Structural>().filter(|s| s.counts_spikes()).map_or(0, |s| s.schedules.len() as u32),
        steps: 0,
        capture_s: 0.0,
        upload_s,
        device_bytes_measured: 0,
    };
    runner.net.memory.staging_bytes = (SLOTS * slot_words * 4) as u64;
    let t = std::time::Instant::now();
    runner.graphs = runner.capture(None)?;
    runner.capture_s = t.elapsed().as_secs_f64();
    runner.device_bytes_measured = free.saturating_sub(gpu.ctx.mem_get_info()?.0) as u64;
    sim.world.insert_resource(runner);
    sim.add_plugins(CudaPlugin);
    Ok(())
}

/// `slots` staging slots of `slot_words` in mapped, pinned memory, where kernels write recorded
/// spikes straight into host memory; their address; an event per slot.
fn staging(gpu: &Gpu, slots: usize, slot_words: usize) -> Result<(PinnedHostSlice<u32>, *mut u32, Vec<CudaEvent>), CudaError> {
    // SAFETY: the memory is written by the record kernel before the host reads it.
    let mut staging = unsafe { gpu.ctx.alloc_pinned_with_flags::<u32>(slots * slot_words, sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE) }?;
    // Taken before capture: these calls synchronise, which capture forbids.
    let at = staging.as_mut_ptr()?;
    let events = (0..slots).map(|_| gpu.ctx.new_event(None)).collect::<Result<Vec<_>, _>>()?;
    Ok((staging, at, events))
}

/// Events between the stages of timed steps (`StageTimes`): the device's time from one mark to
/// the next counts to the stage the first was recorded for. A graph records its capture's marks
/// in the same order at every launch.
struct Marks {
    events: Vec<CudaEvent>,
    stages: std::cell::RefCell<Vec<usize>>,
    /// Recorded under capture, as external records: an event recorded under capture is
    /// otherwise only an ordering inside the graph, which the host can neither wait for nor time.
    captured: bool,
}

impl Marks {
    fn new(gpu: &Gpu, count: usize, captured: bool) -> Result<Marks, CudaError> {
        let events = (0..count).map(|_| gpu.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))).collect::<Result<Vec<_>, _>>()?;
        Ok(Marks { events, stages: Default::default(), captured })
    }

    /// Waits for the last mark and adds the time between marks to `seconds` (`Stage::ALL`'s).
    fn add_to(&self, seconds: &mut [f64]) -> Result<(), CudaError> {
        let stages = self.stages.borrow();
        let Some(last) = stages.len().checked_sub(1) else { return Ok(()) };
        self.events[last].synchronize()?;
        for (i, &stage) in stages[..last].iter().enumerate() {
            if let Some(t) = seconds.get_mut(stage) {
                *t += f64::from(self.events[i].elapsed_ms(&self.events[i + 1])?) * 1e-3;
            }
        }
        Ok(())
    }
}

/// Adds the device's time between each of `marks` to the run's `StageTimes` (after the last).
fn add_stage_times<'a>(world: &mut World, marks: impl IntoIterator<Item = &'a Marks>) -> Result<(), CudaError> {
    let mut seconds = [0.0; END];
    marks.into_iter().try_for_each(|m| m.add_to(&mut seconds))?;
    world.resource_mut::<fum_engine::StageTimes>().seconds.iter_mut().zip(seconds).for_each(|(t, dt)| *t += dt);
    Ok(())
}

/// Records the next of `marks` on `stream` before `stage` (when stages are timed).
fn mark(marks: Option<&Marks>, stream: &CudaStream, stage: usize) -> Result<(), CudaError> {
    let Some(m) = marks else { return Ok(()) };
    let mut stages = m.stages.borrow_mut();
    let event = m.events.get(stages.len()).ok_or_else(|| CudaError::Unsupported("more stage marks than events".into()))?;
    let flags = if m.captured { sys::CUevent_record_flags_enum::CU_EVENT_RECORD_EXTERNAL } else { sys::CUevent_record_flags_enum::CU_EVENT_RECORD_DEFAULT };
    // SAFETY: the event and the stream are live handles of this context.
    unsafe { sys::cuEventRecordWithFlags(event.cu_event(), stream.cu_stream(), flags as u32) }.result()?;
    stages.push(stage);
    Ok(())
}

/// The step across ranks in epochs (`crate::cuda_ranks`): a graph that updates the neurons and
/// packs their spikes into the epoch's place for the step, which advances the clock (then
/// samples probes of neuron state, if any), and one that gathers a whole epoch's spikes and replays its steps'
/// compaction, delivery, STDP bookkeeping and recording in order, each as of its step
/// (`launch_replay`). An epoch cut short (`Epochs::drains_at`, a stop) replays without a graph.
struct EpochRun {
    len: u32,
    graphs: [CudaGraph; 2],
    /// While stages are timed: the same with marks, and marks for the replays cut short.
    timed: Option<([CudaGraph; 2], [Marks; 2], Marks)>,
    /// The epoch's steps so far: updated, their spikes not yet delivered.
    open: Vec<u64>,
}

fn grid(n: u32, block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (n.div_ceil(block).max(1), 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

/// A launch over synapse blocks (grid y, one per block) that spreads about `total` thread
/// blocks of `threads` over them.
fn per_block(total: u32, blocks: u32, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (total.div_ceil(blocks).max(1), blocks, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Which part of a step a graph holds: all of it, or (spikes of ranks gathered on the host
/// between them) input, update and packing of the spikes, then the rest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    Front,
    Back,
}

impl CudaRunner {
    /// What `launch` enqueues, captured as a graph and uploaded.
    fn graph(&mut self, launch: impl FnOnce(&mut Self, &Arc<CudaStream>) -> Result<(), CudaError>) -> Result<CudaGraph, CudaError> {
        let stream = self.net.stream.clone();
        stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let launched = launch(self, &stream);
        // A launch that failed (after a fork, say) leaves a capture that cannot end: its
        // error is the one to report.
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        launched?;
        let graph = graph?.ok_or_else(|| CudaError::Unsupported("the captured step is empty".into()))?;
        graph.upload()?;
        Ok(graph)
    }

    /// The step captured as graphs (see `Part`), with `marks` as in `launch_step`.
    fn capture(&mut self, marks: Option<&Marks>) -> Result<Vec<CudaGraph>, CudaError> {
        let parts: &[Part] = if self.ranks.as_ref().is_some_and(RankSpikes::on_host) { &[Part::Front, Part::Back] } else { &[Part::Whole] };
        parts.iter().map(|&part| self.graph(|runner, stream| runner.launch_step(stream, marks, part))).collect()
    }

    /// Enqueues one step (or `part` of it): input, neuron update, compaction (and exchange
    /// across ranks), delivery and STDP, recording, clock; with `marks`, a mark before each
    /// stage and after the last. Called under graph capture.
    fn launch_step(&mut self, stream: &Arc<CudaStream>, marks: Option<&Marks>, part: Part) -> Result<(), CudaError> {
        if part != Part::Back {
            self.launch_update(stream, marks)?;
            // The previous step's STDP bookkeeping, beside the gather across ranks (see `late_stdp`).
            self.late_stdp(stream)?;
        }
        if part != Part::Front {
            self.launch_back(stream, marks)?;
        }
        Ok(())
    }

    /// Input and neuron update (across ranks: the packing of the step's spikes and, with NCCL
    /// without epochs, their exchange).
    fn launch_update(&mut self, stream: &Arc<CudaStream>, marks: Option<&Marks>) -> Result<(), CudaError> {
        let k = &self.gpu.kernels;
        let net = &self.net;
        let base = net.shards.base();
        let (n, slots) = (net.n, net.slots);
        let step = ptr(&net.step, stream);
        let (ring_ex, ring_in) = (net.neuron_ptr("ring_ex"), net.neuron_ptr("ring_in"));
        // SAFETY: every pointer is a live buffer of the network, sized as each kernel reads it.
        unsafe {
            // Input and update in one launch: the input stage is empty (its time is the update's).
            mark(marks, stream, 0)?;
            mark(marks, stream, 1)?;
            let (v, se, si, rf, fired) = (net.neuron_ptr("v"), net.neuron_ptr("syn_ex"), net.neuron_ptr("syn_in"), net.neuron_ptr("refractory"), ptr(&net.fired, stream));
            let (pops, srcs, counts) = (ptr(&net.pop_table, stream), ptr(&net.src_table, stream), ptr(&net.block_counts, stream));
            // Columns only some models have (fum_engine::components::NeuronBlock): 0 where the
            // network has none, and then no population reads them.
            let (dse, dsi, bias) = (net.neuron_ptr("dsyn_ex"), net.neuron_ptr("dsyn_in"), net.neuron_ptr("bias_pa"));
            stream
                .launch_builder(&k.neurons)
                .arg(&step).arg(&pops).arg(&net.n_pops).arg(&srcs).arg(&net.key[0]).arg(&net.key[1])
                .arg(&base).arg(&n).arg(&slots).arg(&v).arg(&se).arg(&si).arg(&dse).arg(&dsi).arg(&bias).arg(&rf).arg(&fired).arg(&ring_ex).arg(&ring_in).arg(&counts)
                .launch(grid(n, 256))?;
            mark(marks, stream, 2)?;
            let counts = (self.spike_counts(), self.count_spikes);
            if let Some(ranks) = &mut self.ranks {
                ranks.pack(k, stream, step, fired, n, counts)?;
            }
        }
        Ok(())
    }

    /// Structural plasticity's spike counts (`schedules` slots of a count per neuron held), or
    /// 0 where no rule reads them.
    fn spike_counts(&self) -> u64 {
        if self.count_spikes > 0 { self.net.neuron_ptr("structural/spike_count") } else { 0 }
    }

    /// The STDP bookkeeping of the step before the clock's: its spikes in the postsynaptic
    /// histories and traces (`post_spikes`) and in the presynaptic traces (`pre_spikes`), from
    /// the spike list it left. It runs at the start of the next step, beside the exchange of
    /// that step's spikes (which it does not read): the neuron update reads neither, and the
    /// next delivery, which reads both, follows. What reads them between steps runs after
    /// `CudaRunner::drain`, which runs it for the last step and empties the list.
    fn late_stdp(&self, stream: &Arc<CudaStream>) -> Result<(), CudaError> {
        self.launch_stdp(stream, 1)
    }

    /// The STDP bookkeeping of the spike list's step, `lag` steps before the clock's.
    fn launch_stdp(&self, stream: &Arc<CudaStream>, lag: u32) -> Result<(), CudaError> {
        let (k, net) = (&self.gpu.kernels, &self.net);
        if net.n_plastic_blocks == 0 {
            return Ok(());
        }
        let (step, sms) = (ptr(&net.step, stream), self.multiprocessors);
        let (spikes, n_spikes, table, rules, plastic) = (ptr(&net.spikes, stream), ptr(&net.n_spikes, stream), ptr(&net.block_table, stream), ptr(&net.rule_table, stream), ptr(&net.plastic_blocks, stream));
        let n_rules = net.rules.len() as u32;
        // SAFETY: every pointer is a live buffer of the network, sized as each kernel reads it.
        unsafe {
            stream
                .launch_builder(&k.post_spikes)
                .arg(&step).arg(&lag).arg(&spikes).arg(&n_spikes).arg(&table).arg(&plastic).arg(&rules)
                .launch(per_block(sms * 2, net.n_plastic_blocks, 256))?;
            stream
                .launch_builder(&k.pre_spikes)
                .arg(&step).arg(&lag).arg(&spikes).arg(&n_spikes).arg(&rules).arg(&n_rules)
                .launch(LaunchConfig { grid_dim: (sms * 4, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 })?;
        }
        Ok(())
    }

    /// The step's spike list (across ranks, compacted from the gathered bits); then delivery,
    /// recording, the clock.
    fn launch_back(&self, stream: &Arc<CudaStream>, marks: Option<&Marks>) -> Result<(), CudaError> {
        let k = &self.gpu.kernels;
        let net = &self.net;
        let n = net.n;
        // SAFETY: every pointer is a live buffer of the network, sized as each kernel reads it.
        let own_bits = unsafe {
            let (spikes, n_spikes, fired) = (ptr(&net.spikes, stream), ptr(&net.n_spikes, stream), ptr(&net.fired, stream));
            match &self.ranks {
                Some(ranks) => {
                    ranks.join(stream)?;
                    ranks.compact(k, stream, spikes, n_spikes, 0, 1)?;
                    ranks.own_bits(stream, 0)
                }
                None => {
                    // The update's spike counts per block of 256 neurons (NEURON_BLOCK in fum.cu).
                    let (counts, blocks_256, base) = (ptr(&net.block_counts, stream), n.div_ceil(256), net.shards.base());
                    stream
                        .launch_builder(&k.scan_counts)
                        .arg(&counts).arg(&blocks_256).arg(&n_spikes)
                        .launch(LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 })?;
                    // Co-activity's spike counts (one slot per schedule) are kept by the same pass.
                    // The bits only plastic synapses read (no store where none are).
                    let bits = if net.n_plastic_blocks > 0 { ptr(&net.fired_bits, stream) } else { 0 };
                    let spike_counts = self.spike_counts();
                    stream
                        .launch_builder(&k.write_spikes)
                        .arg(&fired).arg(&n).arg(&counts).arg(&spikes).arg(&bits).arg(&spike_counts).arg(&self.count_spikes).arg(&base)
                        .launch(grid(n, 256))?;
                    bits
                }
            }
        };
        self.count_sources(stream)?;
        mark(marks, stream, 3)?;
        self.launch_deliver(stream, 0, own_bits)?;
        // STDP's bookkeeping of this step's spikes is the next step's (`late_stdp`): the
        // plasticity stage is empty, its time in the next step's exchange stage.
        mark(marks, stream, 4)?;
        mark(marks, stream, 5)?;
        // Recording also advances the clock (its last block): the advance stage is empty.
        self.launch_record(stream, 0, RECORD_SPIKES | RECORD_STATE | RECORD_WEIGHTS | RECORD_ADVANCE)?;
        mark(marks, stream, 6)?;
        mark(marks, stream, 7)
    }

    /// The row cache ranks rows by their sources' spikes (fum_engine::row_cache): counts the
    /// spike list's.
    fn count_sources(&self, stream: &Arc<CudaStream>) -> Result<(), CudaError> {
        let Some(cache) = &self.net.cache else { return Ok(()) };
        let (spikes, n_spikes, sources) = (ptr(&self.net.spikes, stream), ptr(&self.net.n_spikes, stream), ptr(&cache.counts, stream));
        // SAFETY: `sources` holds a count per neuron of the network, the ids the list holds.
        unsafe { stream.launch_builder(&self.gpu.kernels.count_sources).arg(&spikes).arg(&n_spikes).arg(&sources).launch(grid(1024, 256)) }?;
        Ok(())
    }

    /// Delivers the spike list of the step `lag` steps before the clock's, with `fired_bits`
    /// (this GPU's neurons' spikes of that step, as bits) for STDP's pairing.
    fn launch_deliver(&self, stream: &Arc<CudaStream>, lag: u32, fired_bits: u64) -> Result<(), CudaError> {
        let (k, net) = (&self.gpu.kernels, &self.net);
        let n_blocks = net.blocks.len() as u32;
        if n_blocks == 0 {
            return Ok(());
        }
        let (n, slots, step) = (net.n, net.slots, ptr(&net.step, stream));
        let (spikes, n_spikes) = (ptr(&net.spikes, stream), ptr(&net.n_spikes, stream));
        let (table, rules, lost) = (ptr(&net.block_table, stream), ptr(&net.rule_table, stream), ptr(&net.lost_pairings, stream));
        let enabled = u32::from(net.stdp_enabled);
        let reads = net.cache.as_ref().map_or(0, |c| ptr(&c.reads, stream));
        let map = ptr(&net.deliver_map, stream);
        // SAFETY: every pointer is a live buffer of the network, sized as the kernel reads it.
        unsafe {
            stream
                .launch_builder(if net.full_deliver { &k.deliver_full } else { &k.deliver })
                .arg(&step).arg(&lag).arg(&spikes).arg(&n_spikes).arg(&table).arg(&map).arg(&rules).arg(&n).arg(&slots)
                .arg(&fired_bits).arg(&enabled).arg(&lost).arg(&reads)
                .launch(grid(net.deliver_blocks * 256, 256))?;
        }
        Ok(())
    }

    /// Records `what` (`RECORD_*`) of the step `lag` steps before the clock's into its staging
    /// slot.
    fn launch_record(&self, stream: &Arc<CudaStream>, lag: u32, what: u32) -> Result<(), CudaError> {
        let net = &self.net;
        let step = ptr(&net.step, stream);
        let (spikes, n_spikes) = (ptr(&net.spikes, stream), ptr(&net.n_spikes, stream));
        let staging = self.staging_ptr as u64;
        let (slot_words, staging_slots, n_probes) = (self.slot_words as u32, self.slots as u32, net.probe_sites() as u32);
        let (probes, table, done) = (ptr(&net.probes, stream), ptr(&net.block_table, stream), ptr(&net.recorded_blocks, stream));
        // SAFETY: every pointer is a live buffer of the network (the staging area: `slots`
        // slots of `slot_words`), sized as the kernel reads it.
        unsafe {
            stream
                .launch_builder(&self.gpu.kernels.record)
                .arg(&step).arg(&lag).arg(&what).arg(&spikes).arg(&n_spikes).arg(&staging).arg(&slot_words).arg(&staging_slots).arg(&net.total)
                .arg(&probes).arg(&n_probes).arg(&table).arg(&done)
                .launch(LaunchConfig { grid_dim: (self.multiprocessors, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 })?;
        }
        Ok(())
    }

    /// In epochs: the step's update and the packing of its spikes, which advances the clock;
    /// then, where there are probes, those of its neuron state.
    fn launch_epoch_step(&mut self, stream: &Arc<CudaStream>, marks: Option<&Marks>) -> Result<(), CudaError> {
        self.launch_update(stream, marks)?;
        mark(marks, stream, 5)?;
        if self.net.probe_sites() > 0 {
            self.launch_record(stream, 1, RECORD_STATE)?;
        }
        mark(marks, stream, END)
    }

    /// In epochs, at an epoch's end: gathers (with NCCL; on the MPI path the host has) the
    /// ranks' spikes of the epoch's `steps` steps, from its place `first` on, then replays them
    /// in order: each step's spike list, delivery, STDP bookkeeping and recording, each as of
    /// its step (`lag`: steps before the clock's). No delay is shorter than an epoch, so what
    /// the steps deliver lies past the epoch, and the plastic state (weights, traces,
    /// histories) goes through them in the order one GPU takes: the spikes and weights are one
    /// GPU's.
    fn launch_replay(&mut self, stream: &Arc<CudaStream>, first: u32, steps: u32, marks: Option<&Marks>) -> Result<(), CudaError> {
        mark(marks, stream, 2)?;
        let ranks = self.ranks.as_mut().expect("epochs are across ranks");
        ranks.gather_epoch(stream, first, steps)?;
        let (spikes, n_spikes) = (ptr(&self.net.spikes, stream), ptr(&self.net.n_spikes, stream));
        for at in 0..steps {
            let lag = steps - at;
            mark(marks, stream, 2)?;
            let ranks = self.ranks.as_ref().expect("epochs are across ranks");
            ranks.compact(&self.gpu.kernels, stream, spikes, n_spikes, at, steps)?;
            let own_bits = ranks.own_bits(stream, first + at);
            self.count_sources(stream)?;
            mark(marks, stream, 3)?;
            self.launch_deliver(stream, lag, own_bits)?;
            mark(marks, stream, 4)?;
            self.launch_stdp(stream, lag)?;
            mark(marks, stream, 5)?;
            self.launch_record(stream, lag, RECORD_SPIKES | RECORD_WEIGHTS)?;
        }
        mark(marks, stream, END)
    }

    /// Gives up timing the stages (the run goes on, and run.json has no stage times) when the
    /// device cannot time them.
    fn stop_timing(&mut self, world: &mut World, e: &CudaError) {
        eprintln!("warning: the GPU's stages cannot be timed ({e}); the run goes on without stage times");
        world.remove_resource::<fum_engine::StageTimes>();
        self.timed = None;
    }

    /// The step captured with timing marks (see `timed`).
    fn capture_timed(&mut self) -> Result<(Vec<CudaGraph>, Marks), CudaError> {
        let marks = Marks::new(&self.gpu, END + 1, true)?;
        Ok((self.capture(Some(&marks))?, marks))
    }

    /// Replays `graphs` (the step, or its front and back with the ranks' exchange between);
    /// across ranks, records whether any rank wishes to stop (`SpikeExchange::stop`).
    fn replay(graphs: &[CudaGraph], ranks: Option<&mut RankSpikes>, stream: &Arc<CudaStream>, world: &mut World) -> Result<(), CudaError> {
        graphs[0].launch()?;
        if let Some(ranks) = ranks {
            let signalled = fum_engine::run::interrupt_flag().load(std::sync::atomic::Ordering::Relaxed);
            world.resource_mut::<SpikeExchange>().stop = ranks.exchange(stream, signalled)?;
        }
        graphs[1..].iter().try_for_each(CudaGraph::launch)?;
        Ok(())
    }

    /// Replays the step graph, then handles the oldest queued step once `LAG` are queued.
    fn step(&mut self, world: &mut World) -> Result<(), CudaError> {
        let step = world.resource::<Clock>().step;
        let stdp = world.resource::<Plasticity>().enabled;
        if stdp != self.net.stdp_enabled {
            return Err(CudaError::Unsupported("switching STDP on or off while running on the GPU".into()));
        }
        // Columns written on the host since the last step go to the device first; from the
        // launch on, the device copy of every state column is the newer one.
        if self.net.ctx.take_host_written() {
            state::upload(world).map_err(|e| CudaError::Unsupported(e.to_string()))?;
            if let Some(cache) = &mut self.net.cache {
                cache.refill(&self.gpu.kernels)?;
            }
        }
        if let Some(cache) = &mut self.net.cache {
            if cache.due(step) {
                let ctx = self.net.ctx.clone();
                cache.rank(&self.gpu.kernels, |counts| ctx.read(counts, counts.len()), step)?;
            }
            cache.stepped();
        }
        self.net.set_currents(world.resource::<Populations>(), step)?;
        self.net.ctx.advance();
        let epoch_len = world.resource::<SpikeExchange>().epochs.as_ref().map_or(1, |e| e.length as u32);
        if self.epoch.is_none() && self.ranks.is_some() && epoch_len > 1 {
            self.start_epochs(world, epoch_len)?;
        }
        if let Some(mut epoch) = self.epoch.take() {
            let stepped = self.step_in_epoch(world, &mut epoch, step);
            self.epoch = Some(epoch);
            return stepped;
        }
        let timing = world.contains_resource::<fum_engine::StageTimes>();
        if timing && self.timed.is_none() {
            match self.capture_timed() {
                Ok(timed) => self.timed = Some(timed),
                Err(e) => self.stop_timing(world, &e),
            }
        }
        match (&self.timed, world.contains_resource::<fum_engine::StageTimes>()) {
            // A timed step is waited for before the next is launched, whose replay would
            // record the same events again: timing costs the overlap of host and device.
            (Some((graphs, marks)), true) => {
                Self::replay(graphs, self.ranks.as_mut(), &self.net.stream, world)?;
                if let Err(e) = add_stage_times(world, [marks]) {
                    self.stop_timing(world, &e);
                }
            }
            _ => Self::replay(&self.graphs, self.ranks.as_mut(), &self.net.stream, world)?,
        }
        self.events[step as usize % self.slots].record(&self.net.stream)?;
        self.late_pending = true;
        self.pending.push_back(step);
        self.steps += 1;
        self.consume_queued(world, LAG)
    }

    /// From the first step across ranks in epochs of `len` steps on: twice an epoch's staging
    /// slots, and the epoch's graphs instead of the step's. Epochs are shortened where those
    /// slots would take more than `EPOCH_STAGING_BYTES` of pinned memory (a slot holds room for
    /// every neuron's spike); every rank shortens them alike (the slots are alike).
    fn start_epochs(&mut self, world: &mut World, len: u32) -> Result<(), CudaError> {
        let len = len.min((EPOCH_STAGING_BYTES / (2 * 4 * self.slot_words)).max(2) as u32);
        world.resource_mut::<SpikeExchange>().epochs.as_mut().expect("in epochs").length = u64::from(len);
        self.drain(world)?;
        let stream = self.net.stream.clone();
        self.ranks.as_mut().expect("across ranks").set_epochs(&self.gpu, &stream, len)?;
        self.slots = 2 * len as usize;
        (self._staging, self.staging_ptr, self.events) = staging(&self.gpu, self.slots, self.slot_words)?;
        self.net.memory.staging_bytes = (self.slots * self.slot_words * 4) as u64;
        // They record into the old staging area.
        (self.graphs, self.timed) = (Vec::new(), None);
        let t = std::time::Instant::now();
        let graphs = [self.graph(|r, s| r.launch_epoch_step(s, None))?, self.graph(|r, s| r.launch_replay(s, 0, len, None))?];
        self.capture_s += t.elapsed().as_secs_f64();
        self.epoch = Some(EpochRun { len, graphs, timed: None, open: Vec::new() });
        Ok(())
    }

    /// A step in epochs (see `EpochRun`): the update; at the epoch's end (or where the ranks
    /// agreed to stop) the gather and replay of its steps, then the steps of the epoch before
    /// are recorded.
    fn step_in_epoch(&mut self, world: &mut World, epoch: &mut EpochRun, step: u64) -> Result<(), CudaError> {
        let stream = self.net.stream.clone();
        let len = epoch.len;
        if world.contains_resource::<fum_engine::StageTimes>() && epoch.timed.is_none() {
            let timed = (|| {
                let marks = [Marks::new(&self.gpu, END + 1, true)?, Marks::new(&self.gpu, 4 * len as usize + 2, true)?];
                let graphs = [self.graph(|r, s| r.launch_epoch_step(s, Some(&marks[0])))?, self.graph(|r, s| r.launch_replay(s, 0, len, Some(&marks[1])))?];
                Ok::<_, CudaError>((graphs, marks, Marks::new(&self.gpu, 4 * len as usize + 2, false)?))
            })();
            match timed {
                Ok(timed) => epoch.timed = Some(timed),
                Err(e) => self.stop_timing(world, &e),
            }
        }
        let timed = epoch.timed.as_ref().filter(|_| world.contains_resource::<fum_engine::StageTimes>());
        let graphs = timed.map_or(&epoch.graphs, |t| &t.0);
        graphs[0].launch()?;
        let signalled = fum_engine::run::interrupt_flag().load(std::sync::atomic::Ordering::Relaxed);
        let ranks = self.ranks.as_mut().expect("epochs are across ranks");
        let stop = ranks.exchange(&stream, signalled)?;
        let mut exchange = world.resource_mut::<SpikeExchange>();
        exchange.stop = stop;
        let ends = stop || exchange.epochs.as_ref().is_some_and(|e| e.ends_at(step));
        epoch.open.push(step);
        let mut replayed = None;
        if ends {
            let (first, steps) = ((epoch.open[0] % u64::from(len)) as u32, epoch.open.len() as u32);
            ranks.exchange_epoch(&stream, first, steps)?;
            if steps == len {
                debug_assert_eq!(first, 0, "a whole epoch starts at a multiple of its length");
                graphs[1].launch()?;
                replayed = timed.map(|t| &t.1[1]);
            } else {
                let marks = timed.map(|t| &t.2);
                if let Some(m) = marks {
                    m.stages.borrow_mut().clear();
                }
                self.launch_replay(&stream, first, steps, marks)?;
                replayed = marks;
            }
            for &s in &epoch.open {
                self.events[s as usize % self.slots].record(&stream)?;
                self.pending.push_back(s);
            }
            epoch.open.clear();
            // This epoch's steps stay queued; the epoch's before, long replayed, are recorded.
            self.consume_queued(world, steps as usize)?;
        }
        if let Some(t) = timed
            && let Err(e) = add_stage_times(world, [Some(&t.1[0]), replayed].into_iter().flatten())
        {
            self.stop_timing(world, &e);
        }
        self.steps += 1;
        Ok(())
    }

    /// Records the oldest queued steps (waiting for each one's event, normally long past) until
    /// `keep` are queued.
    fn consume_queued(&mut self, world: &mut World, keep: usize) -> Result<(), CudaError> {
        while self.pending.len() > keep {
            let oldest = self.pending.pop_front().expect("non-empty");
            self.events[oldest as usize % self.slots].synchronize()?;
            self.consume(world, oldest);
        }
        Ok(())
    }

    /// Records step `step` from its staging slot: spikes (and per-population counts), due
    /// probes; the spikes also become the `SpikeExchange`, and go to `StepSpikes` while an
    /// observer watches.
    fn consume(&mut self, world: &mut World, step: u64) {
        let slot = step as usize % self.slots;
        // SAFETY: the slot was written by the device before the event we waited on.
        let words = unsafe { std::slice::from_raw_parts(self.staging_ptr.add(slot * self.slot_words), self.slot_words) };
        let count = words[0] as usize;
        let spikes = &words[1..1 + count];
        let dt = world.resource::<Clock>().dt_ms;
        world.resource_scope(|world, mut recorder: Mut<Recorder>| {
            let populations = world.resource::<Populations>();
            crate::record::record_spikes(&mut recorder, populations, step, spikes);
            // Sites another rank's GPU holds are NaN here (across ranks rank 0 gathers them).
            let values: &[f32] = bytemuck::cast_slice(&words[1 + self.net.total as usize..]);
            let layout = &self.net.probe_layout;
            let rows: Vec<(usize, Vec<f32>)> = (layout.ranges.iter().zip(&layout.intervals).enumerate())
                .filter(|(_, (_, interval))| step.is_multiple_of(**interval))
                .map(|(p, (range, _))| (p, values[range.clone()].to_vec()))
                .collect();
            if !rows.is_empty() {
                crate::record::push_probe_rows(&mut recorder, step, dt, rows);
            }
        });
        // A watching observer takes every step's spikes, labelled, from here (see `StepSpikes`).
        if let Some(mut log) = world.get_resource_mut::<StepSpikes>() {
            log.push(step, spikes);
        }
        let mut exchange = world.resource_mut::<SpikeExchange>();
        exchange.spikes.clear();
        exchange.spikes.extend_from_slice(spikes);
    }

    /// Whether neuron state is finite and (if `weights`) every plastic weight lies within its
    /// rule's bounds (see `check`).
    fn healthy(&mut self, weights: bool) -> Result<bool, CudaError> {
        let net = &mut self.net;
        let stream = net.stream.clone();
        let k = &self.gpu.kernels;
        let outside = &mut self.outside;
        stream.memset_zeros(outside)?;
        let (v, se, si) = (net.neuron_ptr("v"), net.neuron_ptr("syn_ex"), net.neuron_ptr("syn_in"));
        let (dse, dsi) = (net.neuron_ptr("dsyn_ex"), net.neuron_ptr("dsyn_in"));
        unsafe {
            stream.launch_builder(&k.state_outside).arg(&v).arg(&se).arg(&si).arg(&dse).arg(&dsi).arg(&net.n).arg(&mut *outside).launch(grid(net.n.min(1 << 20), 256))?;
            if weights && net.n_plastic_blocks > 0 {
                if let Some(cache) = &mut net.cache {
                    cache.write_back(k)?;
                }
                let (table, plastic, rules) = (ptr(&net.block_table, &stream), ptr(&net.plastic_blocks, &stream), ptr(&net.rule_table, &stream));
                stream
                    .launch_builder(&k.weights_outside)
                    .arg(&table).arg(&plastic).arg(&rules).arg(&mut *outside)
                    .launch(per_block(self.multiprocessors * 8, net.n_plastic_blocks, 256))?;
            }
        }
        Ok(net.ctx.read(outside, 1)?[0] == 0)
    }

    /// Device memory, transfers and GPU-side counters, for run.json.
    pub fn stats(&self) -> DeviceStats {
        let net = &self.net;
        let m = net.memory;
        let neurons = u64::from(net.n).max(1);
        let per_neuron = (m.total() - m.synapse_bytes) as f64 / neurons as f64;
        let per_synapse = if net.synapses == 0 { 0.0 } else { m.synapse_bytes as f64 / net.synapses as f64 };
        let k = net.synapses as f64 / neurons as f64;
        let card = self.gpu.info.total_memory_bytes as u64;
        DeviceStats {
            device_bytes: m,
            device_bytes_total: m.total(),
            device_bytes_peak_measured: self.device_bytes_measured,
            bytes_per_neuron: per_neuron,
            bytes_per_synapse: per_synapse,
            card_memory_bytes: card,
            largest_network_neurons: (card as f64 / (per_neuron + k * per_synapse)) as u64,
            synapses_per_neuron: k,
            transfers: net.ctx.transfers(),
            steps: self.steps,
            nvrtc_compile_s: self.gpu.kernels.compile_s,
            graph_capture_s: self.capture_s,
            upload_s: self.upload_s,
            ranks_exchange: self.ranks.as_ref().map(RankSpikes::path),
            mapped_host: net.mapped.map(|mut m| {
                if let Some(cache) = &net.cache {
                    let reads = net.ctx.read(&cache.reads, 2).unwrap_or_default();
                    m.row_cache = cache.stats([reads.first().copied().unwrap_or(0), reads.get(1).copied().unwrap_or(0)]);
                }
                m
            }),
        }
    }

    /// Rebuilds the device copies of the blocks a structural commit rebuilt on the host: the new
    /// row pointers go up from the host; every per-synapse column is compacted on the device
    /// from its old buffer by `compact_rows`, as `apply_plan` compacted the host's, so that
    /// learned weights never leave the device. Columns the host holds too (structure, static
    /// weights) are attached as current on both sides, weights the device steps as current on
    /// the device only. With `FUM_CHECK_STRUCTURE=1` every column the host holds is read back
    /// and compared (the GPU tests set it).
    fn rebuild_blocks(&mut self, world: &mut World, blocks: &[Rebuilt]) -> Result<(), CudaError> {
        use fum_engine::column::Placement;
        let stream = self.net.stream.clone();
        let check = std::env::var_os("FUM_CHECK_STRUCTURE").is_some_and(|v| v == "1");
        // The shards held, in index order (across ranks from `first_shard`).
        let entities = state::shards_in_order(world);
        let mut replaced = Vec::new();
        for rebuilt in blocks {
            let made_now;
            let key = (rebuilt.shard, rebuilt.block);
            let mut shard_blocks = world.get_mut::<SynapseBlocks>(entities[rebuilt.shard - self.net.shards.first_shard]).expect("a shard has synapses");
            let block = &mut shard_blocks.0[rebuilt.block];
            let plan = &rebuilt.plan;
            let rows = block.source_size;
            let old_ptr = self.net.block_buffer(key, "row_ptr").expect("mirrored").ptr();
            // What the plan thread made ready, or the same made now from the host's plan.
            let ready = match rebuilt.prepared.as_ref().and_then(|p| p.downcast_ref::<ReadyCommit>()) {
                Some(ready) => ready,
                None => {
                    made_now = ReadyCommit::new(&self.net.ctx, &stream, &stream, plan, &rebuilt.rows, &synapse_columns(block))?;
                    &made_now
                }
            };
            stream.wait(&ready.uploaded)?;
            let (pruned, pruned_ptr, grown_ptr, new_ptr) = (&ready.pruned, &ready.pruned_ptr, &ready.grown_ptr, ready.row_ptr.clone());
            let mut named = vec![("row_ptr", new_ptr.clone())];
            let mut failed = None;
            let net = &self.net;
            let kernels = &self.gpu.kernels;
            let sms = self.multiprocessors;
            block.columns(&mut |name, role, _, column| {
                if failed.is_some() || fum_engine::components::PlasticSynapses::PER_TARGET.contains(&name) {
                    return;
                }
                if name == "row_ptr" {
                    column.attach_filled(new_ptr.clone(), Placement::contiguous(0, column.len()), true);
                    return;
                }
                let elem = column.element_bytes() as u32;
                let grown = &ready.grown.iter().find(|(n, _)| *n == name).expect("every per-synapse column is made ready").1;
                let done = (|| -> Result<Arc<fum_engine::device::Buffer>, CudaError> {
                    let old = net.block_buffer(key, name).expect("mirrored").ptr();
                    let new = net.buffer_to_fill(column.len() * elem as usize, role == state::Role::State)?;
                    let (new_row_ptr, new_col) = (new_ptr.ptr(), new.ptr());
                    // SAFETY: the old buffers hold the block before the commit, the new ones the
                    // lengths the plan gives (its row pointers), the plan arrays what the rows
                    // index; all stay alive until the kernel ran (frees are stream-ordered).
                    unsafe {
                        stream
                            .launch_builder(&kernels.compact_rows)
                            .arg(&rows).arg(&elem).arg(&old_ptr).arg(&new_row_ptr).arg(pruned).arg(pruned_ptr).arg(grown).arg(grown_ptr)
                            .arg(&old).arg(&new_col)
                            .launch(LaunchConfig { grid_dim: (sms * 8, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 })?;
                    }
                    Ok(new)
                })();
                match done {
                    Ok(new) => {
                        let host_current = role != state::Role::State;
                        if host_current && check {
                            let mut device = vec![0u8; column.len() * elem as usize];
                            if let Err(e) = fum_engine::column::DeviceBuffer::read(new.as_ref(), 0, &mut device) {
                                failed = Some(CudaError::Unsupported(e.to_string()));
                            } else if device != column.host_bytes() {
                                failed = Some(CudaError::Unsupported(format!("structural commit: the device rebuilt column {name} of block {key:?} differently from the host")));
                            }
                        }
                        column.attach_filled(new.clone(), Placement::contiguous(0, column.len()), host_current);
                        named.push((name, new));
                    }
                    Err(e) => failed = Some(e),
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            // The ready arrays were allocated on their own stream: it frees them after the
            // kernels that read them.
            let used = self.gpu.ctx.new_event(None)?;
            used.record(&stream)?;
            ready.stream.wait(&used)?;
            replaced.push((key, named));
        }
        self.net.blocks_rebuilt(world, replaced)
    }

    /// Starts a structural plan on the device at this step (`Backend::plan_structure`). On the
    /// step's stream, after the queued steps, the weights of the rewired blocks and the spike
    /// counts are copied aside (and the counts reset): that is the snapshot, and the only pause
    /// (across ranks also a copy of this GPU's counts to the host and their all-gather).
    /// The plan stream (lower priority) waits for it and runs, block by block, the kernels
    /// `plan_count` to `plan_select` (kernels/cuda/fum.cu), which decide per target which
    /// synapses go; each block's job (on a plan thread) then works out how many sources each
    /// target draws, has `plan_regrow` draw them and brings back what was decided (a bit per
    /// synapse, the sources), for the host to finish. Structure changes only at commits, which
    /// wait for the jobs, so the kernels read it in place. Buffers come from `plan_memory` and
    /// are freed once the plan stream is done with them. None (the host plans) when the scratch
    /// does not fit, or with `FUM_PLAN_ON_HOST=1` (the GPU tests check that path too).
    fn plan_structure(&mut self, world: &mut World, schedule: usize, plan: u64) -> Option<Result<Vec<Vec<Option<DevicePlanJob>>>, CudaError>> {
        if std::env::var_os("FUM_PLAN_ON_HOST").is_some_and(|v| v == "1") {
            return None;
        }
        let structural = world.resource::<Structural>().clone();
        let (mut largest, mut weight_bytes) = (0usize, 0u64);
        for b in world.query::<&SynapseBlocks>().iter(world).flat_map(|b| b.0.iter()).filter(|b| structural.rule_in(b.projection, schedule).is_some()) {
            largest = largest.max(b.len());
            weight_bytes += (b.len() * weight_elem(b)) as u64;
        }
        // Entries (key and position) of the largest block, the weights' and counts' snapshot.
        let scratch = largest as u64 * 16 + weight_bytes + 4 * u64::from(self.net.total);
        let free = fum_kernels::cuda::free_bytes(&self.gpu.ctx).unwrap_or(0);
        if scratch + (256 << 20) > free {
            eprintln!("structural plasticity: planning on the host, as the device's scratch ({:.1} GB) does not fit its free memory ({:.1} GB)", scratch as f64 / 1e9, free as f64 / 1e9);
            return None;
        }
        Some(self.plan_on_device(world, &structural, schedule, plan, largest, weight_bytes as usize))
    }

    fn plan_on_device(&mut self, world: &mut World, structural: &Structural, schedule: usize, plan: u64, largest: usize, weight_bytes: usize) -> Result<Vec<Vec<Option<DevicePlanJob>>>, CudaError> {
        let (main, side) = (self.net.stream.clone(), self.plan_stream.clone());
        let (n, total) = (self.net.n as usize, self.net.total as usize);
        // The schedule's slot of the spike counts ([schedule][neuron held]; zeros where no rule
        // reads them, so that every plan copies the same).
        let spike_counts = self.net.neuron_ptr("structural/spike_count") + (4 * schedule * n) as u64;
        // The snapshot: weights and every neuron's count (by global id) copied aside on the
        // step's stream, into memory the plan threads free once the plan stream is done with it
        // (`PlanMemory`).
        let snapshot = Arc::new(PlanMemory {
            weights: plan_memory(&main, &side, weight_bytes, false)?,
            counts: plan_memory(&main, &side, 4 * total, false)?,
            entries: plan_memory(&main, &side, 16 * largest, false)?,
        });
        let (weights_at, counts_at) = (ptr(&snapshot.weights, &side), ptr(&snapshot.counts, &side));
        let entries = ptr(&snapshot.entries, &side);
        let entities = state::shards_in_order(world);
        let mut at = 0u64;
        let mut snapshot_of = std::collections::HashMap::new();
        for &e in &entities {
            let shard = world.get::<Shard>(e).expect("a shard").index;
            for (bi, b) in world.get::<SynapseBlocks>(e).expect("a shard has synapses").0.iter().enumerate().filter(|(_, b)| structural.rule_in(b.projection, schedule).is_some()) {
                let bytes = b.len() * weight_elem(b);
                let src = self.net.block_buffer((shard, bi), "weight").expect("mirrored").ptr();
                // SAFETY: both ranges hold the block's weights; the copy is ordered after the
                // queued steps and before the next.
                unsafe { cudarc::driver::result::memcpy_dtod_async(weights_at + at, src, bytes, main.cu_stream()) }?;
                snapshot_of.insert((shard, bi), weights_at + at);
                at += bytes as u64;
            }
        }
        // SAFETY: the slot holds one u32 per neuron held, `counts` one per neuron; a copy from
        // pageable memory returns once its source is staged.
        unsafe {
            if self.ranks.is_some() {
                // The other ranks' counts come over MPI (a collective at this step on every rank).
                let held = read_raw::<u32>(&self.net.ctx, &main, spike_counts, n)?;
                let all = fum_engine::structural::counts_by_id(&[(self.net.shards.base(), held)], total);
                cudarc::driver::result::memcpy_htod_async(counts_at, &all, main.cu_stream())?;
            } else {
                cudarc::driver::result::memcpy_dtod_async(counts_at, spike_counts, 4 * n, main.cu_stream())?;
            }
            cudarc::driver::result::memset_d8_async(spike_counts, 0, 4 * n, main.cu_stream())?;
        }
        let taken = self.gpu.ctx.new_event(None)?;
        taken.record(&main)?;
        side.wait(&taken)?;

        let k = &self.gpu.kernels;
        let interval_s = structural.schedules[schedule].interval_s(structural.dt_ms);
        let populations = world.resource::<Populations>().0.clone();
        let one = |n: u32, threads: u32| LaunchConfig { grid_dim: (n.max(1), 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
        // Short thread blocks (a synapse a thread, a row a warp), so that the steps' kernels,
        // whose stream goes first, find free multiprocessors between them.
        let per_synapse = |n: u32| one(n.div_ceil(256), 256);
        let per_row = |rows: u32| one(rows.div_ceil(8), 256);
        let mut out = Vec::new();
        for e in entities {
            let shard = world.get::<Shard>(e).expect("a shard").clone();
            let blocks = world.get::<SynapseBlocks>(e).expect("a shard has synapses");
            let mut jobs: Vec<Option<DevicePlanJob>> = Vec::new();
            for (bi, b) in blocks.0.iter().enumerate() {
                let Some(rule) = structural.rule_in(b.projection, schedule) else {
                    jobs.push(None);
                    continue;
                };
                let buffer = |name: &str| self.net.block_buffer((shard.index, bi), name).expect("mirrored").ptr();
                let (row_ptr, target, weight) = (buffer("row_ptr"), buffer("target"), snapshot_of[&(shard.index, bi)]);
                let targets = block_targets(&populations, rule, &shard);
                let (t0, t1) = (targets.targets.start, targets.targets.end);
                let nt = t1 - t0;
                let (n_syn, rows, buckets) = (b.len() as u32, b.source_size, shard.neurons.len() as u32 + 1);
                let f16 = u32::from(matches!(b.weight, Weights::F16(_)));
                let wide = u32::from(b.target.is_wide());
                let (mode, x, keep, key_bits) = match rule.prune {
                    Prune::WeightBelow(x) => (0u32, x, 0u32, 32u32),
                    Prune::KeepStrongest(keep) => (1, 0.0, keep, 32),
                    Prune::LowestPriorityFraction(f) => (2, f, 0, 64),
                };
                let priority = u32::from(mode == 2);
                let words = (n_syn as usize).div_ceil(32);
                let (mut offsets, mut fill) = (plan_memory::<u32>(&main, &side, buckets as usize, true)?, plan_memory::<u32>(&main, &side, buckets as usize, true)?);
                let (mut bits, mut kept) = (plan_memory::<u32>(&main, &side, words, true)?, plan_memory::<u32>(&main, &side, nt as usize, true)?);
                let mut total = plan_memory::<u32>(&main, &side, 1, true)?;
                // SAFETY: the block's buffers hold its n_syn synapses and rows + 1 row pointers,
                // the scratch `largest` >= n_syn entries, offsets one per shard-local target and
                // one more (every target is in the shard), bits one per synapse, kept one per
                // target in [t0, t1).
                unsafe {
                    if mode == 0 {
                        side.launch_builder(&k.plan_below).arg(&n_syn).arg(&target).arg(&wide).arg(&weight).arg(&f16).arg(&x).arg(&t0).arg(&mut bits).arg(&mut kept).launch(per_synapse(n_syn))?;
                    } else {
                        side.launch_builder(&k.plan_count).arg(&n_syn).arg(&target).arg(&wide).arg(&mut offsets).launch(per_synapse(n_syn))?;
                        side.launch_builder(&k.scan_counts).arg(&mut offsets).arg(&buckets).arg(&mut total).launch(one(1, 1024))?;
                        side.launch_builder(&k.plan_bucket)
                            .arg(&rows).arg(&row_ptr).arg(&target).arg(&wide).arg(&weight).arg(&f16).arg(&priority).arg(&counts_at)
                            .arg(&b.source_first).arg(&targets.shard_first).arg(&interval_s).arg(&offsets).arg(&mut fill).arg(&entries)
                            .launch(per_row(rows))?;
                        side.launch_builder(&k.plan_select)
                            .arg(&t0).arg(&t1).arg(&offsets).arg(&entries).arg(&SELECT_CACHED).arg(&mode).arg(&x).arg(&keep).arg(&key_bits)
                            .arg(&mut bits).arg(&mut kept)
                            .launch(LaunchConfig { shared_mem_bytes: 16 * SELECT_CACHED, ..one(nt, 256) })?;
                    }
                }
                let decided = blocking_event(&self.gpu.ctx)?;
                decided.record(&side)?;
                let (gpu, main, side, ctx, columns, snapshot) = (self.gpu.clone(), main.clone(), side.clone(), self.net.ctx.clone(), synapse_columns(b), snapshot.clone());
                let regrow = rule.regrow.clone();
                let stream_word = ((fum_kernels::rng::Purpose::Structural as u32) << 16) | u32::from(rule.projection as u16);
                let [key0, key1] = structural.key.0;
                let first_block = plan << 32;
                let job = move || -> Result<DevicePlan, CudaError> {
                    decided.synchronize()?;
                    let kept_now = if regrow.is_some() { read(&ctx, &side, &kept, nt as usize)? } else { Vec::new() };
                    // This block's kernels, and those of the blocks before it, are done with the
                    // snapshot; the last job to get here frees it.
                    drop(snapshot);
                    drop((offsets, fill, kept, total));
                    let (mut draws, mut sources) = (Vec::new(), Vec::new());
                    if let Some(re) = regrow {
                        // Each target's new synapses and where its draws go, on the host with the
                        // CPU backend's own `regrow_need` (one rule, not a device twin): a pass
                        // over the kept counts, microseconds per block.
                        let mut first = Vec::with_capacity(nt as usize + 1);
                        let mut drawn = 0u32;
                        for (i, &k) in kept_now.iter().enumerate() {
                            first.push(drawn);
                            let post = targets.shard_first + t0 + i as u32 - targets.target_first;
                            drawn += regrow_need(&re, k as usize, k as usize, post) as u32;
                        }
                        first.push(drawn);
                        let need = plan_memory::<u32>(&main, &side, first.len(), false)?;
                        // SAFETY: `need` holds first.len() values.
                        unsafe { ctx.write_on(&side, ptr(&need, &side), bytemuck::cast_slice(&first)) }?;
                        let drawn = drawn as usize;
                        let (mut found, mut out_draws) = (plan_memory::<u32>(&main, &side, drawn, false)?, plan_memory::<u32>(&main, &side, 4 * nt as usize, true)?);
                        let (multapses, no_autapses) = (u32::from(re.multapses), u32::from(re.no_autapses));
                        // SAFETY: need holds each target's first source (scanned) and their sum
                        // after the last, `found` that sum, out_draws four words per target; the
                        // rows are the block's, unchanged until the commit, which waits for this.
                        unsafe {
                            side.launch_builder(&gpu.kernels.plan_regrow)
                                .arg(&t0).arg(&t1).arg(&need).arg(&multapses).arg(&no_autapses).arg(&re.source_size).arg(&targets.shard_first)
                                .arg(&targets.target_first).arg(&key0).arg(&key1).arg(&stream_word).arg(&first_block).arg(&row_ptr).arg(&target).arg(&wide)
                                .arg(&bits).arg(&mut found).arg(&mut out_draws)
                                .launch(LaunchConfig { grid_dim: (nt.div_ceil(4).max(1), 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 })?;
                        }
                        draws = bytemuck::pod_collect_to_vec::<u32, Draws>(&read(&ctx, &side, &out_draws, 4 * nt as usize)?);
                        sources = read(&ctx, &side, &found, drawn)?;
                    }
                    let pruned_bits = read(&ctx, &side, &bits, words)?;
                    drop(bits);
                    // The device's part of the commit, made ready on the plan stream from the
                    // finished plan and the row pointers before it (unchanged until the commit).
                    let prepare = move |plan: &BlockPlan| -> Result<Prepared, String> {
                        let ready = || -> Result<Prepared, CudaError> {
                            // SAFETY: the block's row pointers, rows + 1 of them, live until the
                            // commit, which waits for this thread.
                            let old: Vec<u32> = unsafe { read_raw(&ctx, &side, row_ptr, rows as usize + 1) }?;
                            let rows = Compaction::of(plan, &old);
                            let device = Box::new(ReadyCommit::new(&ctx, &main, &side, plan, &rows, &columns)?);
                            Ok(Prepared { rows, device })
                        };
                        ready().map_err(|e| e.to_string())
                    };
                    Ok(DevicePlan { synapses: n_syn, pruned_bits, draws, rows: sources, prepare: Some(Box::new(prepare)) })
                };
                jobs.push(Some(Box::new(move || job().map_err(|e| e.to_string()))));
            }
            out.push(jobs);
        }
        Ok(out)
    }

    /// Waits for the device and records every queued step.
    pub fn drain(&mut self, world: &mut World) -> Result<(), CudaError> {
        if self.late_pending {
            // The last step's STDP bookkeeping, then an empty list, so that the next step's
            // `late_stdp` does it only once.
            let stream = self.net.stream.clone();
            self.late_stdp(&stream)?;
            stream.memset_zeros(&mut self.net.n_spikes)?;
            self.late_pending = false;
        }
        self.net.stream.synchronize()?;
        while let Some(step) = self.pending.pop_front() {
            self.consume(world, step);
        }
        Ok(())
    }
}

fn cuda_step(world: &mut World) {
    let result = world.resource_scope(|world, mut runner: Mut<CudaRunner>| runner.step(world));
    if let Err(e) = result {
        report_failure(world, e.to_string());
    }
}

/// [`Backend::check`] of the CUDA backend: counts violations on the device, after the queued
/// steps, and copies back one number.
fn check(world: &mut World, weights: bool) -> Result<bool, String> {
    world.resource_mut::<CudaRunner>().healthy(weights).map_err(|e| e.to_string())
}

/// [`Backend::sync`] of the CUDA backend.
fn sync_to_host(world: &mut World, view: HostView) -> Result<(), String> {
    world
        .resource_scope(|world, mut runner: Mut<CudaRunner>| {
            runner.drain(world)?;
            match view {
                HostView::Recorded => Ok(()),
                _ => {
                    let runner = &mut *runner;
                    if let Some(cache) = &mut runner.net.cache {
                        cache.write_back(&runner.gpu.kernels)?;
                    }
                    runner.net.download_world(world, view)
                }
            }
        })
        .map_err(|e| e.to_string())
}

/// The first `len` values of `src`, copied on `stream` after its queued work, through the plan
/// threads' pinned memory (`DeviceContext::read_on`).
fn read<T: cudarc::driver::DeviceRepr + bytemuck::Pod>(ctx: &DeviceContext, stream: &Arc<CudaStream>, src: &cudarc::driver::CudaSlice<T>, len: usize) -> Result<Vec<T>, CudaError> {
    assert!(len <= src.len(), "a read inside the slice");
    // SAFETY: the slice holds at least `len` values.
    unsafe { read_raw(ctx, stream, ptr(src, stream), len) }
}

/// `len` values at device address `src`, copied on `stream` after its queued work.
///
/// # Safety
/// `src` must hold `len` values of `T` that stay allocated until the copy is done.
unsafe fn read_raw<T: bytemuck::Pod>(ctx: &DeviceContext, stream: &Arc<CudaStream>, src: u64, len: usize) -> Result<Vec<T>, CudaError> {
    let mut out = vec![T::zeroed(); len];
    // SAFETY: as the caller promises.
    unsafe { ctx.read_on(stream, src, bytemuck::cast_slice_mut(&mut out)) }?;
    Ok(out)
}

/// Entries of a target's bucket that `plan_select` reads into shared memory (16 bytes each: 32
/// KiB a thread block, under the 48 KiB a launch may take without opting in); a target with
/// more incoming synapses is read from device memory at each pass.
const SELECT_CACHED: u32 = 2048;

/// A plan's snapshot and scratch, shared by its jobs; the last to finish frees it.
struct PlanMemory {
    weights: cudarc::driver::CudaSlice<u8>,
    counts: cudarc::driver::CudaSlice<u8>,
    entries: cudarc::driver::CudaSlice<u8>,
}

/// `len` values of device memory for the plan stream (`side`), zeroed if `zeroed`. Allocated
/// and zeroed in the step stream's order (`main`): a memset (also `alloc_zeros`) issued on the
/// plan stream made every later step slower for the rest of the run (H100, 1M neurons: +2.3 %
/// against +0.8 % for a plan that changes nothing, measured), which the plan stream's own
/// kernels and copies do not. Freed in the step stream's order too, so it must be dropped only
/// once the plan stream is done with it (a plan thread after waiting for its results, or the
/// commit), or the step stream would wait for planning.
fn plan_memory<T: cudarc::driver::DeviceRepr>(main: &Arc<CudaStream>, side: &Arc<CudaStream>, len: usize, zeroed: bool) -> Result<cudarc::driver::CudaSlice<T>, CudaError> {
    // SAFETY: the caller writes every element before reading it, or asks for zeros.
    let slice = unsafe { main.alloc::<T>(len.max(1)) }?;
    if zeroed {
        // SAFETY: the slice holds len.max(1) values, allocated just before in stream order.
        unsafe { cudarc::driver::result::memset_d8_async(ptr(&slice, main), 0, len.max(1) * std::mem::size_of::<T>(), main.cu_stream()) }?;
    }
    let allocated = main.context().new_event(None)?;
    allocated.record(main)?;
    side.wait(&allocated)?;
    Ok(slice)
}

/// An event whose waiters sleep instead of spinning: plan jobs wait beside the simulation.
fn blocking_event(ctx: &Arc<cudarc::driver::CudaContext>) -> Result<CudaEvent, CudaError> {
    Ok(ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC))?)
}

/// Bytes of one stored weight of block `b`.
fn weight_elem(b: &fum_engine::components::SynapseBlock) -> usize {
    if matches!(b.weight, Weights::F16(_)) { 2 } else { 4 }
}

/// The per-synapse columns a commit compacts on the device, with their element bytes.
fn synapse_columns(b: &fum_engine::components::SynapseBlock) -> Vec<(&'static str, usize)> {
    let mut columns = vec![("target", b.target.element_bytes())];
    if matches!(b.delay, fum_engine::components::Delays::PerSynapse(_)) {
        columns.push(("delay", 2));
    }
    columns.push(("weight", weight_elem(b)));
    columns
}

/// What `compact_rows` reads to rebuild a block at a commit, on the device: the plan (pruned
/// positions, new synapses' values per column) laid out by row, and the new row pointers.
/// Uploaded on `stream` (the plan stream, by a plan thread beside the simulation; or the
/// step's, at the commit) and ready once `uploaded` has passed.
struct ReadyCommit {
    stream: Arc<CudaStream>,
    uploaded: CudaEvent,
    pruned: cudarc::driver::CudaSlice<u8>,
    pruned_ptr: cudarc::driver::CudaSlice<u8>,
    grown_ptr: cudarc::driver::CudaSlice<u8>,
    grown: Vec<(&'static str, cudarc::driver::CudaSlice<u8>)>,
    row_ptr: Arc<fum_engine::device::Buffer>,
}

impl ReadyCommit {
    /// Uploads on `stream` into memory of the step stream `main` (see `plan_memory`), which the
    /// commit frees after its kernels.
    fn new(ctx: &Arc<fum_engine::device::DeviceContext>, main: &Arc<CudaStream>, stream: &Arc<CudaStream>, plan: &BlockPlan, rows: &Compaction, columns: &[(&'static str, usize)]) -> Result<ReadyCommit, CudaError> {
        let row_ptr = &rows.row_ptr;
        stream.context().bind_to_thread()?;
        // The row pointers' buffer is the step stream's, like every column's.
        let buffer = fum_engine::device::Buffer::new(ctx, 4 * row_ptr.len(), false)?;
        let upload = |host: &[u8]| -> Result<cudarc::driver::CudaSlice<u8>, CudaError> {
            let slice = plan_memory::<u8>(main, stream, host.len(), false)?;
            // SAFETY: the slice holds the bytes; this stream waits for its allocation.
            unsafe { ctx.write_on(stream, ptr(&slice, stream), host) }?;
            Ok(slice)
        };
        let (pruned, pruned_ptr, grown_ptr) = (upload(bytemuck::cast_slice(&plan.pruned))?, upload(bytemuck::cast_slice(&rows.pruned_ptr))?, upload(bytemuck::cast_slice(&rows.grown_ptr))?);
        // SAFETY: the buffer holds the row pointers; it was allocated (and zeroed) on `main`
        // before the first upload's allocation, which this stream waits for.
        unsafe { ctx.write_on(stream, buffer.ptr(), bytemuck::cast_slice(row_ptr)) }?;
        let ready = ReadyCommit {
            stream: stream.clone(),
            pruned,
            pruned_ptr,
            grown_ptr,
            grown: columns.iter().map(|&(name, elem)| Ok((name, upload(&plan.grown_bytes(name, elem))?))).collect::<Result<_, CudaError>>()?,
            row_ptr: buffer,
            uploaded: blocking_event(stream.context())?,
        };
        ready.uploaded.record(stream)?;
        Ok(ready)
    }
}

impl Drop for ReadyCommit {
    /// Nothing is freed while its upload may still be in flight.
    fn drop(&mut self) {
        let _ = self.uploaded.synchronize();
    }
}
