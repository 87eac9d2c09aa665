//! The network on a CUDA device: every declared column mirrored in device memory, and the
//! small descriptor tables and scratch buffers the kernels read.
//!
//! Layout (chosen so that one launch covers every shard): per-neuron columns of all shards share
//! one arena per name, a shard's column being the range of its global ids less the first id
//! this process holds ([`state::Span`]: 0 for a process on its own, a rank's first neuron
//! across ranks); ring columns share a slot-major arena `[slot][neuron]`, so a shard's ring is
//! one range per slot, and the neuron update reads one slot of all shards contiguously. Spike
//! lists hold global ids: kernels subtract the base where they index the arenas. Synapse-block and projection columns each get a buffer of their own (the block
//! table holds their addresses). The element layout of every column is the host's, so a copy is
//! plain bytes, and every column moves through its [`Mirror`](crate::column::Mirror): the
//! upload attaches each declared column ([`crate::state`]) to its place here, and host reads
//! after device steps go through `Column::download`. [`Buffer`] counts every byte.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bevy_ecs::prelude::*;
use bytemuck::{Pod, Zeroable};
use cudarc::driver::{sys, CudaContext, CudaEvent, CudaSlice, CudaStream, CudaView, DevicePtr, DeviceRepr, PinnedHostSlice, ValidAsZeroBits};

use crate::backend::{DeviceMemory, HostView, MappedHost, Transfers};
use crate::column::{DeviceBuffer, TransferError};
use crate::components::{Dynamics, NeuronBlock, PlasticSynapses, Plasticity, Populations, Shard, StdpHistoryOverflows, SynapseBlocks};
use crate::model::ProbeVariable;
use crate::recording::{ProbeSite, Recorder};
use crate::state;
use fum_kernels::cuda::CudaError;

impl From<TransferError> for CudaError {
    fn from(e: TransferError) -> Self {
        CudaError::Unsupported(e.to_string())
    }
}
use fum_kernels::stdp::{NEVER, Pairing, TraceDecay, WeightDependence};

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
    /// The row cache of a block in host memory ([`crate::row_cache`]), or zeros.
    pub cache_row: u64,
    pub cache_target: u64,
    pub cache_delay: u64,
    pub cache_weight: u64,
    pub cache_len: u32,
    /// `shard_first` less the process's first neuron: the shard's place in the arenas.
    pub local_first: u32,
    /// Lanes of a warp that walk one row in `deliver` ([`row_lanes`]).
    pub row_lanes: u32,
    /// Groups of `row_lanes` lanes that walk one row together ([`row_split`]).
    pub row_split: u32,
    /// The traces of `history` for a rule whose delay is dendritic, or 0.
    pub history_trace: u64,
    /// 1 where targets are `u32` (a shard of more than 65,536 neurons, [`crate::components::Targets`]).
    pub target_wide: u32,
    pub unused: u32,
}

/// The lanes of a warp that walk one row of a block of `synapses` in `rows` rows: a power of
/// two near half the mean row (4 to 32), so that each lane loads about two synapses and a
/// warp of short rows walks several at once.
pub fn row_lanes(synapses: usize, rows: u32) -> u32 {
    let mean = synapses as f64 / f64::from(rows.max(1));
    ((mean / 2.0).ceil() as u32).next_power_of_two().clamp(4, 32)
}

/// Synapses a lane of `deliver` loads before it uses any (fum.cu's `UNROLL`).
const DELIVER_UNROLL: u32 = 4;

/// The groups of `lanes` lanes that walk one row of a block of `synapses` in `rows` rows
/// together, each a share of its synapses: as many as the mean row has loads of one group in
/// flight (lanes x UNROLL synapses), at most 16. A group walks its share one round trip to
/// memory per lanes x UNROLL synapses, so a long row walked by one group is a long chain of
/// round trips: the microcircuit's rows into one shard hold up to ~1,200 synapses, and those
/// set `deliver`'s length however few spikes there are.
pub fn row_split(synapses: usize, rows: u32, lanes: u32) -> u32 {
    let mean = synapses as f64 / f64::from(rows.max(1));
    ((mean / f64::from(lanes * DELIVER_UNROLL)).ceil() as u32).clamp(1, 16)
}

/// `deliver`'s thread blocks spread over synapse blocks in proportion to their `work`, at
/// least one each: `total` of them, or one a block where there are more blocks. For each thread
/// block, four words (a `uint4` in fum.cu): its block, its slice of the block's spikes, the
/// block's slices, 0. Spread evenly, a block of a few static synapses had as many thread
/// blocks as one of a shard's plastic inputs, and the hardware's last thread blocks to start
/// were long ones; the bits do not depend on the spread (delivery's sums are integers, and a
/// plastic synapse is updated by the one thread walking its row).
pub fn deliver_map(work: &[f64], total: u32) -> Vec<u32> {
    let n = work.len();
    let total = (total as usize).max(n);
    let (sum, spare) = (work.iter().sum::<f64>(), (total - n) as f64);
    let ideal: Vec<f64> = work.iter().map(|w| if sum > 0.0 { w / sum * spare } else { spare / n as f64 }).collect();
    let mut slices: Vec<usize> = ideal.iter().map(|x| 1 + x.floor() as usize).collect();
    // What the floors left, to the largest remainders (ties to the first block).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| (ideal[b] - ideal[b].floor()).total_cmp(&(ideal[a] - ideal[a].floor())).then(a.cmp(&b)));
    let left = total - slices.iter().sum::<usize>();
    for &b in order.iter().take(left) {
        slices[b] += 1;
    }
    let mut map = Vec::with_capacity(4 * total);
    for (b, &s) in slices.iter().enumerate() {
        for k in 0..s {
            map.extend([b as u32, k as u32, s as u32, 0]);
        }
    }
    map
}

/// A plastic projection as `fum.cu` reads it (`struct Rule`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RuleDesc {
    pub a_plus: f32,
    pub a_minus: f32,
    pub w_min: f32,
    pub w_max: f32,
    /// 0 additive, 1 multiplicative, 2 power law (`RULE_*` in fum.cu).
    pub dependence: u32,
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
    /// The power law's exponent (0 for the other rules).
    pub mu: f32,
    /// 1: the delay is dendritic (`StdpRule::dendritic`).
    pub dendritic: u32,
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

/// A population's neuron update, as `neurons` in fum.cu reads it (`struct Pop`): the neurons
/// held (`first..end` index the arenas), the model (0 `lif_cuba`, 1 `lif_coba`, 2 `lif_coba`
/// with forward Euler, 3 `lif_psc_alpha`, 4 `spike_source`), the Poisson sources reaching it
/// (`src_first..src_end` of the source table), the DC current, whether each neuron adds its
/// own bias (the `bias_pa` arena) and the constants (`struct Cuba` / `Coba` / `Alpha` /
/// `Source`, the unused words 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PopDesc {
    pub first: u32,
    pub end: u32,
    pub kind: u32,
    pub src_first: u32,
    pub src_end: u32,
    pub current_pa: f32,
    pub bias_per_neuron: u32,
    pub constants: [u32; 16],
}

