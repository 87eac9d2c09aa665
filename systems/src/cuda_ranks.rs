//! The CUDA backend across ranks (`mpirun -np N fum run --backend cuda`): each rank steps its
//! shards on its GPU (`backend::cuda` opens the GPU of the rank's place on its host), and every
//! step the ranks' spikes meet, so that every GPU delivers from the same ascending list of
//! global ids that one GPU would: each rank packs its neurons' spike flags into bits (a word per
//! 32 neurons, as many words on every rank), the ranks' bits are gathered rank after rank, and
//! every rank compacts them into the list (`pack_fired`, `count_bits`, `write_bit_spikes` in
//! fum.cu). Bits rather than ids: their size is fixed, which a collective captured in a CUDA
//! graph needs, and a bit a neuron costs less than an id a spike once 1 neuron in 32 fires.
//!
//! The gather is NCCL's all-gather, inside the step's graph, when every rank has a GPU of its
//! own on one host: forked onto a stream of its own, beside the previous step's STDP
//! bookkeeping (`late_stdp` in systems/src/cuda.rs), and joined before the compaction. Otherwise (ranks sharing a GPU, ranks on several hosts, no libnccl, or
//! `FUM_EXCHANGE=mpi`) it is MPI's, on the host, between two graphs: the front (input, update,
//! packing into mapped host memory) and the back (compaction, delivery, plasticity, recording).
//!
//! In epochs (`fum_engine::components::Epochs`: the network's shortest delay is two steps or
//! more) the ranks gather once per epoch: each step packs its bits into the epoch's place for
//! it (`set_epochs`), and at the epoch's end the epoch's bits are gathered at once and each
//! rank replays the epoch's deliveries step by step (`CudaRunner::launch_replay`).
//!
//! Concurrency contract: every rank makes the same collective calls in the same order
//! (`fum_engine::ranks`). Each step has one MPI all-gather on the host that carries each rank's
//! wish to stop (with the bits, on the MPI path without epochs), so that all ranks stop at the
//! same step, and one all-gather of the bits: every step (NCCL's, replayed by the graph on the
//! step stream, or MPI's between the graphs, after the front has finished), or in epochs at each
//! epoch's end (and where the ranks agreed to stop), whose steps every rank knows alike.
//! Besides, on the host: a gather of probe samples for each recorded step a probe is due
//! (`CudaRunner::consume`, steps handled in order on every rank) and an all-gather of spike
//! counts at each structural snapshot. The graphs and the host copy of the gathered bits are
//! ordered by the one step stream: what reads the gathered bits is launched only after the host
//! has written them.

use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, LaunchConfig, PinnedHostSlice, PushKernelArg, sys};
use cudarc::nccl::{Comm, Id};

use fum_engine::device::ptr;
use fum_engine::ranks::Transport;
use fum_kernels::cuda::{CudaError, Gpu, Kernels};

/// The spike exchange of one rank's GPU with the others'.
pub struct RankSpikes {
    transport: &'static dyn Transport,
    /// Words of bits per rank and step (the most any rank needs), and the number of ranks.
    words: u32,
    ranks: u32,
    /// Steps of an epoch (1: the ranks gather every step).
    epoch_len: u32,
    /// This rank's bits of each step of the epoch, in device memory (what `deliver` pairs with).
    own: CudaSlice<u32>,
    /// Each rank's first global id.
    rank_first: CudaSlice<u32>,
    /// Spikes per 1024 gathered words, then their offsets (`scan_counts`).
    counts: CudaSlice<u32>,
    /// Blocks of `pack_fired` finished this step, in epochs, where its last block advances the
    /// clock.
    packed_blocks: CudaSlice<u32>,
    gather: Gather,
}

enum Gather {
    /// In the graph, on `stream` (forked from the step stream at `forked`, joined at `done`):
    /// every rank's bits (sent from `own`), in device memory.
    Nccl { comm: Comm, stream: Arc<CudaStream>, forked: CudaEvent, done: CudaEvent, gathered: CudaSlice<u32> },
    /// On the host: this rank's bits and every rank's in mapped, pinned host memory (host and
    /// device addresses alike), and the event that marks the packing's end.
    Host { bits: Mapped, gathered: Mapped, received: Vec<u32>, packed: CudaEvent },
}

/// Mapped, pinned host memory and its address (the host's and the device's alike).
struct Mapped {
    _slice: PinnedHostSlice<u32>,
    at: u64,
}

