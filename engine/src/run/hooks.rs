//! The run loop's duties at a step boundary, one [`StepHook`] each, called in the order the run
//! loop lists them: progress, device failure, health, the observer, checkpoints, signals.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bevy_ecs::prelude::*;

use super::checkpoints::Checkpoints;
use super::progress::{Phase, RunProgress, StructuralTotals};
use crate::backend::failure;
use crate::health::{HealthError, HealthMonitor};
use crate::observe::Observer;
use crate::structural::StructuralReport;

/// Why a run stops before its end step.
#[derive(Debug)]
pub enum Stop {
    /// A signal, or the viewer's end gone: the run ends interrupted (resumable).
    Interrupted,
    /// A health check failed: the run ends with a last checkpoint and the error.
    Unhealthy(HealthError),
    /// The device failed (while stepping, or copying state back for a checkpoint).
    Device(String),
}

/// A duty of the run loop between steps. Hooks run on the simulation thread.
pub trait StepHook: Send {
    /// Called after `done` steps; breaking stops the run there.
    fn between_steps(&mut self, world: &mut World, done: u64) -> ControlFlow<Stop>;
}

/// Reports the steps done, and the structural plasticity so far, every 100 steps and at the
/// end step.
pub struct Progress<'a, F> {
    pub report: &'a F,
    pub end_step: u64,
}

impl<F: Fn(&RunProgress) + Sync> StepHook for Progress<'_, F> {
    fn between_steps(&mut self, world: &mut World, done: u64) -> ControlFlow<Stop> {
        if done.is_multiple_of(100) || done == self.end_step {
            let structural = world.get_resource::<StructuralReport>().map(StructuralTotals::of);
            let paging = world.get_resource::<crate::paging::HostTier>().map(|t| t.stats.clone());
            (self.report)(&RunProgress { phase: Phase::Simulating, done, end_step: self.end_step, structural, paging });
        }
        ControlFlow::Continue(())
    }
}

/// Stops on the first device error met while stepping.
pub struct DeviceFailed;

impl StepHook for DeviceFailed {
    fn between_steps(&mut self, world: &mut World, _: u64) -> ControlFlow<Stop> {
        failure(world).map_or(ControlFlow::Continue(()), |e| ControlFlow::Break(Stop::Device(e)))
    }
}

/// The health checks, when due.
pub struct Health(pub HealthMonitor);

impl StepHook for Health {
    fn between_steps(&mut self, world: &mut World, done: u64) -> ControlFlow<Stop> {
        self.0.check(world, done).map_or_else(|e| ControlFlow::Break(Stop::Unhealthy(e)), ControlFlow::Continue)
    }
}

/// A viewer watching and steering; its checkpoint requests go to the run's [`Checkpoints`].
pub struct Observed<'a>(pub &'a mut Observer);

impl Observed<'_> {
    /// The boundary before the session's first step, where a run started paused waits.
    pub fn before_first_step(&mut self, world: &mut World, done: u64) -> ControlFlow<Stop> {
        self.0.before_first_step(world, done, &mut |world| request_checkpoint(world, done)).map_break(|()| Stop::Interrupted)
    }
}

impl StepHook for Observed<'_> {
    fn between_steps(&mut self, world: &mut World, done: u64) -> ControlFlow<Stop> {
        self.0.between_steps(world, done, &mut |world| request_checkpoint(world, done)).map_break(|()| Stop::Interrupted)
    }
}

fn request_checkpoint(world: &mut World, done: u64) -> Result<String, String> {
    world.try_resource_scope(|world, mut c: Mut<Checkpoints>| c.request(world, done)).unwrap_or_else(|| Err("checkpoints need an output folder (--out)".to_string()))
}

/// Periodic checkpoints, and the hand-over of one that found the writer busy.
pub struct PeriodicCheckpoints;

impl StepHook for PeriodicCheckpoints {
    fn between_steps(&mut self, world: &mut World, done: u64) -> ControlFlow<Stop> {
        // Most boundaries have nothing to do: spare taking the writer out of the world.
        if !world.resource::<Checkpoints>().has_work(done) {
            return ControlFlow::Continue(());
        }
        match world.resource_scope(|world, mut c: Mut<Checkpoints>| c.between_steps(world, done)) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(Stop::Device(e)),
        }
    }
}

/// SIGINT/SIGTERM: stop at this boundary.
pub struct Signals(pub Arc<AtomicBool>);

impl StepHook for Signals {
    fn between_steps(&mut self, world: &mut World, _: u64) -> ControlFlow<Stop> {
        // Across ranks, the flag all ranks agreed on in this step's exchange (`crate::ranks`).
        let signalled = match crate::ranks::transport() {
            Some(_) => world.resource::<crate::components::SpikeExchange>().stop,
            None => self.0.load(Ordering::Relaxed),
        };
        if signalled { ControlFlow::Break(Stop::Interrupted) } else { ControlFlow::Continue(()) }
    }
}