/// A Poisson source over its targets held (`first..end` are global ids: they key the random
/// numbers), as `struct Src`; `rates` is the address of per-neuron (mean, exp(-mean)) pairs
/// when the rate is drawn per neuron, else 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SrcDesc {
    pub stream: u32,
    pub first: u32,
    pub end: u32,
    pub inhibitory: u32,
    pub mean: f64,
    pub exp_minus_mean: f64,
    pub rates: u64,
    pub quantum: i64,
}

unsafe impl DeviceRepr for PopDesc {}
unsafe impl DeviceRepr for SrcDesc {}
unsafe impl DeviceRepr for BlockDesc {}
unsafe impl DeviceRepr for RuleDesc {}
unsafe impl DeviceRepr for ProbeDesc {}
unsafe impl ValidAsZeroBits for BlockDesc {}

/// What every buffer of one device network shares: the stream all copies are ordered on, the
/// generation of the device state, the host-written flag, the pinned staging memory and the
/// transfer counts.
pub struct DeviceContext {
    pub stream: Arc<CudaStream>,
    /// Advanced by every device step (see `crate::column`).
    generation: AtomicU64,
    /// Raised when a host copy of a mirrored column is written; the step uploads such columns.
    host_written: AtomicBool,
    /// What the step loop's downloads (on `stream`, `read_bytes`) pass through.
    staging: Mutex<Staging>,
    /// What the structural plan threads' copies (on the stream they name, `read_on`,
    /// `write_on`) pass through: memory of their own, so that the step loop's downloads never
    /// wait for the plan stream's work. Allocated at the first such copy.
    plan_staging: Mutex<Option<Staging>>,
    transfers: Mutex<Transfers>,
}

// SAFETY: the staging memory is only touched under its mutexes; cudarc's handles carry no thread
// affinity (the context is bound on every call).
unsafe impl Send for DeviceContext {}
unsafe impl Sync for DeviceContext {}

impl DeviceContext {
    /// A device step was enqueued: every state column's host copy is now behind.
    pub fn advance(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Whether a host copy of a mirrored column was written since the last call.
    pub fn take_host_written(&self) -> bool {
        self.host_written.swap(false, Ordering::AcqRel)
    }

    pub fn transfers(&self) -> Transfers {
        *self.transfers.lock().expect("transfer counts")
    }

    /// Counts a copy of `bytes` (also one made on another stream, such as a plan thread's).
    pub fn count(&self, to_device: bool, bytes: usize) {
        let mut t = self.transfers.lock().expect("transfer counts");
        if to_device {
            t.to_device_bytes += bytes as u64;
        } else {
            t.to_host_bytes += bytes as u64;
        }
        t.copies += 1;
    }

    /// Copies `src` (device bytes) into `dst` on the step stream, after the work queued on it,
    /// through pinned memory; counts them.
    pub fn read_bytes(&self, src: &CudaView<'_, u8>, dst: &mut [u8]) -> Result<(), CudaError> {
        let (at, _in_use) = src.device_ptr(&self.stream);
        // SAFETY: `src` holds dst.len() bytes and lives across the call, which returns once the
        // copies are done.
        unsafe { self.staging.lock().expect("the staging memory").read(&self.stream, at, dst) }?;
        self.count(false, dst.len());
        Ok(())
    }

    /// Copies `bytes` to device address `dst` on `stream` (a structural plan's stream, or the
    /// step stream at a commit) through the plan threads' pinned memory; returns once the last
    /// of them is handed to the device (`stream`'s later work sees all of them). Counts them.
    ///
    /// # Safety
    /// `dst` must hold `bytes.len()` bytes, allocated before the copy in `stream`'s order and
    /// freed after it.
    pub unsafe fn write_on(&self, stream: &Arc<CudaStream>, dst: u64, bytes: &[u8]) -> Result<(), CudaError> {
        // SAFETY: as the caller promises.
        self.with_plan_staging(stream, |s| unsafe { s.write(stream, dst, bytes) })?;
        self.count(true, bytes.len());
        Ok(())
    }

    /// Copies `dst.len()` bytes at device address `src` into `dst` on `stream`, after the work
    /// queued on it, through the plan threads' pinned memory. Counts them.
    ///
    /// # Safety
    /// `src` must hold `dst.len()` bytes until the call returns.
    pub unsafe fn read_on(&self, stream: &Arc<CudaStream>, src: u64, dst: &mut [u8]) -> Result<(), CudaError> {
        // SAFETY: as the caller promises.
        self.with_plan_staging(stream, |s| unsafe { s.read(stream, src, dst) })?;
        self.count(false, dst.len());
        Ok(())
    }

    fn with_plan_staging(&self, stream: &Arc<CudaStream>, copy: impl FnOnce(&mut Staging) -> Result<(), CudaError>) -> Result<(), CudaError> {
        let mut plan = self.plan_staging.lock().expect("the staging memory");
        let staging = match &mut *plan {
            Some(s) => s,
            empty => empty.insert(Staging::new(stream.context(), PLAN_STAGING_BYTES, true)?),
        };
        copy(staging)
    }

    /// Host-to-device bandwidth of pinned memory: the staging memory copied to the device four
    /// times, bytes per second.
    pub fn link_bandwidth(&self) -> Result<f64, CudaError> {
        let staging = self.staging.lock().expect("the staging memory");
        let mut scratch = self.stream.alloc_zeros::<u8>(staging.pinned.len())?;
        self.stream.memcpy_htod(&staging.pinned, &mut scratch)?;
        self.stream.synchronize()?;
        let t = std::time::Instant::now();
        for _ in 0..4 {
            self.stream.memcpy_htod(&staging.pinned, &mut scratch)?;
        }
        self.stream.synchronize()?;
        Ok(4.0 * staging.pinned.len() as f64 / t.elapsed().as_secs_f64())
    }

    /// A copy of the first `len` values of a device slice.
    pub fn read<T: DeviceRepr + Pod>(&self, src: &CudaSlice<T>, len: usize) -> Result<Vec<T>, CudaError> {
        let mut out = vec![T::zeroed(); len];
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        // SAFETY: every byte pattern is a valid u8.
        let bytes = unsafe { src.transmute::<u8>(dst.len()) }.expect("a view of the same bytes");
        self.read_bytes(&bytes, dst)?;
        Ok(out)
    }

    /// A device copy of `host` (at least one element, so that its address is valid).
    pub fn upload<T: DeviceRepr + Copy>(&self, host: &[T]) -> Result<CudaSlice<T>, CudaError> {
        self.count(true, std::mem::size_of_val(host));
        if host.is_empty() {
            // SAFETY: never read: an empty column's address is only passed along.
            return Ok(unsafe { self.stream.alloc::<T>(1) }?);
        }
        Ok(self.stream.clone_htod(host)?)
    }
}

/// The step loop's staging memory, and the plan threads'.
const STAGING_BYTES: usize = 64 << 20;
const PLAN_STAGING_BYTES: usize = 32 << 20;

/// Pinned host memory that copies between pageable memory and the device go through, in two
/// halves: one half's copy runs while the host fills or empties the other. The driver stages
/// a copy to or from pageable memory itself: downloads ran at under 1 GB/s on the H100 test
/// machine (4.5 s for the learned weights of a 1M-neuron network), and the step loop waited
/// behind a structural plan's uploads (100-200 ms a plan, 1M-neuron STDP network, H200).
/// Through pinned memory both run at bus speed and wait for nothing but their own stream. One
/// copy at a time: the owner holds it under a mutex.
struct Staging {
    pinned: PinnedHostSlice<u8>,
    host: *mut u8,
    /// When each half's last copy is done (the half may be written again, or read).
    done: [CudaEvent; 2],
}

impl Staging {
    /// `bytes` of pinned memory; waiters on its copies sleep (`blocking`) or spin.
    fn new(ctx: &Arc<CudaContext>, bytes: usize, blocking: bool) -> Result<Staging, CudaError> {
        // SAFETY: each half is written (by the host or by a copy) before it is read.
        let mut pinned = unsafe { ctx.alloc_pinned::<u8>(bytes) }?;
        let host = pinned.as_mut_ptr()?;
        let flags = blocking.then_some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC);
        Ok(Staging { pinned, host, done: [ctx.new_event(flags)?, ctx.new_event(flags)?] })
    }

