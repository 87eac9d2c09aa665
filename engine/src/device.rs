//! The device copy of a built network: every column of every shard, the synapse blocks and the
//! plasticity state, and the small descriptor tables the kernels read.
//!
//! Neuron columns are concatenated over shards into network-wide arrays (a shard is a
//! contiguous range of global ids), so one launch updates every neuron; ring buffers are laid
//! out `[slot][global id]`. Synapse blocks keep their shard's CSR rows and shard-local `u16`
//! targets. Every copy between host and device goes through [`DeviceNetwork`]'s upload and
//! download methods, which count the bytes.

use bevy_ecs::prelude::*;
use bytemuck::{Pod, Zeroable};
use cudarc::driver::{CudaSlice, CudaStream, CudaView, DevicePtr, DeviceRepr, PinnedHostSlice, ValidAsZeroBits};
use std::sync::Arc;

use crate::backend::{DeviceMemory, HostView, Transfers};
use crate::components::{Delays, Dynamics, NeuronBlock, Plasticity, Populations, Shard, StdpHistoryOverflows, SynapseBlocks, Weights};
use crate::recording::{ProbeSite, Recorder};
use crate::model::ProbeVariable;
use fum_kernels::stdp::{NEVER, Pairing, TraceDecay, WeightDependence};

use fum_kernels::cuda::CudaError;

/// A synapse block as `fum.cu` reads it (`struct Block`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BlockDesc {
    pub row_ptr: u64,
    pub target: u64,
    pub delay: u64,
    pub weight: u64,
    pub ring: u64,
    pub post: u64,
    pub history: u64,
    pub source_first: u32,
    pub source_size: u32,
    pub shard_first: u32,
    pub shard_size: u32,
    pub const_delay: u32,
    pub weight_f16: u32,
    pub rule: u32,
    pub history_len: u32,
}

/// What a plastic synapse reads of its target, one 16-byte load (`struct Post`): the trace
/// and last spike of `Traces`, the history's spike count and floor.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PostState {
    pub trace: f32,
    pub last: u32,
    pub count: u32,
    pub floor: u32,
}

/// A plastic projection as `fum.cu` reads it (`struct Rule`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RuleDesc {
    pub a_plus: f32,
    pub a_minus: f32,
    pub w_min: f32,
    pub w_max: f32,
    pub multiplicative: u32,
    pub nearest: u32,
    pub pre_decay_len: u32,
    pub post_decay_len: u32,
    pub pre_decay: u64,
    pub post_decay: u64,
    pub pre_trace: u64,
    pub pre_last: u64,
    pub source_first: u32,
    pub source_size: u32,
    pub target_first: u32,
    pub target_size: u32,
}

/// A probed value as `fum.cu` reads it (`struct Probe`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ProbeDesc {
    pub source: u64,
    pub index: u32,
    pub kind: u32,
    pub interval_steps: u32,
    pub pad: u32,
}

/// Population constants passed by value to the LIF kernels (`struct Cuba` / `struct Coba`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LifConstants(pub [u32; 10]);

unsafe impl DeviceRepr for LifConstants {}
unsafe impl DeviceRepr for BlockDesc {}
unsafe impl DeviceRepr for RuleDesc {}
unsafe impl DeviceRepr for ProbeDesc {}
unsafe impl DeviceRepr for PostState {}
unsafe impl ValidAsZeroBits for BlockDesc {}

pub enum DeviceWeights {
    F32(CudaSlice<f32>),
    /// f16 bits.
    F16(CudaSlice<u16>),
}

pub struct DevicePlastic {
    pub post: CudaSlice<PostState>,
    pub history: CudaSlice<u32>,
}

pub struct DeviceBlock {
    /// Shard index and the block's index in the shard's `SynapseBlocks`.
    pub shard: usize,
    pub index: usize,
    pub row_ptr: CudaSlice<u32>,
    pub target: CudaSlice<u16>,
    pub delay: Option<CudaSlice<u16>>,
    pub weight: DeviceWeights,
    pub plastic: Option<DevicePlastic>,
}

