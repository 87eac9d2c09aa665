//! The `fum` command line: `fum run` (headless batch run) and `fum check` (validate a model).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fum::Model;
use fum::run::{RunOptions, run};

#[derive(Parser)]
#[command(name = "fum", version, about = "Simulate large spiking neural networks (LIF neurons, STDP)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build and run a model, writing spikes (SONATA HDF5), probes and run.json under --out.
    Run {
        /// Model file (TOML).
        model: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Worker threads (default: the model's setting, else one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Shards (default: the model's setting, else one per thread).
        #[arg(long, default_value_t = 0)]
        shards: usize,
        /// Biological time to simulate, overriding the model (e.g. 500ms, 2s, 1.5 s).
        #[arg(long, value_parser = parse_duration_ms)]
        duration: Option<f64>,
        /// Seed, overriding the model.
        #[arg(long)]
        seed: Option<u64>,
        /// No progress bar and no summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Validate a model file and print its size.
    Check {
        model: PathBuf,
    },
}

/// "500ms", "2s", "1.5 s", "250" (ms) -> milliseconds.
fn parse_duration_ms(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (t, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v * scale),
        _ => Err(format!("\"{text}\" is not a positive duration such as 500ms or 2s")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { model, out, threads, shards, duration, seed, quiet } => {
            cmd_run(model, RunOptions { out, threads, shards }, duration, seed, quiet)
        }
        Command::Check { model } => cmd_check(model),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<fum::ModelError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

fn cmd_run(path: PathBuf, options: RunOptions, duration: Option<f64>, seed: Option<u64>, quiet: bool) -> anyhow::Result<()> {
    let mut model = Model::load(&path)?;
    if let Some(ms) = duration {
        model.spec.simulation.duration_ms = ms;
    }
    if let Some(seed) = seed {
        model.spec.simulation.seed = seed;
    }
    model.revalidate()?;
    let (threads, shards) = options.resolve(&model);
    let steps = model.steps();
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(steps) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} steps, {elapsed} elapsed, eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    if !quiet {
        eprintln!("fum run {}: {} ms at dt {} ms, {threads} threads, {shards} shards", path.display(), model.spec.simulation.duration_ms, model.spec.simulation.dt_ms);
    }
    bar.set_message("simulating");
    let report = run(&model, &options, |done| bar.set_position(done))?;
    bar.finish_and_clear();
    if !quiet {
        let n = &report.network;
        let t = &report.timing;
        println!("neurons          {}", n.neurons);
        println!("synapses         {} ({} plastic)", n.synapses, n.plastic_synapses);
        println!("memory           {} ({:.1} B/neuron, {:.2} B/static synapse, {:.2} B/plastic synapse)", human_bytes(n.bytes_total), n.bytes_per_neuron, n.bytes_per_static_synapse, n.bytes_per_plastic_synapse);
        println!("build            {:.3} s", t.build_s);
        println!("simulate         {:.3} s for {} ms ({} steps)", t.simulate_s, report.duration_ms, report.steps);
        println!("real-time factor {:.3} (wall time / biological time)", t.real_time_factor);
        for (pop, rate) in &report.rates_hz {
            println!("rate {pop:<11} {rate:.2} Hz");
        }
        if let Some(out) = &options.out {
            println!("outputs          {} in {}", report.outputs.join(", "), out.display());
        }
    }
    Ok(())
}

fn cmd_check(path: PathBuf) -> anyhow::Result<()> {
    use fum::engine::model::ConnectionRule;
    let model = Model::load(&path)?;
    let spec = &model.spec;
    let size = |name: &str| spec.populations[model.population_index(name).expect("validated")].size as f64;
    let neurons: u64 = spec.populations.iter().map(|p| u64::from(p.size)).sum();
    println!("{}: valid", path.display());
    println!("populations      {} ({} neurons)", spec.populations.len(), neurons);
    let mut total = 0.0;
    for p in &spec.projections {
        let (src, tgt) = (size(&p.source), size(&p.target));
        let expected = match p.rule {
            ConnectionRule::FixedProbability(q) => q * src * tgt,
            ConnectionRule::FixedIndegree(k) => f64::from(k) * tgt,
            ConnectionRule::FixedOutdegree(k) => f64::from(k) * src,
            ConnectionRule::OneToOne => src,
            ConnectionRule::AllToAll => src * tgt,
        };
        total += expected;
        let kind = if p.plasticity.is_some() { "plastic" } else { "static" };
        println!("projection {:<18} {} -> {}: ~{:.0} synapses ({kind})", p.name, p.source, p.target, expected);
    }
    println!("synapses         ~{total:.0}");
    println!("duration         {} ms, {} steps of {} ms", spec.simulation.duration_ms, model.steps(), spec.simulation.dt_ms);
    Ok(())
}

fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}
