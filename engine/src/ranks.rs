//! Ranks: the processes of one multi-process run (`mpirun -np N fum run ...`, built with the
//! cargo feature `mpi`). Each rank builds and steps the shards `crate::partition` assigns it
//! (a contiguous range of about equal cost, or METIS's groups); the spikes of every step are
//! all-gathered, so that every rank delivers from the same ascending list of global ids (or,
//! where the partition makes it pay, each goes only to the ranks that read it and to rank 0:
//! `crate::routing`), and rank 0 records and writes the outputs and the checkpoints, which gather every rank's shards
//! (`Snapshot::gather`); a checkpoint resumes on any number of ranks, each restoring the shards
//! it owns. Global ids key every random number, so the spikes are those of one process,
//! whatever the number of ranks.
//! The transport is MPI's: the `fum` crate's `mpi` module implements [`Transport`] and installs
//! it ([`set_transport`]) when the process was started by `mpirun`; a process on its own has
//! none, and is rank 0 of 1.
//!
//! Concurrency contract: every rank makes the same collective calls in the same order: the
//! sums of the network's figures, on CPUs the routes' two all-to-alls and sum
//! (`crate::routing`), and the gather of the partition, once, before the first step (and, on
//! GPUs, the setup of the spike exchange when the backend installs, `fum_systems::cuda_ranks`);
//! one all-gather per step, or one all-to-all where routes are used (in `Stage::Exchange`, or
//! beside the GPUs' exchange; on CPUs with `--time-stages` after a barrier, which times the wait
//! for the slowest rank), or, on CPUs in epochs ([`crate::components::Epochs`]: the ends fall at
//! the same steps on every rank), no collective: at each epoch's end a message to every other
//! rank, point to point and not waited for ([`Transport::start_exchange`]), received at the
//! next epoch's end while the epoch between is computed (at once where the state must be whole
//! or a rank asked to stop); on GPUs in epochs, the per-step all-gather carries only the wish
//! to stop, and the spikes go in one more all-gather (NCCL's or MPI's) at each epoch's end.
//! Messages between two ranks arrive in the order they were sent, so
//! they need no common order with the collectives around them. Every exchange carries each
//! rank's wish to stop, so that all ranks stop at the same step boundary
//! ([`crate::components::SpikeExchange::stop`]); an all-gather of spike
//! counts at each structural snapshot, a gather of probe samples at each step a probe is due
//! (on CPUs in `Stage::Record`, after the exchange; on GPUs as the step's record comes back to
//! the host, a few steps late, in the same order on every rank), and a gather of the ranks'
//! shards at each checkpoint,
//! which fall at the same steps on every rank; the sums and gathers of the report at the end.
//! A rank that fails or panics otherwise ends every rank at once ([`Transport::abort`]) rather
//! than leave the others waiting in a collective.

use std::sync::OnceLock;

/// What a multi-process run needs of its message-passing library.
pub trait Transport: Send + Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Every rank's `local` spikes, in rank order, into `all`; whether any rank passed `stop`.
    fn all_gather(&self, local: &[u32], stop: bool, all: &mut Vec<u32>) -> bool;
    /// `send[r]` to rank `r` (a list per rank; this rank's own is not sent), and what every
    /// other rank sent this one into `received`, in rank order, `counts[r]` of it from rank `r`
    /// (0 from this rank); whether any rank passed `stop`.
    fn all_to_all(&self, send: &[Vec<u32>], stop: bool, received: &mut Vec<u32>, counts: &mut Vec<usize>) -> bool;
    /// Starts an exchange of spike lists and returns at once: `outgoing` goes out while the
    /// caller computes, moved on by [`InFlight::progress`]. Every rank starts its exchanges in
    /// the same order and finishes them in that order.
    fn start_exchange(&self, outgoing: Outgoing, stop: bool) -> Box<dyn InFlight>;
    /// Waits until every rank has called it.
    fn barrier(&self);
    /// Element-wise sums over the ranks, in place.
    fn sum(&self, values: &mut [u64]);
    /// Every rank's `mine`, in rank order, at rank 0; `None` on the others.
    fn gather(&self, mine: &[u8]) -> Option<Vec<Vec<u8>>>;
    /// Rank 0's `bytes`, into every rank's.
    fn broadcast(&self, bytes: &mut [u8]);
    /// This rank's place among the ranks of its host, and their number (a rank per GPU).
    fn local(&self) -> (usize, usize);
    /// Ends the process of every rank at once with `code` (after an error on this one).
    fn abort(&self, code: i32) -> !;
}

/// The lists of an exchange ([`Transport::start_exchange`]): one list to every other rank, or
/// a list for each rank (this rank's own is not sent).
pub enum Outgoing {
    ToAll(Vec<u32>),
    ToEach(Vec<Vec<u32>>),
}

/// What an exchange brought: what each other rank sent this one, in rank order, `counts[r]` of
/// it from rank `r` (0 from this rank); whether any rank passed `stop`.
#[derive(Clone, Debug, Default)]
pub struct Exchanged {
    pub received: Vec<u32>,
    pub counts: Vec<usize>,
    pub stop: bool,
}

/// An exchange started and not complete yet. MPI moves a nonblocking collective on only inside
/// its calls, so the owner calls [`InFlight::progress`] between steps.
pub trait InFlight: Send + Sync {
    fn progress(&mut self);
    /// Waits for the exchange to complete.
    fn finish(self: Box<Self>) -> Exchanged;
}

static TRANSPORT: OnceLock<Box<dyn Transport>> = OnceLock::new();

/// Installs the process's transport (once, at start-up, before anything is built).
pub fn set_transport(transport: Box<dyn Transport>) {
    assert!(TRANSPORT.set(transport).is_ok(), "the transport is set once");
}

/// The transport of a run of several ranks; `None` for a process on its own.
pub fn transport() -> Option<&'static dyn Transport> {
    TRANSPORT.get().map(|t| &**t).filter(|t| t.size() > 1)
}

/// This process's rank and the number of ranks.
pub fn rank_and_size() -> (usize, usize) {
    transport().map_or((0, 1), |t| (t.rank(), t.size()))
}

/// Whether this process writes the run's files (rank 0, or a process on its own).
pub fn writes() -> bool {
    rank_and_size().0 == 0
}