pub struct DeviceRule {
    pub pre_decay: CudaSlice<f32>,
    pub post_decay: CudaSlice<f32>,
    pub pre_trace: CudaSlice<f32>,
    pub pre_last: CudaSlice<u32>,
}

/// One population's LIF launch.
pub struct PopulationLaunch {
    pub first: u32,
    pub end: u32,
    pub coba: bool,
    pub constants: LifConstants,
    pub current_pa: f32,
}

/// One Poisson source's launch.
pub struct PoissonLaunch {
    pub stream: u32,
    pub first: u32,
    pub end: u32,
    pub mean: f64,
    pub exp_minus_mean: f64,
    pub quantum: i64,
    pub inhibitory: bool,
}

/// The probes' layout in the staging slot: for each probe, its range in the flat site list.
pub struct ProbeLayout {
    pub ranges: Vec<std::ops::Range<usize>>,
    pub intervals: Vec<u64>,
}

pub struct DeviceNetwork {
    pub stream: Arc<CudaStream>,
    pub n: u32,
    pub slots: u32,
    /// Shard ranges of global ids, by shard index.
    pub shards: Vec<std::ops::Range<u32>>,
    pub v: CudaSlice<f32>,
    pub syn_ex: CudaSlice<f32>,
    pub syn_in: CudaSlice<f32>,
    pub refractory: CudaSlice<u32>,
    pub fired: CudaSlice<u8>,
    pub ring_ex: CudaSlice<i64>,
    pub ring_in: CudaSlice<i64>,
    pub step: CudaSlice<u64>,
    pub spikes: CudaSlice<u32>,
    pub n_spikes: CudaSlice<u32>,
    pub block_counts: CudaSlice<u32>,
    pub blocks: Vec<DeviceBlock>,
    pub block_table: CudaSlice<BlockDesc>,
    pub plastic_blocks: CudaSlice<u32>,
    pub n_plastic_blocks: u32,
    pub rules: Vec<DeviceRule>,
    pub rule_table: CudaSlice<RuleDesc>,
    pub lost_pairings: CudaSlice<u64>,
    pub probes: CudaSlice<ProbeDesc>,
    pub probe_layout: ProbeLayout,
    pub populations: Vec<PopulationLaunch>,
    pub poisson: Vec<PoissonLaunch>,
    pub key: [u32; 2],
    pub stdp_enabled: bool,
    pub memory: DeviceMemory,
    pub transfers: Transfers,
    /// Pinned host memory every download passes through (`BOUNCE_BYTES`).
    pub bounce: PinnedHostSlice<u8>,
    pub synapses: u64,
}

/// Size of the pinned host buffer that downloads go through: copies from the device into
/// pageable memory ran at under 1 GB/s on the H100 test machine (4.5 s for the learned weights
/// of a 1M-neuron network); through pinned memory they run at bus speed.
const BOUNCE_BYTES: usize = 64 << 20;

/// The raw device address of a buffer, for descriptor tables and kernel arguments.
pub fn ptr<T>(slice: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    slice.device_ptr(stream).0
}

/// Device bytes of `n` neurons' columns (v, syn_ex, syn_in, refractory: 4 B each; fired: 1 B;
/// spike list and compaction: 4 + 4 B) and of both rings of `ring_len` sums each.
fn neuron_bytes(n: u64, ring_len: u64) -> u64 {
    n * (4 * 4 + 1 + 4 + 4) + 2 * 8 * ring_len
}

/// Device bytes of a plastic block's per-target state: its history and a [`PostState`] for
/// each of the shard's `n` neurons.
fn plastic_bytes(history_bytes: usize, n: u64) -> u64 {
    history_bytes as u64 + std::mem::size_of::<PostState>() as u64 * n
}

fn decay_table(decay: &TraceDecay) -> Vec<f32> {
    (0..).map(|n| decay.after(n)).take_while(|&x| x != 0.0).collect()
}

