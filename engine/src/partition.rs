//! Which rank owns which shard (`fum run --partition contiguous|metis`, `crate::ranks`).
//!
//! The unit is the shard, never the neuron: a shard's neurons stay one contiguous range of
//! global ids (its synapses' targets are `u16` offsets into it), and global ids key every
//! random number and every output, so any assignment gives the same spikes. What an assignment
//! changes is speed: how evenly the ranks' steps take, and how many synapses cross ranks.
//!
//! - `contiguous` (the default): each rank a contiguous range of shards, cut where the summed
//!   cost ([`crate::build::shard_costs`]) is divided evenly.
//! - `metis`: METIS's k-way partition of the *shard graph*: a vertex per shard weighted by its
//!   cost, an edge between two shards weighted by the synapses expected between them in either
//!   direction (from the rules, before anything is built). METIS keeps the vertex weights within
//!   3 % of even and cuts as little edge weight as it can, so shards that exchange many synapses
//!   (a module of a clustered network split over shards, its excitatory and inhibitory
//!   populations far apart in id order) land on one rank. Choose shards a few times more than
//!   the ranks, so that METIS has room to group them.
//!
//! Every rank computes the assignment itself, without a collective: METIS is deterministic for
//! the same graph and options (its seed is fixed), and rank 0 checks, when it gathers the
//! partition for run.json, that the ranks' shards cover each shard exactly once.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use crate::model::Model;

/// How the shards are split among the ranks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    #[default]
    Contiguous,
    Metis,
}

