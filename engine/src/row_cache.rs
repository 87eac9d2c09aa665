//! The device row cache. A network larger than its device's memory keeps the synapses of some
//! blocks (twice the excess, see [`crate::device::host_tier`]) in pinned host memory mapped
//! into the device's address space; the device memory left over holds copies of their rows
//! that spikes read most. Activity in cortex-like networks is skewed (rates spread over orders of
//! magnitude), so a cache of a fraction of the rows serves most of the reads, and only the rest
//! cross the bus. Rows, not pages of rows: the rows of neighbouring neurons have unrelated rates,
//! so a page of many rows is as active as any other.
//!
//! Layout: a block's cache is `slots` copies of `len` synapses (the 90th percentile of its row
//! lengths, so that most rows fit whole and short rows waste little), one column per synapse
//! column, and a table giving each row's slot. A row longer than `len` is cached up to `len`
//! synapses; the delivery kernel reads the rest from host memory. Each block's slots are its
//! share of the cache in proportion to its synapse bytes.
//!
//! Policy: rows are ranked by what caching them saves, the spikes of their source (counted on
//! the device every step, aged with a half-life of [`HALF_LIFE_MS`]) times the synapses a slot
//! holds of them. The ranking is redone at growing intervals (from [`FIRST_RANKING_MS`] of
//! simulated time, doubling up to [`RANKING_MS`], or beyond while rankings take more than
//! [`RANKING_SHARE`] of the time): an uncached row among the top `slots` takes a
//! free slot, or the slot of the lowest-ranked cached row that ranks [`HYSTERESIS`] times below
//! the top `slots`' cut (so that rows near the cut do not move back and forth). Leaving rows write their
//! weights back when STDP writes them; probed rows never move in (probes read the block's own
//! columns).
//!
//! Concurrency contract: the copies and the row table change only between steps, by kernels on
//! the step stream, so after every queued step that read them and before the next. The host
//! reads a block's own columns (checkpoints, health checks) only after [`RowCache::write_back`],
//! and after the host wrote them every cached row is copied again ([`RowCache::refill`]). Where
//! a synapse is read from never changes its value, so the spikes are the all-resident run's.

use std::sync::Arc;

