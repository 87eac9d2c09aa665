//! The runner: a bevy_ecs `World` holding the shards and resources, and a `Schedule` whose
//! stages run once per step, in order.
//!
//! Concurrency contract: stages run one after another. Inside a stage, a system works on all
//! shards in parallel (rayon); a shard's task reads shared resources and writes only its own
//! components. The spike exchange between `Update` and `Deliver` is the one point where shards
//! see each other's results, so each step has two barriers, not one per system.
//!
//! Work that must hold the whole world at the start of a few steps (structural plasticity's
//! snapshots and commits) is no system: a [`StepStart`] hook runs before the schedule only at
//! the steps it names, so the other steps pay one comparison, not a system and its run
//! condition.

use bevy_ecs::prelude::*;
use bevy_ecs::schedule::{ScheduleLabel, SystemSet};

/// The per-step schedule.
#[derive(ScheduleLabel, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Step;

/// The named stages of a step, in the order they run.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// External input (Poisson trains) lands in this step's ring-buffer slot.
    Input,
    /// Neurons integrate, fire and reset.
    Update,
    /// Each shard's spikes are published to all shards.
    Exchange,
    /// Spikes are delivered into the ring buffers of their targets (plastic synapses depress).
    Deliver,
    /// Postsynaptic STDP updates and trace bookkeeping.
    Plasticity,
    /// Spikes and probes are recorded.
    Record,
    /// The clock advances.
    Advance,
}

impl Stage {
    /// Every stage, in the order they run.
    pub const ALL: [Stage; 7] = [Stage::Input, Stage::Update, Stage::Exchange, Stage::Deliver, Stage::Plasticity, Stage::Record, Stage::Advance];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Input => "input",
            Stage::Update => "update",
            Stage::Exchange => "exchange",
            Stage::Deliver => "deliver",
            Stage::Plasticity => "plasticity",
            Stage::Record => "record",
            Stage::Advance => "advance",
        }
    }
}

/// Before stage `i` of [`Stage::ALL`] (and after the last at `i = 7`): where
/// [`Simulation::time_stages`] reads the clock. Empty, and so free, unless timing is on.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Boundary(usize);

/// Time spent in each stage ([`Stage::ALL`]'s order), summed over the steps since
/// [`Simulation::time_stages`]: wall time on the host between the stages' systems, or, on a
/// backend that times its own stages (`Backend::times_stages`: the CUDA backend, with events
/// between the stages' kernels), the device's time.
#[derive(Resource, Clone, Debug, Default)]
pub struct StageTimes {
    pub seconds: [f64; 7],
    since: Option<std::time::Instant>,
}

impl StageTimes {
    /// Stage names with their seconds.
    pub fn by_name(&self) -> std::collections::BTreeMap<String, f64> {
        Stage::ALL.iter().zip(self.seconds).map(|(s, t)| (s.name().to_string(), t)).collect()
    }
}

fn mark_boundary<const I: usize>(mut times: ResMut<StageTimes>) {
    let now = std::time::Instant::now();
    if let (Some(since), Some(stage)) = (times.since, I.checked_sub(1)) {
        times.seconds[stage] += (now - since).as_secs_f64();
    }
    times.since = (I < Stage::ALL.len()).then_some(now);
}

/// A capability of the simulation: adds its resources and systems in one place.
///
/// Any `Fn(&mut Simulation)` is a plugin, and so is a tuple of plugins.
pub trait Plugin {
    fn build(&self, sim: &mut Simulation);
}

impl<F: Fn(&mut Simulation)> Plugin for F {
    fn build(&self, sim: &mut Simulation) {
        self(sim)
    }
}

macro_rules! plugin_tuple {
    ($($p:ident),*) => {
        impl<$($p: Plugin),*> Plugin for ($($p,)*) {
            #[allow(non_snake_case)]
            fn build(&self, sim: &mut Simulation) {
                let ($($p,)*) = self;
                $($p.build(sim);)*
            }
        }
    };
}
plugin_tuple!(A, B);
plugin_tuple!(A, B, C);
plugin_tuple!(A, B, C, D);
plugin_tuple!(A, B, C, D, E);
plugin_tuple!(A, B, C, D, E, F);
plugin_tuple!(A, B, C, D, E, F, G);
plugin_tuple!(A, B, C, D, E, F, G, H);

/// Exclusive work at the start of chosen steps, run before the step's schedule with the whole
/// world (nothing else runs meanwhile), e.g. `crate::structural::at_step_start`.
#[derive(Clone, Copy, Debug)]
pub struct StepStart {
    /// The first step at or after the given one at which `run` has work (None: never again).
    /// Asked once per run and after each time `run` ran, so it may read the world.
    pub next_due: fn(&World, u64) -> Option<u64>,
    /// The work at the start of the clock's step.
    pub run: fn(&mut World),
}

/// A built network and the systems that advance it.
pub struct Simulation {
    pub world: World,
    schedule: Schedule,
    pool: rayon::ThreadPool,
    step_start: Vec<StepStart>,
}

impl Simulation {
    /// An empty simulation whose parallel systems use `threads` worker threads.
    pub fn new(threads: usize) -> Self {
        let world = World::new();
        let mut schedule = Schedule::new(Step);
        let b = Boundary;
        schedule.configure_sets(
            (b(0), Stage::Input, b(1), Stage::Update, b(2), Stage::Exchange, b(3), Stage::Deliver, b(4), Stage::Plasticity, b(5), Stage::Record, b(6), Stage::Advance, b(7))
                .chain(),
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("fum-worker-{i}"))
            .build()
            .expect("a thread pool of the requested size");
        Simulation { world, schedule, pool, step_start: Vec::new() }
    }