    fn half(&self) -> usize {
        self.pinned.len() / 2
    }

    /// Copies `bytes` to device address `dst` on `stream`; returns once the last half is handed
    /// to the device.
    ///
    /// # Safety
    /// `dst` must hold `bytes.len()` bytes, allocated before the copy in `stream`'s order and
    /// freed after it.
    unsafe fn write(&mut self, stream: &Arc<CudaStream>, dst: u64, bytes: &[u8]) -> Result<(), CudaError> {
        stream.context().bind_to_thread()?;
        let half = self.half();
        for (i, chunk) in bytes.chunks(half).enumerate() {
            let h = i % 2;
            self.done[h].synchronize()?;
            // SAFETY: the half holds `half` bytes and no copy reads it any more; `dst` holds
            // `bytes`, as the caller promises.
            unsafe {
                let at = self.host.add(h * half);
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), at, chunk.len());
                sys::cuMemcpyHtoDAsync_v2(dst + (i * half) as u64, at.cast(), chunk.len(), stream.cu_stream()).result()?;
            }
            self.done[h].record(stream)?;
        }
        Ok(())
    }

    /// Copies `dst.len()` bytes from device address `src` into `dst` on `stream`, after the
    /// work queued on it; returns once all have arrived.
    ///
    /// # Safety
    /// `src` must hold `dst.len()` bytes until the call returns.
    unsafe fn read(&mut self, stream: &Arc<CudaStream>, src: u64, dst: &mut [u8]) -> Result<(), CudaError> {
        stream.context().bind_to_thread()?;
        let (half, total) = (self.half(), dst.len());
        let n = total.div_ceil(half);
        let len = |i: usize| half.min(total - i * half);
        // Copies chunk i into its half (i % 2), once the host has emptied that half.
        let issue = |s: &Staging, i: usize| -> Result<(), CudaError> {
            // SAFETY: the half holds `half` >= len(i) bytes; `src` holds the range, as the
            // caller promises.
            unsafe { sys::cuMemcpyDtoHAsync_v2(s.host.add((i % 2) * half).cast(), src + (i * half) as u64, len(i), stream.cu_stream()).result() }?;
            s.done[i % 2].record(stream)?;
            Ok(())
        };
        for i in 0..n.min(2) {
            issue(self, i)?;
        }
        // Chunk i + 2 is copied into the half the host just emptied while it empties chunk i + 1.
        for i in 0..n {
            self.done[i % 2].synchronize()?;
            // SAFETY: the half holds chunk i, which its copy (done) wrote.
            let staged = unsafe { std::slice::from_raw_parts(self.host.add((i % 2) * half), len(i)) };
            dst[i * half..i * half + len(i)].copy_from_slice(staged);
            if i + 2 < n {
                issue(self, i + 2)?;
            }
        }
        Ok(())
    }
}

/// One device buffer that columns are mirrored into (an arena or a column's own buffer).
pub struct Buffer {
    ctx: Arc<DeviceContext>,
    memory: Memory,
    /// State the kernels write; structure buffers keep generation 0.
    written_by_device: bool,
}

/// Where a buffer's bytes are: device memory, or pinned host memory mapped into the device's
/// address space, which kernels read and write over the bus (zero-copy: the host tier of a
/// network larger than the card, see [`host_tier`]).
enum Memory {
    Device(CudaSlice<u8>),
    Mapped { _pinned: PinnedHostSlice<u8>, host: *mut u8, len: usize, device: u64 },
}

// SAFETY: a mapped buffer's host pointer is only dereferenced by `read` and `write`, after the
// stream's queued steps (its only other users) have finished.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer").field("bytes", &self.len()).field("mapped", &matches!(self.memory, Memory::Mapped { .. })).field("written_by_device", &self.written_by_device).finish()
    }
}

impl Buffer {
    pub fn new(ctx: &Arc<DeviceContext>, bytes: usize, written_by_device: bool) -> Result<Arc<Buffer>, CudaError> {
        let bytes = ctx.stream.alloc_zeros::<u8>(bytes.max(16))?;
        Ok(Arc::new(Buffer { ctx: ctx.clone(), memory: Memory::Device(bytes), written_by_device }))
    }

    /// A buffer in pinned host memory that kernels read over the bus; its bytes are undefined
    /// until written (a column's upload writes all of them).
    pub fn mapped(ctx: &Arc<DeviceContext>, bytes: usize, written_by_device: bool) -> Result<Arc<Buffer>, CudaError> {
        let len = bytes.max(16);
        // SAFETY: read only after the upload that follows writes every byte.
        // Write-combined: the bus need not snoop the host's caches for it (CUDA's guide: up to
        // 40 % faster transfers); the host only writes it sequentially (uploads) and reads it
        // rarely (checkpoints).
        let flags = sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_WRITECOMBINED;
        let mut pinned = unsafe { ctx.stream.context().alloc_pinned_with_flags::<u8>(len, flags) }?;
        let host = pinned.as_mut_ptr()?;
        let mut device = 0;
        // SAFETY: `host` is the start of a mapped allocation of this context.
        unsafe { sys::cuMemHostGetDevicePointer_v2(&mut device, host.cast(), 0) }.result()?;
        Ok(Arc::new(Buffer { ctx: ctx.clone(), memory: Memory::Mapped { _pinned: pinned, host, len, device }, written_by_device }))
    }

    fn len(&self) -> usize {
        match &self.memory {
            Memory::Device(bytes) => bytes.len(),
            Memory::Mapped { len, .. } => *len,
        }
    }

    /// Whether the buffer is in mapped host memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.memory, Memory::Mapped { .. })
    }

    /// The buffer's device address, for descriptor tables and kernel arguments.
    pub fn ptr(&self) -> u64 {
        match &self.memory {
            Memory::Device(bytes) => bytes.device_ptr(&self.ctx.stream).0,
            Memory::Mapped { device, .. } => *device,
        }
    }
}

