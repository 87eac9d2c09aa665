//! Delivery: every shard walks the rows of this step's spikes in its synapse blocks and adds
//! the weights into its ring buffers, `delay` steps ahead. A plastic synapse first receives the
//! potentiation pending from its target's spikes since its previous presynaptic spike, is then
//! depressed by its target's postsynaptic trace and delivers its new weight, and is potentiated
//! once more if its target fired in this step (see `fum_kernels::stdp::on_pre_row`).
//! Fixed-point sums make the result independent of the order of spikes and shards.

use std::sync::atomic::{AtomicU64, Ordering};

use bevy_ecs::prelude::*;
use fum_engine::backend::DeviceFailure;
use fum_engine::components::{Clock, Delays, NeuronBlock, PlasticSynapses, Plasticity, SpikeExchange, StdpHistoryOverflows, SynapseBlock, SynapseBlocks};
use fum_engine::paging::{HostTier, ShardPages};
use fum_engine::model::Receptor;
use fum_engine::{Plugin, Simulation, Stage};
use fum_kernels::delivery::{Ring, Target, deliver_row};
use fum_kernels::spikes::in_range;
use fum_kernels::stdp::{PlasticRow, Postsynaptic, PreSpike, on_pre_row};
use fum_kernels::weight::Weight;

pub struct DeliveryPlugin;

impl Plugin for DeliveryPlugin {
    fn build(&self, sim: &mut Simulation) {
        sim.add_systems(deliver_spikes.in_set(Stage::Deliver));
    }
}

pub fn deliver_spikes(
    mut shards: Query<(&mut NeuronBlock, &mut SynapseBlocks, Option<&mut ShardPages>)>,
    exchange: Res<SpikeExchange>,
    plasticity: Res<Plasticity>,
    clock: Res<Clock>,
    mut overflows: ResMut<StdpHistoryOverflows>,
    tier: Option<ResMut<HostTier>>,
    commands: Commands,
) {
    // A paged network may have deferred deliveries due in a step without spikes.
    if exchange.spikes.is_empty() && exchange.gathered.is_empty() && tier.is_none() {
        return;
    }
    // This step's spikes, and at an epoch's end across ranks the other ranks' spikes of the
    // steps whose exchange finished, each delivered as of the step it was fired in (`Epochs`); in epochs plastic
    // blocks wait for the epoch's replay (`crate::epoch`).
    let batches: Vec<(u64, &[u32])> = std::iter::once((clock.step, &exchange.spikes[..])).chain(exchange.gathered.iter().map(|g| (g.step, &g.remote[..]))).collect();
    let which = if exchange.epochs.is_some() { Blocks::Static } else { Blocks::All };
    let lost = AtomicU64::new(0);
    let mut items: Vec<_> = shards.iter_mut().collect();
    // A paged network's deferred deliveries fall due apart from the step's spikes.
    let paged = tier.is_some();
    let work = |items: &[(_, Mut<SynapseBlocks>, _)]| if paged { usize::MAX } else { synapses_walked(items.iter().map(|(_, synapses, _)| &**synapses), &batches, which) };
    crate::for_each_shard(&mut items, work, |(neurons, synapses, pages)| {
        lost.fetch_add(deliver_to_shard(neurons, synapses, pages.as_deref_mut(), &batches, None, &plasticity, which), Ordering::Relaxed);
    });
    overflows.0 += lost.into_inner();
    settle_pages(items.iter_mut().filter_map(|(_, _, pages)| pages.as_deref_mut()), tier, commands);
}

/// Which of a shard's blocks a delivery walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocks {
    All,
    Static,
    Plastic,
}

impl Blocks {
    fn walks(self, block: &SynapseBlock) -> bool {
        match self {
            Blocks::All => true,
            Blocks::Static => block.plastic.is_none(),
            Blocks::Plastic => block.plastic.is_some(),
        }
    }
}

/// About how many synapses a delivery of `batches` walks in the blocks `which` names (each
/// block's spikes times its mean row): the work that decides whether shards go to the pool.
pub(crate) fn synapses_walked<'a>(shards: impl Iterator<Item = &'a SynapseBlocks>, batches: &[(u64, &[u32])], which: Blocks) -> usize {
    let blocks = shards.flat_map(|s| s.0.iter()).filter(|b| which.walks(b));
    blocks
        .map(|b| {
            let spikes: usize = batches.iter().map(|(_, s)| in_range(s, b.source_first..b.source_first + b.source_size).len()).sum();
            spikes * *b.row_ptr.last().unwrap_or(&0) as usize / (b.source_size as usize).max(1)
        })
        .sum()
}

