//! A headless run: build, simulate, write the outputs, report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::stats::NetworkStats;
use crate::{DefaultPlugins, Model, Simulation};
use fum_engine::recording::Recorder;

/// How to run a model; zero means "choose".
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Output folder; nothing is written without one.
    pub out: Option<PathBuf>,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Shards (0: one per thread).
    pub shards: usize,
}

impl RunOptions {
    /// Threads and shards after applying the defaults (model file, then the machine).
    pub fn resolve(&self, model: &Model) -> (usize, usize) {
        let sim = &model.spec.simulation;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = [self.threads, sim.threads].into_iter().find(|&t| t > 0).unwrap_or(cores);
        let shards = [self.shards, sim.shards].into_iter().find(|&s| s > 0).unwrap_or(threads);
        (threads, shards)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub build_s: f64,
    pub simulate_s: f64,
    pub write_s: f64,
    pub total_s: f64,
    /// Wall time of the simulation loop over biological time.
    pub real_time_factor: f64,
}

/// The summary of a run, written as `run.json`.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub fum_version: &'static str,
    pub model: String,
    /// FNV-1a 64 of the model text, hex.
    pub model_hash: String,
    pub seed: u64,
    pub dt_ms: f64,
    pub duration_ms: f64,
    pub steps: u64,
    pub backend: &'static str,
    pub threads: usize,
    pub network: NetworkStats,
    pub timing: Timing,
    /// Mean firing rate of every population, Hz.
    pub rates_hz: BTreeMap<String, f64>,
    pub spikes_total: u64,
    pub outputs: Vec<String>,
}

/// Builds and runs `model`, writing outputs to `options.out` if given; `progress` is called
/// with the number of steps done, every 100 steps and at the end.
pub fn run(model: &Model, options: &RunOptions, progress: impl Fn(u64) + Send + Sync) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let (threads, shards) = options.resolve(model);
    let mut sim = Simulation::from_model(model, threads, shards)?;
    sim.add_plugins(DefaultPlugins);
    let network = NetworkStats::measure(&mut sim.world);
    let build_s = started.elapsed().as_secs_f64();
    if let Some(out) = &options.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create the output folder {}", out.display()))?;
    }

    let steps = model.steps();
    let t0 = Instant::now();
    sim.run(steps, |done| {
        if done % 100 == 0 || done == steps {
            progress(done)
        }
    });
    let simulate_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let recorder = sim.world.resource::<Recorder>();
    let mut outputs = Vec::new();
    if let Some(out) = &options.out {
        if !recorder.spikes.is_empty() {
            recorder.write_spikes(&out.join("spikes.h5"), model)?;
            outputs.push("spikes.h5".to_string());
        }
        if !recorder.probes.is_empty() {
            recorder.write_probes(&out.join("probes.h5"))?;
            outputs.push("probes.h5".to_string());
        }
    }
    let duration_ms = steps as f64 * model.spec.simulation.dt_ms;
    let rates_hz = model
        .spec
        .populations
        .iter()
        .zip(&recorder.spike_counts)
        .map(|(p, &n)| (p.name.clone(), n as f64 / (f64::from(p.size) * duration_ms * 1e-3)))
        .collect();
    let spikes_total = recorder.spike_counts.iter().sum();
    let write_s = t1.elapsed().as_secs_f64();
    let mut report = RunReport {
        fum_version: env!("CARGO_PKG_VERSION"),
        model: model.path.display().to_string(),
        model_hash: format!("{:016x}", model.hash()),
        seed: model.spec.simulation.seed,
        dt_ms: model.spec.simulation.dt_ms,
        duration_ms,
        steps,
        backend: "cpu",
        threads: sim.threads(),
        network,
        timing: Timing { build_s, simulate_s, write_s, total_s: 0.0, real_time_factor: simulate_s / (duration_ms * 1e-3) },
        rates_hz,
        spikes_total,
        outputs,
    };
    if let Some(out) = &options.out {
        report.outputs.push("run.json".to_string());
        report.timing.total_s = started.elapsed().as_secs_f64();
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(out.join("run.json"), json).with_context(|| format!("cannot write {}", out.join("run.json").display()))?;
    }
    report.timing.total_s = started.elapsed().as_secs_f64();
    Ok(report)
}