impl DeviceBuffer for Buffer {
    fn read(&self, at: usize, dst: &mut [u8]) -> Result<(), TransferError> {
        match &self.memory {
            Memory::Device(bytes) => self.ctx.read_bytes(&bytes.slice(at..at + dst.len()), dst).map_err(|e| TransferError(e.to_string())),
            Memory::Mapped { host, len, .. } => {
                assert!(at + dst.len() <= *len, "a read inside the buffer");
                self.ctx.stream.synchronize().map_err(|e| TransferError(e.to_string()))?;
                // SAFETY: inside the allocation (checked above); the device is done with it.
                unsafe { std::ptr::copy_nonoverlapping(host.add(at), dst.as_mut_ptr(), dst.len()) };
                Ok(())
            }
        }
    }

    fn write(&self, at: usize, src: &[u8]) -> Result<(), TransferError> {
        assert!(at + src.len() <= self.len(), "a write inside the buffer");
        if let Memory::Mapped { host, .. } = &self.memory {
            self.ctx.stream.synchronize().map_err(|e| TransferError(e.to_string()))?;
            // SAFETY: inside the allocation (checked above); the device is done with it.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), host.add(at), src.len()) };
            return Ok(());
        }
        let stream = &self.ctx.stream;
        // SAFETY: the destination is `src.len()` bytes inside this buffer (checked above); the
        // copy is ordered on the stream, and waited for before `src` can go away.
        let done = stream.context().bind_to_thread().and_then(|()| unsafe { cudarc::driver::result::memcpy_htod_async(self.ptr() + at as u64, src, stream.cu_stream()) }).and_then(|()| stream.synchronize());
        done.map_err(|e| TransferError(e.to_string()))?;
        self.ctx.count(true, src.len());
        Ok(())
    }

    fn generation(&self) -> u64 {
        if self.written_by_device { self.ctx.generation.load(Ordering::Acquire) } else { 0 }
    }

    fn host_written(&self) {
        self.ctx.host_written.store(true, Ordering::Release);
    }
}

/// Named buffers of one owner (the neuron arenas, a block, a projection).
#[derive(Default)]
pub struct Buffers(Vec<(String, Arc<Buffer>)>);

impl Buffers {
    /// The address of column `name`, or 0 if the owner has none (a constant delay).
    pub fn ptr(&self, name: &str) -> u64 {
        self.0.iter().find(|(n, _)| *n == name).map_or(0, |(_, b)| b.ptr())
    }
}

/// The probes' layout in the staging slot: for each probe, its range in the flat site list.
pub struct ProbeLayout {
    pub ranges: Vec<std::ops::Range<usize>>,
    pub intervals: Vec<u64>,
}

pub struct DeviceNetwork {
    pub ctx: Arc<DeviceContext>,
    pub stream: Arc<CudaStream>,
    /// Neurons held (the arenas' length); `total` in the network, on every rank.
    pub n: u32,
    pub total: u32,
    pub slots: u32,
    /// The shards held.
    pub shards: state::Span,
    /// The per-neuron arenas, by column name.
    pub neurons: Buffers,
    /// Each synapse block's buffers, keyed by (shard, block index in the shard), in
    /// declaration order: the order of `block_table`.
    pub blocks: Vec<((usize, usize), Buffers)>,
    /// Each plastic projection's buffers.
    pub rules: Vec<Buffers>,
    /// Scratch of the step: spike flags, and as bits (a word per 32 neurons, what `deliver`
    /// pairs with on one GPU; across ranks `RankSpikes` keeps them), the compacted spike list
    /// (of all ranks: `total` long) and its count and block counts.
    pub fired: CudaSlice<u8>,
    pub fired_bits: CudaSlice<u32>,
    pub step: CudaSlice<u64>,
    /// Blocks of the `record` kernel finished this step: the last one advances `step`.
    pub recorded_blocks: CudaSlice<u32>,
    pub spikes: CudaSlice<u32>,
    pub n_spikes: CudaSlice<u32>,
    pub block_counts: CudaSlice<u32>,
    pub block_table: CudaSlice<BlockDesc>,
    /// `deliver`'s thread blocks spread over the blocks by their work ([`deliver_map`]), four
    /// words each; `deliver_blocks` of them (0 until [`DeviceNetwork::spread_deliver`]).
    pub deliver_map: CudaSlice<u32>,
    pub deliver_blocks: u32,
    /// Each block's synapses, plastic ones [`crate::build::PLASTIC_COST`] times: what spreads
    /// `deliver`'s thread blocks.
    block_work: Vec<f64>,
    pub plastic_blocks: CudaSlice<u32>,
    pub n_plastic_blocks: u32,
    /// Some rule is a power law or has a dendritic delay: delivery launches `deliver_full`
    /// (see fum.cu).
    pub full_deliver: bool,
    /// Trace decay tables of each rule (constants).
    pub decays: Vec<(CudaSlice<f32>, CudaSlice<f32>)>,
    pub rule_table: CudaSlice<RuleDesc>,
    pub lost_pairings: CudaSlice<u64>,
    pub probes: CudaSlice<ProbeDesc>,
    pub probe_layout: ProbeLayout,
    /// The neuron update's tables (`neurons` in fum.cu): a `PopDesc` per population held,
    /// ascending, and the Poisson sources each reaches; the per-neuron rates they point to.
    pub pop_table: CudaSlice<PopDesc>,
    pub n_pops: u32,
    /// The table as uploaded, and the population of each entry: a DC input that starts or
    /// stops rewrites its entry before the step (`set_currents`).
    pop_descs: Vec<PopDesc>,
    pop_of: Vec<usize>,
    pub src_table: CudaSlice<SrcDesc>,
    pub rates: Vec<CudaSlice<f64>>,
    /// The schedules of the spike sources held (`fum_kernels::source`), which `struct Source`
    /// points to.
    pub schedules: Vec<CudaSlice<u64>>,
    pub key: [u32; 2],
    pub stdp_enabled: bool,
    pub memory: DeviceMemory,
    pub synapses: u64,
    /// Synapses left in mapped host memory, if the network did not fit ([`host_tier`]).
    pub mapped: Option<MappedHost>,
    /// The device's copies of their most-read rows.
    pub cache: Option<crate::row_cache::RowCache>,
}

/// A block's per-synapse columns: what the host tier holds.
const SYNAPSE_COLUMNS: [&str; 3] = ["target", "delay", "weight"];

/// The blocks whose synapses stay in pinned host memory, mapped into the device's address
/// space, when the network is `excess` bytes larger than the device's limit: static blocks
/// first (a plastic block's rows also write their weights back over the bus), largest first,
/// until they hold twice the excess, so that the device memory they free beyond the excess
/// (as much again) holds the row cache of their most active rows ([`crate::row_cache`]).
/// Blocks under structural plasticity never go (a commit rebuilds them in device memory).
/// Twice, not all: under uniform activity a resident block serves every read of its bytes and
/// a cache only its share, while skewed activity finds its hot rows in the cache; all blocks
/// would make every cold row's read cross the bus. Their keys and bytes.
pub fn host_tier(world: &mut World, excess: u64) -> (Vec<(usize, usize)>, u64) {
    let mut blocks: Vec<(bool, u64, (usize, usize))> = Vec::new();
    for (shard, synapses) in world.query::<(&Shard, &SynapseBlocks)>().iter(world) {
        for (i, b) in synapses.0.iter().enumerate().filter(|(_, b)| !b.rewired && !b.is_empty()) {
            blocks.push((b.plastic.is_some(), b.synapse_bytes() as u64, (shard.index, i)));
        }
    }
    blocks.sort_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)).then(x.2.cmp(&y.2)));
    let (mut chosen, mut bytes) = (Vec::new(), 0);
    for (_, b, key) in blocks {
        if bytes >= 2 * excess {
            break;
        }
        chosen.push(key);
        bytes += b;
    }
    chosen.sort_unstable();
    (chosen, bytes)
}

