//! The state declaration: every column of the network, named once, where it is defined.
//!
//! Each component lists its columns in one `columns` method ([`NeuronBlock::columns`],
//! [`SynapseBlock::columns`], [`PlasticProjection::columns`]) and [`visit`] walks them all in a
//! fixed order: shards by index (neurons, then synapse blocks), then plastic projections.
//! Checkpoint write and restore, device upload and download, and the viewer's reads go through
//! this walk, so a column added to a component's `columns` is checkpointed, restored and
//! mirrored without another edit.
//!
//! [`NeuronBlock::columns`]: crate::components::NeuronBlock::columns
//! [`SynapseBlock::columns`]: crate::components::SynapseBlock::columns
//! [`PlasticProjection::columns`]: crate::components::PlasticProjection::columns

use bevy_ecs::prelude::*;

use crate::backend::HostView;
use crate::column::{AnyColumn, TransferError};
use crate::components::{NeuronBlock, Plasticity, Shard, SynapseBlocks};

/// What a column is to the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Changes while running: checkpointed, and copied back from a device.
    State,
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
}

/// Which part of the network a column belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Shard `shard`'s neurons (shards by index).
    Neurons { shard: usize },
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

/// Walks every declared column of `world` in the fixed order (see the module comment).
pub fn visit(world: &mut World, f: &mut dyn FnMut(Declared<'_>)) {
    for (shard, e) in shards_in_order(world).into_iter().enumerate() {
        let mut entity = world.entity_mut(e);
        if let Some(mut neurons) = entity.get_mut::<NeuronBlock>() {
            neurons.bypass_change_detection().columns(&mut |name, role, shape, column| f(Declared { owner: Owner::Neurons { shard }, name, role, shape, column }));
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

/// Walks the columns of `role`, skipping the rest.
pub fn visit_role(world: &mut World, role: Role, f: &mut dyn FnMut(Declared<'_>)) {
    visit(world, &mut |d| {
        if d.role == role {
            f(d)
        }
    });
}

/// Makes the host copies of the state columns `view` needs current (see `crate::column`):
/// neuron state for [`HostView::Neurons`], every state column for [`HostView::Everything`].
pub fn download(world: &mut World, view: HostView) -> Result<(), TransferError> {
    let mut result = Ok(());
    visit_role(world, Role::State, &mut |d| {
        let wanted = match view {
            HostView::Recorded => false,
            HostView::Neurons => matches!((d.owner, d.shape), (Owner::Neurons { .. }, Shape::Neurons { slots: 1 })),
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