fn shards_in_order(world: &mut World) -> Vec<Entity> {
    let mut q = world.query::<(Entity, &Shard)>();
    let mut v: Vec<_> = q.iter(world).map(|(e, s)| (s.index, e)).collect();
    v.sort_unstable();
    v.into_iter().map(|(_, e)| e).collect()
}

impl DeviceNetwork {
    fn upload<T: DeviceRepr + Copy>(&mut self, host: &[T]) -> Result<CudaSlice<T>, CudaError> {
        self.transfers.to_device_bytes += std::mem::size_of_val(host) as u64;
        self.transfers.copies += 1;
        if host.is_empty() {
            // A zero-length allocation is not allowed; keep one element so pointers stay valid.
            return Ok(unsafe { self.stream.alloc::<T>(1) }?);
        }
        Ok(self.stream.clone_htod(host)?)
    }

    /// Copies `src` into `dst` through the pinned bounce buffer, counting the bytes.
    pub fn download_into<T: DeviceRepr + Pod>(t: &mut Transfers, bounce: &mut PinnedHostSlice<u8>, stream: &Arc<CudaStream>, src: &CudaView<'_, T>, dst: &mut [T]) -> Result<(), CudaError> {
        assert_eq!(src.len(), dst.len(), "a download fills its destination");
        let bytes = std::mem::size_of_val(dst);
        // SAFETY: every byte pattern is a valid u8.
        let src = unsafe { src.transmute::<u8>(bytes) }.expect("a view of the same bytes");
        let dst: &mut [u8] = bytemuck::cast_slice_mut(dst);
        for (i, chunk) in dst.chunks_mut(BOUNCE_BYTES).enumerate() {
            let at = i * BOUNCE_BYTES;
            // A copy moves as many bytes as its destination holds: give it exactly the chunk.
            let staged = &mut bounce.as_mut_slice()?[..chunk.len()];
            stream.memcpy_dtoh(&src.slice(at..at + chunk.len()), staged)?;
            stream.synchronize()?;
            chunk.copy_from_slice(staged);
        }
        t.to_host_bytes += bytes as u64;
        t.copies += 1;
        Ok(())
    }

    /// The first `len` values of `src`, through the bounce buffer.
    pub fn download<T: DeviceRepr + Pod>(t: &mut Transfers, bounce: &mut PinnedHostSlice<u8>, stream: &Arc<CudaStream>, src: &CudaSlice<T>, len: usize) -> Result<Vec<T>, CudaError> {
        let mut out = vec![T::zeroed(); len];
        Self::download_into(t, bounce, stream, &src.slice(..len), &mut out)?;
        Ok(out)
    }

    /// Device bytes the network will take, computed before allocating anything, so that a
    /// network that does not fit fails with a message instead of a driver error midway.
    pub fn required_bytes(world: &mut World) -> u64 {
        let mut bytes = 0u64;
        let mut q = world.query::<(&NeuronBlock, &SynapseBlocks)>();
        for (neurons, synapses) in q.iter(world) {
            let n = neurons.len() as u64;
            bytes += neuron_bytes(n, neurons.ring_ex.sums.len() as u64);
            for b in &synapses.0 {
                bytes += (b.row_ptr.bytes() + b.synapse_bytes()) as u64;
                if let Some(p) = &b.plastic {
                    bytes += plastic_bytes(p.post_history.bytes(), n);
                }
            }
        }
        bytes + (8 << 20)
    }

