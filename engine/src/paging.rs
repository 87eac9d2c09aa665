//! Tiered synapse storage on the host: synapses beyond a RAM budget (`--host-memory`) live in
//! compressed pages on disk, with the same spikes and learned weights, bit for bit.
//!
//! A **page** is a range of presynaptic rows of one synapse block, so its synapses are one
//! contiguous range of each per-synapse column (targets, drawn delays, weights). A page is
//! *resident* (its bytes in the columns' host copies, which paging moves into anonymous
//! mappings) or *spilled*: each column's range compressed with zstd into the block's spill
//! file, and its memory given back to the system (`Column::spill`). A page keeps its disk copy
//! when it comes back, so evicting it again costs nothing unless STDP wrote it (*dirty*).
//! Spill files are unnamed temporary files in `--spill-dir`: they vanish with the process,
//! however it ends. Blocks under structural plasticity are not paged (their columns change
//! length at commits) and count as fixed memory.
//!
//! **Under a device** (`--host-memory` with `--backend cuda`) paging holds the host's copies
//! to the budget while the kernels read the device's (and, for a network larger than the card,
//! the pinned host tier of [`crate::device::host_tier`], which the budget counts as fixed:
//! the device calls [`enable`] once it knows the tier's size, before allocating it). The
//! device is filled page by page ([`upload_paged`]), spilled pages straight from disk, so the
//! synapses never sit whole in RAM. Only columns the device never writes are paged there
//! (targets, delays, static weights): a plastic block's weights stay in RAM, where a
//! checkpoint's download lands them. No step reads a page on the host then: the disk holds
//! the host's copy, not a tier the kernels are served from.
//!
//! **When.** Delivery is the only part of a step that reads synapses, and only the rows of the
//! step's spikes: before it walks a row of a paged block it calls [`ShardPages::fetch`], which
//! brings the row's page in if it is spilled (the time that takes is the stall). Each shard has
//! its own share of the budget, in proportion to its synapses, so shards page in parallel
//! without sharing anything, and the budget holds at every moment, even when one step needs
//! more pages than fit. Placement depends on the spikes alone, never on timing or threads: the
//! hit rates of a run are reproducible too.
//!
//! **Lookahead.** A spike of step t reaches a static synapse only at t + its delay, so a
//! static block defers its spikes' deliveries for up to its minimum delay and then delivers all
//! that wait, sorted by row ([`deliver_static`]): a page read by several spikes of the window
//! comes in once. The sums are integers, so the spikes are the same whatever the order and the
//! step of delivery. A checkpoint delivers every deferred spike first ([`deliver_all_deferred`]).
//!
//! **Which page goes.** Every page has a priority: its presynaptic activity (spikes through its
//! rows, halved every [`HALF_LIFE_MS`]: the aging) times the mean |w| of its synapses. When a
//! page would not fit, the shard's lowest-priority pages go, least recently used first among
//! equals, down to 7/8 of its share, so that evictions come in batches. Pages holding probed
//! synapses are pinned.
//!
//! **Building.** A network larger than the budget is paged as it is built ([`BuildSpill`]):
//! each block spills what exceeds its share as soon as it is built, so the synapses never sit
//! whole in memory; a paged build uses more shards where the blocks being built would take more
//! than a quarter of the budget ([`shards_for_building`]).
//!
//! **Readers between steps.** A checkpoint reads every page where it is ([`read_paged`]:
//! resident pages from memory, spilled ones decompressed from disk) into its checksums and its
//! copy of the state (a plastic block's weights, copied as for any network), and a resume,
//! which pages the network while building it again, writes the checkpoint's weights into the
//! pages where they are ([`write_paged`]); health checks, the
//! viewer's weight histogram and weight probes read resident pages only (spilled ones cannot
//! change; under a device the weights are not paged and are read whole).
//!
//! Concurrency contract: a block's pages and spill file are touched by one thread at a time:
//! the one building it, then the one delivering into its shard (with the shard's
//! [`ShardPages`]), or, between steps, the one running [`fault_in_all`], [`enforce`] or
//! [`deliver_all_deferred`] for its shard, or a checkpoint reading it (a restore writing it) on
//! the thread that owns the world; nothing else reads a paged block's synapses during a step.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bevy_ecs::prelude::*;
use rayon::prelude::*;
use serde::Serialize;

use crate::column::AnyColumn;
use crate::components::{Clock, Delays, NeuronBlock, Plasticity, Shard, SynapseBlock, SynapseBlocks, Weights};
use crate::estimate::bytes;
use crate::model::Receptor;
use crate::recording::{ProbeSite, Recorder};
use fum_kernels::delivery::{Ring, deliver_row};

/// Half-life of a page's activity, in biological time.
pub const HALF_LIFE_MS: f64 = 100.0;
/// zstd level of the disk pages: the fastest of the standard levels (the disk tier is read in
/// the step's critical path).
const LEVEL: i32 = 1;
/// Bytes of a page (whole rows, so a little more or less), unless that makes more than a million.
pub const PAGE_BYTES: u64 = 64 << 10;
/// Pages the budget must hold at least.
const MIN_PAGES: u64 = 8;

/// Why paging could not start.
#[derive(Debug, thiserror::Error)]
pub enum PagingError {
    #[error("--host-memory {}: the network needs {} besides its pageable synapses (neuron state, ring buffers, row pointers, STDP traces{}{}), and synapse pages at least {} more", bytes(*budget as f64), bytes(*fixed as f64), if *rewired > 0 { format!(", {} of synapses under structural plasticity", bytes(*rewired as f64)) } else { String::new() }, if *device_kept > 0 { format!(", {} the GPU run keeps in RAM: the plastic weights it writes and the pinned host memory of synapses beyond the card", bytes(*device_kept as f64)) } else { String::new() }, bytes(*min_pages as f64))]
    TooSmall { budget: u64, fixed: u64, rewired: u64, device_kept: u64, min_pages: u64 },
    #[error("--spill-dir {}: {} of synapses may go to disk and the folder's file system has {} free", dir.display(), bytes(*need as f64), bytes(*free as f64))]
    NoDisk { dir: PathBuf, need: u64, free: u64 },
    #[error("spill folder {}", dir.display())]
    Io { dir: PathBuf, source: io::Error },
}

/// What a run asks of the host tier.
#[derive(Clone, Debug)]
pub struct TierOptions {
    /// RAM for the whole network, bytes.
    pub host_bytes: u64,
    pub spill_dir: PathBuf,
    /// Bytes of a page: [`PAGE_BYTES`] (tests page small networks with smaller pages).
    pub page_bytes: u64,
    /// The network runs on a device backend (see the module comment).
    pub device: bool,
}

/// `--host-memory` of a run on a device backend: the device starts paging ([`enable`]) as it
/// places the network, once it knows its pinned host tier and before allocating it, so that the
/// host never holds the build's resident pages and the tier at once.
#[derive(Resource, Clone, Debug)]
pub struct DeviceHostBudget {
    pub options: TierOptions,
    pub dt_ms: f64,
}

/// Bytes of the pinned host tier a device keeps synapses in ([`crate::device::host_tier`]):
/// fixed memory for the host tier's budget.
#[derive(Resource, Clone, Copy, Debug, Default)]
pub struct PinnedHostBytes(pub u64);