/// The raw device address of a slice, for descriptor tables and kernel arguments.
pub fn ptr<T>(slice: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    slice.device_ptr(stream).0
}

/// Device bytes per neuron of the step's scratch: spike bit (1 B), compacted spike list and
/// compaction counts (4 + 4 B).
const SCRATCH_BYTES_PER_NEURON: u64 = 1 + 4 + 4;

/// Device bytes of every declared column, by what it holds: (neuron state and rings, synapses,
/// row pointers, plasticity state). Block columns are synapses except the row pointers (an
/// index) and a plastic block's per-target records and histories (plasticity).
fn declared_bytes(world: &mut World) -> DeviceMemory {
    let mut m = DeviceMemory::default();
    state::visit(world, &mut |d| {
        let bytes = (d.column.len() * d.column.element_bytes()) as u64;
        let kind = match (d.owner, d.name) {
            (state::Owner::Neurons { .. } | state::Owner::ShardComponent { .. }, _) => &mut m.neuron_bytes,
            (state::Owner::Block { .. }, "row_ptr") => &mut m.index_bytes,
            (state::Owner::Block { .. }, name) if PlasticSynapses::PER_TARGET.contains(&name) => &mut m.plasticity_bytes,
            (state::Owner::Projection { .. }, _) => &mut m.plasticity_bytes,
            (state::Owner::Block { .. }, _) => &mut m.synapse_bytes,
        };
        *kind += bytes;
    });
    m
}

fn decay_table(decay: &TraceDecay) -> Vec<f32> {
    (0..).map(|n| decay.after(n)).take_while(|&x| x != 0.0).collect()
}

/// Device memory the step allocates after the network's columns are placed: its graph, the
/// tables, the kernels' scratch, the row cache's tables. Kept free on a card the network fills.
const HEADROOM_BYTES: u64 = 1 << 30;

/// The device allocator's page: a buffer of its own takes whole pages.
const ALLOCATION_PAGE: u64 = 2 << 20;

impl DeviceNetwork {
    /// Device bytes a card must keep beyond [`DeviceNetwork::required_bytes`] for this network:
    /// [`HEADROOM_BYTES`], and the pages' round-up of every column of at least a page in a
    /// buffer of its own (synapse blocks, projections; neuron columns share arenas, and smaller
    /// buffers are assumed to share pages), which thousands of blocks make gigabytes (5M neurons
    /// in 306 shards, 20e9 synapses: without it the placement ran out of an H100's memory).
    pub fn slack_bytes(world: &mut World) -> u64 {
        let mut rounding = 0;
        state::visit(world, &mut |d| {
            let bytes = (d.column.len() * d.column.element_bytes()) as u64;
            if matches!(d.owner, state::Owner::Block { .. } | state::Owner::Projection { .. }) && bytes >= ALLOCATION_PAGE {
                rounding += bytes.next_multiple_of(ALLOCATION_PAGE) - bytes;
            }
        });
        HEADROOM_BYTES + rounding
    }

    /// Device bytes the network will take, computed before allocating anything, so that a
    /// network that does not fit fails with a message instead of a driver error midway.
    pub fn required_bytes(world: &mut World) -> u64 {
        let neurons = world.query::<&Shard>().iter(world).map(|s| s.neurons.len() as u64).sum::<u64>();
        declared_bytes(world).total() + SCRATCH_BYTES_PER_NEURON * neurons + (8 << 20)
    }

    /// The address of neuron arena `name`.
    pub fn neuron_ptr(&self, name: &str) -> u64 {
        self.neurons.ptr(name)
    }

    /// Copies the world's network to the device: attaches every declared column to its place
    /// (see the module comment) and uploads it, then builds the tables. A network that needs
    /// more than `limit_bytes` keeps synapses in mapped host memory ([`host_tier`]).
    pub fn upload_world(stream: Arc<CudaStream>, world: &mut World, limit_bytes: u64, device: &str) -> Result<DeviceNetwork, CudaError> {
        let needed = Self::required_bytes(world);
        let (mapped, mapped_bytes) = if needed > limit_bytes { host_tier(world, needed - limit_bytes) } else { Default::default() };
        if needed - mapped_bytes > limit_bytes {
            let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
            return Err(CudaError::OutOfMemory { needed: gib(needed - mapped_bytes), free: gib(limit_bytes), device: device.into() });
        }
        // With --host-memory, the host's copies are paged to a budget counting the pinned tier
        // before the tier is allocated (`crate::paging`).
        world.insert_resource(crate::paging::PinnedHostBytes(mapped_bytes));
        if let Some(budget) = world.remove_resource::<crate::paging::DeviceHostBudget>() {
            if let Some(line) = crate::paging::enable(world, &budget.options, budget.dt_ms).map_err(|e| CudaError::HostTier(Box::new(e)))? {
                eprintln!("{line}");
            }
        }
        let shards = state::Span::of(world).map_err(CudaError::Unsupported)?;
        let n = shards.len() as usize;
        let total = world.resource::<Populations>().0.last().map_or(0, |p| p.first + p.size) as usize;
        let ctx = Arc::new(DeviceContext {
            stream: stream.clone(),
            generation: AtomicU64::new(0),
            host_written: AtomicBool::new(false),
            staging: Mutex::new(Staging::new(stream.context(), STAGING_BYTES, false)?),
            plan_staging: Mutex::new(None),
            transfers: Mutex::new(Transfers::default()),
        });
        let step = world.resource::<crate::components::Clock>().step;
        let mut net = DeviceNetwork {
            ctx: ctx.clone(),
            stream: stream.clone(),
            n: n as u32,
            total: total as u32,
            slots: 1,
            shards,
            neurons: Buffers::default(),
            blocks: Vec::new(),
            rules: Vec::new(),
            fired: stream.alloc_zeros(n.max(1))?,
            fired_bits: stream.alloc_zeros(n.div_ceil(32).max(1))?,
            step: stream.clone_htod(&[step])?,
            recorded_blocks: stream.alloc_zeros(1)?,
            spikes: stream.alloc_zeros(total.max(1))?,
            n_spikes: stream.alloc_zeros(1)?,
            block_counts: stream.alloc_zeros(n.div_ceil(256).max(1))?,
            block_table: stream.alloc_zeros(1)?,
            deliver_map: stream.alloc_zeros(4)?,
            deliver_blocks: 0,
            block_work: Vec::new(),
            plastic_blocks: stream.alloc_zeros(1)?,
            n_plastic_blocks: 0,
            full_deliver: false,
            decays: Vec::new(),
            rule_table: stream.clone_htod(&[RuleDesc::default()])?,
            lost_pairings: ctx.upload(&[world.resource::<StdpHistoryOverflows>().0])?,
            probes: stream.clone_htod(&[ProbeDesc::default()])?,
            probe_layout: ProbeLayout { ranges: Vec::new(), intervals: Vec::new() },
            pop_table: stream.clone_htod(&[PopDesc::default()])?,
            n_pops: 0,
            pop_descs: Vec::new(),
            pop_of: Vec::new(),
            src_table: stream.clone_htod(&[SrcDesc::default()])?,
            rates: Vec::new(),
            schedules: Vec::new(),
            key: world.resource::<crate::components::Seed>().0.0,
            stdp_enabled: world.resource::<Plasticity>().enabled,
            memory: DeviceMemory::default(),
            synapses: 0,
            mapped: None,
            cache: None,
        };
        net.memory = declared_bytes(world);
        net.memory.neuron_bytes += SCRATCH_BYTES_PER_NEURON * n as u64 + 4 * (total - n) as u64;
        net.memory.synapse_bytes -= mapped_bytes;
        if !mapped.is_empty() {
            let synapses = world.query::<(&Shard, &SynapseBlocks)>().iter(world).flat_map(|(s, b)| b.0.iter().enumerate().map(move |(i, b)| ((s.index, i), b.len() as u64))).filter(|(key, _)| mapped.contains(key)).map(|(_, n)| n).sum();
            net.mapped = Some(MappedHost { needed_bytes: needed, limit_bytes, bytes: mapped_bytes, blocks: mapped.len() as u64, synapses, link_bytes_per_s: net.ctx.link_bandwidth()?, row_cache: Default::default() });
        }
        net.attach_columns(world, &mapped)?;
        if !mapped.is_empty() {
            let keys: Vec<_> = mapped.iter().map(|k| (*k, net.blocks.iter().position(|(b, _)| b == k).expect("a block on the device"))).collect();
            net.cache = crate::row_cache::RowCache::new(&stream, world, &keys, limit_bytes - (needed - mapped_bytes), net.stdp_enabled)?;
            net.memory.synapse_bytes += net.cache.as_ref().map_or(0, |c| c.bytes());
        }
        net.upload_populations(world)?;
        net.upload_tables(world)?;
        net.upload_probes(world)?;
        Ok(net)
    }