    /// Copies the world's network to the device.
    pub fn upload_world(stream: Arc<CudaStream>, world: &mut World, free_bytes: usize, device: &str) -> Result<DeviceNetwork, CudaError> {
        let needed = Self::required_bytes(world);
        if needed > free_bytes as u64 {
            let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
            return Err(CudaError::OutOfMemory { needed: gib(needed), free: gib(free_bytes as u64), device: device.into() });
        }
        let order = shards_in_order(world);
        let mut shards = Vec::new();
        let (mut v, mut syn_ex, mut syn_in, mut refractory) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut slots = 0;
        for &e in &order {
            let (shard, nb) = (world.get::<Shard>(e).unwrap(), world.get::<NeuronBlock>(e).unwrap());
            if shard.neurons.start != shards.last().map_or(0, |r: &std::ops::Range<u32>| r.end) {
                return Err(CudaError::Unsupported("shards are not contiguous".into()));
            }
            shards.push(shard.neurons.clone());
            v.extend_from_slice(&nb.v);
            syn_ex.extend_from_slice(&nb.syn_ex);
            syn_in.extend_from_slice(&nb.syn_in);
            refractory.extend_from_slice(&nb.refractory_steps);
            slots = nb.ring_ex.slots;
        }
        let n = v.len();
        let mut ring_ex = vec![0i64; slots * n];
        let mut ring_in = vec![0i64; slots * n];
        for &e in &order {
            let (shard, nb) = (world.get::<Shard>(e).unwrap(), world.get::<NeuronBlock>(e).unwrap());
            let (first, len) = (shard.neurons.start as usize, nb.len());
            for s in 0..slots {
                ring_ex[s * n + first..s * n + first + len].copy_from_slice(&nb.ring_ex.sums[s * len..(s + 1) * len]);
                ring_in[s * n + first..s * n + first + len].copy_from_slice(&nb.ring_in.sums[s * len..(s + 1) * len]);
            }
        }
        let step = world.resource::<crate::components::Clock>().step;
        let z = |len: usize| stream.alloc_zeros::<u32>(len.max(1));
        let mut net = DeviceNetwork {
            n: n as u32,
            slots: slots as u32,
            shards,
            v: stream.alloc_zeros(1)?,
            syn_ex: stream.alloc_zeros(1)?,
            syn_in: stream.alloc_zeros(1)?,
            refractory: z(1)?,
            fired: stream.alloc_zeros(n.max(1))?,
            ring_ex: stream.alloc_zeros(1)?,
            ring_in: stream.alloc_zeros(1)?,
            step: stream.clone_htod(&[step])?,
            spikes: z(n)?,
            n_spikes: z(1)?,
            block_counts: z(n.div_ceil(1024))?,
            blocks: Vec::new(),
            block_table: stream.alloc_zeros(1)?,
            plastic_blocks: z(1)?,
            n_plastic_blocks: 0,
            rules: Vec::new(),
            rule_table: stream.clone_htod(&[RuleDesc::default()])?,
            lost_pairings: stream.alloc_zeros(1)?,
            probes: stream.clone_htod(&[ProbeDesc::default()])?,
            probe_layout: ProbeLayout { ranges: Vec::new(), intervals: Vec::new() },
            populations: Vec::new(),
            poisson: Vec::new(),
            key: world.resource::<crate::components::Seed>().0.0,
            stdp_enabled: world.resource::<Plasticity>().enabled,
            memory: DeviceMemory::default(),
            transfers: Transfers::default(),
            // SAFETY: the buffer is written by a copy before it is read.
            bounce: unsafe { stream.context().alloc_pinned::<u8>(BOUNCE_BYTES) }?,
            synapses: 0,
            stream: stream.clone(),
        };
        net.lost_pairings = net.upload(&[world.resource::<StdpHistoryOverflows>().0])?;
        net.v = net.upload(&v)?;
        net.syn_ex = net.upload(&syn_ex)?;
        net.syn_in = net.upload(&syn_in)?;
        net.refractory = net.upload(&refractory)?;
        net.ring_ex = net.upload(&ring_ex)?;
        net.ring_in = net.upload(&ring_in)?;
        net.memory.neuron_bytes = neuron_bytes(n as u64, ring_ex.len() as u64);

        net.upload_populations(world);
        net.upload_plasticity(world)?;
        net.upload_blocks(world, &order)?;
        net.upload_probes(world)?;
        Ok(net)
    }