/// Where a network's host memory goes, bytes.
#[derive(Clone, Copy, Debug)]
pub struct Footprint {
    /// Neuron state, ring buffers, row pointers, STDP traces and histories, and under a device
    /// its plastic weights and pinned host tier: never paged.
    pub fixed: u64,
    /// Synapses of blocks under structural plasticity: never paged either.
    pub rewired: u64,
    /// Synapses that paging may spill.
    pub pageable: u64,
    /// Of `fixed`, what a device run keeps in RAM: the plastic weights it writes, its pinned
    /// host tier.
    pub device_kept: u64,
}

/// The host memory of `world`'s network (see [`Footprint`]), on a device backend if `device`.
pub fn footprint(world: &mut World, device: bool) -> Footprint {
    let (mut fixed, mut rewired, mut pageable, mut device_kept) = (0u64, 0u64, 0u64, 0u64);
    let mut query = world.query::<(&NeuronBlock, &SynapseBlocks)>();
    for (neurons, blocks) in query.iter(world) {
        fixed += neurons.bytes() as u64;
        for b in &blocks.0 {
            fixed += b.index_bytes() as u64;
            if b.rewired {
                rewired += b.synapse_bytes() as u64;
            } else {
                // Weights a device writes are not paged ([`paged_columns`]).
                let kept = if device && b.plastic.is_some() { b.weight.bytes() as u64 } else { 0 };
                pageable += b.synapse_bytes() as u64 - kept;
                (fixed, device_kept) = (fixed + kept, device_kept + kept);
            }
        }
    }
    fixed += world.resource::<Plasticity>().projections.iter().map(|p| (p.pre_trace.bytes() + p.pre_last_spike.bytes()) as u64).sum::<u64>();
    let pinned = world.get_resource::<PinnedHostBytes>().map_or(0, |p| p.0);
    Footprint { fixed: fixed + pinned, rewired, pageable, device_kept: device_kept + pinned }
}

/// The host tier of a paged network: its budget, what is resident, and what moved.
#[derive(Resource, Debug)]
pub struct HostTier {
    pub stats: TierStats,
}

/// The host tier's figures (`storage.host` in run.json).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TierStats {
    /// `--host-memory`, and what it leaves for synapse pages.
    pub host_memory_bytes: u64,
    pub budget_bytes: u64,
    pub spill_dir: String,
    pub pages: u64,
    /// Bytes of all pages, and the most resident at once: the sum of the shards' peaks, so at
    /// least the peak of the whole.
    pub paged_bytes: u64,
    pub peak_resident_bytes: u64,
    pub resident_bytes: u64,
    /// What moved, and how often a read found its page resident.
    #[serde(flatten)]
    pub moved: Moved,
    pub hit_rate: f64,
    /// Bytes in and out (those spilled while building included) over the simulation's time.
    pub bytes_moved_per_s: f64,
}

/// One line for a progress bar: `pages 83.6 % hits, 2.8 GB in, waited 4.2 s`, or where no step
/// reads a page (under a device) `pages 1.2 GB resident, 1.4 GB on disk`.
impl std::fmt::Display for TierStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.moved.hits + self.moved.faults == 0 {
            return write!(f, "pages {} resident, {} on disk", bytes(self.resident_bytes as f64), bytes(self.moved.disk_bytes as f64));
        }
        write!(f, "pages {:.1} % hits, {} in, waited {:.1} s", 100.0 * self.hit_rate, bytes(self.moved.bytes_in as f64), self.moved.stall_s)
    }
}

/// The pages of one block (see the module comment).
#[derive(Debug)]
pub struct PageTable {
    /// Page `p` holds rows `rows[p]..rows[p + 1]`.
    rows: Vec<u32>,
    pages: Vec<Page>,
    /// Created at the block's first spill, `capacity` bytes.
    file: Option<SpillFile>,
    capacity: u64,
    /// Names and element bytes of the block's paged columns, in their order (target, drawn
    /// delays, weights).
    columns: Vec<&'static str>,
    element_bytes: Vec<usize>,
    /// Steps a spike's delivery may wait (a static block's minimum delay; 1 for a plastic block,
    /// whose updates read the state of the spike's own step), and the spikes waiting, as
    /// (global id, step), in step order (see [`deliver_static`]).
    window: u64,
    deferred: Vec<(u32, u64)>,
}

#[derive(Debug)]
struct Page {
    synapses: Range<usize>,
    /// Offset of the page's slot in the spill file: room for each column's compressed range.
    slot: u64,
    resident: bool,
    /// Its resident bytes differ from its disk copy (or it has none).
    dirty: bool,
    on_disk: bool,
    pinned: bool,
    /// 1 + the last step that needed it (0: none yet).
    last_use: u64,
    /// Spikes through its rows, aged to `last_use`.
    activity: f32,
    mean_abs_weight: f32,
    /// Per column: compressed length and CRC-32 of the disk copy.
    frames: [(u32, u32); 3],
}

#[derive(Debug)]
struct SpillFile {
    file: File,
}

impl PageTable {
    /// Bytes of page `p`, all columns.
    fn bytes(&self, p: usize) -> u64 {
        (self.pages[p].synapses.len() * self.element_bytes.iter().sum::<usize>()) as u64
    }

    /// The page holding row `row`.
    fn page_of_row(&self, row: u32) -> usize {
        self.rows.partition_point(|&r| r <= row) - 1
    }

    /// The page holding synapse `k`.
    fn page_of_synapse(&self, k: usize) -> usize {
        self.pages.partition_point(|p| p.synapses.end <= k)
    }

    /// Bytes of all pages (its paged columns: under a device not a plastic block's weights).
    fn paged_bytes(&self) -> u64 {
        (0..self.pages.len()).map(|p| self.bytes(p)).sum()
    }

    /// Bytes of the resident pages.
    fn resident_bytes(&self) -> u64 {
        (0..self.pages.len()).filter(|&p| self.pages[p].resident).map(|p| self.bytes(p)).sum()
    }

    /// Whether the block's column `name` is paged.
    pub fn pages_column(&self, name: &str) -> bool {
        self.columns.contains(&name)
    }

    /// The synapse ranges of the resident pages.
    pub fn resident(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.pages.iter().filter(|p| p.resident).map(|p| p.synapses.clone())
    }
}

impl PageTable {
    /// Where column `c`'s frame of page `p` starts in the spill file: each page's slot holds
    /// room for every column's compressed range, in column order.
    fn frame_at(&self, p: usize, c: usize) -> u64 {
        let n = self.pages[p].synapses.len();
        self.pages[p].slot + self.element_bytes[..c].iter().map(|b| zstd::zstd_safe::compress_bound(b * n) as u64).sum::<u64>()
    }

    /// Decompresses column `c`'s frame of spilled page `p` into exactly `dst`, its CRC checked.
    /// The frame is read with `pread` into a buffer of the thread's, not through a memory map,
    /// so that the spill file's pages stay in the page cache and out of the process's resident
    /// set (which `host_peak_rss_bytes` reports).
    fn read_frame(&self, p: usize, c: usize, dst: &mut [u8]) -> Result<(), String> {
        let file = self.file.as_ref().expect("a spilled page has a spill file");
        let at = self.frame_at(p, c);
        let (len, crc) = self.pages[p].frames[c];
        FRAME.with_borrow_mut(|frame| {
            frame.resize(len as usize, 0);
            file.file.read_exact_at(frame, at).map_err(|e| format!("reading a page back from its spill file: {e}"))?;
            if crc32fast::hash(frame) != crc {
                return Err(format!("a page read back from its spill file is corrupt (CRC mismatch at byte {at})"));
            }
            decompress(frame, dst)
        })
    }
}

