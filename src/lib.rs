//! fum: large spiking neural networks of LIF neurons with STDP, sharded into columnar blocks.
//!
//! A network is described by a TOML model file ([`Model`]), built into shards of a bevy_ecs
//! world ([`Simulation::from_model`]) and advanced by systems that plugins add
//! ([`DefaultPlugins`]). [`run`] does all of it for the `fum run` command:
//!
//! ```no_run
//! let model = fum::Model::load("assets/models/brunel.toml").unwrap();
//! let report = fum::run::run(&model, &fum::run::RunOptions::default(), |_, _| {}).unwrap();
//! println!("{} neurons, {:.1} Hz", report.network.neurons, report.rates_hz["E"]);
//! ```
//!
//! Where the work happens: `fum_kernels` holds the numeric kernels (LIF update, delivery,
//! STDP); `fum_systems` calls them per shard each step; `fum_engine` holds the data model.

pub use fum_engine as engine;
pub use fum_engine::{Model, ModelError, Plugin, Simulation, Stage};
pub use fum_kernels as kernels;
pub use fum_systems as systems;
pub use fum_systems::DefaultPlugins;

pub mod run;
pub mod stats;