impl Method {
    /// Its name on the command line and in run.json.
    pub fn name(self) -> &'static str {
        match self {
            Method::Contiguous => "contiguous",
            Method::Metis => "metis",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Method, String> {
        match s {
            "contiguous" => Ok(Method::Contiguous),
            "metis" => Ok(Method::Metis),
            other => Err(format!("unknown partition \"{other}\" (contiguous or metis)")),
        }
    }
}

static METHOD: OnceLock<Method> = OnceLock::new();

/// Sets the run's method (once, at start-up, before anything is built).
pub fn set_method(method: Method) {
    assert!(METHOD.set(method).is_ok(), "the partition method is set once");
}

/// The run's method: contiguous unless set.
pub fn method() -> Method {
    METHOD.get().copied().unwrap_or_default()
}

/// The rank of each shard of `ranges`, for `size` ranks.
pub fn assign(model: &Model, ranges: &[Range<u32>], size: usize, method: Method) -> Vec<usize> {
    if size <= 1 {
        return vec![0; ranges.len()];
    }
    let costs = crate::build::shard_costs(model, ranges);
    match method {
        Method::Contiguous => {
            let mut rank_of = vec![0; ranges.len()];
            for rank in 0..size {
                contiguous(&costs, rank, size).for_each(|s| rank_of[s] = rank);
            }
            rank_of
        }
        Method::Metis => metis(&costs, &shard_graph(model, ranges), size),
    }
}

/// The shards this process owns, ascending.
pub fn owned_here(model: &Model, ranges: &[Range<u32>]) -> Vec<usize> {
    let (rank, size) = crate::ranks::rank_and_size();
    let rank_of = assign(model, ranges, size, method());
    (0..ranges.len()).filter(|&s| rank_of[s] == rank).collect()
}

/// The contiguous range of shards that rank `rank` of `size` owns, given each shard's cost:
/// cut at the shard boundary nearest to `rank / size` of the total cost, so that every rank's
/// steps take about as long (a rank that finishes early waits for the others at every
/// exchange).
pub fn contiguous(costs: &[f64], rank: usize, size: usize) -> Range<usize> {
    let mut prefix = vec![0.0];
    prefix.extend(costs.iter().scan(0.0, |sum, &c| {
        *sum += c;
        Some(*sum)
    }));
    let total = prefix[costs.len()];
    let cut = |r: usize| {
        if r == 0 || r == size || total <= 0.0 {
            return costs.len() * r / size;
        }
        let target = total * r as f64 / size as f64;
        let after = prefix.partition_point(|&p| p < target);
        if after > 0 && target - prefix[after - 1] <= prefix[after] - target { after - 1 } else { after }
    };
    cut(rank)..cut(rank + 1)
}

/// The synapses expected between each pair of distinct shards `(a, b)`, `a < b`, both
/// directions summed: a projection's expected count spread evenly over its source and target
/// neurons (every rule draws its sources or targets uniformly), or, for listed synapses
/// (`ConnectionRule::Explicit`), their count.
pub fn shard_graph(model: &Model, ranges: &[Range<u32>]) -> BTreeMap<(usize, usize), f64> {
    let spec = &model.spec;
    let mut first = BTreeMap::new();
    let mut at = 0u32;
    for p in &spec.populations {
        first.insert(p.name.as_str(), at..at + p.size);
        at += p.size;
    }
    // The shards overlapping `ids`, each with its share of them.
    let shares = |ids: &Range<u32>| -> Vec<(usize, f64)> {
        let len = f64::from(ids.len().max(1) as u32);
        ranges
            .iter()
            .enumerate()
            .filter_map(|(s, r)| {
                let n = r.end.min(ids.end).saturating_sub(r.start.max(ids.start));
                (n > 0).then(|| (s, f64::from(n) / len))
            })
            .collect()
    };
    let mut graph = BTreeMap::new();
    let shard_of = |id: u32| ranges.partition_point(|r| r.end <= id);
    for (pi, p) in spec.projections.iter().enumerate() {
        let (Some(src), Some(tgt)) = (first.get(p.source.as_str()), first.get(p.target.as_str())) else { continue };
        // Listed synapses (SONATA edges) are counted, not expected.
        if let Some(list) = model.explicit_synapses(pi) {
            for (&pre, &post) in list.pre.iter().zip(&list.post) {
                let (a, b) = (shard_of(src.start + pre), shard_of(tgt.start + post));
                if a != b {
                    *graph.entry((a.min(b), a.max(b))).or_insert(0.0) += 1.0;
                }
            }
            continue;
        }
        let expected = model.expected_synapses_of(p);
        let (from, into) = (shares(src), shares(tgt));
        for &(a, fa) in &from {
            for &(b, fb) in &into {
                if a != b {
                    *graph.entry((a.min(b), a.max(b))).or_insert(0.0) += expected * fa * fb;
                }
            }
        }
    }
    graph
}

/// METIS's k-way partition of the shards into `size` parts: vertex weights `costs`, edge
/// weights `graph` (both scaled into METIS's 32-bit integers, a positive weight staying at
/// least 1).
fn metis(costs: &[f64], graph: &BTreeMap<(usize, usize), f64>, size: usize) -> Vec<usize> {
    let n = costs.len();
    if n <= size {
        // One shard or none per rank: nothing to group.
        return (0..n).collect();
    }
    let scaled = |values: &mut dyn Iterator<Item = f64>, total: f64| -> Vec<metis::Idx> {
        let scale = if total > 0.0 { f64::from(1u32 << 30) / total } else { 1.0 };
        values.map(|v| if v > 0.0 { ((v * scale).round() as metis::Idx).max(1) } else { 0 }).collect()
    };
    let vwgt = scaled(&mut costs.iter().copied(), costs.iter().sum::<f64>().max(1.0) * 2.0);
    let mut neighbours: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for (&(a, b), &w) in graph {
        neighbours[a].push((b, w));
        neighbours[b].push((a, w));
    }
    let mut xadj = vec![0 as metis::Idx];
    let mut adjncy = Vec::new();
    let mut weights = Vec::new();
    for list in &neighbours {
        for &(b, w) in list {
            adjncy.push(b as metis::Idx);
            weights.push(w);
        }
        xadj.push(adjncy.len() as metis::Idx);
    }
    let adjwgt = scaled(&mut weights.iter().copied(), weights.iter().sum::<f64>() * 2.0);
    // Zero-weight edges (an expectation that rounds to nothing) are still edges; METIS wants
    // positive weights, so they weigh the least there is.
    let adjwgt: Vec<metis::Idx> = adjwgt.into_iter().map(|w| w.max(1)).collect();
    let mut part = vec![0 as metis::Idx; n];
    let parts = metis::Idx::try_from(size).expect("fewer ranks than 2^31");
    metis::Graph::new(1, parts, &xadj, &adjncy)
        .expect("a well-formed shard graph")
        .set_vwgt(&vwgt)
        .set_adjwgt(&adjwgt)
        .part_kway(&mut part)
        .expect("METIS partitions a well-formed graph");
    part.into_iter().map(|p| p as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_ranges_ascend_and_cover_all() {
        for shards in [1, 2, 3, 7, 16] {
            for size in 1..=5 {
                let costs: Vec<f64> = (0..shards).map(|s| 1.0 + (s % 3) as f64).collect();
                let ranges: Vec<Range<usize>> = (0..size).map(|r| contiguous(&costs, r, size)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[size - 1].end, shards);
                assert!(ranges.windows(2).all(|w| w[0].end == w[1].start), "{shards} shards, {size} ranks: {ranges:?}");
            }
        }
    }

    /// Shards of unequal cost (a plastic population's shards, then a cheaper one's): the cuts
    /// fall where the cost, not the count, is halved.
    #[test]
    fn contiguous_cuts_split_the_cost_not_the_count() {
        let costs = [3.0, 3.0, 3.0, 1.0, 1.0, 1.0];
        assert_eq!((contiguous(&costs, 0, 2), contiguous(&costs, 1, 2)), (0..2, 2..6));
        assert_eq!(contiguous(&[1.0; 8], 1, 4), 2..4);
    }

    /// Four modules of two shards each, numbered so that a module's shards are far apart (as
    /// when every module's excitatory population comes first): METIS puts each module on one
    /// rank, which no contiguous cut can.
    #[test]
    fn metis_groups_the_shards_that_share_synapses() {
        let module = |s: usize| s % 4;
        let mut graph = BTreeMap::new();
        for a in 0..8 {
            for b in a + 1..8 {
                graph.insert((a, b), if module(a) == module(b) { 1000.0 } else { 1.0 });
            }
        }
        let part = metis(&[1.0; 8], &graph, 4);
        for s in 0..4 {
            assert_eq!(part[s], part[s + 4], "shards {s} and {} are one module: {part:?}", s + 4);
        }
        let mut used = part.clone();
        used.sort_unstable();
        assert_eq!(used, [0, 0, 1, 1, 2, 2, 3, 3], "each rank two shards: {part:?}");
    }
}