/// Streams the bytes of `column`, the paged column `name` of the block whose page table is
/// `table`, in order, resident pages from memory and spilled ones decompressed from disk (a
/// checkpoint reads pages where they are); `Ok(false)` if `name` is not paged.
pub fn read_paged(table: &PageTable, name: &str, column: &dyn AnyColumn, f: &mut dyn FnMut(&[u8])) -> Result<bool, String> {
    let Some(c) = table.columns.iter().position(|&n| n == name) else { return Ok(false) };
    let mut scratch = Vec::new();
    for (p, page) in table.pages.iter().enumerate() {
        if page.resident {
            f(column.range_bytes(page.synapses.clone()));
        } else {
            scratch.resize(page.synapses.len() * table.element_bytes[c], 0);
            table.read_frame(p, c, &mut scratch[..])?;
            f(&scratch);
        }
    }
    Ok(true)
}

/// Writes the bytes of `column`, the paged column `name` of the block whose page table is
/// `table`, page by page in order as `fill` produces them: into resident pages in memory, and
/// compressed into their spill-file slots for spilled ones ([`read_paged`]'s counterpart: a
/// restore writes pages where they are, so a network larger than memory resumes). A spilled
/// page's priority takes the |w| of the weights written; a resident one's is taken when it is
/// evicted, as after STDP. The change in compressed bytes on disk (for
/// [`ShardPages::add_disk_bytes`]), or `None` if `name` is not paged.
pub fn write_paged(table: &mut PageTable, name: &str, column: &mut dyn AnyColumn, fill: &mut dyn FnMut(&mut [u8]) -> Result<(), String>) -> Result<Option<i64>, String> {
    let Some(c) = table.columns.iter().position(|&n| n == name) else { return Ok(None) };
    let (mut scratch, mut disk_bytes) = (Vec::new(), 0);
    for p in 0..table.pages.len() {
        let synapses = table.pages[p].synapses.clone();
        if table.pages[p].resident {
            fill(column.range_bytes_mut(synapses))?;
            // Its disk copy, if any, is stale now.
            table.pages[p].dirty = true;
            continue;
        }
        let elem = table.element_bytes[c];
        scratch.resize(synapses.len() * elem, 0);
        fill(&mut scratch)?;
        let frame = ZSTD.with_borrow_mut(|z| z.0.compress(&scratch)).map_err(|e| format!("compressing a page: {e}"))?;
        let file = table.file.as_ref().expect("a spilled page has a spill file");
        file.file.write_all_at(&frame, table.frame_at(p, c)).map_err(|e| format!("writing a page to its spill file: {e}"))?;
        let page = &mut table.pages[p];
        disk_bytes += i64::from(frame.len() as u32) - i64::from(page.frames[c].0);
        page.frames[c] = (frame.len() as u32, crc32fast::hash(&frame));
        if name == "weight" {
            let weights = scratch.chunks_exact(elem).map(|b| if elem == 4 { f32::from_le_bytes(b.try_into().expect("4 bytes")) } else { f32::from(half::f16::from_le_bytes(b.try_into().expect("2 bytes"))) });
            page.mean_abs_weight = mean_of_abs(weights, synapses.len());
        }
    }
    Ok(Some(disk_bytes))
}

/// Compressed bytes of the pages' copies on disk, summed over `world`'s paged blocks: what
/// the tier's `disk_bytes` counts.
pub fn disk_bytes_held(world: &mut World) -> u64 {
    let mut query = world.query::<&SynapseBlocks>();
    query.iter(world).flat_map(|blocks| blocks.0.iter()).filter_map(|b| b.pages.as_ref()).flat_map(|t| t.pages.iter().filter(|p| p.on_disk)).flat_map(|p| p.frames.iter()).map(|&(len, _)| u64::from(len)).sum()
}

/// Takes the page tables out of `world`'s blocks, keyed by (shard index, block index), so that
/// a reader can walk the columns with them at hand ([`read_paged`]); [`put_tables`] returns them.
pub fn take_tables(world: &mut World) -> std::collections::HashMap<(usize, usize), PageTable> {
    let mut query = world.query::<(&Shard, &mut SynapseBlocks)>();
    let mut tables = std::collections::HashMap::new();
    for (shard, mut blocks) in query.iter_mut(world) {
        for (b, block) in blocks.0.iter_mut().enumerate() {
            if let Some(t) = block.pages.take() {
                tables.insert((shard.index, b), t);
            }
        }
    }
    tables
}

/// Puts back the tables [`take_tables`] took.
pub fn put_tables(world: &mut World, mut tables: std::collections::HashMap<(usize, usize), PageTable>) {
    let mut query = world.query::<(&Shard, &mut SynapseBlocks)>();
    for (shard, mut blocks) in query.iter_mut(world) {
        for (b, block) in blocks.0.iter_mut().enumerate() {
            block.pages = tables.remove(&(shard.index, b)).or(block.pages.take());
        }
    }
}

/// The synapse ranges whose weights a reader between steps may read of `block`: all of them
/// unless its weights are paged (under a device they are not, and the device writes them all).
pub fn resident_ranges(block: &SynapseBlock) -> Vec<Range<usize>> {
    match &block.pages {
        Some(t) if t.pages_column("weight") => t.resident().collect(),
        _ => vec![0..block.len()],
    }
}

/// The target (shard-local) of synapse `k` of `block`, from memory or, for a spilled page, from
/// its spill file.
pub fn target_of(block: &SynapseBlock, k: usize) -> Result<u32, String> {
    let row = block.row_ptr.partition_point(|&p| p as usize <= k) - 1;
    Ok(row_targets(block, row)?[k - block.row_ptr[row] as usize])
}

/// A block's page table and its paged columns, in [`PageTable::element_bytes`] order.
fn parts(block: &mut SynapseBlock) -> (Option<&mut PageTable>, Vec<&mut dyn AnyColumn>) {
    let SynapseBlock { target, delay, weight, pages, .. } = block;
    let mut columns: Vec<&mut dyn AnyColumn> = vec![target.column_mut()];
    if let Delays::PerSynapse(d) = delay {
        columns.push(d);
    }
    if pages.as_ref().is_none_or(|t| t.pages_column("weight")) {
        columns.push(weight.column_mut());
    }
    (pages.as_mut(), columns)
}

/// Names and bytes per synapse of a block's paged columns, in their order: all three, but under
/// a device (`device`) not the weights of a plastic block, which the device writes.
fn paged_columns(block: &SynapseBlock, device: bool) -> (Vec<&'static str>, Vec<usize>) {
    let (mut names, mut bytes) = (vec!["target"], vec![block.target.element_bytes()]);
    if let Delays::PerSynapse(_) = block.delay {
        (names.push("delay"), bytes.push(2));
    }
    if !(device && block.plastic.is_some()) {
        names.push("weight");
        bytes.push(match block.weight {
            Weights::F32(_) => 4,
            Weights::F16(_) => 2,
        });
    }
    (names, bytes)
}

