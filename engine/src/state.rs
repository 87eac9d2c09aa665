//! The state declaration: every column of the network, named once, where it is defined.
//!
//! Each component lists its columns in one `columns` method ([`NeuronBlock::columns`],
//! [`SynapseBlock::columns`], [`PlasticProjection::columns`], and any per-shard component a
//! plugin adds with [`register`], such as a neuron model's extra state) and [`visit`] walks them
//! all in a fixed order: shards by index (neurons, registered components, synapse blocks), then
//! plastic projections. Checkpoint write and restore, device placement ([`mirror`]), upload and
//! download go through this walk, so a column added to a component's `columns` is
//! checkpointed, restored and mirrored without another edit.
//!
//! [`NeuronBlock::columns`]: crate::components::NeuronBlock::columns
//! [`SynapseBlock::columns`]: crate::components::SynapseBlock::columns
//! [`PlasticProjection::columns`]: crate::components::PlasticProjection::columns

use bevy_ecs::prelude::*;

use crate::backend::HostView;
use std::sync::Arc;

use bevy_ecs::component::Mutable;
use bevy_ecs::world::EntityWorldMut;

use crate::column::{AnyColumn, DeviceBuffer, Placement, TransferError};
use crate::components::{NeuronBlock, Plasticity, Shard, SynapseBlocks};

/// What a column is to the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Changes while running, wherever the network steps: checkpointed, and copied back from a
    /// device.
    State,
    /// Changes while running, but only on the host between steps (the row pointers of a block
    /// under structural plasticity, a pending structural plan): checkpointed; a device only
    /// reads it, so its host copy is always current.
    HostState,
    /// Fixed once built (connectivity, static weights): rebuilt from the model and seed on
    /// resume (a checksum proves it came out the same), uploaded to a device once.
    Structure,
}

/// How a device lays a column out beside the same column of other shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `slots` rows of one value per neuron of the shard, slot-major (1 for plain per-neuron
    /// state): one arena per name for all shards, slot-major over global neuron ids.
    Neurons { slots: usize },
    /// A buffer of its own (synapses of a block, traces of a projection).
    Own,
    /// A buffer of its own whose length changes while running (synapses under structural
    /// plasticity, a pending structural plan): a restore takes the checkpoint's length.
    Varying,
}

/// Which part of the network a column belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Shard `shard`'s neurons (shards by index).
    Neurons { shard: usize },
    /// A per-shard component registered with [`register`] under `component`.
    ShardComponent { shard: usize, component: &'static str },
    /// Synapse block `block` of shard `shard`.
    Block { shard: usize, block: usize },
    /// Plastic projection `projection` (index in `Plasticity::projections`).
    Projection { projection: usize },
}

impl Owner {
    /// The prefix of this owner's checkpoint sections.
    pub fn section_prefix(&self) -> String {
        match self {
            Owner::Neurons { shard } => format!("shard/{shard}/"),
            Owner::ShardComponent { shard, component } => format!("shard/{shard}/{component}/"),
            Owner::Block { shard, block } => format!("shard/{shard}/block/{block}/"),
            Owner::Projection { projection } => format!("plasticity/{projection}/"),
        }
    }
}

/// One declared column, as a visitor sees it.
pub struct Declared<'a> {
    pub owner: Owner,
    pub name: &'static str,
    pub role: Role,
    pub shape: Shape,
    pub column: &'a mut dyn AnyColumn,
}

impl Declared<'_> {
    /// The checkpoint section this column is stored in.
    pub fn section(&self) -> String {
        self.owner.section_prefix() + self.name
    }
}

