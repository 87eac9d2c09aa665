//! The state declaration: a column declared in one place is checkpointed, restored and
//! mirrored on a device, with no other edit; and a mirrored column's host copy cannot be read
//! stale. The device here is host memory behind the same `DeviceBuffer` seam the CUDA backend
//! implements (`fum_engine::device`), so this runs without a GPU.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bevy_ecs::prelude::*;
use fum::engine::backend::HostView;
use fum::engine::checkpoint::{Checkpoint, Snapshot};
use fum::engine::column::{AnyColumn, Column, DeviceBuffer, TransferError};
use fum::engine::components::Shard;
use fum::engine::state::{self, Columns, Role, Shape};
use fum::{DefaultPlugins, Simulation};

/// A neuron model's extra state, as a plugin would add it: one column per shard. This
/// declaration is the one edit that makes it state.
#[derive(Component)]
struct Adaptation {
    w: Column<f32>,
}

impl Columns for Adaptation {
    fn columns(&mut self, f: &mut dyn FnMut(&'static str, Role, Shape, &mut dyn AnyColumn)) {
        f("w", Role::State, Shape::Neurons { slots: 1 }, &mut self.w);
    }
}

/// Every shard gets an `Adaptation` column holding `value(global id)`.
fn add_adaptation(sim: &mut Simulation, value: impl Fn(u32) -> f32) {
    state::register::<Adaptation>(&mut sim.world, "adaptation");
    let shards: Vec<(Entity, std::ops::Range<u32>)> = sim.world.query::<(Entity, &Shard)>().iter(&sim.world).map(|(e, s)| (e, s.neurons.clone())).collect();
    for (e, ids) in shards {
        sim.world.entity_mut(e).insert(Adaptation { w: Column::from_vec(ids.map(&value).collect()) });
    }
}

/// The adaptation values of every neuron, by global id.
fn adaptation(sim: &mut Simulation) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = sim.world.query::<(&Shard, &Adaptation)>().iter(&sim.world).flat_map(|(s, a)| s.neurons.clone().zip(a.w.to_vec())).collect();
    all.sort_by_key(|p| p.0);
    all
}

#[test]
fn a_declared_column_is_checkpointed_and_restored() {
    let model = common::asset("brunel.toml");
    let mut sim = Simulation::from_model(&model, 1, 3).unwrap();
    sim.add_plugins(DefaultPlugins);
    add_adaptation(&mut sim, |id| id as f32 * 0.5 + 1.0);
    sim.run(20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let path = Snapshot::take(&mut sim.world, &model.source, model.hash(), serde_json::Value::Null).unwrap().write(dir.path(), 1).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    assert!(ckpt.header.sections.iter().any(|s| s.name == "shard/2/adaptation/w"), "the column has its section");

    let mut resumed = Simulation::from_model(&model, 1, 3).unwrap();
    add_adaptation(&mut resumed, |_| 0.0);
    ckpt.restore(&mut resumed.world, model.hash()).unwrap();
    assert_eq!(adaptation(&mut resumed), adaptation(&mut sim));
}

/// A device buffer in host memory, with the generation a device backend would advance.
#[derive(Debug)]
struct HostDevice {
    bytes: Mutex<Vec<u8>>,
    generation: Arc<AtomicU64>,
    written: bool,
    host_written: AtomicBool,
}

impl DeviceBuffer for HostDevice {
    fn read(&self, at: usize, dst: &mut [u8]) -> Result<(), TransferError> {
        dst.copy_from_slice(&self.bytes.lock().unwrap()[at..at + dst.len()]);
        Ok(())
    }
    fn write(&self, at: usize, src: &[u8]) -> Result<(), TransferError> {
        self.bytes.lock().unwrap()[at..at + src.len()].copy_from_slice(src);
        Ok(())
    }
    fn generation(&self) -> u64 {
        if self.written { self.generation.load(Ordering::Relaxed) } else { 0 }
    }
    fn host_written(&self) {
        self.host_written.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_declared_column_is_mirrored_and_never_read_stale() {
    let model = common::asset("brunel.toml");
    let mut sim = Simulation::from_model(&model, 1, 3).unwrap();
    add_adaptation(&mut sim, |id| id as f32);
    let span = state::Span::of(&mut sim.world).unwrap();
    assert_eq!((span.first_shard, span.base(), span.ranges.len()), (0, 0, 3));
    let generation = Arc::new(AtomicU64::new(0));
    let placed = state::mirror::<HostDevice, TransferError>(&mut sim.world, &span, &mut |bytes, written, _, _| {
        Ok(Arc::new(HostDevice { bytes: Mutex::new(vec![0; bytes]), generation: generation.clone(), written, host_written: AtomicBool::new(false) }))
    })
    .unwrap();

    // One arena holds the column of every shard, by global id.
    let arena = &placed.neurons.iter().find(|(name, _)| name == "adaptation/w").expect("an arena for the new column").1;
    let on_device: Vec<f32> = bytemuck::pod_collect_to_vec(&arena.bytes.lock().unwrap());
    let n = span.len();
    assert_eq!(on_device, (0..n).map(|id| id as f32).collect::<Vec<_>>());

    // A device step writes the arena: the host copies are behind, and reading one panics.
    generation.fetch_add(1, Ordering::Relaxed);
    arena.bytes.lock().unwrap().copy_from_slice(bytemuck::cast_slice(&(0..n).map(|id| -(id as f32)).collect::<Vec<f32>>()));
    let stale = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| adaptation(&mut sim)));
    assert!(stale.is_err(), "a stale host read must not go unnoticed");

    // The declared download brings the host copies up to date.
    state::download(&mut sim.world, HostView::Neurons).unwrap();
    assert_eq!(adaptation(&mut sim), (0..n).map(|id| (id, -(id as f32))).collect::<Vec<_>>());

    // A host write marks the column for upload, and the upload reaches the arena.
    let first = sim.world.query::<(Entity, &Shard)>().iter(&sim.world).find(|(_, s)| s.index == 0).unwrap().0;
    sim.world.get_mut::<Adaptation>(first).unwrap().w[0] = 42.0;
    assert!(arena.host_written.load(Ordering::Relaxed));
    state::upload(&mut sim.world).unwrap();
    let on_device: Vec<f32> = bytemuck::pod_collect_to_vec(&arena.bytes.lock().unwrap());
    assert_eq!(on_device[0], 42.0);
}