/// Uploads `column`, the column `name` of the block whose page table is `table`, to its mirror
/// page by page: resident pages from memory, spilled ones decompressed from disk (a device is
/// filled without the column ever being whole in RAM); `Ok(false)` if `name` is not paged.
pub fn upload_paged(table: &PageTable, name: &str, column: &mut dyn AnyColumn) -> Result<bool, String> {
    // Pages are gathered into copies of about this many bytes (one copy per page would wait
    // for the device a million times on a large network).
    const BATCH_BYTES: usize = 16 << 20;
    let (elem, mut batch, mut first, mut failed) = (column.element_bytes(), Vec::new(), 0, None);
    let mirrored: &dyn AnyColumn = column;
    let mut flush = |batch: &mut Vec<u8>| {
        if let Err(e) = mirrored.write_mirror(first, batch) {
            failed.get_or_insert(e.to_string());
        }
        first += batch.len() / elem;
        batch.clear();
    };
    let paged = read_paged(table, name, mirrored, &mut |bytes| {
        batch.extend_from_slice(bytes);
        if batch.len() >= BATCH_BYTES {
            flush(&mut batch);
        }
    })?;
    if !paged {
        return Ok(false);
    }
    if !batch.is_empty() {
        flush(&mut batch);
    }
    if let Some(e) = failed {
        return Err(e);
    }
    column.mark_uploaded();
    Ok(true)
}

/// Starts paging `world`'s synapses under `options` if they do not fit, and says so; `None`
/// when everything fits in the budget (nothing is paged then).
pub fn enable(world: &mut World, options: &TierOptions, dt_ms: f64) -> Result<Option<String>, PagingError> {
    let Footprint { fixed, rewired, pageable, device_kept } = footprint(world, options.device);
    let mut query = world.query::<&SynapseBlocks>();
    let built_paged = query.iter(world).any(|blocks| blocks.0.iter().any(|b| b.pages.is_some()));
    if !built_paged && fixed + rewired + pageable <= options.host_bytes {
        return Ok(None);
    }
    let (budget, page_bytes) = budget_for(options, fixed + rewired, rewired, device_kept, pageable, !built_paged)?;
    let io = |source| PagingError::Io { dir: options.spill_dir.clone(), source };
    let mut query = world.query::<&mut SynapseBlocks>();
    for mut blocks in query.iter_mut(world) {
        for block in blocks.0.iter_mut().filter(|b| !b.rewired && !b.is_empty() && b.pages.is_none()) {
            block.pages = Some(paginate(block, page_bytes as usize, options.device));
            for c in parts(block).1 {
                c.make_pageable().map_err(io)?;
            }
        }
    }
    // A device gathers its probes from its own copies: no host page need stay.
    let pinned = if options.device { Moved::default() } else { pin_probed(world) };
    // Each shard gets a share of the budget in proportion to its synapses (whole shards page
    // in parallel, each within its own share).
    let (dir, aging) = (Arc::new(options.spill_dir.clone()), 0.5f32.powf((dt_ms / HALF_LIFE_MS) as f32));
    let mut query = world.query::<(Entity, &SynapseBlocks)>();
    let shards: Vec<(Entity, u64, u64, u64)> = query
        .iter(world)
        .map(|(e, blocks)| {
            let tables = || blocks.0.iter().filter_map(|b| b.pages.as_ref());
            let bytes = tables().map(PageTable::paged_bytes).sum();
            (e, bytes, tables().map(PageTable::resident_bytes).sum(), tables().map(|t| t.pages.len() as u64).sum())
        })
        .collect();
    let pages = shards.iter().map(|s| s.3).sum();
    for (entity, bytes, resident, _) in shards {
        let share = (u128::from(budget) * u128::from(bytes) / u128::from(pageable.max(1))) as u64;
        world.entity_mut(entity).insert(ShardPages { budget: share, resident, peak: 0, aging, dir: dir.clone(), moved: Moved::default() });
    }
    let stats = TierStats { host_memory_bytes: options.host_bytes, budget_bytes: budget, spill_dir: options.spill_dir.display().to_string(), pages, paged_bytes: pageable, ..Default::default() };
    let mut tier = HostTier { stats };
    if let Some(SpilledWhileBuilding(moved)) = world.remove_resource::<SpilledWhileBuilding>() {
        tier.add(moved);
    }
    if let Some(e) = tier.add(pinned) {
        return Err(io(io::Error::other(e)));
    }
    world.insert_resource(tier);
    enforce(world).map_err(|e| io(io::Error::other(e)))?;
    Ok(Some(format!(
        "{} need {} and --host-memory leaves {} for them: {} pages of ~{}, the rest spilled to {}",
        if options.device { "the host's copies of the synapses (the GPU reads its own)" } else { "synapses" },
        bytes(pageable as f64),
        bytes(budget as f64),
        pages,
        bytes(page_bytes as f64),
        options.spill_dir.display()
    )))
}

/// The bytes `options` leaves for synapse pages beside `fixed` bytes of other memory (of which
/// `rewired` are synapses under structural plasticity and `device_kept` what a device run keeps
/// in RAM: [`Footprint`]), and the page size for `pageable` bytes
/// of synapses; an error with the sizes if the budget holds too few pages or (if `disk`) the
/// spill folder's file system cannot take the rest.
fn budget_for(options: &TierOptions, fixed: u64, rewired: u64, device_kept: u64, pageable: u64, disk: bool) -> Result<(u64, u64), PagingError> {
    let budget = options.host_bytes.saturating_sub(fixed);
    // Small pages move little beside the active rows; at most about a million of them.
    let page_bytes = (pageable >> 20).max(options.page_bytes);
    let min_pages = MIN_PAGES * page_bytes.min(pageable);
    if budget < min_pages {
        return Err(PagingError::TooSmall { budget: options.host_bytes, fixed, rewired, device_kept, min_pages });
    }
    if disk {
        let free = free_space(&options.spill_dir).map_err(|source| PagingError::Io { dir: options.spill_dir.clone(), source })?;
        // Compressed pages are at most about their raw size.
        let need = pageable - budget.min(pageable);
        if free < need {
            return Err(PagingError::NoDisk { dir: options.spill_dir.clone(), need, free });
        }
    }
    Ok((budget, page_bytes))
}

/// The shard count to build a network paged within `host_bytes` in: `shards`, or, unless they
/// were `chosen`, more, until the blocks being built at once take at most a quarter of
/// `host_bytes` (blocks are per shard: more shards, smaller blocks; spikes do not depend on the
/// shard count), at most one shard per 1,000 neurons.
pub fn shards_for_building(model: &crate::Model, threads: usize, shards: usize, host_bytes: u64, chosen: bool) -> usize {
    use crate::estimate::Estimate;
    let estimate = Estimate::of(model, threads, shards);
    let most = (estimate.neurons as usize / 1000).max(shards);
    let mut s = shards;
    while !chosen && estimate.network_bytes > host_bytes as f64 && s * 2 <= most && Estimate::of(model, threads, s).draft_bytes > host_bytes as f64 / 4.0 {
        s *= 2;
    }
    s
}

/// Spilling while the network is built (one larger than `--host-memory`): each block, as soon
/// as it is built, keeps resident its synapses' share of the budget and spills the rest of its
/// pages, so that at most the budget and the blocks being built sit in memory; [`enable`] then
/// sets each shard's exact share.
#[derive(Debug)]
pub struct BuildSpill {
    /// Resident bytes a block keeps per byte of its synapses.
    keep: f64,
    page_bytes: u64,
    dir: Arc<PathBuf>,
    /// Projections under structural plasticity: never paged.
    rewired: Vec<usize>,
    /// The network will run on a device backend (see the module comment).
    device: bool,
    /// What the blocks' spills wrote, for the run's figures ([`enable`] adds them).
    moved: std::sync::Mutex<Moved>,
}