    /// Gives every declared column its place on the device and copies it there
    /// ([`state::mirror`]).
    fn attach_columns(&mut self, world: &mut World, mapped: &[(usize, usize)]) -> Result<(), CudaError> {
        let ctx = self.ctx.clone();
        let placed = state::mirror(world, &self.shards, &mut |bytes, written, owner, name| match owner {
            state::Owner::Block { shard, block } if mapped.contains(&(shard, block)) && SYNAPSE_COLUMNS.contains(&name) => Buffer::mapped(&ctx, bytes, written),
            _ => Buffer::new(&ctx, bytes, written),
        })?;
        self.neurons = Buffers(placed.neurons);
        self.blocks = placed.blocks.into_iter().map(|(key, named)| (key, Buffers(named.into_iter().map(|(n, b)| (n.to_string(), b)).collect()))).collect();
        self.rules = placed.projections.into_iter().map(|named| Buffers(named.into_iter().map(|(n, b)| (n.to_string(), b)).collect())).collect();
        self.slots = world.query::<&NeuronBlock>().iter(world).map(|b| b.ring_slots).max().unwrap_or(1) as u32;
        Ok(())
    }

    /// The tables of the neuron update and the Poisson input, over the neurons held.
    fn upload_populations(&mut self, world: &World) -> Result<(), CudaError> {
        let (base, end) = (self.shards.base(), self.shards.base() + self.n);
        let held = |first: u32, last: u32| first.max(base)..last.min(end);
        let mut sources = Vec::new();
        for s in &world.resource::<crate::components::PoissonSources>().0 {
            let range = held(s.target.start, s.target.end);
            if range.is_empty() {
                continue;
            }
            let rates = match &s.per_neuron {
                Some(r) => {
                    let r = &r[(range.start - s.target.start) as usize..(range.end - s.target.start) as usize];
                    self.memory.neuron_bytes += 16 * r.len() as u64;
                    self.rates.push(self.ctx.upload(r.as_flattened())?);
                    ptr(self.rates.last().expect("just pushed"), &self.stream)
                }
                None => 0,
            };
            sources.push(SrcDesc {
                stream: ((fum_kernels::rng::Purpose::PoissonInput as u32) << 16) | u32::from(s.index),
                first: range.start,
                end: range.end,
                inhibitory: u32::from(s.receptor == crate::model::Receptor::Inhibitory),
                mean: s.mean_per_step,
                exp_minus_mean: s.exp_minus_mean,
                rates,
                quantum: fum_kernels::delivery::to_fixed(s.weight),
            });
        }
        // Each population lists the sources that reach it, so a neuron scans only those.
        let (mut pops, mut srcs) = (Vec::new(), Vec::new());
        let step = world.resource::<crate::components::Clock>().step;
        self.pop_of.clear();
        for (pi, p) in world.resource::<Populations>().0.iter().enumerate() {
            let range = held(p.first, p.first + p.size);
            if range.is_empty() {
                continue;
            }
            self.pop_of.push(pi);
            let bits = |x: f32| x.to_bits();
            let padded = |w: [u32; 10]| {
                let mut all = [0; 16];
                all[..10].copy_from_slice(&w);
                all
            };
            let (kind, constants) = match p.dynamics {
                Dynamics::Cuba(c) => (0, padded([bits(c.e_l), bits(c.v_th), bits(c.v_reset), c.refractory_steps, bits(c.p22), bits(c.p20), bits(c.p21_ex), bits(c.p21_in), bits(c.p11_ex), bits(c.p11_in)])),
                Dynamics::Coba(c) => (
                    if c.euler { 2 } else { 1 },
                    padded([bits(c.e_l), bits(c.v_th), bits(c.v_reset), c.refractory_steps, bits(c.e_ex), bits(c.e_in), bits(c.g_l), bits(c.minus_h_over_c), bits(c.p11_ex), bits(c.p11_in)]),
                ),
                Dynamics::Alpha(c) => (
                    3,
                    [
                        bits(c.e_l), bits(c.v_th), bits(c.v_reset), c.refractory_steps, bits(c.p33), bits(c.p30), bits(c.p31_ex), bits(c.p31_in),
                        bits(c.p11_ex), bits(c.p11_in), bits(c.p32_ex), bits(c.p32_in), bits(c.p21_ex), bits(c.p21_in), bits(c.psc_ex), bits(c.psc_in),
                    ],
                ),
                Dynamics::SpikeSource => {
                    // The whole schedule: a thread finds its neuron's key by binary search.
                    let schedule = p.schedule.as_deref().expect("a spike source has a schedule");
                    self.memory.neuron_bytes += 8 * schedule.len() as u64;
                    self.schedules.push(self.ctx.upload(schedule)?);
                    let at = ptr(self.schedules.last().expect("just pushed"), &self.stream);
                    let mut words = [0; 16];
                    words[..4].copy_from_slice(&[at as u32, (at >> 32) as u32, schedule.len() as u32, p.first]);
                    (4, words)
                }
            };
            let src_first = srcs.len() as u32;
            srcs.extend(sources.iter().filter(|s| s.first < range.end && range.start < s.end));
            pops.push(PopDesc { first: range.start - base, end: range.end - base, kind, src_first, src_end: srcs.len() as u32, current_pa: p.current_at(step), bias_per_neuron: u32::from(p.bias_per_neuron), constants });
        }
        debug_assert!(pops.windows(2).all(|w| w[0].end <= w[1].first), "populations held are ascending and disjoint");
        self.n_pops = pops.len() as u32;
        self.pop_table = self.ctx.upload(&pops)?;
        self.pop_descs = pops;
        self.src_table = self.ctx.upload(&srcs)?;
        Ok(())
    }

