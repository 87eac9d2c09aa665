//! What a run tells its progress callback (the CLI's progress bar): the steps done and, under
//! structural plasticity, the running totals of pruning and regrowth.

use std::fmt;

use crate::structural::StructuralReport;

/// The progress of a run, reported every 100 steps and at the end.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunProgress {
    /// Steps done, and the step the run ends at.
    pub done: u64,
    pub end_step: u64,
    /// Structural plasticity so far in this session; `None` without `[[structural]]`.
    pub structural: Option<StructuralTotals>,
    /// The host tier so far (`--host-memory`, when the synapses did not fit).
    pub paging: Option<crate::paging::TierStats>,
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
}
