//! `fum bench --peers`: the same cases in the peer simulators that are installed (Brian2, NEST,
//! and on a GPU Brian2CUDA and PyTorch), run side by side in the same invocation through
//! `benchmarks/peers/run_peer.py`, which prints one JSON line per run (its docstring is the
//! protocol). Peers time their own network construction (code generation and compilation
//! included) apart from the simulation loop, so they need no warm-up run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::Spread;

/// Where the peers are and how to start them.
pub struct Peers {
    /// The Python interpreter that has the peers installed.
    pub python: PathBuf,
    /// `benchmarks/peers/run_peer.py`.
    pub script: PathBuf,
    /// The peers `--list` found, with their versions.
    pub found: BTreeMap<String, Listed>,
}

/// A peer as `run_peer.py --list` describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct Listed {
    pub version: String,
    pub models: Vec<String>,
    pub backends: Vec<String>,
    /// Models on which the peer's reference integrator is not fum's (Brian2's COBA: forward
    /// Euler); those run both ways.
    #[serde(default)]
    pub matched_differs: Vec<String>,
}

#[derive(Deserialize)]
struct Listing {
    peers: BTreeMap<String, Listed>,
    #[serde(default)]
    missing: BTreeMap<String, String>,
}

/// One peer's runs of one case.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerResult {
    pub peer: String,
    pub version: String,
    /// The scheme the peer integrated with (its reference one, e.g. forward Euler for Brian2's
    /// COBA) and how it ran (e.g. C++ standalone, its default compiler flags).
    pub integrator: String,
    pub settings: String,
    pub build_s: Spread,
    pub simulate_s: Spread,
    /// Wall time of the whole peer process (interpreter, imports, build, simulation).
    pub total_s: Spread,
    /// Peer over fum, of the median simulate times: above 1, fum is faster.
    pub simulate_ratio: f64,
    /// Mean rates of the last run.
    pub rates_hz: BTreeMap<String, f64>,
}

/// What one run printed: the fields `fum bench` keeps.
#[derive(Deserialize)]
struct Run {
    version: String,
    integrator: String,
    #[serde(default)]
    settings: String,
    build_s: f64,
    simulate_s: f64,
    total_s: f64,
    #[serde(default)]
    rates_hz: BTreeMap<String, f64>,
}

impl Peers {
    /// Asks `script --list` through `python` which peers are installed, and says on stderr
    /// which are not and why.
    pub fn find(python: &Path, script: &Path) -> anyhow::Result<Peers> {
        anyhow::ensure!(script.exists(), "--peers: {} not found (run fum bench from the repository root, or give --peers-script)", script.display());
        let out = Command::new(python).arg(script).arg("--list").output().map_err(|e| anyhow::anyhow!("--peers: cannot start {}: {e}", python.display()))?;
        anyhow::ensure!(out.status.success(), "--peers: {} --list failed: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim());
        let listing: Listing = serde_json::from_slice(&out.stdout).map_err(|e| anyhow::anyhow!("--peers: {} --list printed no listing ({e})", script.display()))?;
        for (peer, why) in &listing.missing {
            eprintln!("peers: {peer} is not available here: {why}");
        }
        Ok(Peers { python: python.to_path_buf(), script: script.to_path_buf(), found: listing.peers })
    }

    /// The peers that run `model` on `backend`, each with its integrators: `reference`, and
    /// `matched` too where that is another scheme than fum's; where fum runs the peer's
    /// reference scheme (`euler`, [`super::Case::euler`]), only the peers whose reference
    /// differs from fum's default, with it.
    pub fn for_case<'a>(&'a self, model: &'a str, backend: &'a str, euler: bool) -> impl Iterator<Item = (&'a str, &'static str)> + 'a {
        self.found.iter().filter(move |(_, l)| l.models.iter().any(|m| m == model) && l.backends.iter().any(|b| b == backend)).flat_map(move |(p, l)| {
            let matched = l.matched_differs.iter().any(|m| m == model);
            let integrators: &[&'static str] = match (euler, matched) {
                (true, true) => &["reference"],
                (true, false) => &[],
                (false, true) => &["reference", "matched"],
                (false, false) => &["reference"],
            };
            integrators.iter().map(move |&i| (p.as_str(), i))
        })
    }

    /// Runs `peer` `repeat` times on `model` (the asset's name without .toml) as fum ran it,
    /// and compares its median simulate time with fum's (`fum_simulate_s`).
    #[allow(clippy::too_many_arguments)]
    pub fn run(&self, peer: &str, integrator: &str, model: &str, backend: &str, threads: usize, duration_ms: f64, neurons: Option<u32>, repeat: usize, fum_simulate_s: f64) -> anyhow::Result<PeerResult> {
        let mut runs = Vec::new();
        for _ in 0..repeat {
            let mut cmd = Command::new(&self.python);
            cmd.arg(&self.script).args(["--peer", peer, "--model", model, "--backend", backend, "--integrator", integrator]);
            cmd.args(["--threads", &threads.to_string(), "--duration-ms", &duration_ms.to_string()]);
            if let Some(n) = neurons {
                cmd.args(["--neurons", &n.to_string()]);
            }
            let out = cmd.output().map_err(|e| anyhow::anyhow!("{peer}: cannot start {}: {e}", self.python.display()))?;
            let line = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                let why = serde_json::from_str::<serde_json::Value>(line.trim()).ok().and_then(|v| v["error"].as_str().map(String::from));
                anyhow::bail!("{peer} on {model}: {}", why.unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("failed").to_string()));
            }
            runs.push(serde_json::from_str::<Run>(line.trim()).map_err(|e| anyhow::anyhow!("{peer} on {model}: unreadable result ({e}): {line}"))?);
        }
        let spread = |f: fn(&Run) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
        let last = runs.last().expect("repeat > 0");
        let simulate_s = spread(|r| r.simulate_s);
        Ok(PeerResult {
            peer: peer.into(),
            version: last.version.clone(),
            integrator: last.integrator.clone(),
            settings: last.settings.clone(),
            build_s: spread(|r| r.build_s),
            simulate_ratio: simulate_s.median / fum_simulate_s,
            simulate_s,
            total_s: spread(|r| r.total_s),
            rates_hz: last.rates_hz.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brian2 integrates COBA with forward Euler by reference (its matched run uses fum's
    /// exponential Euler); NEST integrates it one way. fum's default case meets Brian2's both
    /// ways and NEST's one; the case where fum runs forward Euler meets only Brian2's reference.
    #[test]
    fn a_case_meets_the_integrators_it_is_compared_with() {
        let listed = |matched: &[&str]| Listed { version: "1".into(), models: vec!["vogels_abbott_coba".into(), "brunel".into()], backends: vec!["cpu".into()], matched_differs: matched.iter().map(|m| m.to_string()).collect() };
        let found = BTreeMap::from([("brian2".to_string(), listed(&["vogels_abbott_coba"])), ("nest".to_string(), listed(&[]))]);
        let peers = Peers { python: PathBuf::new(), script: PathBuf::new(), found };
        let runs = |model, euler| peers.for_case(model, "cpu", euler).collect::<Vec<_>>();
        assert_eq!(runs("vogels_abbott_coba", false), [("brian2", "reference"), ("brian2", "matched"), ("nest", "reference")]);
        assert_eq!(runs("vogels_abbott_coba", true), [("brian2", "reference")]);
        assert_eq!(runs("brunel", false), [("brian2", "reference"), ("nest", "reference")]);
        assert!(peers.for_case("brunel", "cuda", false).next().is_none());
    }
}