    /// Enqueues, ahead of step `step`, the rewriting of each population entry whose current
    /// at that step (`Population::current_at`) is not the one uploaded: DC inputs that start
    /// or stop.
    pub fn set_currents(&mut self, populations: &Populations, step: u64) -> Result<(), CudaError> {
        for (i, &pi) in self.pop_of.iter().enumerate() {
            let current = populations.0[pi].current_at(step);
            if current.to_bits() != self.pop_descs[i].current_pa.to_bits() {
                self.pop_descs[i].current_pa = current;
                self.stream.memcpy_htod(&self.pop_descs[i..i + 1], &mut self.pop_table.slice_mut(i..i + 1))?;
            }
        }
        Ok(())
    }

    /// The rule and block tables the kernels read, from the attached columns' addresses.
    fn upload_tables(&mut self, world: &mut World) -> Result<(), CudaError> {
        let plasticity = world.resource::<Plasticity>();
        let mut rules = Vec::new();
        for (p, buffers) in plasticity.projections.iter().zip(&self.rules) {
            let (pre_decay, post_decay) = (decay_table(&p.pre_decay), decay_table(&p.post_decay));
            let decays = (self.ctx.upload(&pre_decay)?, self.ctx.upload(&post_decay)?);
            self.memory.plasticity_bytes += 4 * (pre_decay.len() + post_decay.len()) as u64;
            rules.push(RuleDesc {
                a_plus: p.rule.a_plus,
                a_minus: p.rule.a_minus,
                w_min: p.rule.w_min,
                w_max: p.rule.w_max,
                dependence: match p.rule.dependence {
                    WeightDependence::Additive => 0,
                    WeightDependence::Multiplicative => 1,
                    WeightDependence::PowerLaw { .. } => 2,
                },
                nearest: u32::from(p.rule.pairing == Pairing::Nearest),
                pre_decay_len: pre_decay.len() as u32,
                post_decay_len: post_decay.len() as u32,
                pre_decay: ptr(&decays.0, &self.stream),
                post_decay: ptr(&decays.1, &self.stream),
                pre_trace: buffers.ptr("pre_trace"),
                pre_last: buffers.ptr("pre_last_spike"),
                source_first: p.source.start,
                source_size: p.source.end - p.source.start,
                target_first: p.target.start,
                target_size: p.target.end - p.target.start,
                mu: match p.rule.dependence {
                    WeightDependence::PowerLaw { mu } => mu,
                    _ => 0.0,
                },
                dendritic: u32::from(p.rule.dendritic),
            });
            self.decays.push(decays);
        }
        self.full_deliver = rules.iter().any(|r| r.dependence == 2 || r.dendritic == 1);
        if !rules.is_empty() {
            self.rule_table = self.ctx.upload(&rules)?;
        }
        let (table, plastic_index) = self.block_descs(world);
        if !table.is_empty() {
            self.block_table = self.ctx.upload(&table)?;
        }
        self.n_plastic_blocks = plastic_index.len() as u32;
        if !plastic_index.is_empty() {
            self.plastic_blocks = self.ctx.upload(&plastic_index)?;
        }
        Ok(())
    }

    /// The block table from the blocks' current buffers, and the indices of the plastic blocks
    /// in it; counts the synapses.
    fn block_descs(&mut self, world: &mut World) -> (Vec<BlockDesc>, Vec<u32>) {
        let history_lens: Vec<u32> = world.resource::<Plasticity>().projections.iter().map(|p| p.history_len as u32).collect();
        let (ring_ex, ring_in) = (self.neuron_ptr("ring_ex"), self.neuron_ptr("ring_in"));
        let mut table = Vec::new();
        let mut plastic_index = Vec::new();
        self.block_work.clear();
        let entities = state::shards_in_order(world);
        self.synapses = 0;
        for ((shard, index), buffers) in &self.blocks {
            let range = self.shards.range(*shard);
            let block = &world.get::<SynapseBlocks>(entities[*shard - self.shards.first_shard]).expect("shard has synapses").0[*index];
            self.synapses += block.len() as u64;
            let mut desc = BlockDesc {
                row_ptr: buffers.ptr("row_ptr"),
                target: buffers.ptr("target"),
                delay: buffers.ptr("delay"),
                weight: buffers.ptr("weight"),
                ring: if block.receptor == crate::model::Receptor::Inhibitory { ring_in } else { ring_ex },
                source_first: block.source_first,
                source_size: block.source_size,
                shard_first: range.start,
                shard_size: range.len() as u32,
                local_first: range.start - self.shards.base(),
                row_lanes: row_lanes(block.len(), block.source_size),
                row_split: row_split(block.len(), block.source_size, row_lanes(block.len(), block.source_size)),
                const_delay: match block.delay {
                    crate::components::Delays::Constant(d) => u32::from(d),
                    crate::components::Delays::PerSynapse(_) => 0,
                },
                weight_f16: u32::from(block.weight.precision() == crate::model::WeightPrecision::F16),
                target_wide: u32::from(block.target.is_wide()),
                rule: NEVER,
                history_len: 1,
                ..Default::default()
            };
            self.block_work.push(block.len() as f64 * if block.plastic.is_some() { crate::build::PLASTIC_COST } else { 1.0 });
            if let Some(p) = &block.plastic {
                plastic_index.push(table.len() as u32);
                desc.rule = p.rule as u32;
                desc.history_len = history_lens[p.rule];
                desc.post = buffers.ptr("post");
                desc.history = buffers.ptr("post_history");
                desc.history_trace = buffers.ptr("post_history_trace");
            }
            if let Some(cache) = &mut self.cache {
                cache.describe(table.len(), &mut desc);
            }
            table.push(desc);
        }
        (table, plastic_index)
    }

    /// Spreads about `thread_blocks` thread blocks of `deliver` over the blocks by their work
    /// ([`deliver_map`]) and uploads the map.
    pub fn spread_deliver(&mut self, thread_blocks: u32) -> Result<(), CudaError> {
        let map = deliver_map(&self.block_work, thread_blocks);
        self.deliver_blocks = (map.len() / 4) as u32;
        if !map.is_empty() {
            self.deliver_map = self.ctx.upload(&map)?;
        }
        Ok(())
    }

    /// A new buffer of `bytes` (written by the device's steps if `written`), counted in the
    /// network's memory by [`DeviceNetwork::blocks_rebuilt`].
    pub fn buffer(&self, bytes: usize, written: bool) -> Result<Arc<Buffer>, CudaError> {
        Buffer::new(&self.ctx, bytes, written)
    }