impl Mapped {
    fn new(gpu: &Gpu, len: usize) -> Result<Mapped, CudaError> {
        // SAFETY: written (by a kernel or the host) before it is read.
        let mut slice = unsafe { gpu.ctx.alloc_pinned_with_flags::<u32>(len.max(1), sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE) }?;
        let at = slice.as_mut_ptr()? as u64;
        Ok(Mapped { _slice: slice, at })
    }
}

// SAFETY: used by one thread at a time, as `CudaRunner` (the raw pinned pointers and NCCL's
// communicator have no thread affinity; the context is bound on every call).
unsafe impl Send for RankSpikes {}
unsafe impl Sync for RankSpikes {}

/// The PCI address (domain, bus, device) of `gpu`: the same physical GPU whatever ordinal
/// `CUDA_VISIBLE_DEVICES` gives it in each process.
fn pci_address(gpu: &Gpu) -> Result<u32, CudaError> {
    use sys::CUdevice_attribute::*;
    let at = |a| gpu.ctx.attribute(a).map(|v| v as u32);
    Ok(at(CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)? << 16 | at(CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)? << 8 | at(CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?)
}

/// Why NCCL cannot carry this rank's spikes, if it cannot. `gpus` is every rank's GPU (its PCI
/// address): NCCL needs a GPU per rank, and a cluster that gives each rank one GPU through
/// `CUDA_VISIBLE_DEVICES` shows each rank a single device, so addresses, not device counts,
/// tell whether ranks share one.
fn nccl_refused(transport: &dyn Transport, gpus: &[u32]) -> Option<String> {
    let local_size = transport.local().1;
    if std::env::var("FUM_EXCHANGE").is_ok_and(|v| v == "mpi") {
        return Some("FUM_EXCHANGE=mpi".into());
    }
    if local_size != transport.size() {
        return Some("the ranks run on several hosts".into());
    }
    let mut distinct = gpus.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < gpus.len() {
        return Some(format!("{} ranks share {} GPU{}", gpus.len(), distinct.len(), if distinct.len() == 1 { "" } else { "s" }));
    }
    // SAFETY: only probes whether the shared library can be loaded.
    if !unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Some(format!("rank {}: libnccl could not be loaded", transport.rank()));
    }
    None
}

impl RankSpikes {
    /// The exchange of a rank holding neurons `base .. base + n` on `gpu`; `None` for a process
    /// on its own. A collective: every rank calls it at the same point.
    pub fn new(gpu: &Gpu, stream: &Arc<CudaStream>, base: u32, n: u32) -> Result<Option<RankSpikes>, CudaError> {
        let Some(transport) = fum_engine::ranks::transport() else { return Ok(None) };
        let ranks = transport.size();
        let mut spans = Vec::new();
        transport.all_gather(&[base, n], false, &mut spans);
        let words = spans.chunks(2).map(|s| s[1].div_ceil(32)).max().unwrap_or(0).max(1);
        let first: Vec<u32> = spans.chunks(2).map(|s| s[0]).collect();
        let total_words = words as usize * ranks;
        let mut gpus = Vec::new();
        transport.all_gather(&[pci_address(gpu)?], false, &mut gpus);
        // Every rank must take the same path: NCCL only if it suits them all.
        let refused = nccl_refused(transport, &gpus);
        let own = stream.alloc_zeros::<u32>(words as usize)?;
        let mut votes = [u64::from(refused.is_some())];
        transport.sum(&mut votes);
        let gather = if votes[0] == 0 {
            let mut id = [0u8; 128];
            if transport.rank() == 0 {
                id = Id::new().map_err(nccl)?.internal().map(|c| c as u8);
            }
            transport.broadcast(&mut id);
            gpu.ctx.bind_to_thread()?;
            // The gather's stream goes first, as the step's does: every step waits for it.
            let (_, greatest) = cudarc::driver::result::stream::get_priority_range()?;
            let side = gpu.ctx.new_stream_with_priority(greatest)?;
            let comm = Comm::from_rank(side.clone(), transport.rank(), ranks, Id::uninit(id.map(|b| b as _))).map_err(nccl)?;
            let mut gathered = stream.alloc_zeros(total_words)?;
            stream.synchronize()?;
            // Once before the graph captures it: NCCL connects its peers at the first call.
            comm.all_gather(&own, &mut gathered).map_err(nccl)?;
            side.synchronize()?;
            Gather::Nccl { comm, stream: side, forked: gpu.ctx.new_event(None)?, done: gpu.ctx.new_event(None)?, gathered }
        } else {
            if transport.rank() == 0 {
                eprintln!("spikes between the GPUs go over MPI through host memory ({})", refused.as_deref().unwrap_or("NCCL is refused on another rank"));
            }
            Gather::Host { bits: Mapped::new(gpu, words as usize)?, gathered: Mapped::new(gpu, total_words)?, received: Vec::with_capacity(total_words), packed: gpu.ctx.new_event(None)? }
        };
        Ok(Some(RankSpikes {
            transport,
            words,
            ranks: ranks as u32,
            epoch_len: 1,
            own,
            rank_first: stream.clone_htod(&first)?,
            counts: stream.alloc_zeros(total_words.div_ceil(1024).max(1))?,
            packed_blocks: stream.alloc_zeros(1)?,
            gather,
        }))
    }