/// What spilling wrote while the network was built, until [`enable`] counts it.
#[derive(Resource, Debug)]
pub struct SpilledWhileBuilding(Moved);

impl BuildSpill {
    /// What the blocks' spills wrote, as a resource for [`enable`].
    pub fn into_resource(self) -> SpilledWhileBuilding {
        SpilledWhileBuilding(self.moved.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}

impl BuildSpill {
    /// Spilling for `options` if `model`'s estimate says its synapses do not fit; errors before
    /// anything is built where they cannot fit at all.
    pub fn plan(model: &crate::Model, estimate: &crate::estimate::Estimate, options: &TierOptions) -> Result<Option<BuildSpill>, PagingError> {
        // Under a device, plastic weights stay in RAM (see the module comment).
        let unpaged = if options.device { estimate.plastic_weight_bytes } else { 0.0 };
        let (fixed, pageable) = ((estimate.network_bytes - estimate.pageable_bytes + unpaged) as u64, (estimate.pageable_bytes - unpaged) as u64);
        if fixed + pageable <= options.host_bytes {
            return Ok(None);
        }
        let (budget, page_bytes) = budget_for(options, fixed, 0, unpaged as u64, pageable, true)?;
        let spec = &model.spec;
        let rewired = spec.projections.iter().enumerate().filter(|(_, p)| spec.structural.iter().any(|s| s.projection == p.name)).map(|(i, _)| i).collect();
        Ok(Some(BuildSpill { keep: budget as f64 / pageable.max(1) as f64, page_bytes, dir: Arc::new(options.spill_dir.clone()), rewired, device: options.device, moved: Default::default() }))
    }

    /// Pages `block`, just built, and spills what exceeds its share.
    pub fn block(&self, block: &mut SynapseBlock) -> Result<(), String> {
        if self.rewired.contains(&block.projection) || block.is_empty() {
            return Ok(());
        }
        block.pages = Some(paginate(block, self.page_bytes as usize, self.device));
        for c in parts(block).1 {
            c.make_pageable().map_err(|e| format!("mapping a block's memory: {e}"))?;
        }
        let bytes = block.pages.as_ref().map_or(0, PageTable::paged_bytes);
        let keep = (bytes as f64 * self.keep) as u64;
        let mut pages = ShardPages { budget: keep, resident: bytes, peak: 0, aging: 1.0, dir: self.dir.clone(), moved: Moved::default() };
        pages.evict_down(std::slice::from_mut(block), None, keep, 0);
        let error = pages.moved.error.take();
        self.moved.lock().unwrap_or_else(|e| e.into_inner()).add(pages.moved);
        error.map_or(Ok(()), Err)
    }
}

/// Cuts `block` into pages of about `page_bytes` (whole rows; a row longer than that is a
/// page of its own) of the columns paged on a device (`device`) or the host.
fn paginate(block: &SynapseBlock, page_bytes: usize, device: bool) -> PageTable {
    let (columns, element_bytes) = paged_columns(block, device);
    let per_synapse: usize = element_bytes.iter().sum();
    let row_ptr = &block.row_ptr;
    let (mut rows, mut pages) = (vec![0u32], Vec::new());
    let mut slot = 0u64;
    let rows_total = row_ptr.len() - 1;
    let mut start = 0;
    while start < rows_total {
        let first = row_ptr[start] as usize;
        // The last row whose end still fits, and at least one row.
        let limit = first + (page_bytes / per_synapse).max(1);
        let end = (start + 1).max(row_ptr[start + 1..].partition_point(|&e| e as usize <= limit) + start).min(rows_total);
        let synapses = first..row_ptr[end] as usize;
        let mean_abs_weight = mean_abs(&block.weight, synapses.clone());
        pages.push(Page { synapses: synapses.clone(), slot, resident: true, dirty: true, on_disk: false, pinned: false, last_use: 0, activity: 0.0, mean_abs_weight, frames: [(0, 0); 3] });
        slot += element_bytes.iter().map(|b| zstd::zstd_safe::compress_bound(b * synapses.len()) as u64).sum::<u64>();
        rows.push(end as u32);
        start = end;
    }
    let window = match &block.delay {
        _ if block.plastic.is_some() => 1,
        Delays::Constant(d) => u64::from(*d),
        Delays::PerSynapse(c) => c.pages().iter().copied().min().map_or(1, u64::from),
    };
    PageTable { rows, pages, file: None, capacity: slot, columns, element_bytes, window: window.max(1), deferred: Vec::new() }
}

fn mean_abs(weights: &Weights, range: Range<usize>) -> f32 {
    let n = range.len();
    match weights {
        Weights::F32(c) => mean_of_abs(c.pages()[range].iter().copied(), n),
        Weights::F16(c) => mean_of_abs(c.pages()[range].iter().map(|&w| f32::from(w)), n),
    }
}

/// The mean |w| of `n` weights (a page's priority factor).
fn mean_of_abs(weights: impl Iterator<Item = f32>, n: usize) -> f32 {
    weights.map(f32::abs).sum::<f32>() / n.max(1) as f32
}

/// Pins the pages of every probed synapse (probes read them between steps), bringing back
/// those spilled while the network was built; what that read.
fn pin_probed(world: &mut World) -> Moved {
    let sites: Vec<(usize, usize, usize)> = world
        .resource::<Recorder>()
        .probes
        .iter()
        .flat_map(|p| &p.sites)
        .filter_map(|s| match *s {
            ProbeSite::Synapse { shard, block, synapse: Some(k), .. } => Some((shard, block, k)),
            _ => None,
        })
        .collect();
    let mut moved = Moved::default();
    let mut query = world.query::<(&Shard, &mut SynapseBlocks)>();
    for (shard, mut blocks) in query.iter_mut(world) {
        for &(_, b, k) in sites.iter().filter(|s| s.0 == shard.index) {
            let Some(t) = blocks.0[b].pages.as_mut() else { continue };
            let p = t.page_of_synapse(k);
            t.pages[p].pinned = true;
            if !t.pages[p].resident {
                if let Err(e) = bring_in(&mut blocks.0[b], p, &mut moved) {
                    moved.error.get_or_insert(e);
                }
            }
        }
    }
    moved
}

/// The targets of row `row` of `block`, from memory or, for a spilled page, from its spill
/// file (probes find their synapses in a network paged while it was built).
pub fn row_targets(block: &SynapseBlock, row: usize) -> Result<Vec<u32>, String> {
    let syn = block.row_ptr[row] as usize..block.row_ptr[row + 1] as usize;
    let Some(t) = block.pages.as_ref() else { return Ok(block.target.resident_to_vec(syn)) };
    let p = t.page_of_row(row as u32);
    if t.pages[p].resident {
        return Ok(block.target.resident_to_vec(syn));
    }
    let page = &t.pages[p].synapses;
    let width = block.target.element_bytes();
    let mut raw = vec![0u8; width * page.len()];
    t.read_frame(p, 0, &mut raw)?;
    let mut widened = [0u8; 4];
    Ok(raw
        .chunks_exact(width)
        .skip(syn.start - page.start)
        .take(syn.len())
        .map(|b| {
            widened[..width].copy_from_slice(b);
            u32::from_le_bytes(widened)
        })
        .collect())
}

/// Free bytes of the file system holding `dir`.
fn free_space(dir: &Path) -> io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// A shard's share of the host tier: a budget in proportion to its synapses, what it holds,
/// and what it moved since the step's figures were last summed into [`HostTier`].
#[derive(Component, Debug)]
pub struct ShardPages {
    budget: u64,
    resident: u64,
    peak: u64,
    /// Activity kept per step (see [`HALF_LIFE_MS`]).
    aging: f32,
    dir: Arc<PathBuf>,
    moved: Moved,
}

/// What a shard (or the whole tier, in [`TierStats`]) moved, and the first error it met.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Moved {
    /// Rows delivery read from a resident page, and rows whose page it brought in first.
    pub hits: u64,
    pub faults: u64,
    pub evictions: u64,
    /// Evictions that wrote the page (first spill, or changed by STDP).
    pub writebacks: u64,
    /// Uncompressed bytes brought in and written out.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Compressed bytes on disk.
    pub disk_bytes: i64,
    /// Page faults that found the shard's share full of pages that could not go (pinned ones,
    /// or a page larger than the share): the budget was exceeded then.
    pub faults_over_budget: u64,
    /// Time delivery waited for pages (reading and decompressing, and evictions writing),
    /// summed over the shards' threads.
    pub stall_s: f64,
    #[serde(skip)]
    error: Option<String>,
}

impl Moved {
    fn add(&mut self, m: Moved) {
        self.hits += m.hits;
        self.faults += m.faults;
        self.evictions += m.evictions;
        self.writebacks += m.writebacks;
        self.bytes_in += m.bytes_in;
        self.bytes_out += m.bytes_out;
        self.disk_bytes += m.disk_bytes;
        self.faults_over_budget += m.faults_over_budget;
        self.stall_s += m.stall_s;
        self.error = self.error.take().or(m.error);
    }
}

impl ShardPages {
    /// Counts `delta` more compressed bytes on disk (pages rewritten by a restore:
    /// [`write_paged`]); the tier collects it with the next delivery's figures.
    pub fn add_disk_bytes(&mut self, delta: i64) {
        self.moved.disk_bytes += delta;
    }

