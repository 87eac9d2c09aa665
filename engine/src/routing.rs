//! Routed spike exchange across CPU ranks (`crate::ranks`): a rank sends each spike only to the
//! ranks whose synapses read it, instead of to every rank, once the partition makes that
//! worthwhile (`--partition metis` on a network of modules: most of a rank's sources are its
//! own). An all-to-all then replaces the all-gather, so a rank receives, and walks the rows of,
//! only the spikes it delivers.
//!
//! Which sources a rank reads is fixed when the network is built: a source with a non-empty
//! row in one of its blocks, or every source of a projection whose synapses may change or whose
//! presynaptic traces it keeps: a plastic projection's traces (`Plasticity`, per rank) must see
//! every spike of its source population, and structural plasticity may grow a synapse from any
//! source. Rank 0 receives every spike: it records the spikes and writes the global state of
//! checkpoints (the presynaptic traces). So a routed run delivers, learns and records what one
//! process does, bit for bit.
//!
//! Routes are built once, before the first step, by every rank together ([`Routes::build`]: an
//! all-to-all of the ranks' neuron ranges, one of the sources each rank reads, and a sum), and
//! kept, unless `--exchange` says otherwise, only if they carry less than [`ROUTE_BELOW`] of
//! what the all-gather would, judged by neurons (every rank decides alike from the same sums).

use std::ops::Range;
use std::sync::OnceLock;

use bevy_ecs::prelude::*;

use crate::components::{Populations, Shard, SynapseBlocks};
use crate::ranks::Transport;

/// Routes are used where they carry less than this fraction of the all-gather's messages.
pub const ROUTE_BELOW: f64 = 0.9;

/// `--exchange`: whether spikes are routed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Choice {
    /// Routed where that carries less than [`ROUTE_BELOW`] of the all-gather's messages.
    #[default]
    Auto,
    AllGather,
    Routed,
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> Result<Choice, String> {
        match s {
            "auto" => Ok(Choice::Auto),
            "all-gather" => Ok(Choice::AllGather),
            "routed" => Ok(Choice::Routed),
            other => Err(format!("unknown exchange \"{other}\" (auto, all-gather or routed)")),
        }
    }
}

static CHOICE: OnceLock<Choice> = OnceLock::new();

/// Sets the run's choice (once, at start-up).
pub fn set_choice(choice: Choice) {
    assert!(CHOICE.set(choice).is_ok(), "the exchange is chosen once");
}

/// The run's choice: auto unless set.
pub fn choice() -> Choice {
    CHOICE.get().copied().unwrap_or_default()
}

/// Where this rank's neurons' spikes go.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    /// The ranks that receive the spikes of this rank's `i`-th neuron (its shards in index
    /// order, each in id order): `to[first[i]..first[i + 1]]`, ascending.
    first: Vec<usize>,
    to: Vec<u32>,
}

/// What [`Routes::build`] found: the routes, if they pay, and the fraction of the all-gather's
/// messages (neurons times receiving ranks) they would carry, over all ranks.
pub struct Routing {
    pub routes: Option<Routes>,
    pub fraction: f64,
}

impl Routes {
    /// The ranks that receive the spikes of this rank's `own`-th neuron.
    pub fn of(&self, own: usize) -> &[u32] {
        &self.to[self.first[own]..self.first[own + 1]]
    }

    /// Works out the routes (a collective: every rank calls it at the same point).
    pub fn build(world: &mut World, transport: &dyn Transport) -> Routing {
        let (rank, size) = (transport.rank(), transport.size());
        let total = world.resource::<Populations>().0.iter().map(|p| p.first + p.size).max().unwrap_or(0) as usize;
        let mut q = world.query::<(&Shard, &SynapseBlocks)>();
        let mut parts: Vec<_> = q.iter(world).collect();
        parts.sort_unstable_by_key(|(shard, _)| shard.index);
        let own: Vec<Range<u32>> = parts.iter().map(|(shard, _)| shard.neurons.clone()).collect();

        // The sources this rank reads, as bits over all global ids.
        let mut reads = vec![0u32; total.div_ceil(32)];
        let mut mark = |g: u32| reads[g as usize / 32] |= 1 << (g % 32);
        for (_, blocks) in &parts {
            for b in &blocks.0 {
                let every = b.plastic.is_some() || b.rewired;
                (0..b.source_size).filter(|&r| every || b.row_ptr[r as usize + 1] > b.row_ptr[r as usize]).for_each(|r| mark(b.source_first + r));
            }
        }

        // Every rank's neuron ranges, then to each rank the bits of its neurons' ids, a whole
        // number of words per range (so each range starts a word).
        let flat: Vec<u32> = own.iter().flat_map(|r| [r.start, r.end]).collect();
        let (mut heard, mut counts) = (Vec::new(), Vec::new());
        transport.all_to_all(&vec![flat; size], false, &mut heard, &mut counts);
        let mut at = 0;
        let mut send = vec![Vec::new(); size];
        for (r, &count) in counts.iter().enumerate() {
            for pair in heard[at..at + count].chunks_exact(2) {
                send[r].extend(pack(&reads, pair[0]..pair[1]));
            }
            at += count;
        }
        transport.all_to_all(&send, false, &mut heard, &mut counts);

        // The receivers of each own neuron: rank 0 (which records), and each rank that reads it.
        let from: Vec<&[u32]> = counts.iter().scan(0, |at, &c| Some(&heard[std::mem::replace(at, *at + c)..*at])).collect();
        let mut routes = Routes { first: vec![0], to: Vec::new() };
        let mut word = 0;
        for range in &own {
            for i in 0..(range.end - range.start) as usize {
                let read = |r: usize| from[r][word + i / 32] >> (i % 32) & 1 == 1;
                routes.to.extend((0..size).filter(|&r| r != rank && (r == 0 || read(r))).map(|r| r as u32));
                routes.first.push(routes.to.len());
            }
            word += (range.end - range.start).div_ceil(32) as usize;
        }
        let neurons: usize = own.iter().map(|r| (r.end - r.start) as usize).sum();
        let mut sums = [routes.to.len() as u64, (neurons * (size - 1)) as u64];
        transport.sum(&mut sums);
        let fraction = sums[0] as f64 / sums[1].max(1) as f64;
        let routed = match choice() {
            Choice::Auto => fraction < ROUTE_BELOW,
            Choice::AllGather => false,
            Choice::Routed => true,
        };
        Routing { routes: routed.then_some(routes), fraction }
    }
}

/// The bits of `ids` in `bits` (a bit per global id), from bit 0 of a first word.
fn pack(bits: &[u32], ids: Range<u32>) -> Vec<u32> {
    let mut words = vec![0u32; (ids.end - ids.start).div_ceil(32) as usize];
    for (i, g) in ids.enumerate() {
        words[i / 32] |= (bits[g as usize / 32] >> (g % 32) & 1) << (i % 32);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_moves_a_range_of_bits_to_the_start_of_its_own_words() {
        let mut bits = vec![0u32; 4];
        for g in [3u32, 40, 41, 70, 100] {
            bits[g as usize / 32] |= 1 << (g % 32);
        }
        assert_eq!(pack(&bits, 40..75), vec![0b11 | 1 << 30, 0]);
        assert_eq!(pack(&bits, 0..4), vec![0b1000]);
        assert_eq!(pack(&bits, 69..101), vec![0b10 | 1 << 31]);
        assert!(pack(&bits, 5..5).is_empty());
    }
}