    pub fn add_plugins(&mut self, plugins: impl Plugin) -> &mut Self {
        plugins.build(self);
        self
    }

    /// Adds systems to the step schedule; they should be placed in a [`Stage`].
    pub fn add_systems<M>(&mut self, systems: impl IntoScheduleConfigs<bevy_ecs::system::ScheduleSystem, M>) -> &mut Self {
        self.schedule.add_systems(systems);
        self
    }

    /// Adds a hook that runs before the schedule at the steps it names ([`StepStart`]); hooks
    /// due at the same step run in the order they were added.
    pub fn add_step_start(&mut self, hook: StepStart) -> &mut Self {
        self.step_start.push(hook);
        self
    }

    /// Builds `model` cut into `shards` shards (`crate::build::cut`, in this simulation's
    /// thread pool) and prepares its recording. Systems come from a backend
    /// ([`Simulation::install`]) or plugins, e.g. `fum::DefaultPlugins`.
    pub fn from_model(model: &crate::Model, threads: usize, shards: usize) -> Result<Self, crate::BuildError> {
        Self::from_model_spilled(model, threads, &crate::build::cut(model, shards), None, &|_| {})
    }

    /// Builds `model` cut into the shards `ranges`, spilling synapse pages to disk as blocks are
    /// built when `spill` says so (a network larger than `--host-memory`: `crate::paging`);
    /// `built` hears the shards built so far as each is done.
    pub fn from_model_spilled(model: &crate::Model, threads: usize, ranges: &[std::ops::Range<u32>], spill: Option<crate::paging::BuildSpill>, built: &(dyn Fn(usize) + Sync)) -> Result<Self, crate::BuildError> {
        let mut sim = Simulation::new(threads);
        sim.world = sim.pool.install(|| crate::build::build_world_spilled(model, ranges, spill.as_ref(), built))?;
        if let Some(spill) = spill {
            sim.world.insert_resource(spill.into_resource());
        }
        let recorder = crate::recording::Recorder::new(model, &mut sim.world)?;
        sim.world.insert_resource(recorder);
        Ok(sim)
    }

    /// Puts the built or restored simulation on `backend` (its step systems, its copy of the
    /// state) and keeps the backend as the resource [`Installed`](crate::backend::Installed).
    pub fn install(&mut self, mut backend: Box<dyn crate::backend::Backend>) -> Result<(), crate::backend::BackendError> {
        backend.install(self).map_err(|source| crate::backend::BackendError::Install { backend: backend.name(), source })?;
        self.world.insert_resource(crate::backend::Installed(backend));
        Ok(())
    }

    /// Times every stage from now on into the resource [`StageTimes`]: a clock reading between
    /// stages, about a microsecond per stage and step (so it is asked for, not always on), or
    /// the backend's own timing where it has one.
    pub fn time_stages(&mut self) {
        self.world.init_resource::<StageTimes>();
        if crate::backend::installed(&self.world).is_some_and(|b| b.times_stages()) {
            return;
        }
        self.schedule.add_systems((
            mark_boundary::<0>.in_set(Boundary(0)),
            mark_boundary::<1>.in_set(Boundary(1)),
            mark_boundary::<2>.in_set(Boundary(2)),
            mark_boundary::<3>.in_set(Boundary(3)),
            mark_boundary::<4>.in_set(Boundary(4)),
            mark_boundary::<5>.in_set(Boundary(5)),
            mark_boundary::<6>.in_set(Boundary(6)),
            mark_boundary::<7>.in_set(Boundary(7)),
        ));
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs one step.
    pub fn step(&mut self) {
        let Simulation { world, schedule, pool, step_start } = self;
        pool.install(|| {
            if !step_start.is_empty() {
                let step = world.resource::<crate::components::Clock>().step;
                for hook in step_start.iter() {
                    if (hook.next_due)(world, step) == Some(step) {
                        (hook.run)(world);
                    }
                }
            }
            schedule.run(world)
        });
    }

    /// Runs `steps` steps, calling `after_step` with the number done after each one.
    pub fn run(&mut self, steps: u64, mut after_step: impl FnMut(u64) + Send) {
        self.run_until(steps, |_, done| {
            after_step(done);
            std::ops::ControlFlow::Continue(())
        });
    }

    /// Runs until the clock reaches `end_step` or `between_steps` breaks. It gets the world at
    /// every step boundary (for checkpoints, health checks, signals) and the steps done so far.
    /// Returns the steps done.
    pub fn run_until(&mut self, end_step: u64, mut between_steps: impl FnMut(&mut World, u64) -> std::ops::ControlFlow<()> + Send) -> u64 {
        let Simulation { world, schedule, pool, step_start } = self;
        pool.install(|| {
            let mut done = world.resource::<crate::components::Clock>().step;
            // The first step at which a hook is due; each step runs after `done` steps.
            let next_due = |world: &World, step: u64| step_start.iter().filter_map(|h| (h.next_due)(world, step)).min();
            let mut due = next_due(world, done);
            while done < end_step {
                if due == Some(done) {
                    for hook in step_start.iter() {
                        if (hook.next_due)(world, done) == Some(done) {
                            (hook.run)(world);
                        }
                    }
                    due = next_due(world, done + 1);
                }
                schedule.run(world);
                done += 1;
                if between_steps(world, done).is_break() {
                    break;
                }
            }
            done
        })
    }
}
