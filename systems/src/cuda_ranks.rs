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
//! Concurrency contract: every rank makes the same collective calls in the same order
//! (`fum_engine::ranks`). Each step has one all-gather of the bits (NCCL's, replayed by the
//! graph on the step stream, or MPI's between the graphs, after the front has finished) and
//! one MPI all-gather on the host that carries each rank's wish to stop (with the bits, on the
//! MPI path), so that all ranks stop at the same step. Besides, on the host: a gather of probe
//! samples for each recorded step a probe is due (`CudaRunner::consume`, steps handled in order
//! on every rank) and an all-gather of spike counts at each structural snapshot. Both graphs
//! and the host copy of the gathered bits are ordered by the one step stream: the back graph is
//! launched only after the host has written the bits it reads.

use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, LaunchConfig, PinnedHostSlice, PushKernelArg, sys};
use cudarc::nccl::{Comm, Id};

use fum_engine::device::ptr;
use fum_engine::ranks::Transport;
use fum_kernels::cuda::{CudaError, Gpu, Kernels};

/// The spike exchange of one rank's GPU with the others'.
pub struct RankSpikes {
    transport: &'static dyn Transport,
    /// Words of bits per rank (the most any rank needs), and the number of ranks.
    words: u32,
    ranks: u32,
    /// Each rank's first global id.
    rank_first: CudaSlice<u32>,
    /// Spikes per 1024 gathered words, then their offsets (`scan_counts`).
    counts: CudaSlice<u32>,
    gather: Gather,
}

