//! The fum engine: the description of a network (model files, builder) and the runner that
//! executes it (shards in a bevy_ecs world, a staged schedule, outputs).

pub mod backend;
pub mod build;
pub mod checkpoint;
pub mod column;
pub mod health;
pub mod components;
#[cfg(feature = "cuda")]
pub mod device;
pub mod estimate;
#[macro_use]
pub mod model;
pub mod monitor;
pub mod observe;
pub mod paging;
pub mod partition;
pub mod ranks;
pub mod recording;
pub mod report;
pub mod routing;
#[cfg(feature = "cuda")]
pub mod row_cache;
pub mod run;
pub mod serve;
pub mod simulation;
pub mod sonata;
pub mod spike_trains;
pub mod state;
pub mod structural;

pub use build::{BuildError, build_world};
pub use model::{Model, ModelError};
pub use simulation::{Plugin, Simulation, Stage, StageTimes};

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[doc(hidden)]
pub use tikv_jemallocator;

/// Makes jemalloc the global allocator of the binary or library that invokes it (the `fum`
/// binary, the Python module), with its settings. Why not glibc's malloc: while a structural
/// plan's threads allocate and free their buffers (tens of MB each) beside the simulation,
/// glibc maps and unmaps that memory, and the step loop stalled for 5-87 ms at a time in small
/// allocations of its own and the driver's: the 1M-neuron STDP network with a plan every
/// second ran 15.6 % slower than without plans under glibc, 6.9 % under jemalloc (H200,
/// benchmarks/RESULTS.md). jemalloc keeps freed memory mapped; its settings (`malloc_conf`, a C
/// string) have background threads return it to the system a second after its last use (the
/// build's drafts, once the network is built), so that no allocating thread does.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        #[global_allocator]
        static ALLOCATOR: $crate::tikv_jemallocator::Jemalloc = $crate::tikv_jemallocator::Jemalloc;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        pub static MALLOC_CONF: &u8 = &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];
    };
}

/// 64 unguessable bits: `RandomState`'s keys come from the operating system's random source
/// (fresh per instance), mixed here with the time and process id. For run ids and steering
/// tokens, which need no cryptographic generator of their own.
pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()))
}

/// Lowers the calling thread's scheduling priority (nice 10; Linux only), for work beside the
/// simulation (serving viewers, planning structural changes): on a busy machine it gives way
/// to the simulation's threads instead of slowing them.
pub(crate) fn yield_to_simulation() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority and gettid take plain integers and touch no memory of ours.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}