    /// Makes resident the page of `blocks[b]` holding the row of presynaptic neuron `global`,
    /// which delivery reads next in `step` (and writes, if `writes`: STDP), evicting the
    /// shard's lowest-priority pages if it would not fit. Does nothing for a block not paged.
    pub fn fetch(&mut self, blocks: &mut [SynapseBlock], b: usize, global: u32, step: u64, writes: bool) {
        let first = blocks[b].source_first;
        let Some(table) = blocks[b].pages.as_mut() else { return };
        let p = table.page_of_row(global - first);
        let bytes = table.bytes(p);
        let page = &mut table.pages[p];
        page.activity = page.activity * aged(self.aging, (step + 1).saturating_sub(page.last_use)) + 1.0;
        page.last_use = step + 1;
        page.dirty |= writes;
        if page.resident {
            self.moved.hits += 1;
            return;
        }
        self.moved.faults += 1;
        let t = Instant::now();
        if self.resident + bytes > self.budget {
            self.evict_down(blocks, Some((b, p)), self.budget.saturating_sub(self.budget / 8 + bytes), step);
            self.moved.faults_over_budget += u64::from(self.resident + bytes > self.budget);
        }
        let result = bring_in(&mut blocks[b], p, &mut self.moved);
        self.note(result);
        self.resident += bytes;
        self.peak = self.peak.max(self.resident);
        self.moved.stall_s += t.elapsed().as_secs_f64();
    }

    /// Evicts the shard's resident pages, lowest priority first (least recently used among
    /// equals), except `keep` and pinned ones, until at most `goal` bytes are resident.
    fn evict_down(&mut self, blocks: &mut [SynapseBlock], keep: Option<(usize, usize)>, goal: u64, step: u64) {
        let mut candidates = Vec::new();
        for (b, block) in blocks.iter().enumerate() {
            let Some(table) = &block.pages else { continue };
            for (p, page) in table.pages.iter().enumerate().filter(|&(p, page)| page.resident && !page.pinned && keep != Some((b, p))) {
                let priority = page.activity * aged(self.aging, step + 1 - page.last_use.min(step + 1)) * page.mean_abs_weight;
                candidates.push((priority, page.last_use, b, p, table.bytes(p)));
            }
        }
        candidates.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then((x.2, x.3).cmp(&(y.2, y.3))));
        for (_, _, b, p, bytes) in candidates {
            if self.resident <= goal {
                break;
            }
            let result = evict(&mut blocks[b], p, &self.dir, &mut self.moved);
            self.note(result);
            self.resident -= bytes;
            self.moved.evictions += 1;
        }
    }

    fn note(&mut self, result: Result<(), String>) {
        if let Err(e) = result {
            self.moved.error.get_or_insert(e);
        }
    }
}

/// Delivery through a paged static block (`SynapseBlock::pages`, no plasticity): `spikes`, of
/// `step`, join the block's deferred spikes; when the oldest of them reaches its deadline (its
/// step + the block's minimum delay - 1: the last step whose delivery still lands before its
/// earliest synapse's slot is read), all of them are delivered, in row order, each page made
/// resident once.
pub fn deliver_static(pages: &mut ShardPages, blocks: &mut [SynapseBlock], b: usize, spikes: &[u32], step: u64, ring: &mut Ring<'_>) {
    let table = blocks[b].pages.as_mut().expect("a paged block");
    table.deferred.extend(spikes.iter().map(|&g| (g, step)));
    if table.deferred.first().is_some_and(|&(_, oldest)| oldest + table.window - 1 <= step) {
        deliver_deferred(pages, blocks, b, step, ring);
    }
}

/// Delivers every deferred spike of `blocks[b]` now (at `step`).
fn deliver_deferred(pages: &mut ShardPages, blocks: &mut [SynapseBlock], b: usize, step: u64, ring: &mut Ring<'_>) {
    let mut deferred = std::mem::take(&mut blocks[b].pages.as_mut().expect("a paged block").deferred);
    deferred.sort_unstable();
    for &(g, t) in &deferred {
        pages.fetch(blocks, b, g, step, false);
        let block = &blocks[b];
        let r = (g - block.source_first) as usize;
        let syn = block.row_ptr[r] as usize..block.row_ptr[r + 1] as usize;
        let delay = block.delay.row(syn.clone());
        crate::with_synapse_columns!(&block.target, &block.weight, |target, w| deliver_row(ring, t, &target.pages()[syn.clone()], delay, &w.pages()[syn.clone()]));
    }
    deferred.clear();
    blocks[b].pages.as_mut().expect("a paged block").deferred = deferred;
}

/// Delivers every deferred spike of `world` into the rings (before a checkpoint's snapshot,
/// which holds no deferred spike: a resumed run, paged or not, delivers nothing twice).
pub fn deliver_all_deferred(world: &mut World) {
    let step = world.resource::<Clock>().step;
    let mut query = world.query::<(&mut NeuronBlock, &mut SynapseBlocks, &mut ShardPages)>();
    for (mut neurons, mut blocks, mut pages) in query.iter_mut(world) {
        let len = neurons.len();
        let NeuronBlock { ring_ex, ring_in, .. } = &mut *neurons;
        let (mut ex, mut inh) = (Ring::new(len, ring_ex), Ring::new(len, ring_in));
        for b in 0..blocks.0.len() {
            if blocks.0[b].pages.as_ref().is_some_and(|t| !t.deferred.is_empty()) {
                let ring = if blocks.0[b].receptor == Receptor::Excitatory { &mut ex } else { &mut inh };
                deliver_deferred(&mut pages, &mut blocks.0, b, step, ring);
            }
        }
    }
}