    fn upload_populations(&mut self, world: &World) {
        for p in &world.resource::<Populations>().0 {
            let bits = |x: f32| x.to_bits();
            let (coba, constants) = match p.dynamics {
                Dynamics::Cuba(c) => (false, [bits(c.e_l), bits(c.v_th), bits(c.v_reset), c.refractory_steps, bits(c.p22), bits(c.p20), bits(c.p21_ex), bits(c.p21_in), bits(c.p11_ex), bits(c.p11_in)]),
                Dynamics::Coba(c) => (true, [bits(c.e_l), bits(c.v_th), bits(c.v_reset), c.refractory_steps, bits(c.e_ex), bits(c.e_in), bits(c.g_l), bits(c.minus_h_over_c), bits(c.p11_ex), bits(c.p11_in)]),
            };
            self.populations.push(PopulationLaunch { first: p.first, end: p.first + p.size, coba, constants: LifConstants(constants), current_pa: p.current_pa });
        }
        for s in &world.resource::<crate::components::PoissonSources>().0 {
            self.poisson.push(PoissonLaunch {
                stream: ((fum_kernels::rng::Purpose::PoissonInput as u32) << 16) | u32::from(s.index),
                first: s.target.start,
                end: s.target.end,
                mean: s.mean_per_step,
                exp_minus_mean: s.exp_minus_mean,
                quantum: fum_kernels::delivery::to_fixed(s.weight),
                inhibitory: s.receptor == crate::model::Receptor::Inhibitory,
            });
        }
    }

    fn upload_plasticity(&mut self, world: &World) -> Result<(), CudaError> {
        let plasticity = world.resource::<Plasticity>().clone();
        let mut table = Vec::new();
        for p in &plasticity.projections {
            let (pre_decay, post_decay) = (decay_table(&p.pre_decay), decay_table(&p.post_decay));
            let rule = DeviceRule {
                pre_decay: self.upload(&pre_decay)?,
                post_decay: self.upload(&post_decay)?,
                pre_trace: self.upload(&p.pre_traces.at_last_spike)?,
                pre_last: self.upload(&p.pre_traces.last_spike_step)?,
            };
            self.memory.plasticity_bytes += 4 * (pre_decay.len() + post_decay.len()) as u64 + 8 * p.pre_traces.at_last_spike.len() as u64;
            let s = &self.stream;
            table.push(RuleDesc {
                a_plus: p.rule.a_plus,
                a_minus: p.rule.a_minus,
                w_min: p.rule.w_min,
                w_max: p.rule.w_max,
                multiplicative: u32::from(p.rule.dependence == WeightDependence::Multiplicative),
                nearest: u32::from(p.rule.pairing == Pairing::Nearest),
                pre_decay_len: pre_decay.len() as u32,
                post_decay_len: post_decay.len() as u32,
                pre_decay: ptr(&rule.pre_decay, s),
                post_decay: ptr(&rule.post_decay, s),
                pre_trace: ptr(&rule.pre_trace, s),
                pre_last: ptr(&rule.pre_last, s),
                source_first: p.source.start,
                source_size: p.source.end - p.source.start,
                target_first: p.target.start,
                target_size: p.target.end - p.target.start,
            });
            self.rules.push(rule);
        }
        if !table.is_empty() {
            self.rule_table = self.upload(&table)?;
        }
        Ok(())
    }

