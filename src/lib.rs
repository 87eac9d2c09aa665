//! fum: large spiking neural networks of LIF neurons with STDP, sharded into columnar blocks.
//!
//! A network is described by a TOML model file ([`Model`]), built into shards of a bevy_ecs
//! world ([`Simulation::from_model`]) and advanced by systems that plugins add
//! ([`DefaultPlugins`]) or a backend installs ([`systems::backend_for`]). [`run`] does all of it
//! for the `fum run` command:
//!
//! ```no_run
//! use fum::run::{BackendChoice, RunOptions};
//!
//! let model = fum::Model::load("assets/models/brunel.toml").unwrap();
//! let options = RunOptions { backend: BackendChoice::Auto, ..RunOptions::default() };
//! let report = fum::run::run(&model, &options, |_| {}).unwrap();
//! println!("{} neurons on {}, {:.1} Hz", report.network.neurons, report.backend, report.rates_hz["E"]);
//! ```
//!
//! Where the work happens: `fum_kernels` holds the numeric kernels (LIF update, delivery,
//! STDP); `fum_systems` calls them per shard each step and implements the backends;
//! `fum_engine` holds the data model and the run loop ([`engine::run`]).

pub use fum_engine as engine;
pub use fum_engine::{Model, ModelError, Plugin, Simulation, Stage};
pub use fum_kernels as kernels;
pub use fum_systems as systems;
pub use fum_systems::DefaultPlugins;

pub mod bench;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod run;