/// `aging` to the power `steps` (0 past 2^20 steps).
fn aged(aging: f32, steps: u64) -> f32 {
    if steps > 1 << 20 { 0.0 } else { aging.powi(steps as i32) }
}

impl HostTier {
    /// Adds what `shard` moved to the run's figures; the first error it met.
    pub fn collect(&mut self, shard: &mut ShardPages) -> Option<String> {
        self.add(std::mem::take(&mut shard.moved))
    }

    fn add(&mut self, mut m: Moved) -> Option<String> {
        let error = m.error.take();
        let s = &mut self.stats;
        s.moved.add(m);
        let asked = s.moved.hits + s.moved.faults;
        s.hit_rate = if asked > 0 { s.moved.hits as f64 / asked as f64 } else { 1.0 };
        error
    }

    /// Sets the resident and peak figures from the shards'.
    pub fn measure<'a>(&mut self, shards: impl Iterator<Item = &'a ShardPages>) {
        let (resident, peak) = shards.fold((0, 0), |(r, p), s| (r + s.resident, p + s.peak));
        self.stats.resident_bytes = resident;
        self.stats.peak_resident_bytes = self.stats.peak_resident_bytes.max(peak);
    }
}

thread_local! {
    /// Each thread's buffer for a compressed frame read back ([`PageTable::read_frame`]).
    static FRAME: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Each thread's zstd contexts: making one costs more than a page's decompression.
    static ZSTD: std::cell::RefCell<(zstd::bulk::Compressor<'static>, zstd::bulk::Decompressor<'static>)> =
        std::cell::RefCell::new((zstd::bulk::Compressor::new(LEVEL).expect("a zstd context"), zstd::bulk::Decompressor::new().expect("a zstd context")));
}

/// Decompresses `frame` into exactly `dst`.
fn decompress(frame: &[u8], dst: &mut [u8]) -> Result<(), String> {
    ZSTD.with_borrow_mut(|z| z.1.decompress_to_buffer(frame, dst)).map(drop).map_err(|e| format!("decompressing a page: {e}"))
}

/// Writes page `p` of `block` to its spill file if its disk copy is missing or stale, then
/// gives its memory back.
fn evict(block: &mut SynapseBlock, p: usize, dir: &Path, moved: &mut Moved) -> Result<(), String> {
    let page = &block.pages.as_ref().expect("a paged block").pages[p];
    let synapses = page.synapses.clone();
    // A page written out again changed (STDP): its priority's |w| with it (weights a device
    // writes are not paged, and keep the |w| they were built with).
    let paged_weights = block.pages.as_ref().is_some_and(|t| t.pages_column("weight"));
    let mean_abs_weight = (page.dirty || !page.on_disk).then(|| if paged_weights { mean_abs(&block.weight, synapses.clone()) } else { page.mean_abs_weight });
    let (table, mut columns) = parts(block);
    let table = table.expect("a paged block");
    let page = &table.pages[p];
    if page.dirty || !page.on_disk {
        if table.file.is_none() {
            table.file = Some(SpillFile::create(dir, table.capacity).map_err(|e| format!("creating a spill file in {}: {e}", dir.display()))?);
        }
        for (c, column) in columns.iter().enumerate() {
            let raw = column.range_bytes(synapses.clone());
            let frame = ZSTD.with_borrow_mut(|z| z.0.compress(raw)).map_err(|e| format!("compressing a page: {e}"))?;
            let file = table.file.as_ref().expect("created above");
            file.file.write_all_at(&frame, table.frame_at(p, c)).map_err(|e| format!("writing a page to {}: {e}", dir.display()))?;
            let page = &mut table.pages[p];
            moved.disk_bytes += i64::from(frame.len() as u32) - i64::from(page.frames[c].0);
            page.frames[c] = (frame.len() as u32, crc32fast::hash(&frame));
            moved.bytes_out += raw.len() as u64;
        }
        let page = &mut table.pages[p];
        moved.writebacks += 1;
        page.mean_abs_weight = mean_abs_weight.expect("computed for a page written out");
        page.on_disk = true;
        page.dirty = false;
    }
    for column in columns.iter_mut() {
        column.spill(synapses.clone()).map_err(|e| format!("releasing a page's memory: {e}"))?;
    }
    table.pages[p].resident = false;
    Ok(())
}

/// Reads page `p` of `block` back from its spill file, checking each frame's CRC.
fn bring_in(block: &mut SynapseBlock, p: usize, moved: &mut Moved) -> Result<(), String> {
    let (table, mut columns) = parts(block);
    let table = table.expect("a paged block");
    let synapses = table.pages[p].synapses.clone();
    for (c, column) in columns.iter_mut().enumerate() {
        column.restore_with(synapses.clone(), &mut |dst| table.read_frame(p, c, dst))?;
        moved.bytes_in += (column.element_bytes() * synapses.len()) as u64;
    }
    table.pages[p].resident = true;
    Ok(())
}

impl SpillFile {
    /// An unnamed file of `capacity` bytes (sparse: disk is used as pages are written) in `dir`.
    fn create(dir: &Path, capacity: u64) -> io::Result<SpillFile> {
        let file = tempfile::tempfile_in(dir)?;
        file.set_len(capacity.max(1))?;
        Ok(SpillFile { file })
    }
}

/// Runs `f` on every paged shard in parallel, then sums what they moved into the [`HostTier`].
fn each_shard(world: &mut World, f: impl Fn(&mut ShardPages, &mut [SynapseBlock], u64) + Sync + Send) -> Result<(), String> {
    let Some(mut tier) = world.remove_resource::<HostTier>() else { return Ok(()) };
    let step = world.resource::<Clock>().step;
    let mut query = world.query::<(&mut ShardPages, &mut SynapseBlocks)>();
    let mut items: Vec<_> = query.iter_mut(world).collect();
    items.par_iter_mut().for_each(|(pages, blocks)| f(pages, &mut blocks.0, step));
    let error = items.iter_mut().fold(None, |e, (pages, _)| e.or(tier.collect(pages)));
    tier.measure(items.iter().map(|(pages, _)| &**pages));
    world.insert_resource(tier);
    error.map_or(Ok(()), Err)
}

/// Brings every spilled page of `world` back, for a reader that needs whole columns (tests
/// comparing networks); see [`enforce`].
pub fn fault_in_all(world: &mut World) -> Result<(), String> {
    each_shard(world, |pages, blocks, _| {
        for b in 0..blocks.len() {
            let Some(table) = &blocks[b].pages else { continue };
            let spilled: Vec<(usize, u64)> = (0..table.pages.len()).filter(|&p| !table.pages[p].resident).map(|p| (p, table.bytes(p))).collect();
            for (p, bytes) in spilled {
                let result = bring_in(&mut blocks[b], p, &mut pages.moved);
                pages.note(result);
                pages.resident += bytes;
            }
        }
    })
}