/// A component's declaration of its columns.
pub trait Columns {
    /// Calls `f` with each column: its name, role, device shape and the column.
    fn columns(&mut self, f: &mut dyn FnMut(&'static str, Role, Shape, &mut dyn AnyColumn));
}

/// The shards' entities, by shard index.
pub fn shards_in_order(world: &mut World) -> Vec<Entity> {
    let mut q = world.query::<(Entity, &Shard)>();
    let mut v: Vec<_> = q.iter(world).map(|(e, s)| (s.index, e)).collect();
    v.sort_unstable();
    v.into_iter().map(|(_, e)| e).collect()
}

/// Calls a registered component's `columns` on one shard entity (if it has the component).
type VisitComponent = fn(&mut EntityWorldMut<'_>, &mut dyn FnMut(&'static str, Role, Shape, &mut dyn AnyColumn));

/// The per-shard components beyond the neuron and synapse blocks that declare columns.
#[derive(Resource, Default)]
pub struct Registered(Vec<(&'static str, VisitComponent)>);

/// Declares `C`, a per-shard component, as holding state columns under `name`: from then on
/// checkpoints store them, restores fill them and device backends mirror them. A plugin that
/// adds such a component calls this once.
pub fn register<C: Component<Mutability = Mutable> + Columns>(world: &mut World, name: &'static str) {
    fn visit_one<C: Component<Mutability = Mutable> + Columns>(entity: &mut EntityWorldMut<'_>, f: &mut dyn FnMut(&'static str, Role, Shape, &mut dyn AnyColumn)) {
        if let Some(mut c) = entity.get_mut::<C>() {
            c.bypass_change_detection().columns(f);
        }
    }
    let mut registered = world.get_resource_or_insert_with(Registered::default);
    if !registered.0.iter().any(|(n, _)| *n == name) {
        registered.0.push((name, visit_one::<C>));
    }
}

/// Walks every declared column of `world` in the fixed order (see the module comment).
pub fn visit(world: &mut World, f: &mut dyn FnMut(Declared<'_>)) {
    let registered: Vec<(&'static str, VisitComponent)> = world.get_resource::<Registered>().map(|r| r.0.clone()).unwrap_or_default();
    for e in shards_in_order(world) {
        // The shard's index, not its position: across ranks a process holds some shards only.
        let shard = world.get::<Shard>(e).expect("a shard").index;
        let mut entity = world.entity_mut(e);
        if let Some(mut neurons) = entity.get_mut::<NeuronBlock>() {
            neurons.bypass_change_detection().columns(&mut |name, role, shape, column| f(Declared { owner: Owner::Neurons { shard }, name, role, shape, column }));
        }
        for (component, visit_one) in &registered {
            visit_one(&mut entity, &mut |name, role, shape, column| f(Declared { owner: Owner::ShardComponent { shard, component }, name, role, shape, column }));
        }
        if let Some(mut blocks) = entity.get_mut::<SynapseBlocks>() {
            for (block, b) in blocks.bypass_change_detection().0.iter_mut().enumerate() {
                b.columns(&mut |name, role, shape, column| f(Declared { owner: Owner::Block { shard, block }, name, role, shape, column }));
            }
        }
    }
    if let Some(mut plasticity) = world.get_resource_mut::<Plasticity>() {
        for (projection, p) in plasticity.bypass_change_detection().projections.iter_mut().enumerate() {
            p.columns(&mut |name, role, shape, column| f(Declared { owner: Owner::Projection { projection }, name, role, shape, column }));
        }
    }
}

impl Role {
    /// Whether a checkpoint stores it (the rest is rebuilt from the model and seed).
    pub fn checkpointed(self) -> bool {
        self != Role::Structure
    }
}

/// Walks the columns a checkpoint stores, skipping the rest.
pub fn visit_checkpointed(world: &mut World, f: &mut dyn FnMut(Declared<'_>)) {
    visit(world, &mut |d| {
        if d.role.checkpointed() {
            f(d)
        }
    });
}

/// Makes the host copies of the state columns `view` needs current (see `crate::column`):
/// neuron state for [`HostView::Neurons`], every state column for [`HostView::Everything`].
pub fn download(world: &mut World, view: HostView) -> Result<(), TransferError> {
    let mut result = Ok(());
    visit(world, &mut |d| {
        let wanted = d.role == Role::State
            && match view {
                HostView::Recorded => false,
                HostView::Neurons => matches!((d.owner, d.shape), (Owner::Neurons { .. } | Owner::ShardComponent { .. }, Shape::Neurons { slots: 1 })),
                HostView::Everything => true,
            };
        if wanted && result.is_ok() {
            result = d.column.download();
        }
    });
    result
}

/// Copies every column whose host copy was written since its last copy to its mirror.
pub fn upload(world: &mut World) -> Result<(), TransferError> {
    let mut result = Ok(());
    visit(world, &mut |d| {
        if result.is_ok() {
            result = d.column.upload();
        }
    });
    result
}

/// Device buffers of one owner (a block, a projection), by column name.
pub type Named<B> = Vec<(&'static str, Arc<B>)>;

/// Where [`mirror`] put every column.
pub struct Mirrored<B> {
    /// The per-neuron arenas, by column name (a registered component's as `component/name`).
    pub neurons: Vec<(String, Arc<B>)>,
    /// Each synapse block's buffers, keyed by (shard, block index in the shard), in the order
    /// of the walk.
    pub blocks: Vec<((usize, usize), Named<B>)>,
    /// Each plastic projection's buffers.
    pub projections: Vec<Named<B>>,
}

/// The neurons this process holds: its shards, of contiguous indices from `first_shard`, whose
/// global ids are contiguous too, from [`Span::base`]. A process on its own holds every shard;
/// a rank of several holds its part (`crate::partition`), contiguous on a GPU.
#[derive(Clone, Debug, Default)]
pub struct Span {
    pub first_shard: usize,
    /// The shards' global ranges, in index order.
    pub ranges: Vec<std::ops::Range<u32>>,
}

impl Span {
    /// The world's shards; an error when they are not contiguous.
    pub fn of(world: &mut World) -> Result<Span, String> {
        let mut span = Span::default();
        for e in shards_in_order(world) {
            let shard = world.get::<Shard>(e).expect("a shard");
            if span.ranges.is_empty() {
                span.first_shard = shard.index;
            } else if shard.neurons.start != span.ranges.last().expect("not empty").end || shard.index != span.first_shard + span.ranges.len() {
                return Err(format!("shard {} does not follow the shards before it", shard.index));
            }
            span.ranges.push(shard.neurons.clone());
        }
        Ok(span)
    }

    /// The first global id held.
    pub fn base(&self) -> u32 {
        self.ranges.first().map_or(0, |r| r.start)
    }

    /// How many neurons are held.
    pub fn len(&self) -> u32 {
        self.ranges.last().map_or(0, |r| r.end) - self.base()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shard `shard`'s global ids.
    pub fn range(&self, shard: usize) -> std::ops::Range<u32> {
        self.ranges[shard - self.first_shard].clone()
    }

    /// Shard `shard`'s place in this process's per-neuron arrays (its ids less `base`).
    pub fn local(&self, shard: usize) -> std::ops::Range<u32> {
        let r = self.range(shard);
        r.start - self.base()..r.end - self.base()
    }
}

/// Gives every declared column a place in device buffers that `allocate(bytes, written by
/// the device)` makes, attaches it there and uploads it.
///
/// Per-neuron columns of all shards share one arena per name, a shard's column being its
/// range in `span` (global ids less the span's base), so that one kernel launch covers every
/// shard; a ring column (`slots` rows) sits in a slot-major arena `[slot][neuron]`, one range
/// per slot, so that the neuron update reads one slot of all shards contiguously.
/// Block and projection columns get buffers of their own. A registered component's columns
/// that are not per-neuron (a pending structural plan) stay on the host: no kernel reads them.
pub fn mirror<B: DeviceBuffer + 'static, E: From<TransferError>>(
    world: &mut World,
    span: &Span,
    allocate: &mut dyn FnMut(usize, bool, Owner, &'static str) -> Result<Arc<B>, E>,
) -> Result<Mirrored<B>, E> {
    let n = span.len() as usize;
    let mut out: Mirrored<B> = Mirrored { neurons: Vec::new(), blocks: Vec::new(), projections: Vec::new() };
    let mut failed = None;
    // Paged columns are uploaded page by page, spilled pages from disk (`crate::paging`).
    let tables = crate::paging::take_tables(world);
    visit(world, &mut |d| {
        if failed.is_some() || matches!((d.owner, d.shape), (Owner::ShardComponent { .. }, Shape::Own | Shape::Varying)) {
            return;
        }
        let written = d.role == Role::State;
        let size = d.column.element_bytes();
        let placed = match (d.owner, d.shape) {
            (Owner::Neurons { shard } | Owner::ShardComponent { shard, .. }, Shape::Neurons { slots }) => {
                let key = match d.owner {
                    Owner::ShardComponent { component, .. } => format!("{component}/{}", d.name),
                    _ => d.name.to_string(),
                };
                let range = span.local(shard);
                let arena = match out.neurons.iter().find(|(name, _)| *name == key) {
                    Some((_, b)) => Ok(b.clone()),
                    None => allocate(slots * n * size, written, d.owner, d.name).inspect(|b| out.neurons.push((key, b.clone()))),
                };
                arena.map(|a| (a, Placement { offset: range.start as usize * size, chunk_len: range.len(), chunks: slots, stride: n * size }))
            }
            (owner, _) => allocate(d.column.len() * size, written, owner, d.name).map(|b| {
                let named = match owner {
                    Owner::Projection { projection } => {
                        if out.projections.len() == projection {
                            out.projections.push(Vec::new());
                        }
                        &mut out.projections[projection]
                    }
                    Owner::Block { shard, block } => {
                        if out.blocks.last().is_none_or(|(key, _)| *key != (shard, block)) {
                            out.blocks.push(((shard, block), Vec::new()));
                        }
                        &mut out.blocks.last_mut().expect("just pushed").1
                    }
                    Owner::Neurons { .. } | Owner::ShardComponent { .. } => unreachable!("a shard's own columns are per-neuron arenas or stay on the host"),
                };
                named.push((d.name, b.clone()));
                (b, Placement::contiguous(0, d.column.len()))
            }),
        };
        match placed {
            Ok((buffer, placement)) => {
                d.column.attach(buffer, placement);
                let paged = match d.owner {
                    Owner::Block { shard, block } => tables.get(&(shard, block)).map(|t| crate::paging::upload_paged(t, d.name, &mut *d.column)),
                    _ => None,
                };
                let result = match paged {
                    Some(Ok(true)) => Ok(()),
                    Some(Err(e)) => Err(TransferError(e)),
                    None | Some(Ok(false)) => d.column.upload(),
                };
                if let Err(e) = result {
                    failed = Some(E::from(e));
                }
            }
            Err(e) => failed = Some(e),
        }
    });
    crate::paging::put_tables(world, tables);
    failed.map_or(Ok(out), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rank's span: shards 2 and 3 of a network, neurons 100..200, laid out from 0.
    #[test]
    fn a_span_places_a_ranks_shards_from_its_first_neuron() {
        let mut world = World::new();
        world.spawn(Shard { index: 3, neurons: 150..200 });
        world.spawn(Shard { index: 2, neurons: 100..150 });
        let span = Span::of(&mut world).unwrap();
        assert_eq!((span.first_shard, span.base(), span.len()), (2, 100, 100));
        assert_eq!((span.range(3), span.local(3)), (150..200, 50..100));
        world.spawn(Shard { index: 5, neurons: 250..300 });
        assert!(Span::of(&mut world).unwrap_err().contains("shard 5"));
    }
}