    fn upload_blocks(&mut self, world: &mut World, order: &[Entity]) -> Result<(), CudaError> {
        let mut table = Vec::new();
        let mut plastic_index = Vec::new();
        let (ring_ex, ring_in) = (ptr(&self.ring_ex, &self.stream), ptr(&self.ring_in, &self.stream));
        let history_lens: Vec<usize> = world.resource::<Plasticity>().projections.iter().map(|p| p.history_len).collect();
        for (shard_index, &e) in order.iter().enumerate() {
            let range = self.shards[shard_index].clone();
            let synapses = world.get::<SynapseBlocks>(e).unwrap();
            for (index, b) in synapses.0.iter().enumerate() {
                if range.len() > 1 << 16 {
                    return Err(CudaError::Unsupported(format!("shard {shard_index} has {} neurons; targets are 16-bit, so at most 65,536 per shard", range.len())));
                }
                let row_ptr = self.upload(&b.row_ptr)?;
                let target = self.upload(&b.target)?;
                let (delay, constant) = match &b.delay {
                    Delays::Constant(d) => (None, *d),
                    Delays::PerSynapse(d) => (Some(self.upload(d)?), 0),
                };
                let weight = match &b.weight {
                    Weights::F32(w) => DeviceWeights::F32(self.upload(w)?),
                    Weights::F16(w) => DeviceWeights::F16(self.upload(bytemuck::cast_slice::<_, u16>(w))?),
                };
                self.synapses += b.len() as u64;
                self.memory.synapse_bytes += b.synapse_bytes() as u64;
                self.memory.index_bytes += 4 * b.row_ptr.len() as u64;
                let plastic = match &b.plastic {
                    Some(p) => {
                        let traces = &p.post_traces;
                        let post: Vec<PostState> = (0..range.len())
                            .map(|j| PostState { trace: traces.at_last_spike[j], last: traces.last_spike_step[j], count: p.post_spike_count[j], floor: p.history_floor[j] })
                            .collect();
                        let dp = DevicePlastic { post: self.upload(&post)?, history: self.upload(&p.post_history)? };
                        self.memory.plasticity_bytes += plastic_bytes(p.post_history.bytes(), range.len() as u64);
                        plastic_index.push(table.len() as u32);
                        Some((p.rule as u32, history_lens[p.rule] as u32, dp))
                    }
                    None => None,
                };
                let s = &self.stream;
                let mut desc = BlockDesc {
                    row_ptr: ptr(&row_ptr, s),
                    target: ptr(&target, s),
                    delay: delay.as_ref().map_or(0, |d| ptr(d, s)),
                    weight: match &weight {
                        DeviceWeights::F32(w) => ptr(w, s),
                        DeviceWeights::F16(w) => ptr(w, s),
                    },
                    ring: if b.receptor == crate::model::Receptor::Inhibitory { ring_in } else { ring_ex },
                    source_first: b.source_first,
                    source_size: b.source_size,
                    shard_first: range.start,
                    shard_size: range.len() as u32,
                    const_delay: u32::from(constant),
                    weight_f16: u32::from(matches!(weight, DeviceWeights::F16(_))),
                    rule: NEVER,
                    history_len: 1,
                    ..Default::default()
                };
                if let Some((rule, history_len, dp)) = &plastic {
                    desc.rule = *rule;
                    desc.history_len = *history_len;
                    desc.post = ptr(&dp.post, s);
                    desc.history = ptr(&dp.history, s);
                }
                table.push(desc);
                self.blocks.push(DeviceBlock { shard: shard_index, index, row_ptr, target, delay, weight, plastic: plastic.map(|(_, _, dp)| dp) });
            }
        }
        if !table.is_empty() {
            self.block_table = self.upload(&table)?;
        }
        self.n_plastic_blocks = plastic_index.len() as u32;
        if !plastic_index.is_empty() {
            self.plastic_blocks = self.upload(&plastic_index)?;
        }
        Ok(())
    }

    fn upload_probes(&mut self, world: &World) -> Result<(), CudaError> {
        let recorder = world.resource::<Recorder>();
        let mut table = Vec::new();
        let s = &self.stream;
        let block_base = ptr(&self.block_table, s);
        for probe in &recorder.probes {
            let start = table.len();
            for site in &probe.sites {
                let desc = match *site {
                    ProbeSite::Neuron { shard, local } => {
                        let column = match probe.variable {
                            ProbeVariable::SynEx => &self.syn_ex,
                            ProbeVariable::SynIn => &self.syn_in,
                            _ => &self.v,
                        };
                        ProbeDesc { source: ptr(column, s), index: self.shards[shard].start + local as u32, kind: 0, interval_steps: probe.interval_steps as u32, pad: 0 }
                    }
                    ProbeSite::Synapse { shard, block, synapse } => {
                        let k = self.blocks.iter().position(|b| b.shard == shard && b.index == block).expect("every block is on the device");
                        let address = block_base + (k * std::mem::size_of::<BlockDesc>()) as u64;
                        ProbeDesc { source: address, index: synapse as u32, kind: 1, interval_steps: probe.interval_steps as u32, pad: 0 }
                    }
                };
                table.push(desc);
            }
            self.probe_layout.ranges.push(start..table.len());
            self.probe_layout.intervals.push(probe.interval_steps);
        }
        if !table.is_empty() {
            self.probes = self.upload(&table)?;
        }
        Ok(())
    }