/// Evicts each shard down to its budget (after [`fault_in_all`], and when paging starts).
pub fn enforce(world: &mut World) -> Result<(), String> {
    // Between steps no page is in use: `step`, the next to run, has read none yet.
    each_shard(world, |pages, blocks, step| {
        if pages.resident > pages.budget {
            pages.evict_down(blocks, None, pages.budget - pages.budget / 8, step);
        }
        // Under a device no step fetches a page: what is resident now is the peak.
        pages.peak = pages.peak.max(pages.resident);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 400 neurons, 100 synapses each (static, per-synapse delays: 8 bytes a synapse).
    const MODEL: &str = r#"
[simulation]
dt_ms = 0.1
duration_ms = 10.0
[[populations]]
name = "N"
size = 400
model = "lif_cuba"
[[projections]]
name = "NN"
source = "N"
target = "N"
rule = { fixed_indegree = 100 }
weight = { uniform = [1.0, 2.0] }
delay_ms = { uniform = [1.0, 2.0] }
"#;

    /// The world of `MODEL`, paged with `budget` bytes for 4 kB pages; its spill folder.
    fn paged(budget: u64) -> (World, tempfile::TempDir) {
        let model = crate::Model::parse(MODEL, Path::new("test.toml")).unwrap();
        let mut world = crate::build_world(&model, 2).unwrap();
        let recorder = crate::recording::Recorder::new(&model, &mut world).unwrap();
        world.insert_resource(recorder);
        let dir = tempfile::tempdir().unwrap();
        let f = footprint(&mut world, false);
        let options = TierOptions { host_bytes: f.fixed + budget, spill_dir: dir.path().to_path_buf(), page_bytes: 4096, device: false };
        enable(&mut world, &options, 0.1).unwrap().expect("spills");
        (world, dir)
    }

    #[test]
    fn the_budget_holds_and_every_page_comes_back_as_it_was() {
        let model = crate::Model::parse(MODEL, Path::new("test.toml")).unwrap();
        let mut whole = crate::build_world(&model, 2).unwrap();
        let (mut world, _dir) = paged(64 << 10);
        let tier = &world.resource::<HostTier>().stats;
        assert_eq!(tier.paged_bytes, 400 * 100 * 8);
        assert!(tier.resident_bytes <= tier.budget_bytes && tier.moved.writebacks > 0, "{tier:?}");
        fault_in_all(&mut world).unwrap();
        let columns = |w: &mut World| w.query::<&SynapseBlocks>().iter(w).flat_map(|b| b.0.iter().map(|b| (b.target.to_vec(), b.weight.to_f32(), b.delay.bytes())).collect::<Vec<_>>()).collect::<Vec<_>>();
        assert_eq!(columns(&mut world), columns(&mut whole));
    }

    /// Buffers for `world`'s columns in host memory, filled by [`crate::state::mirror`] as a
    /// device's would be; each block's buffers by name.
    fn mirror(world: &mut World) -> Vec<((usize, usize), Vec<(&'static str, Vec<u8>)>)> {
        use crate::column::tests::FakeDevice;
        let span = crate::state::Span::of(world).unwrap();
        let mirrored = crate::state::mirror::<FakeDevice, crate::column::TransferError>(world, &span, &mut |bytes, _, _, _| Ok(Arc::new(FakeDevice { bytes: std::sync::Mutex::new(vec![0; bytes]), ..Default::default() }))).unwrap();
        mirrored.blocks.into_iter().map(|(key, named)| (key, named.into_iter().map(|(name, b)| (name, b.bytes.lock().unwrap().clone())).collect())).collect()
    }

    /// A device is filled page by page from a network paged while (or after) it was built:
    /// every block's buffers hold the network's synapses, spilled pages included, and a spilled
    /// column is never uploaded whole (its spilled ranges hold zeros on the host).
    #[test]
    fn a_device_is_filled_page_by_page() {
        let model = crate::Model::parse(MODEL, Path::new("test.toml")).unwrap();
        let mut whole = crate::build_world(&model, 2).unwrap();
        let (mut world, _dir) = paged(64 << 10);
        assert!(world.query::<&SynapseBlocks>().iter(&world).flat_map(|b| b.0.iter()).any(|b| b.target.column().is_spilled()));
        assert_eq!(mirror(&mut world), mirror(&mut whole));
        // Still paged on the host, within its budget.
        assert!(world.query::<&SynapseBlocks>().iter(&world).flat_map(|b| b.0.iter()).any(|b| b.target.column().is_spilled()));
    }

    /// A synapse's target is found where its page is (a health check names the neuron of a
    /// weight out of bounds whose targets were spilled).
    #[test]
    fn a_target_is_read_where_its_page_is() {
        let model = crate::Model::parse(MODEL, Path::new("test.toml")).unwrap();
        let mut whole = crate::build_world(&model, 2).unwrap();
        let (mut world, _dir) = paged(64 << 10);
        let targets = |w: &mut World| w.query::<&SynapseBlocks>().iter(w).flat_map(|b| b.0.iter().flat_map(|b| (0..b.len()).map(|k| target_of(b, k).unwrap())).collect::<Vec<_>>()).collect::<Vec<_>>();
        assert_eq!(targets(&mut world), targets(&mut whole));
    }

    /// Under a device, a plastic block's weights stay in RAM (the device writes them) and count
    /// as fixed memory; its targets and delays are paged.
    #[test]
    fn under_a_device_plastic_weights_stay_in_ram() {
        let text = format!("{MODEL}plasticity = \"stdp\"\n[[plasticity]]\nname = \"stdp\"\ntau_plus_ms = 20.0\ntau_minus_ms = 20.0\na_plus = 0.005\na_minus = 0.005\nw_min = 0.0\nw_max = 4.0\n");
        let model = crate::Model::parse(&text, Path::new("test.toml")).unwrap();
        let mut world = crate::build_world(&model, 2).unwrap();
        let recorder = crate::recording::Recorder::new(&model, &mut world).unwrap();
        world.insert_resource(recorder);
        let (host, device) = (footprint(&mut world, false), footprint(&mut world, true));
        assert_eq!((host.pageable, device.pageable), (400 * 100 * 8, 400 * 100 * 4));
        assert_eq!(device.fixed, host.fixed + 400 * 100 * 4);
        let dir = tempfile::tempdir().unwrap();
        let options = TierOptions { host_bytes: device.fixed + (32 << 10), spill_dir: dir.path().to_path_buf(), page_bytes: 4096, device: true };
        enable(&mut world, &options, 0.1).unwrap().expect("spills");
        let mut query = world.query::<&mut SynapseBlocks>();
        let mut spilled = 0;
        for b in query.iter_mut(&mut world).flat_map(|b| b.into_inner().0.iter_mut()) {
            let table = b.pages.as_ref().unwrap();
            assert!(table.pages_column("target") && table.pages_column("delay") && !table.pages_column("weight"));
            assert!(!b.weight.column_mut().is_spilled());
            spilled += usize::from(b.target.column().is_spilled());
        }
        assert!(spilled > 0);
    }

    #[test]
    fn a_corrupt_page_on_disk_is_detected_not_read() {
        let (mut world, _dir) = paged(64 << 10);
        let mut query = world.query::<&SynapseBlocks>();
        let (table, p) = query.iter(&world).flat_map(|b| b.0.iter()).filter_map(|b| b.pages.as_ref()).find_map(|t| t.pages.iter().position(|p| !p.resident).map(|p| (t, p))).expect("a spilled page");
        table.file.as_ref().unwrap().file.write_all_at(&[0xff; 8], table.frame_at(p, 0)).unwrap();
        let error = fault_in_all(&mut world).unwrap_err();
        assert!(error.contains("corrupt (CRC mismatch"), "{error}");
    }
}