use bevy_ecs::prelude::*;
use cudarc::driver::{CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use rayon::prelude::*;

use crate::backend::RowCacheStats;
use crate::components::{Delays, Shard, SynapseBlocks};
use crate::device::BlockDesc;
use crate::recording::{ProbeSite, Recorder};
use fum_kernels::cuda::{CudaError, Kernels};

/// Half-life of a row's activity.
pub const HALF_LIFE_MS: f64 = 1000.0;
/// The first ranking, after this much simulated time; the interval then doubles.
pub const FIRST_RANKING_MS: f64 = 10.0;
/// The longest interval between rankings.
pub const RANKING_MS: f64 = 1000.0;
/// The most of the run's time rankings may take: past it, their interval keeps doubling.
pub const RANKING_SHARE: f64 = 0.02;
/// How far below the cut a cached row must rank to give its slot to an uncached row above it.
pub const HYSTERESIS: f32 = 1.5;

const NEVER: u32 = u32::MAX;

/// Which rows of one block are in which slots, as the host tracks them (the device's row
/// table is kept equal by the moves).
struct Slots {
    source_first: u32,
    /// Synapses a slot holds of each row (its length up to the slot's); 0 for a row never cached.
    held: Vec<u16>,
    slot_row: Vec<u32>,
    row_slot: Vec<u32>,
}

/// One host-memory block's cache.
struct CachedBlock {
    /// Position in the device network's blocks and block table.
    index: usize,
    /// Synapses per slot.
    len: u32,
    slots: Slots,
    table: CudaSlice<u32>,
    target: CudaSlice<u8>,
    delay: Option<CudaSlice<u8>>,
    weight: CudaSlice<u8>,
    /// STDP writes its weights.
    written: bool,
    bytes_per_synapse: u64,
    weight_bytes: u64,
    /// The block's descriptor, with the cache's addresses (see [`RowCache::describe`]).
    desc: BlockDesc,
}

/// The moves one ranking decided for a block: rows leaving and entering, with their slots.
#[derive(Default)]
struct Moves {
    out_rows: Vec<u32>,
    out_slots: Vec<u32>,
    in_rows: Vec<u32>,
    in_slots: Vec<u32>,
}

/// The row caches of a device network's host-memory blocks (see the module comment).
pub struct RowCache {
    stream: Arc<CudaStream>,
    blocks: Vec<CachedBlock>,
    /// Spikes per neuron since the last ranking, counted by the step (`count_sources`).
    pub counts: CudaSlice<u32>,
    /// Synapses delivered from caches and from host memory (`deliver`'s `cache_reads`).
    pub reads: CudaSlice<u64>,
    activity: Vec<f32>,
    last: u64,
    next: u64,
    interval: u64,
    max_interval: u64,
    /// When the last ranking ended.
    ranked_at: Option<std::time::Instant>,
    half_life_steps: f64,
    /// Steps ran since the last write-back.
    dirty: bool,
    stats: RowCacheStats,
}

/// The 90th percentile of the non-empty rows' lengths (at least 1).
fn slot_len(row_ptr: &[u32]) -> u32 {
    let mut lens: Vec<u32> = row_ptr.windows(2).map(|w| w[1] - w[0]).filter(|&l| l > 0).collect();
    if lens.is_empty() {
        return 1;
    }
    let at = (lens.len() * 9 / 10).min(lens.len() - 1);
    *lens.select_nth_unstable(at).1
}

impl RowCache {
    /// Caches for the blocks `mapped` (keys, with their positions in the device network's block
    /// list) in `budget` bytes of device memory; `None` when the budget cannot hold the tables.
    pub fn new(stream: &Arc<CudaStream>, world: &mut World, mapped: &[((usize, usize), usize)], budget: u64, stdp_enabled: bool) -> Result<Option<RowCache>, CudaError> {
        // Spike counts by global id: the spikes of every rank are its rows' sources.
        let neurons = world.resource::<crate::components::Populations>().0.last().map_or(0, |p| (p.first + p.size) as usize);
        let probed: Vec<(usize, usize, u32)> = world
            .resource::<Recorder>()
            .probes
            .iter()
            .flat_map(|p| &p.sites)
            .filter_map(|s| match *s {
                ProbeSite::Synapse { shard, block, pre, .. } => Some((shard, block, pre)),
                ProbeSite::Neuron { .. } | ProbeSite::Elsewhere => None,
            })
            .collect();
        /// What a block's cache will be, before the budget is shared.
        struct Plan {
            index: usize,
            source_first: u32,
            held: Vec<u16>,
            len: u32,
            bytes_per_synapse: u64,
            target_bytes: u64,
            weight_bytes: u64,
            block_bytes: u64,
            per_synapse_delays: bool,
            written: bool,
        }
        let mut plans = Vec::new();
        for (shard, synapses) in world.query::<(&Shard, &SynapseBlocks)>().iter(world) {
            for (i, b) in synapses.0.iter().enumerate() {
                let Some(&(key, index)) = mapped.iter().find(|(k, _)| *k == (shard.index, i)) else { continue };
                let row_ptr = &b.row_ptr[..];
                // A slot holds at most u16::MAX synapses (`held` counts them in 16 bits).
                let len = slot_len(row_ptr).min(u32::from(u16::MAX));
                let mut held: Vec<u16> = row_ptr.windows(2).map(|w| (w[1] - w[0]).min(len) as u16).collect();
                for &(_, _, pre) in probed.iter().filter(|p| (p.0, p.1) == key) {
                    held[pre as usize] = 0;
                }
                let weight_bytes = if b.weight.precision() == crate::model::WeightPrecision::F16 { 2 } else { 4 };
                let per_synapse = matches!(b.delay, Delays::PerSynapse(_));
                let target_bytes = b.target.element_bytes() as u64;
                let bytes_per_synapse = target_bytes + weight_bytes + if per_synapse { 2 } else { 0 };
                let written = b.plastic.is_some() && stdp_enabled;
                plans.push(Plan { index, source_first: b.source_first, held, len, bytes_per_synapse, target_bytes, weight_bytes, block_bytes: b.synapse_bytes() as u64, per_synapse_delays: per_synapse, written });
            }
        }
        let tables: u64 = plans.iter().map(|p| 4 * p.held.len() as u64).sum::<u64>() + 4 * neurons as u64 + 16;
        let synapse_bytes: u64 = plans.iter().map(|p| p.block_bytes).sum();
        if budget <= tables || synapse_bytes == 0 {
            return Ok(None);
        }
        let copies = budget - tables;
        let mut blocks = Vec::new();
        let mut bytes = tables;
        for Plan { index, source_first, held, len, bytes_per_synapse, target_bytes, weight_bytes, block_bytes, per_synapse_delays, written } in plans {
            let cacheable = held.iter().filter(|&&h| h > 0).count() as u64;
            let share = (copies as f64 * block_bytes as f64 / synapse_bytes as f64) as u64;
            let slots = (share / (u64::from(len) * bytes_per_synapse)).min(cacheable) as usize;
            let elements = slots * len as usize;
            bytes += elements as u64 * bytes_per_synapse;
            let rows = held.len();
            blocks.push(CachedBlock {
                index,
                len,
                slots: Slots { source_first, held, slot_row: vec![NEVER; slots], row_slot: vec![NEVER; rows] },
                table: stream.clone_htod(&vec![NEVER; rows.max(1)])?,
                target: stream.alloc_zeros(target_bytes as usize * elements.max(1))?,
                delay: if per_synapse_delays { Some(stream.alloc_zeros(2 * elements.max(1))?) } else { None },
                weight: stream.alloc_zeros(weight_bytes as usize * elements.max(1))?,
                written,
                bytes_per_synapse,
                weight_bytes,
                desc: BlockDesc::default(),
            });
        }
        let dt_ms = world.resource::<crate::components::Clock>().dt_ms;
        let steps = |ms: f64| ((ms / dt_ms).round() as u64).max(1);
        let step = world.resource::<crate::components::Clock>().step;
        let slots = blocks.iter().map(|b| b.slots.slot_row.len() as u64).sum();
        Ok(Some(RowCache {
            stream: stream.clone(),
            blocks,
            counts: stream.alloc_zeros(neurons.max(1))?,
            reads: stream.alloc_zeros(2)?,
            activity: vec![0.0; neurons],
            last: step,
            next: step + steps(FIRST_RANKING_MS),
            interval: steps(FIRST_RANKING_MS),
            max_interval: steps(RANKING_MS),
            ranked_at: None,
            half_life_steps: HALF_LIFE_MS / dt_ms,
            dirty: false,
            stats: RowCacheStats { bytes, slots, ..Default::default() },
        }))
    }

    /// Device bytes of the copies and tables.
    pub fn bytes(&self) -> u64 {
        self.stats.bytes
    }

    /// Fills in the cache fields of the descriptor of block `index` (if cached) and keeps a
    /// copy for the moves.
    pub fn describe(&mut self, index: usize, desc: &mut BlockDesc) {
        let Some(b) = self.blocks.iter_mut().find(|b| b.index == index) else { return };
        let ptr = |s: &CudaSlice<u8>| crate::device::ptr(s, &self.stream);
        desc.cache_row = crate::device::ptr(&b.table, &self.stream);
        desc.cache_target = ptr(&b.target);
        desc.cache_delay = b.delay.as_ref().map_or(0, ptr);
        desc.cache_weight = ptr(&b.weight);
        desc.cache_len = b.len;
        b.desc = *desc;
    }

    /// Steps ran since the last write-back (called by every step).
    pub fn stepped(&mut self) {
        self.dirty = true;
    }

    /// Whether the step `step` should rank the rows first.
    pub fn due(&self, step: u64) -> bool {
        step >= self.next
    }

    /// Ranks the rows by their sources' aged spike counts and moves rows in and out (see the
    /// module comment), after the queued steps; the time the steps waited counts as stall.
    pub fn rank(&mut self, kernels: &Kernels, read_counts: impl FnOnce(&CudaSlice<u32>) -> Result<Vec<u32>, CudaError>, step: u64) -> Result<(), CudaError> {
        let started = std::time::Instant::now();
        let counts = read_counts(&self.counts)?;
        self.stream.memset_zeros(&mut self.counts)?;
        let decay = 0.5f32.powf(((step - self.last) as f64 / self.half_life_steps) as f32);
        self.activity.par_iter_mut().zip(counts.par_iter()).for_each(|(a, &c)| *a = *a * decay + c as f32);
        let activity = &self.activity;
        let ranking = std::time::Instant::now();
        let moves: Vec<Moves> = self.blocks.par_iter_mut().map(|b| b.slots.rank(activity)).collect();
        self.stats.rank_s += ranking.elapsed().as_secs_f64();
        for (b, m) in self.blocks.iter().zip(&moves) {
            if !m.out_rows.is_empty() {
                b.launch(kernels, &self.stream, &m.out_rows, &m.out_slots, if b.written { 3 } else { 2 })?;
                if b.written {
                    self.stats.bytes_back += m.out_rows.iter().map(|&r| u64::from(b.slots.held[r as usize]) * b.weight_bytes).sum::<u64>();
                }
            }
            if !m.in_rows.is_empty() {
                b.launch(kernels, &self.stream, &m.in_rows, &m.in_slots, 0)?;
                self.stats.bytes_in += m.in_rows.iter().map(|&r| u64::from(b.slots.held[r as usize]) * b.bytes_per_synapse).sum::<u64>();
            }
        }
        self.stats.rows = self.blocks.iter().map(|b| b.slots.slot_row.iter().filter(|&&r| r != NEVER).count() as u64).sum();
        self.stats.rankings += 1;
        self.last = step;
        let stall = started.elapsed();
        // A network of many rows ranks less often than RANKING_MS: its rankings take at most
        // RANKING_SHARE of the time.
        let since = self.ranked_at.map_or(stall, |at| at.elapsed());
        self.interval = if stall.as_secs_f64() > RANKING_SHARE * since.as_secs_f64() { self.interval * 2 } else { (self.interval * 2).min(self.max_interval) };
        self.next = step + self.interval;
        self.ranked_at = Some(std::time::Instant::now());
        self.stats.stall_s += stall.as_secs_f64();
        Ok(())
    }

    /// Copies the weights of every cached row back to its block's columns where steps wrote
    /// them, so that the host may read those columns.
    pub fn write_back(&mut self, kernels: &Kernels) -> Result<(), CudaError> {
        if !std::mem::take(&mut self.dirty) {
            return Ok(());
        }
        for b in self.blocks.iter().filter(|b| b.written) {
            let (rows, slots) = b.slots.held_rows();
            if !rows.is_empty() {
                b.launch(kernels, &self.stream, &rows, &slots, 1)?;
                self.stats.bytes_back += rows.iter().map(|&r| u64::from(b.slots.held[r as usize]) * b.weight_bytes).sum::<u64>();
            }
        }
        Ok(())
    }

    /// Copies every cached row again from its block's columns, after the host wrote them.
    pub fn refill(&mut self, kernels: &Kernels) -> Result<(), CudaError> {
        for b in &self.blocks {
            let (rows, slots) = b.slots.held_rows();
            if !rows.is_empty() {
                b.launch(kernels, &self.stream, &rows, &slots, 0)?;
                self.stats.bytes_in += rows.iter().map(|&r| u64::from(b.slots.held[r as usize]) * b.bytes_per_synapse).sum::<u64>();
            }
        }
        Ok(())
    }

    /// The counters, with the reads of the delivery kernel so far (`reads`, copied back).
    pub fn stats(&self, reads: [u64; 2]) -> RowCacheStats {
        let total = reads[0] + reads[1];
        RowCacheStats { synapses_from_cache: reads[0], synapses_from_host: reads[1], hit_rate: if total == 0 { 0.0 } else { reads[0] as f64 / total as f64 }, ..self.stats }
    }
}

impl CachedBlock {
    /// `move_rows` over (rows, slots) in `mode` (see fum.cu).
    fn launch(&self, kernels: &Kernels, stream: &Arc<CudaStream>, rows: &[u32], slots: &[u32], mode: u32) -> Result<(), CudaError> {
        let (rows_d, slots_d) = (stream.clone_htod(rows)?, stream.clone_htod(slots)?);
        let count = rows.len() as u32;
        let config = LaunchConfig { grid_dim: (count.div_ceil(8).min(4096), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the descriptor's addresses are this block's live buffers and cache; the rows
        // and slots are in range (ranked from them).
        unsafe { stream.launch_builder(&kernels.move_rows).arg(&self.desc).arg(&rows_d).arg(&slots_d).arg(&count).arg(&mode).launch(config) }?;
        Ok(())
    }
}

impl Slots {
    /// The rows cached now, with their slots.
    fn held_rows(&self) -> (Vec<u32>, Vec<u32>) {
        self.slot_row.iter().enumerate().filter(|&(_, &r)| r != NEVER).map(|(s, &r)| (r, s as u32)).unzip()
    }

    /// One ranking of this block (see the module comment); updates the host's copy of the row
    /// table and returns the moves the device must make. O(rows): selections, no sorts.
    fn rank(&mut self, activity: &[f32]) -> Moves {
        let slots = self.slot_row.len();
        let mut moves = Moves::default();
        if slots == 0 {
            return moves;
        }
        let first = self.source_first as usize;
        let priority: Vec<f32> = self.held.iter().enumerate().map(|(r, &h)| activity[first + r] * f32::from(h)).collect();
        // The cut: the priority of the `slots`-th row (0 while fewer rows are active).
        let mut active: Vec<f32> = priority.iter().copied().filter(|&p| p > 0.0).collect();
        let cut = if active.len() > slots { *active.select_nth_unstable_by(slots - 1, |a, b| b.total_cmp(a)).1 } else { 0.0 };
        // Uncached rows at the cut or above, and the slots they may take: free ones, then those of
        // cached rows HYSTERESIS times below the cut, lowest first.
        let mut entering: Vec<(f32, u32)> = (0..priority.len()).filter(|&r| self.row_slot[r] == NEVER && priority[r] > 0.0 && priority[r] >= cut).map(|r| (priority[r], r as u32)).collect();
        let mut free: Vec<u32> = (0..slots as u32).filter(|&s| self.slot_row[s as usize] == NEVER).collect();
        let need = entering.len().saturating_sub(free.len());
        if need > 0 {
            let mut leaving: Vec<(f32, u32)> = self.slot_row.iter().enumerate().filter(|&(_, &r)| r != NEVER && priority[r as usize] * HYSTERESIS < cut).map(|(s, &r)| (priority[r as usize], s as u32)).collect();
            if leaving.len() > need {
                leaving.select_nth_unstable_by(need - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                leaving.truncate(need);
            }
            for (_, slot) in leaving {
                let row = std::mem::replace(&mut self.slot_row[slot as usize], NEVER);
                self.row_slot[row as usize] = NEVER;
                moves.out_rows.push(row);
                moves.out_slots.push(slot);
                free.push(slot);
            }
        }
        if entering.len() > free.len() {
            if free.is_empty() {
                return moves;
            }
            entering.select_nth_unstable_by(free.len() - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            entering.truncate(free.len());
        }
        for ((_, row), slot) in entering.into_iter().zip(free) {
            self.row_slot[row as usize] = slot;
            self.slot_row[slot as usize] = row;
            moves.in_rows.push(row);
            moves.in_slots.push(slot);
        }
        moves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(held: Vec<u16>, slots: usize) -> Slots {
        let rows = held.len();
        Slots { source_first: 10, held, slot_row: vec![NEVER; slots], row_slot: vec![NEVER; rows] }
    }

    /// The rows worth most (activity x synapses held) fill free slots; silent and pinned rows
    /// (held 0) never come in; a row that reaches the top `slots` takes the slot of a cached
    /// row only when that one ranks HYSTERESIS times below the cut; host and "device" (the
    /// moves) agree on every slot.
    #[test]
    fn ranking_fills_free_slots_then_swaps_with_hysteresis() {
        // Rows 0..6 of a block whose sources are neurons 10..16; row 5 is probed (held 0).
        let mut s = slots(vec![4, 4, 2, 4, 4, 0], 2);
        let mut activity = vec![0.0f32; 16];
        activity[10..16].copy_from_slice(&[1.0, 5.0, 9.0, 3.0, 0.0, 100.0]);
        // Priorities: row 0: 4, row 1: 20, row 2: 18, row 3: 12, row 4: 0 (silent), row 5: pinned.
        let m = s.rank(&activity);
        let mut cached: Vec<u32> = s.held_rows().0;
        cached.sort_unstable();
        assert_eq!(cached, [1, 2]);
        assert!(m.out_rows.is_empty() && m.in_rows.len() == 2);
        for (&r, &slot) in m.in_rows.iter().zip(&m.in_slots) {
            assert_eq!((s.row_slot[r as usize], s.slot_row[slot as usize]), (slot, r));
        }
        // Row 3 rises to 5.5 (priority 22, the cut 20): row 2's 18 is not 1.5 x below the cut,
        // so nothing moves.
        activity[13] = 5.5;
        let m = s.rank(&activity);
        assert!(m.in_rows.is_empty() && m.out_rows.is_empty());
        // Row 2 falls to 1.0 (priority 2, 1.5 x below the cut 20): row 3 takes its slot, row 2
        // leaves first.
        activity[12] = 1.0;
        let slot_of_2 = s.row_slot[2];
        let m = s.rank(&activity);
        assert_eq!((m.out_rows, m.out_slots), (vec![2], vec![slot_of_2]));
        assert_eq!((m.in_rows, m.in_slots), (vec![3], vec![slot_of_2]));
        assert_eq!((s.row_slot[2], s.row_slot[3]), (NEVER, slot_of_2));
    }

    #[test]
    fn slot_length_is_the_90th_percentile_of_non_empty_rows() {
        // Rows of lengths 0, 1, 2, ..., 10 (and one empty): the 90th percentile of 1..=10 is 10.
        let mut row_ptr = vec![0u32, 0];
        for len in 1..=10 {
            row_ptr.push(row_ptr.last().unwrap() + len);
        }
        assert_eq!(slot_len(&row_ptr), 10);
        assert_eq!(slot_len(&[0, 0, 0]), 1);
        let uniform: Vec<u32> = (0..=100).map(|r| 7 * r).collect();
        assert_eq!(slot_len(&uniform), 7);
    }
}