    pub fn probe_sites(&self) -> usize {
        self.probe_layout.ranges.last().map_or(0, |r| r.end)
    }

    /// Copies device state back into the host columns the view needs.
    pub fn download_world(&mut self, world: &mut World, view: HostView) -> Result<(), CudaError> {
        let n = self.n as usize;
        let stream = self.stream.clone();
        let (t, bounce) = (&mut self.transfers, &mut self.bounce);
        let everything = view == HostView::Everything;
        let order = shards_in_order(world);
        for (k, &e) in order.iter().enumerate() {
            let r = self.shards[k].start as usize..self.shards[k].end as usize;
            let mut nb = world.get_mut::<NeuronBlock>(e).unwrap();
            Self::download_into(t, bounce, &stream, &self.v.slice(r.clone()), &mut nb.v)?;
            Self::download_into(t, bounce, &stream, &self.syn_ex.slice(r.clone()), &mut nb.syn_ex)?;
            Self::download_into(t, bounce, &stream, &self.syn_in.slice(r.clone()), &mut nb.syn_in)?;
            if everything {
                Self::download_into(t, bounce, &stream, &self.refractory.slice(r.clone()), &mut nb.refractory_steps)?;
                // Device rings are [slot][global id], host rings [slot][shard-local id].
                let len = r.len();
                for s in 0..self.slots as usize {
                    let (from, to) = (s * n + r.start, s * n + r.end);
                    Self::download_into(t, bounce, &stream, &self.ring_ex.slice(from..to), &mut nb.ring_ex.sums[s * len..(s + 1) * len])?;
                    Self::download_into(t, bounce, &stream, &self.ring_in.slice(from..to), &mut nb.ring_in.sums[s * len..(s + 1) * len])?;
                }
            }
        }
        if !everything {
            return Ok(());
        }
        for b in &self.blocks {
            let Some(dp) = &b.plastic else { continue };
            let post = Self::download(t, bounce, &stream, &dp.post, self.shards[b.shard].len())?;
            let mut synapses = world.get_mut::<SynapseBlocks>(order[b.shard]).unwrap();
            let block = &mut synapses.0[b.index];
            match (&b.weight, &mut block.weight) {
                (DeviceWeights::F32(d), Weights::F32(h)) => Self::download_into(t, bounce, &stream, &d.slice(..), h)?,
                (DeviceWeights::F16(d), Weights::F16(h)) => Self::download_into(t, bounce, &stream, &d.slice(..h.len()), bytemuck::cast_slice_mut(h))?,
                _ => unreachable!("the device block was uploaded from this host block"),
            }
            let p = block.plastic.as_mut().expect("a plastic block on the host");
            Self::download_into(t, bounce, &stream, &dp.history.slice(..p.post_history.len()), &mut p.post_history)?;
            for (j, s) in post.iter().enumerate() {
                p.post_traces.at_last_spike[j] = s.trace;
                p.post_traces.last_spike_step[j] = s.last;
                p.post_spike_count[j] = s.count;
                p.history_floor[j] = s.floor;
            }
        }
        world.resource_mut::<StdpHistoryOverflows>().0 = Self::download(t, bounce, &stream, &self.lost_pairings, 1)?[0];
        let mut plasticity = world.resource_mut::<Plasticity>();
        for (p, r) in plasticity.projections.iter_mut().zip(&self.rules) {
            let len = p.pre_traces.at_last_spike.len();
            p.pre_traces.at_last_spike = Self::download(t, bounce, &stream, &r.pre_trace, len)?;
            p.pre_traces.last_spike_step = Self::download(t, bounce, &stream, &r.pre_last, len)?;
        }
        Ok(())
    }

}
