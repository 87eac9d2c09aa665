//! The MPI transport of a run of several processes (`fum_engine::ranks`), through rsmpi and the
//! system's MPI (Debian: `libopenmpi-dev openmpi-bin`; cargo feature `mpi`). MPI starts only in
//! a process that `mpirun` (or another MPI launcher) started; any other stays one rank without
//! it.

use fum_engine::ranks::{Exchanged, InFlight, Outgoing};
use mpi::Count;
use mpi::collective::SystemOperation;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

/// MPI_COMM_WORLD as [`fum_engine::ranks::Transport`].
struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Rank and size among the processes of this host.
    local: (usize, usize),
}

// SAFETY: MPI was initialised with MPI_THREAD_MULTIPLE or MPI_THREAD_SERIALIZED (`start`); the
// ranks' contract (`fum_engine::ranks`) has one collective at a time in each process (the
// step's exchange, or the run loop's sums between steps, never both).
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

impl fum_engine::ranks::Transport for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather(&self, local: &[u32], stop: bool, all: &mut Vec<u32>) -> bool {
        // Each rank's count, doubled, with its wish to stop in the low bit.
        let mine = [Count::try_from(local.len()).expect("fewer than 2^30 spikes a step") * 2 + Count::from(stop)];
        let mut counts = vec![0 as Count; self.size];
        self.world.all_gather_into(&mine[..], &mut counts[..]);
        let stop = counts.iter().any(|c| c & 1 == 1);
        let counts: Vec<Count> = counts.iter().map(|c| c >> 1).collect();
        let displs: Vec<Count> = counts.iter().scan(0, |at, &c| Some(std::mem::replace(at, *at + c))).collect();
        all.clear();
        all.resize(counts.iter().map(|&c| c as usize).sum(), 0);
        let mut into = PartitionMut::new(&mut all[..], counts, &displs[..]);
        self.world.all_gather_varcount_into(local, &mut into);
        stop
    }

    fn all_to_all(&self, send: &[Vec<u32>], stop: bool, received: &mut Vec<u32>, counts: &mut Vec<usize>) -> bool {
        // Each list's length, doubled, with the wish to stop in the low bit; then the lists.
        let lengths: Vec<Count> = (0..self.size)
            .map(|r| {
                let len = if r == self.rank { 0 } else { Count::try_from(send[r].len()).expect("fewer than 2^30 spikes a message") };
                len * 2 + Count::from(stop)
            })
            .collect();
        let mut heard = vec![0 as Count; self.size];
        self.world.all_to_all_into(&lengths[..], &mut heard[..]);
        let stop = heard.iter().any(|c| c & 1 == 1);
        let from: Vec<Count> = heard.iter().map(|c| c >> 1).collect();
        let into: Vec<Count> = lengths.iter().map(|c| c >> 1).collect();
        let flat: Vec<u32> = send.iter().enumerate().filter(|&(r, _)| r != self.rank).flat_map(|(_, s)| s.iter().copied()).collect();
        let displs = |c: &[Count]| -> Vec<Count> { c.iter().scan(0, |at, &n| Some(std::mem::replace(at, *at + n))).collect() };
        received.clear();
        received.resize(from.iter().map(|&c| c as usize).sum(), 0);
        let out = Partition::new(&flat[..], &into[..], displs(&into));
        let mut inbox = PartitionMut::new(&mut received[..], &from[..], displs(&from));
        self.world.all_to_all_varcount_into(&out, &mut inbox);
        counts.clear();
        counts.extend(from.iter().map(|&c| c as usize));
        stop
    }

    fn start_exchange(&self, outgoing: Outgoing, stop: bool) -> Box<dyn InFlight> {
        // Each message starts with the wish to stop.
        let with_stop = |list: &[u32]| -> Vec<u32> { std::iter::once(u32::from(stop)).chain(list.iter().copied()).collect() };
        let messages: Vec<(usize, std::sync::Arc<Vec<u32>>)> = match outgoing {
            Outgoing::ToAll(list) => {
                let message = std::sync::Arc::new(with_stop(&list));
                (0..self.size).filter(|&r| r != self.rank).map(|r| (r, message.clone())).collect()
            }
            Outgoing::ToEach(lists) => lists.iter().enumerate().filter(|&(r, _)| r != self.rank).map(|(r, l)| (r, std::sync::Arc::new(with_stop(l)))).collect(),
        };
        let mut sent = Box::new(Sent { comm: self.world.as_raw(), rank: self.rank, size: self.size, stop, requests: vec![unsafe { ffi::RSMPI_REQUEST_NULL }; messages.len()], messages });
        let ids = u32::equivalent_datatype().as_raw();
        for (i, (to, message)) in sent.messages.iter().enumerate() {
            // SAFETY: the message lives in `sent` until the send completes (`finish` waits).
            unsafe { ffi::MPI_Isend(message.as_ptr().cast(), count(message.len()), ids, *to as Count, EXCHANGE_TAG, sent.comm, &mut sent.requests[i]) };
        }
        sent
    }

    fn barrier(&self) {
        self.world.barrier();
    }

    fn sum(&self, values: &mut [u64]) {
        let mine = values.to_vec();
        self.world.all_reduce_into(&mine[..], values, SystemOperation::sum());
    }

    fn gather(&self, mine: &[u8]) -> Option<Vec<Vec<u8>>> {
        // An empty Vec<u8> points at address 1, which Open MPI reads as MPI_IN_PLACE (an error
        // on any rank but the root): an empty part is sent from a real address.
        let empty = [0u8; 1];
        let mine = if mine.is_empty() { &empty[..0] } else { mine };
        let root = self.world.process_at_rank(0);
        let Ok(count) = Count::try_from(mine.len()) else {
            eprintln!("error: rank {}: its part of a checkpoint is {} bytes; MPI gathers at most 2^31 - 1 bytes a rank (use more ranks)", self.rank, mine.len());
            self.world.abort(1);
        };
        if self.rank > 0 {
            root.gather_into(&count);
            root.gather_varcount_into(mine);
            return None;
        }
        let mut counts = vec![0 as Count; self.size];
        root.gather_into_root(&count, &mut counts[..]);
        let displs: Vec<Count> = counts.iter().scan(0, |at, &c| Some(std::mem::replace(at, *at + c))).collect();
        let mut all = vec![0u8; counts.iter().map(|&c| c as usize).sum()];
        root.gather_varcount_into_root(mine, &mut PartitionMut::new(&mut all[..], counts.clone(), &displs[..]));
        Some(counts.iter().zip(&displs).map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec()).collect())
    }

    fn broadcast(&self, bytes: &mut [u8]) {
        self.world.process_at_rank(0).broadcast_into(bytes);
    }

    fn local(&self) -> (usize, usize) {
        self.local
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

fn count(len: usize) -> Count {
    Count::try_from(len).expect("fewer than 2^30 spikes a message")
}

/// The tag of epoch messages ([`Transport::start_exchange`]); fum sends no other messages.
const EXCHANGE_TAG: i32 = 7;

/// An exchange started by [`Transport::start_exchange`]: a message to each other rank, sent
/// point to point and without waiting. Collectives would have to be started in the same order
/// on every rank, which a second collective posted once the lengths are known (at whatever
/// step they arrive) cannot promise; messages between two ranks with one tag arrive in the
/// order they were sent, so each epoch's are received in turn, their lengths probed.
struct Sent {
    comm: ffi::MPI_Comm,
    rank: usize,
    size: usize,
    stop: bool,
    /// Each destination and its message, kept until the send completes.
    messages: Vec<(usize, std::sync::Arc<Vec<u32>>)>,
    requests: Vec<ffi::MPI_Request>,
}

// SAFETY: the requests and buffers belong to this exchange alone, and the step thread alone
// moves it on (MPI was initialised for threads: `start`).
unsafe impl Send for Sent {}
unsafe impl Sync for Sent {}

impl InFlight for Sent {
    fn progress(&mut self) {
        let mut flag = 0;
        // SAFETY: requests this exchange posted (completed ones are MPI_REQUEST_NULL).
        unsafe { ffi::MPI_Testall(self.requests.len() as Count, self.requests.as_mut_ptr(), &mut flag, ffi::RSMPI_STATUSES_IGNORE) };
    }

    fn finish(mut self: Box<Self>) -> Exchanged {
        let ids = u32::equivalent_datatype().as_raw();
        let mut exchanged = Exchanged { received: Vec::new(), counts: vec![0; self.size], stop: self.stop };
        for from in (0..self.size).filter(|&r| r != self.rank) {
            // SAFETY: probing, then receiving the probed message into a buffer of its length.
            let message = unsafe {
                let mut handle = ffi::RSMPI_MESSAGE_NULL;
                let mut status: ffi::MPI_Status = std::mem::zeroed();
                ffi::MPI_Mprobe(from as Count, EXCHANGE_TAG, self.comm, &mut handle, &mut status);
                let mut len: Count = 0;
                ffi::MPI_Get_count(&status, ids, &mut len);
                let mut message = vec![0u32; len as usize];
                ffi::MPI_Mrecv(message.as_mut_ptr().cast(), len, ids, &mut handle, ffi::RSMPI_STATUS_IGNORE);
                message
            };
            exchanged.stop |= message[0] != 0;
            exchanged.counts[from] = message.len() - 1;
            exchanged.received.extend_from_slice(&message[1..]);
        }
        // SAFETY: requests this exchange posted.
        unsafe { ffi::MPI_Waitall(self.requests.len() as Count, self.requests.as_mut_ptr(), ffi::RSMPI_STATUSES_IGNORE) };
        exchanged
    }
}

/// Starts MPI if an MPI launcher started this process, and installs its transport; the guard
/// finalises MPI when dropped (at the end of `main`).
pub fn start() -> anyhow::Result<Option<mpi::environment::Universe>> {
    let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"].iter().any(|v| std::env::var_os(v).is_some());
    if !launched {
        return Ok(None);
    }
    let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Multiple).ok_or_else(|| anyhow::anyhow!("MPI was initialised already"))?;
    if threading < mpi::Threading::Serialized {
        anyhow::bail!("the MPI library gives threads {threading:?} support; fum needs at least Serialized");
    }
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let host = world.split_shared(world.rank());
    let local = (host.rank() as usize, host.size() as usize);
    fum_engine::ranks::set_transport(Box::new(Mpi { world, rank, size, local }));
    // A panic on one rank would otherwise finalise MPI while the others wait in a collective.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        if let Some(t) = fum_engine::ranks::transport() {
            eprintln!("error: rank {} panicked; ending every rank", t.rank());
            t.abort(101);
        }
    }));
    Ok(Some(universe))
}
