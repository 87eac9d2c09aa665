//! The systems that advance a fum simulation, grouped into plugins.
//!
//! Each system runs in one [`Stage`](fum_engine::Stage) and works on all shards in parallel
//! (rayon), writing only the shard it is given; [`DefaultPlugins`] assembles the standard set.
//! Swap or drop a plugin to change the model (e.g. leave out [`StdpPlugin`] to freeze weights).
//! [`backend_for`] makes the backend a run chooses: [`CpuBackend`] installs [`DefaultPlugins`],
//! the CUDA backend (`cuda`, cargo feature `cuda`) its captured step.

pub mod backend;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
pub mod cuda_ranks;
pub mod delivery;
pub mod epoch;
pub mod exchange;
pub mod input;
pub mod lif;
pub mod record;
pub mod stdp;
pub mod structural;

pub use backend::{CpuBackend, backend_for};
pub use delivery::DeliveryPlugin;
pub use exchange::{ClockPlugin, ExchangePlugin};
pub use input::InputPlugin;
pub use lif::LifPlugin;
pub use record::RecordPlugin;
pub use stdp::StdpPlugin;
pub use structural::StructuralPlugin;

/// Every plugin of a standard run, in stage order.
pub struct DefaultPlugins;

impl fum_engine::Plugin for DefaultPlugins {
    fn build(&self, sim: &mut fum_engine::Simulation) {
        sim.add_plugins((StructuralPlugin { count_on_host: true }, InputPlugin, LifPlugin, ExchangePlugin, DeliveryPlugin, StdpPlugin, RecordPlugin, ClockPlugin));
    }
}

/// Work (neurons updated or synapses walked, roughly) below which a stage runs its shards one
/// after another on the calling thread: handing shards to the pool and joining them costs a few
/// microseconds, more than a small network's stage (Vogels-Abbott's 4,000 neurons update in
/// about 5 us). Each shard is computed alone either way, so the results are the same bits.
const PARALLEL_MIN_WORK: usize = 10_000;

/// Runs `f` on every item, in parallel on the current rayon pool where there is more than one
/// item and their `work` (see [`PARALLEL_MIN_WORK`]; estimated only then) is worth it.
pub(crate) fn for_each_shard<T: Send>(items: &mut [T], work: impl FnOnce(&[T]) -> usize, f: impl Fn(&mut T) + Sync + Send) {
    use rayon::prelude::*;
    if items.len() == 1 || work(items) < PARALLEL_MIN_WORK {
        items.iter_mut().for_each(f);
    } else {
        items.par_iter_mut().for_each(f);
    }
}