enum Gather {
    /// In the graph, on `stream` (forked from the step stream at `forked`, joined at `done`):
    /// this rank's bits and every rank's, in device memory.
    Nccl { comm: Comm, stream: Arc<CudaStream>, forked: CudaEvent, done: CudaEvent, bits: CudaSlice<u32>, gathered: CudaSlice<u32> },
    /// On the host: the same in mapped, pinned host memory (host and device addresses alike),
    /// and the event that marks the front graph's end.
    Host { _bits: PinnedHostSlice<u32>, bits_at: u64, _gathered: PinnedHostSlice<u32>, gathered_at: u64, received: Vec<u32>, packed: CudaEvent },
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
            let (bits, mut gathered) = (stream.alloc_zeros(words as usize)?, stream.alloc_zeros(total_words)?);
            stream.synchronize()?;
            // Once before the graph captures it: NCCL connects its peers at the first call.
            comm.all_gather(&bits, &mut gathered).map_err(nccl)?;
            side.synchronize()?;
            Gather::Nccl { comm, stream: side, forked: gpu.ctx.new_event(None)?, done: gpu.ctx.new_event(None)?, bits, gathered }
        } else {
            if transport.rank() == 0 {
                eprintln!("spikes between the GPUs go over MPI through host memory ({})", refused.as_deref().unwrap_or("NCCL is refused on another rank"));
            }
            let mapped = |len: usize| -> Result<(PinnedHostSlice<u32>, u64), CudaError> {
                // SAFETY: written (by a kernel or the host) before it is read.
                let mut slice = unsafe { gpu.ctx.alloc_pinned_with_flags::<u32>(len, sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE) }?;
                let at = slice.as_mut_ptr()? as u64;
                Ok((slice, at))
            };
            let ((bits, bits_at), (gathered, gathered_at)) = (mapped(words as usize)?, mapped(total_words)?);
            Gather::Host { _bits: bits, bits_at, _gathered: gathered, gathered_at, received: Vec::with_capacity(total_words), packed: gpu.ctx.new_event(None)? }
        };
        Ok(Some(RankSpikes {
            transport,
            words,
            ranks: ranks as u32,
            rank_first: stream.clone_htod(&first)?,
            counts: stream.alloc_zeros(total_words.div_ceil(1024).max(1))?,
            gather,
        }))
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

    /// Enqueues the packing of this rank's `n` spike flags, counting them in `schedules` slots
    /// of `spike_counts` (structural plasticity's; 0 and none where nothing counts), and, with
    /// NCCL, the gather, forked onto the gather's stream: `compact` joins it.
    pub fn pack(&mut self, k: &Kernels, stream: &Arc<CudaStream>, fired: u64, n: u32, spike_counts: u64, schedules: u32) -> Result<(), CudaError> {
        let words = self.words;
        let (on, bits) = match &self.gather {
            Gather::Nccl { stream: side, forked, bits, .. } => {
                forked.record(stream)?;
                side.wait(forked)?;
                (side, ptr(bits, side))
            }
            Gather::Host { bits_at, .. } => (stream, *bits_at),
        };
        // SAFETY: `fired` holds n flags, `bits` `words` words and `spike_counts` n per schedule; the
        // grid covers every word.
        unsafe { on.launch_builder(&k.pack_fired).arg(&fired).arg(&n).arg(&words).arg(&bits).arg(&spike_counts).arg(&schedules).launch(grid(words * 32, 256)) }?;
        if let Gather::Nccl { comm, stream: side, done, bits, gathered, .. } = &mut self.gather {
            comm.all_gather(bits, gathered).map_err(nccl)?;
            done.record(side)?;
        }
        Ok(())
    }

    /// Enqueues (with NCCL, after the gather) the compaction of the gathered bits into the
    /// step's ascending `spikes`.
    pub fn compact(&self, k: &Kernels, stream: &Arc<CudaStream>, spikes: u64, n_spikes: u64) -> Result<(), CudaError> {
        if let Gather::Nccl { done, .. } = &self.gather {
            stream.wait(done)?;
        }
        let (total, words) = (self.total_words(), self.words);
        let gathered = match &self.gather {
            Gather::Nccl { gathered, .. } => ptr(gathered, stream),
            Gather::Host { gathered_at, .. } => *gathered_at,
        };
        let (counts, first) = (ptr(&self.counts, stream), ptr(&self.rank_first, stream));
        let blocks = total.div_ceil(1024);
        let full = LaunchConfig { grid_dim: (blocks.max(1), 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: `gathered` holds `total` words, `counts` a count per 1024 of them, `spikes`
        // room for every neuron of the network.
        unsafe {
            stream.launch_builder(&k.count_bits).arg(&gathered).arg(&total).arg(&counts).launch(full)?;
            stream
                .launch_builder(&k.scan_counts)
                .arg(&counts).arg(&blocks).arg(&n_spikes)
                .launch(LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 })?;
            stream.launch_builder(&k.write_bit_spikes).arg(&gathered).arg(&total).arg(&words).arg(&first).arg(&counts).arg(&spikes).launch(full)?;
        }
        Ok(())
    }

    /// Between the front and back graphs on the MPI path (after the front's launch): waits for
    /// this rank's bits, gathers every rank's and writes them where the back graph reads them.
    /// On the NCCL path only agrees on stopping. Whether any rank wishes to stop (`stop`).
    pub fn exchange(&mut self, stream: &Arc<CudaStream>, stop: bool) -> Result<bool, CudaError> {
        let transport = self.transport;
        let (words, total) = (self.words as usize, self.total_words() as usize);
        match &mut self.gather {
            Gather::Nccl { .. } => Ok(transport.all_gather(&[], stop, &mut Vec::new())),
            Gather::Host { bits_at, gathered_at, received, packed, .. } => {
                packed.record(stream)?;
                packed.synchronize()?;
                // SAFETY: the front graph wrote these words before the event; the back graph
                // that reads `gathered` is launched after this returns.
                let (bits, gathered) = unsafe { (std::slice::from_raw_parts(*bits_at as *const u32, words), std::slice::from_raw_parts_mut(*gathered_at as *mut u32, total)) };
                let stop = transport.all_gather(bits, stop, received);
                gathered.copy_from_slice(received);
                Ok(stop)
            }
        }
    }
}

fn grid(n: u32, block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (n.div_ceil(block).max(1), 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

fn nccl(e: cudarc::nccl::result::NcclError) -> CudaError {
    CudaError::Unsupported(format!("NCCL: {e:?}"))
}