    /// Gathers once per epoch of `len` steps from now on: room for an epoch's bits. Called
    /// before the epoch graphs are captured, with the same `len` on every rank.
    pub fn set_epochs(&mut self, gpu: &Gpu, stream: &Arc<CudaStream>, len: u32) -> Result<(), CudaError> {
        let (words, total) = (self.words as usize * len as usize, self.total_words() as usize * len as usize);
        self.epoch_len = len;
        self.own = stream.alloc_zeros(words)?;
        match &mut self.gather {
            Gather::Nccl { gathered, .. } => *gathered = stream.alloc_zeros(total)?,
            Gather::Host { bits, gathered, received, .. } => {
                (*bits, *gathered) = (Mapped::new(gpu, words)?, Mapped::new(gpu, total)?);
                received.reserve(total);
            }
        }
        Ok(())
    }

    /// The device address of this rank's bits of the epoch's step `slot` (0 without epochs).
    pub fn own_bits(&self, stream: &Arc<CudaStream>, slot: u32) -> u64 {
        ptr(&self.own, stream) + u64::from(slot * self.words) * 4
    }

    /// Whether the step is two graphs with the MPI gather between them.
    pub fn on_host(&self) -> bool {
        matches!(self.gather, Gather::Host { .. })
    }

    /// Which path the spikes take, for run.json.
    pub fn path(&self) -> &'static str {
        if self.on_host() { "mpi" } else { "nccl" }
    }

    fn total_words(&self) -> u32 {
        self.words * self.ranks
    }

    /// Enqueues the packing of this rank's `n` spike flags (into the epoch's place for the
    /// step), counting them in `schedules` slots of `spike_counts` (structural plasticity's; 0
    /// and none where nothing counts), and, with NCCL without epochs, the gather, forked onto
    /// the gather's stream: `join` joins it. In epochs the packing ends the step: it advances
    /// the clock.
    pub fn pack(&mut self, k: &Kernels, stream: &Arc<CudaStream>, step: u64, fired: u64, n: u32, (spike_counts, schedules): (u64, u32)) -> Result<(), CudaError> {
        let (words, epoch_len) = (self.words, self.epoch_len);
        let every_step = epoch_len == 1;
        let (on, host_bits) = match &self.gather {
            Gather::Nccl { stream: side, forked, .. } if every_step => {
                forked.record(stream)?;
                side.wait(forked)?;
                (side, 0u64)
            }
            Gather::Nccl { .. } => (stream, 0),
            Gather::Host { bits, .. } => (stream, bits.at),
        };
        let own = ptr(&self.own, on);
        let done = if every_step { 0 } else { ptr(&self.packed_blocks, on) };
        // SAFETY: `fired` holds n flags, `own` (and `host_bits`) `words` words per step of the
        // epoch and `spike_counts` n per schedule; the grid covers every word.
        unsafe {
            on.launch_builder(&k.pack_fired)
                .arg(&step).arg(&epoch_len).arg(&fired).arg(&n).arg(&words).arg(&own).arg(&host_bits).arg(&spike_counts).arg(&schedules).arg(&done)
                .launch(grid(words * 32, 256))
        }?;
        if every_step && let Gather::Nccl { comm, stream: side, done, gathered, .. } = &mut self.gather {
            comm.all_gather(&self.own, gathered).map_err(nccl)?;
            done.record(side)?;
        }
        Ok(())
    }

    /// Enqueues (NCCL, in epochs) the gather of the `steps` steps of the epoch from its place
    /// `first` on, forked onto the gather's stream and joined: every rank's bits of a step,
    /// rank after rank, `steps` x `words` words apart.
    pub fn gather_epoch(&mut self, stream: &Arc<CudaStream>, first: u32, steps: u32) -> Result<(), CudaError> {
        let words = self.words as usize;
        let (from, len) = (first as usize * words, steps as usize * words);
        let Gather::Nccl { comm, stream: side, forked, done, gathered } = &mut self.gather else { return Ok(()) };
        forked.record(stream)?;
        side.wait(forked)?;
        let mut to = gathered.slice_mut(..len * self.ranks as usize);
        comm.all_gather(&self.own.slice(from..from + len), &mut to).map_err(nccl)?;
        done.record(side)?;
        stream.wait(done)?;
        Ok(())
    }

    /// Joins (NCCL, every step) the gather that `pack` forked.
    pub fn join(&self, stream: &Arc<CudaStream>) -> Result<(), CudaError> {
        if let Gather::Nccl { done, .. } = &self.gather
            && self.epoch_len == 1
        {
            stream.wait(done)?;
        }
        Ok(())
    }

    /// Enqueues the compaction of the gathered bits of step `at` of the `steps` gathered into
    /// the ascending `spikes` (without epochs: 0 of 1).
    pub fn compact(&self, k: &Kernels, stream: &Arc<CudaStream>, spikes: u64, n_spikes: u64, at: u32, steps: u32) -> Result<(), CudaError> {
        let (total, words) = (self.total_words(), self.words);
        let gathered = match &self.gather {
            Gather::Nccl { gathered, .. } => ptr(gathered, stream),
            Gather::Host { gathered, .. } => gathered.at,
        } + u64::from(at * words) * 4;
        let stride = steps * words;
        let (counts, first) = (ptr(&self.counts, stream), ptr(&self.rank_first, stream));
        let blocks = total.div_ceil(1024);
        let full = LaunchConfig { grid_dim: (blocks.max(1), 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: `gathered` holds `steps` x `total` words from the step's first, `counts` a
        // count per 1024 of them, `spikes` room for every neuron of the network.
        unsafe {
            stream.launch_builder(&k.count_bits).arg(&gathered).arg(&total).arg(&words).arg(&stride).arg(&counts).launch(full)?;
            stream
                .launch_builder(&k.scan_counts)
                .arg(&counts).arg(&blocks).arg(&n_spikes)
                .launch(LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 })?;
            stream.launch_builder(&k.write_bit_spikes).arg(&gathered).arg(&total).arg(&words).arg(&stride).arg(&first).arg(&counts).arg(&spikes).launch(full)?;
        }
        Ok(())
    }

    /// Between the front and back graphs on the MPI path without epochs (after the front's
    /// launch): waits for this rank's bits, gathers every rank's and writes them where the back
    /// graph reads them. Otherwise only agrees on stopping. Whether any rank wishes to stop
    /// (`stop`).
    pub fn exchange(&mut self, stream: &Arc<CudaStream>, stop: bool) -> Result<bool, CudaError> {
        if self.epoch_len > 1 || !self.on_host() {
            return Ok(self.transport.all_gather(&[], stop, &mut Vec::new()));
        }
        self.host_gather(stream, 0, 1, stop)
    }

    /// On the MPI path in epochs, at an epoch's end (before its replay is launched): gathers the
    /// `steps` steps' bits from the epoch's place `first` on, as `gather_epoch` does with NCCL.
    pub fn exchange_epoch(&mut self, stream: &Arc<CudaStream>, first: u32, steps: u32) -> Result<(), CudaError> {
        if self.on_host() {
            self.host_gather(stream, first, steps, false)?;
        }
        Ok(())
    }

    fn host_gather(&mut self, stream: &Arc<CudaStream>, first: u32, steps: u32, stop: bool) -> Result<bool, CudaError> {
        let transport = self.transport;
        let words = self.words as usize;
        let (from, len) = (first as usize * words, steps as usize * words);
        let total = len * self.ranks as usize;
        let Gather::Host { bits, gathered, received, packed } = &mut self.gather else { unreachable!("the MPI path") };
        packed.record(stream)?;
        packed.synchronize()?;
        // SAFETY: the packing wrote these words before the event; what reads `gathered` is
        // launched after this returns.
        let (sent, into) = unsafe { (std::slice::from_raw_parts((bits.at as *const u32).add(from), len), std::slice::from_raw_parts_mut(gathered.at as *mut u32, total)) };
        let stop = transport.all_gather(sent, stop, received);
        into.copy_from_slice(received);
        Ok(stop)
    }
}

fn grid(n: u32, block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (n.div_ceil(block).max(1), 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

fn nccl(e: cudarc::nccl::result::NcclError) -> CudaError {
    CudaError::Unsupported(format!("NCCL: {e:?}"))
}
