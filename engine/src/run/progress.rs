//! What a run tells its progress callback (the CLI's progress bar): what it is doing (building,
//! placing the network on its backend, simulating), the steps done and, under structural
//! plasticity, the running totals of pruning and regrowth.

use std::fmt;

use crate::structural::StructuralReport;

/// The progress of a run: once as it starts building and once as it places the network on its
/// backend, then every 100 steps and at the end.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunProgress {
    /// What the run is doing.
    pub phase: Phase,
    /// Steps done, and the step the run ends at (while building: the step it starts from, and
    /// 0 where not known yet).
    pub done: u64,
    pub end_step: u64,
    /// Structural plasticity so far in this session; `None` without `[[structural]]`.
    pub structural: Option<StructuralTotals>,
    /// The host tier so far (`--host-memory`, when the synapses did not fit).
    pub paging: Option<crate::paging::TierStats>,
}

/// What a run is doing when it reports progress.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Phase {
    /// Building the network (resuming: rebuilding it before reading a checkpoint's state in);
    /// its size as `fum check` estimates it, and the shards this process has built so far (once
    /// as the build starts, then as each shard is done).
    Building { neurons: u64, synapses: u64, bytes: u64, shards: usize, built: usize },
    /// Putting the built network on the backend named (on a GPU: copying it there).
    Placing { backend: &'static str },
    /// Stepping.
    #[default]
    Simulating,
}

/// One line for a progress bar: `building 12.5k neurons, 15.62M synapses (97.4 MB, 2 shards)`,
/// and `: 1 built` once a shard is done.
impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Building { neurons, synapses, bytes, shards, built } => {
                let plural = if *shards == 1 { "" } else { "s" };
                write!(f, "building {} neurons, {} synapses ({}, {shards} shard{plural})", count(*neurons), count(*synapses), crate::estimate::bytes(*bytes as f64))?;
                if *built > 0 {
                    write!(f, ": {built} built")?;
                }
                Ok(())
            }
            Phase::Placing { backend } => write!(f, "placing the network on {backend}"),
            Phase::Simulating => write!(f, "simulating"),
        }
    }
}

/// Structural plasticity summed over the projections under `[[structural]]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StructuralTotals {
    /// The projection's name when there is one, else `None`.
    pub projection: Option<String>,
    pub pruned: u64,
    pub grown: u64,
    /// Bytes of synapses given back since the session started (negative: taken).
    pub bytes_freed: i64,
}

impl StructuralTotals {
    pub fn of(report: &StructuralReport) -> Self {
        let mut totals = StructuralTotals { projection: None, pruned: 0, grown: 0, bytes_freed: 0 };
        for r in report.0.values() {
            totals.pruned += r.pruned;
            totals.grown += r.grown;
            totals.bytes_freed += r.bytes_at_start as i64 - r.bytes_now as i64;
        }
        if let [name] = report.0.keys().collect::<Vec<_>>().as_slice() {
            totals.projection = Some((*name).clone());
        }
        totals
    }
}

/// One line for a progress bar: `E_to_E: pruned 12.3k grown 12.1k freed 49.2 kB`.
impl fmt::Display for StructuralTotals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.projection {
            write!(f, "{name}: ")?;
        }
        let (verb, bytes) = if self.bytes_freed >= 0 { ("freed", self.bytes_freed) } else { ("took", -self.bytes_freed) };
        write!(f, "pruned {} grown {} {verb} {}", count(self.pruned), count(self.grown), crate::estimate::bytes(bytes.unsigned_abs() as f64))
    }
}

/// 950, 12.3k, 4.56M.
fn count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structural::ProjectionReport;

    fn report(projections: &[(&str, u64, u64, u64, u64)]) -> StructuralReport {
        let mut r = StructuralReport::default();
        for &(name, pruned, grown, bytes_at_start, bytes_now) in projections {
            r.0.insert(name.into(), ProjectionReport { pruned, grown, bytes_at_start, bytes_now, ..ProjectionReport::default() });
        }
        r
    }

    #[test]
    fn one_projection_is_named_and_several_are_summed() {
        let one = StructuralTotals::of(&report(&[("E_to_E", 12_345, 12_101, 1_000_000, 950_848)]));
        assert_eq!(one.to_string(), "E_to_E: pruned 12.3k grown 12.1k freed 49.2 kB");
        let two = StructuralTotals::of(&report(&[("EE", 900, 0, 4096, 3584), ("IE", 2_500_000, 0, 30 << 20, 28 << 20)]));
        assert_eq!((two.projection.as_deref(), two.pruned, two.bytes_freed), (None, 2_500_900, (2 << 20) + 512));
        assert_eq!(two.to_string(), "pruned 2.50M grown 0 freed 2.1 MB");
        let grew = StructuralTotals::of(&report(&[("EE", 1, 999, 1000, 1300)]));
        assert_eq!(grew.to_string(), "EE: pruned 1 grown 999 took 0.3 kB");
    }

    #[test]
    fn phases_read_as_a_progress_line() {
        let building = Phase::Building { neurons: 12_500, synapses: 15_625_000, bytes: 187_500_000, shards: 2, built: 0 };
        assert_eq!(building.to_string(), "building 12.5k neurons, 15.62M synapses (187.5 MB, 2 shards)");
        let one = Phase::Building { neurons: 12_500, synapses: 15_625_000, bytes: 187_500_000, shards: 2, built: 1 };
        assert_eq!(one.to_string(), "building 12.5k neurons, 15.62M synapses (187.5 MB, 2 shards): 1 built");
        assert_eq!(Phase::Building { neurons: 10, synapses: 0, bytes: 2000, shards: 1, built: 0 }.to_string(), "building 10 neurons, 0 synapses (2.0 kB, 1 shard)");
        assert_eq!(Phase::Placing { backend: "cuda" }.to_string(), "placing the network on cuda");
        assert_eq!(RunProgress::default().phase, Phase::Simulating);
    }
}