/// Delivers `batches` (a step and its spikes, ascending global ids) through the blocks of one
/// shard that `which` names, with `fired` as the spike bits of the shard's neurons (`None`:
/// this step's); returns the STDP pairings lost to overflowing spike histories.
pub(crate) fn deliver_to_shard(neurons: &mut NeuronBlock, synapses: &mut SynapseBlocks, mut pages: Option<&mut ShardPages>, batches: &[(u64, &[u32])], fired: Option<&[u8]>, plasticity: &Plasticity, which: Blocks) -> u64 {
    let len = neurons.len();
    let NeuronBlock { ring_ex, ring_in, fired: this_step, .. } = neurons;
    let (mut ring_ex, mut ring_in, fired) = (Ring::new(len, ring_ex), Ring::new(len, ring_in), fired.unwrap_or(&this_step[..]));
    let mut lost = 0;
    for b in 0..synapses.0.len() {
        let plastic = synapses.0[b].plastic.is_some();
        if !which.walks(&synapses.0[b]) {
            continue;
        }
        for &(step, spikes) in batches {
            let block = &synapses.0[b];
            // Spikes are ascending: the ones from this block's source population are one run.
            let spikes = &spikes[in_range(spikes, block.source_first..block.source_first + block.source_size)];
            let ring = match block.receptor {
                Receptor::Excitatory => &mut ring_ex,
                Receptor::Inhibitory => &mut ring_in,
            };
            lost += match pages.as_deref_mut().filter(|_| block.pages.is_some()) {
                None => deliver_block(&mut synapses.0[b], ring, spikes, step, fired, plasticity),
                // A paged block (`fum_engine::paging`): each spike's row is made resident
                // before it is read, so one step may cycle through more pages than fit; a
                // static block defers its deliveries within its minimum delay.
                Some(pages) if !plastic => {
                    fum_engine::paging::deliver_static(pages, &mut synapses.0, b, spikes, step, ring);
                    0
                }
                // A plastic block: STDP writes the rows it delivers through.
                Some(pages) => (0..spikes.len())
                    .map(|k| {
                        pages.fetch(&mut synapses.0, b, spikes[k], step, plasticity.enabled);
                        deliver_block(&mut synapses.0[b], ring, &spikes[k..=k], step, fired, plasticity)
                    })
                    .sum(),
            };
        }
    }
    lost
}

/// After a delivery: hands what the shards' pages moved to the host tier and measures it; a
/// failure to move pages ends the run.
pub(crate) fn settle_pages<'a>(pages: impl Iterator<Item = &'a mut ShardPages>, tier: Option<ResMut<HostTier>>, mut commands: Commands) {
    let Some(mut tier) = tier else { return };
    let mut pages: Vec<&mut ShardPages> = pages.collect();
    let error = pages.iter_mut().fold(None, |e, p| e.or(tier.collect(p)));
    tier.measure(pages.iter().map(|p| &**p));
    if let Some(error) = error {
        commands.insert_resource(DeviceFailure(format!("synapse pages: {error}")));
    }
}

/// Delivers `spikes` (global ids from the block's source population) through `block`; returns
/// the pairings lost to overflowing spike histories. The rows read are resident if the block
/// is paged, whatever other pages are spilled (hence `pages`).
fn deliver_block(block: &mut SynapseBlock, ring: &mut Ring<'_>, spikes: &[u32], step: u64, fired: &[u8], plasticity: &Plasticity) -> u64 {
    let SynapseBlock { source_first, row_ptr, target, delay, weight, plastic, .. } = block;
    fum_engine::with_synapse_columns!(&*target, weight, |t, w| {
        let rows = Rows { source_first: *source_first, row_ptr, target: t.pages(), delay, plastic: plastic.as_ref() };
        deliver_rows(&rows, w.pages_mut(), ring, spikes, step, fired, plasticity)
    })
}

/// A synapse block's structure, borrowed apart from its weights.
struct Rows<'a, T> {
    source_first: u32,
    row_ptr: &'a [u32],
    target: &'a [T],
    delay: &'a Delays,
    plastic: Option<&'a PlasticSynapses>,
}

/// Delivers `spikes` through one block's `rows` whose weights are `weight`.
fn deliver_rows<T: Target, W: Weight>(rows: &Rows<'_, T>, weight: &mut [W], ring: &mut Ring<'_>, spikes: &[u32], step: u64, fired: &[u8], plasticity: &Plasticity) -> u64 {
    let stdp = rows.plastic.filter(|_| plasticity.enabled).map(|p| {
        let rule = &plasticity.projections[p.rule];
        let history_trace = p.post_history_trace.as_deref().unwrap_or(&[]);
        let post = Postsynaptic { post: &p.post, decay: &rule.post_decay, history: &p.post_history, history_trace, history_len: rule.history_len, fired };
        (rule, post)
    });
    let mut lost = 0;
    for &g in spikes {
        let r = (g - rows.source_first) as usize;
        let syn = rows.row_ptr[r] as usize..rows.row_ptr[r + 1] as usize;
        let (target, delay) = (&rows.target[syn.clone()], rows.delay.row(syn.clone()));
        match &stdp {
            Some((rule, post)) => {
                let pre = PreSpike::of(&rule.pre_trace, &rule.pre_last_spike, r, step, &rule.pre_decay);
                lost += on_pre_row(&rule.rule, ring, &pre, PlasticRow { target, delay, weight: &mut weight[syn] }, post);
            }
            None => deliver_row(ring, step, target, delay, &weight[syn]),
        }
    }
    lost
}