    /// A buffer whose every byte the caller's kernels write before anything reads it (a
    /// commit's rebuilt column): no zeroing pass over gigabytes in the step's stream.
    pub fn buffer_to_fill(&self, bytes: usize, written: bool) -> Result<Arc<Buffer>, CudaError> {
        // SAFETY: the caller writes every byte before it is read (see above).
        let bytes = unsafe { self.ctx.stream.alloc::<u8>(bytes.max(16)) }?;
        Ok(Arc::new(Buffer { ctx: self.ctx.clone(), memory: Memory::Device(bytes), written_by_device: written }))
    }

    /// After a structural commit replaced buffers of `blocks` (named as the block's columns):
    /// the block and probe tables are rewritten in place (the captured step reads them through
    /// their addresses, so it needs no new capture), and the memory and synapse counts updated. The
    /// replaced buffers are freed in stream order, after the steps that read them.
    pub fn blocks_rebuilt(&mut self, world: &mut World, blocks: Vec<((usize, usize), state::Named<Buffer>)>) -> Result<(), CudaError> {
        for (key, named) in blocks {
            let buffers = &mut self.blocks.iter_mut().find(|(k, _)| *k == key).expect("a block on the device").1;
            for (name, buffer) in named {
                match buffers.0.iter_mut().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = buffer,
                    None => buffers.0.push((name.to_string(), buffer)),
                }
            }
        }
        let (table, _) = self.block_descs(world);
        if !table.is_empty() {
            self.stream.memcpy_htod(&table, &mut self.block_table)?;
            self.ctx.count(true, std::mem::size_of_val(&table[..]));
        }
        // The blocks' work changed with their synapses; `deliver`'s launch (captured) keeps its
        // thread blocks, the map spreads them again.
        if self.deliver_blocks > 0 {
            let map = deliver_map(&self.block_work, self.deliver_blocks);
            self.stream.memcpy_htod(&map, &mut self.deliver_map)?;
        }
        // Probed synapses moved (or went) with the commit: the probe table too, in place.
        let probes = self.probe_descs(world);
        if !probes.is_empty() {
            self.stream.memcpy_htod(&probes, &mut self.probes)?;
            self.ctx.count(true, std::mem::size_of_val(&probes[..]));
        }
        let declared = declared_bytes(world);
        (self.memory.synapse_bytes, self.memory.index_bytes) = (declared.synapse_bytes - self.mapped.map_or(0, |m| m.bytes) + self.cache.as_ref().map_or(0, |c| c.bytes()), declared.index_bytes);
        Ok(())
    }

    /// Buffer `name` of block `key`.
    pub fn block_buffer(&self, key: (usize, usize), name: &str) -> Option<&Arc<Buffer>> {
        self.blocks.iter().find(|(k, _)| *k == key)?.1 .0.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }

    fn upload_probes(&mut self, world: &World) -> Result<(), CudaError> {
        let table = self.probe_descs(world);
        if !table.is_empty() {
            self.probes = self.ctx.upload(&table)?;
        }
        Ok(())
    }

    /// The probe table from the recorder's sites; records the layout of each probe's values.
    fn probe_descs(&mut self, world: &World) -> Vec<ProbeDesc> {
        let recorder = world.resource::<Recorder>();
        let mut table = Vec::new();
        self.probe_layout = ProbeLayout { ranges: Vec::new(), intervals: Vec::new() };
        let block_base = ptr(&self.block_table, &self.stream);
        for probe in &recorder.probes {
            let start = table.len();
            for site in &probe.sites {
                let desc = match *site {
                    ProbeSite::Neuron { shard, local } => {
                        let column = match probe.variable {
                            ProbeVariable::SynEx => "syn_ex",
                            ProbeVariable::SynIn => "syn_in",
                            _ => "v",
                        };
                        ProbeDesc { source: self.neuron_ptr(column), index: self.shards.local(shard).start + local as u32, kind: 0, interval_steps: probe.interval_steps as u32, pad: 0 }
                    }
                    // Held by another rank's GPU: NaN here, gathered by rank 0 (`push_probe_rows`).
                    ProbeSite::Elsewhere => ProbeDesc { source: 0, index: 0, kind: 2, interval_steps: probe.interval_steps as u32, pad: 0 },
                    ProbeSite::Synapse { shard, block, synapse, .. } => {
                        let k = self.blocks.iter().position(|(key, _)| *key == (shard, block)).expect("every block is on the device");
                        let address = block_base + (k * std::mem::size_of::<BlockDesc>()) as u64;
                        let (index, kind) = synapse.map_or((0, 2), |k| (k as u32, 1));
                        ProbeDesc { source: address, index, kind, interval_steps: probe.interval_steps as u32, pad: 0 }
                    }
                };
                table.push(desc);
            }
            self.probe_layout.ranges.push(start..table.len());
            self.probe_layout.intervals.push(probe.interval_steps);
        }
        table
    }

    pub fn probe_sites(&self) -> usize {
        self.probe_layout.ranges.last().map_or(0, |r| r.end)
    }

    /// Brings the host copies `view` needs up to date: the declared columns through their
    /// mirrors ([`state::download`]), and the counter of lost STDP pairings.
    pub fn download_world(&mut self, world: &mut World, view: HostView) -> Result<(), CudaError> {
        state::download(world, view).map_err(|e| CudaError::Unsupported(e.to_string()))?;
        if view == HostView::Everything {
            world.resource_mut::<StdpHistoryOverflows>().0 = self.ctx.read(&self.lost_pairings, 1)?[0];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Rows of 62 synapses (one GPU of the 1M-neuron network's 16 shards) keep a warp per row;
    /// rows of 31, 16 and 9 (2 and 4 GPUs, the 7e9-synapse network) share a warp.
    #[test]
    fn long_rows_are_split_between_groups() {
        // The 1M network's rows (62 synapses into a shard): one group of 32 lanes each.
        assert_eq!(super::row_split(62_500_000, 1_000_000, 32), 1);
    }

    #[test]
    fn deliver_spreads_its_thread_blocks_by_work() {
        let map = super::deliver_map(&[480.0, 50.0, 0.0, 470.0], 104);
        let slices = |b: u32| map.chunks(4).filter(|m| m[0] == b).count();
        assert_eq!(map.len(), 4 * 104);
        assert_eq!((slices(0), slices(1), slices(2), slices(3)), (49, 6, 1, 48));
        assert!(map.chunks(4).all(|m| m[1] < m[2] && m[2] as usize == slices(m[0])), "each thread block knows its slice");
        // More blocks than thread blocks: one each.
        assert_eq!(super::deliver_map(&[1.0; 5], 3).len(), 4 * 5);
        assert_eq!(super::row_split(600_000, 1_000, 32), 5);
        assert_eq!(super::row_split(100_000_000, 1_000, 32), 16);
        assert_eq!(super::row_split(0, 0, 4), 1);
    }

    #[test]
    fn row_lanes_follow_half_the_mean_row() {
        assert_eq!(super::row_lanes(62_500_000, 1_000_000), 32);
        assert_eq!(super::row_lanes(31_000_000, 1_000_000), 16);
        assert_eq!(super::row_lanes(15_600_000, 1_000_000), 8);
        assert_eq!(super::row_lanes(9_000_000, 1_000_000), 8);
        assert_eq!(super::row_lanes(10, 1_000), 4);
        assert_eq!(super::row_lanes(0, 0), 4);
        assert_eq!(super::row_lanes(10_000, 10), 32);
    }
}
