//! Checkpoints: the whole mutable state of a simulation in one versioned, checksummed file.
//!
//! Layout of a checkpoint file:
//!
//! ```text
//! magic "FUMCKPT\0" | format version u32 | header length u64 | header CRC-32 u32 | header (JSON)
//! | section data ...
//! ```
//!
//! The header names the model (its text is a section, its hash is in the header), the step, and
//! every section: name, offset, stored (zstd) length, raw length and the CRC-32 of the stored
//! bytes. Every column the state declaration names (`crate::state`, role `State`: neuron state,
//! ring buffers with the input in flight, plastic weights as stored, STDP traces and spike
//! histories) is one section of raw little-endian bytes named `<owner>/<column>`, with a
//! `<owner>/<column>.type` section naming its element type; a few scalars (the clock, STDP on or
//! off, lost pairings) and what the recorder holds complete it. Random numbers need no state
//! (counter-based). Synapse *structure* (role `Structure`) is not stored: it is rebuilt from the
//! embedded model and seed, and a checksum of each block's structure in the header proves it
//! came out the same.
//!
//! Files are written to a temporary name, fsynced, renamed into place and the directory
//! fsynced ([`recording::write_atomically`]), so a crash at any instant leaves the previous
//! checkpoint intact. The run's id is in the header's run settings: resume and pruning keep to
//! the checkpoints of one run.

use bevy_ecs::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::components::{Clock, Delays, Plasticity, Shard, StdpHistoryOverflows, SynapseBlocks};
use crate::recording::{self, MissingOutput, Recorder};
use crate::state::{self, Role};

pub const MAGIC: &[u8; 8] = b"FUMCKPT\0";
/// Version 6: the header records the shard cut (`shard_starts`: shards are cut by cost since,
/// `crate::build::cut`); older checkpoints were cut into equal ranges and resume with those.
/// Version 5: a pending plan's grown synapses (`crate::structural::Grown`) hold 4-byte targets,
/// for shards of more than 65,536 neurons; versions 3 and 4 are read with theirs widened.
/// Version 4: blocks under structural plasticity store their structure as state columns of
/// varying length, and a pending structural plan is stored (`crate::structural`).
/// Version 3: a section per declared state column (`crate::state`), each with its element type
/// in a `.type` section; a plastic block's per-target record (`post`). Version 2 kept the
/// postsynaptic trace, last spike, history count and floor in four sections.
pub const FORMAT_VERSION: u32 = 6;
/// Larger headers are refused before anything is allocated.
const MAX_HEADER_BYTES: u64 = 64 << 20;
/// Bytes before the header: magic, format version, header length, header CRC-32.
pub const FIXED_PREFIX: usize = 8 + 4 + 8 + 4;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a fum checkpoint (bad magic)")]
    NotACheckpoint { path: String },
    #[error("{path}: checkpoint format version {found}, this fum reads versions 3 to {FORMAT_VERSION}")]
    Version { path: String, found: u32 },
    #[error("{path}: truncated ({detail})")]
    Truncated { path: String, detail: String },
    #[error("{path}: checksum mismatch in {what}")]
    Checksum { path: String, what: String },
    #[error("{path}: corrupt: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("{path}: written for another model (hash {found:016x}, this model {expected:016x})")]
    OtherModel { path: String, found: u64, expected: u64 },
}

/// One stored section.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SectionEntry {
    pub name: String,
    pub offset: u64,
    pub stored_len: u64,
    pub raw_len: u64,
    pub crc32: u32,
}

/// The JSON header of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub fum_version: String,
    pub model_hash: u64,
    /// Steps completed when the checkpoint was taken.
    pub step: u64,
    pub dt_ms: f64,
    pub shards: usize,
    /// The first neuron of each shard (format 6 on; empty before, when shards were equal
    /// ranges): a resume rebuilds this cut ([`Header::cut`]).
    #[serde(default)]
    pub shard_starts: Vec<u32>,
    /// Checksums of each shard's synapse structure, shard by shard, block by block.
    pub structure: Vec<Vec<u32>>,
    /// Free-form settings of the run that wrote it (for `fum resume`), with its `run_id`.
    pub run: serde_json::Value,
    pub sections: Vec<SectionEntry>,
    /// The file's format version (in its fixed prefix, not in the JSON).
    #[serde(skip, default = "current_version")]
    pub format_version: u32,
}

fn current_version() -> u32 {
    FORMAT_VERSION
}

impl Header {
    /// The shards the checkpointed network of `total` neurons was cut into (equal ranges for
    /// checkpoints from before cuts were recorded), to rebuild it with; `None` where the recorded
    /// cut does not fit `total`.
    pub fn cut(&self, total: u32) -> Option<Vec<std::ops::Range<u32>>> {
        if self.shard_starts.is_empty() {
            return Some(crate::build::equal_cut(total, self.shards));
        }
        let ends = self.shard_starts.iter().skip(1).copied().chain([total]);
        let ranges: Vec<_> = self.shard_starts.iter().zip(ends).map(|(&start, end)| start..end).collect();
        let fits = ranges.len() == self.shards && ranges[0].start == 0 && ranges.iter().all(|r| r.start < r.end);
        fits.then_some(ranges)
    }

    /// The id of the run that wrote the checkpoint (none before run ids existed).
    pub fn run_id(&self) -> Option<u64> {
        self.run.get("run_id").and_then(|v| v.as_str()).and_then(|hex| u64::from_str_radix(hex, 16).ok())
    }

    /// Reads and verifies the fixed prefix and the header of the checkpoint `file` (`p`,
    /// `file_len` bytes), leaving it at the section data.
    fn read(file: &mut std::fs::File, p: &str, file_len: u64) -> Result<Header, CheckpointError> {
        let p = p.to_string();
        let mut prefix = [0u8; FIXED_PREFIX];
        file.read_exact(&mut prefix).map_err(|_| CheckpointError::Truncated { path: p.clone(), detail: format!("{file_len} bytes, shorter than the fixed prefix") })?;
        if &prefix[..8] != MAGIC {
            return Err(CheckpointError::NotACheckpoint { path: p });
        }
        let version = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes"));
        // Version 3 differs only in what version 4 adds for structural plasticity, which a
        // version 3 file cannot hold: it is read as is; version 4 only in `Grown` (`restore`).
        if !(3..=FORMAT_VERSION).contains(&version) {
            return Err(CheckpointError::Version { path: p, found: version });
        }
        let header_len = u64::from_le_bytes(prefix[12..20].try_into().expect("8 bytes"));
        let header_crc = u32::from_le_bytes(prefix[20..24].try_into().expect("4 bytes"));
        if header_len > MAX_HEADER_BYTES || FIXED_PREFIX as u64 + header_len > file_len {
            return Err(CheckpointError::Truncated { path: p, detail: format!("header of {header_len} bytes in a file of {file_len}") });
        }
        let mut header_bytes = vec![0u8; header_len as usize];
        file.read_exact(&mut header_bytes).map_err(|source| CheckpointError::Io { path: p.clone(), source })?;
        if crc32fast::hash(&header_bytes) != header_crc {
            return Err(CheckpointError::Checksum { path: p, what: "the header".into() });
        }
        let mut header: Header = serde_json::from_slice(&header_bytes).map_err(|e| CheckpointError::Corrupt { path: p.clone(), detail: format!("header: {e}") })?;
        header.format_version = version;
        Ok(header)
    }

    /// The verified header of the checkpoint at `path`, without reading its sections.
    pub fn open(path: &Path) -> Result<Header, CheckpointError> {
        let p = path.display().to_string();
        let io = |source| CheckpointError::Io { path: p.clone(), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Header::read(&mut file, &p, len)
    }
}

/// The raw state of a simulation at a step boundary, taken on the simulation thread (a copy)
/// and written on another.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub header: Header,
    pub sections: Vec<(String, Vec<u8>)>,
    /// Recorded output to append to log files before the checkpoint is written:
    /// (file, byte offset it starts at, bytes).
    pub spills: Vec<(PathBuf, u64, Vec<u8>)>,
    /// The run the logs belong to.
    pub run_id: u64,
    /// The index of the shard of each of `header.structure`'s entries: every shard in one
    /// process, a rank's own (not always contiguous, `crate::partition`) across ranks until
    /// [`Snapshot::gather`].
    pub shards: Vec<usize>,
}

fn bytes<T: bytemuck::Pod>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// Checksums of each block's structure: its structure columns and, for a constant delay, the
/// delay. A paged block's columns are read page by page, spilled pages from disk.
fn structure_crc(blocks: &mut SynapseBlocks) -> Result<Vec<u32>, String> {
    use crate::state::Columns;
    let mut crcs = Vec::new();
    for b in blocks.0.iter_mut() {
        let mut h = crc32fast::Hasher::new();
        if let Delays::Constant(d) = &b.delay {
            h.update(&d.to_le_bytes());
        }
        let (table, mut failed) = (b.pages.take(), None);
        b.columns(&mut |name, role, _, column| {
            if role == Role::Structure {
                match table.as_ref().map(|t| crate::paging::read_paged(t, name, column, &mut |bytes| h.update(bytes))) {
                    Some(Ok(true)) => {}
                    Some(Err(e)) => failed = Some(e),
                    None | Some(Ok(false)) => h.update(column.host_bytes()),
                }
            }
        });
        b.pages = table;
        crcs.push(failed.map_or(Ok(h.finalize()), Err)?);
    }
    Ok(crcs)
}

/// The index and structure checksums of every shard built here, in index order.
fn structure(world: &mut World) -> Result<Vec<(usize, Vec<u32>)>, String> {
    state::shards_in_order(world)
        .into_iter()
        .map(|e| Ok((world.get::<Shard>(e).expect("a shard").index, structure_crc(&mut world.get_mut::<SynapseBlocks>(e).expect("shard has synapses"))?)))
        .collect()
}

impl Snapshot {
    /// Copies the state of `world` (a step boundary). `model_text` is embedded. If the
    /// recorder has a log folder, its pending output moves into the snapshot's spills and the
    /// checkpoint keeps only the cursors.
    pub fn take(world: &mut World, model_text: &str, model_hash: u64, run: serde_json::Value) -> Result<Snapshot, String> {
        let mut sections: Vec<(String, Vec<u8>)> = Vec::new();
        sections.push(("model.toml".into(), model_text.as_bytes().to_vec()));
        let clock = world.resource::<Clock>().clone();
        let (shard_indices, structure): (Vec<usize>, Vec<Vec<u32>>) = structure(world)?.into_iter().unzip();
        let shards = structure.len();
        // A checkpoint holds every pending structural plan, never a thread computing one, and
        // no deferred delivery of a paged block.
        crate::structural::settle(world);
        crate::paging::deliver_all_deferred(world);
        // Paged blocks' columns are read where their pages are (`crate::paging`).
        let tables = crate::paging::take_tables(world);
        let mut failed = None;
        state::visit_checkpointed(world, &mut |d| {
            sections.push((d.section() + ".type", d.column.element_type().as_bytes().to_vec()));
            let mut bytes = Vec::new();
            let paged = match d.owner {
                state::Owner::Block { shard, block } => tables.get(&(shard, block)).map(|t| crate::paging::read_paged(t, d.name, &*d.column, &mut |b| bytes.extend_from_slice(b))),
                _ => None,
            };
            match paged {
                Some(Ok(true)) => {}
                Some(Err(e)) => failed = Some(e),
                None | Some(Ok(false)) => bytes = d.column.host_bytes().to_vec(),
            }
            sections.push((d.section(), bytes));
        });
        crate::paging::put_tables(world, tables);
        if let Some(e) = failed {
            return Err(e);
        }
        sections.push(("plasticity/enabled".into(), vec![u8::from(world.resource::<Plasticity>().enabled)]));
        let overflows = world.resource::<StdpHistoryOverflows>().0;
        sections.push(("plasticity/history_overflows".into(), overflows.to_le_bytes().to_vec()));
        let mut rec = world.resource_mut::<Recorder>();
        sections.push(("recorder/spike_counts".into(), bytes(&rec.spike_counts)));
        let (log_dir, run_id) = (rec.log_dir.clone(), rec.run_id);
        let mut spills = Vec::new();
        for (name, column) in rec.columns_mut() {
            let offset = column.spilled() * column.element_bytes() as u64;
            let pending = match &log_dir {
                Some(dir) => {
                    spills.push((dir.join(format!("{name}.bin")), offset, column.spill()));
                    Vec::new()
                }
                None => column.pending_bytes().to_vec(),
            };
            sections.push((format!("recorder/{name}"), pending));
            sections.push((format!("recorder/{name}.spilled"), column.spilled().to_le_bytes().to_vec()));
        }
        let header = Header {
            fum_version: env!("CARGO_PKG_VERSION").into(),
            model_hash,
            step: clock.step,
            dt_ms: clock.dt_ms,
            shards,
            shard_starts: world.resource::<crate::components::ShardRanges>().0.iter().map(|r| r.start).collect(),
            structure,
            run,
            sections: Vec::new(),
            format_version: FORMAT_VERSION,
        };
        Ok(Snapshot { header, sections, spills, run_id, shards: shard_indices })
    }

    /// Across ranks (`crate::ranks`, a collective call): every rank's shards in one snapshot at
    /// rank 0, in shard order; `None` on the other ranks. Sections that are not a shard's
    /// (projections, plasticity, the recorder) are rank 0's: every rank holds the same.
    pub fn gather(mut self, transport: &dyn crate::ranks::Transport) -> Option<Snapshot> {
        let mut part = Vec::new();
        if transport.rank() > 0 {
            let put = |part: &mut Vec<u8>, n: usize| part.extend_from_slice(&(n as u64).to_le_bytes());
            put(&mut part, self.header.structure.len());
            for (&index, crcs) in self.shards.iter().zip(&self.header.structure) {
                put(&mut part, index);
                put(&mut part, crcs.len());
                crcs.iter().for_each(|c| part.extend_from_slice(&c.to_le_bytes()));
            }
            let shard_sections: Vec<&(String, Vec<u8>)> = self.sections.iter().filter(|(name, _)| name.starts_with("shard/")).collect();
            put(&mut part, shard_sections.len());
            for (name, bytes) in shard_sections {
                put(&mut part, name.len());
                part.extend_from_slice(name.as_bytes());
                put(&mut part, bytes.len());
                part.extend_from_slice(bytes);
            }
        }
        let parts = transport.gather(&part)?;
        /// Reads back what the ranks put (same process image: no corruption to expect).
        struct Part<'a>(&'a [u8]);
        impl<'a> Part<'a> {
            fn take(&mut self, n: usize) -> &'a [u8] {
                let (head, rest) = self.0.split_at(n);
                self.0 = rest;
                head
            }
            fn count(&mut self) -> usize {
                u64::from_le_bytes(self.take(8).try_into().expect("8 bytes")) as usize
            }
        }
        let mut structure: Vec<(usize, Vec<u32>)> = self.shards.drain(..).zip(std::mem::take(&mut self.header.structure)).collect();
        // Shard sections go where rank 0's first one was, ordered by shard as one process
        // writes them, whatever shards each rank held (`crate::partition`).
        let at = self.sections.iter().position(|(name, _)| name.starts_with("shard/")).unwrap_or(self.sections.len());
        let (mut shard_sections, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sections).into_iter().partition(|(name, _)| name.starts_with("shard/"));
        self.sections = rest;
        for part in &parts[1..] {
            let mut part = Part(part);
            for _ in 0..part.count() {
                let (index, n) = (part.count(), part.count());
                structure.push((index, (0..n).map(|_| u32::from_le_bytes(part.take(4).try_into().expect("4 bytes"))).collect()));
            }
            for _ in 0..part.count() {
                let n = part.count();
                let name = String::from_utf8(part.take(n).to_vec()).expect("a section name");
                let n = part.count();
                shard_sections.push((name, part.take(n).to_vec()));
            }
        }
        let shard_of = |name: &str| name["shard/".len()..].split('/').next().and_then(|i| i.parse::<usize>().ok()).expect("shard/<index>/...");
        shard_sections.sort_by_key(|(name, _)| shard_of(name));
        self.sections.splice(at..at, shard_sections);
        structure.sort_unstable_by_key(|(index, _)| *index);
        (self.shards, self.header.structure) = structure.into_iter().unzip();
        self.header.shards = self.header.structure.len();
        Some(self)
    }

    /// A newer snapshot that replaces `older`, which was never written: the older one's
    /// recorded output is kept by prepending it to this one's (same columns, same order).
    pub fn supersede(mut self, older: Snapshot) -> Snapshot {
        for ((_, offset, chunk), (_, old_offset, mut old_chunk)) in self.spills.iter_mut().zip(older.spills) {
            old_chunk.extend_from_slice(chunk);
            *chunk = old_chunk;
            *offset = old_offset;
        }
        self
    }

    /// Writes the snapshot atomically as `dir/ckpt-<step>` and returns its path.
    pub fn write(mut self, dir: &Path, level: i32) -> Result<PathBuf, CheckpointError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| CheckpointError::Io { path: path.clone(), source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // Recorded output first: the log and its index are cut back to where this chunk starts
        // (a killed earlier write may have left more), extended and synced before the
        // checkpoint that points past it exists.
        for (file, offset, chunk) in &self.spills {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            recording::append_chunk(file, self.run_id, *offset, chunk).map_err(io(file))?;
        }
        let mut data = Vec::new();
        self.header.sections.clear();
        for (name, raw) in &self.sections {
            let stored = zstd::bulk::compress(raw, level).map_err(io(dir))?;
            self.header.sections.push(SectionEntry {
                name: name.clone(),
                offset: data.len() as u64,
                stored_len: stored.len() as u64,
                raw_len: raw.len() as u64,
                crc32: crc32fast::hash(&stored),
            });
            data.extend_from_slice(&stored);
        }
        let header = serde_json::to_vec(&self.header).expect("headers serialise");
        let name = format!("ckpt-{:09}", self.header.step);
        let path = dir.join(&name);
        recording::write_atomically(&path, |tmp| std::fs::File::create(tmp).and_then(|mut f| encode(&mut f, &header, &data)).map_err(io(&path)), io(&path))?;
        Ok(path)
    }
}

/// Writes the bytes of a checkpoint file to `out`: the fixed prefix (magic, format version,
/// header length, header CRC-32), the JSON header, then the section data the header points into.
/// `Snapshot::write` writes files with it; tests and fuzz targets build hostile ones.
pub fn encode(out: &mut impl Write, header_json: &[u8], data: &[u8]) -> std::io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT_VERSION.to_le_bytes())?;
    out.write_all(&(header_json.len() as u64).to_le_bytes())?;
    out.write_all(&crc32fast::hash(header_json).to_le_bytes())?;
    out.write_all(header_json)?;
    out.write_all(data)
}

/// A checkpoint file opened and verified: header parsed, every section's checksum checked.
/// Sections stay on disk and are read (streamed through zstd) when asked for, so that a
/// checkpoint larger than memory can restore a network paged to disk ([`Checkpoint::restore`]).
/// The file is never changed in place (checkpoints are written to a temporary name and renamed),
/// and the open handle keeps it readable if it is pruned meanwhile.
pub struct Checkpoint {
    pub path: PathBuf,
    pub header: Header,
    file: std::fs::File,
    /// Where the section data starts: section offsets count from here.
    base: u64,
}

/// The stored (compressed) bytes of one section, read from the file as they are consumed.
struct Stored<'a> {
    file: &'a std::fs::File,
    at: u64,
    end: u64,
}

impl Read for Stored<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = (self.end - self.at).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..n], self.at)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.at += n as u64;
        Ok(n)
    }
}

impl Checkpoint {
    /// Opens `path` and verifies its header and every section checksum (reading each section
    /// through a small buffer: nothing of it is kept).
    pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let p = path.display().to_string();
        let io = |source| CheckpointError::Io { path: p.clone(), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let header = Header::read(&mut file, &p, file_len)?;
        let base = file.stream_position().map_err(io)?;
        let checkpoint = Checkpoint { path: path.to_path_buf(), header, file, base };
        let mut buffer = vec![0u8; 1 << 20];
        for s in &checkpoint.header.sections {
            if s.offset.checked_add(s.stored_len).is_none_or(|end| end > file_len - base) {
                return Err(CheckpointError::Truncated { path: p, detail: format!("section {} ends past the end of the file", s.name) });
            }
            let (mut stored, mut crc) = (checkpoint.stored(s), crc32fast::Hasher::new());
            loop {
                match stored.read(&mut buffer).map_err(io)? {
                    0 => break,
                    n => crc.update(&buffer[..n]),
                }
            }
            if crc.finalize() != s.crc32 {
                return Err(CheckpointError::Checksum { path: p, what: format!("section {}", s.name) });
            }
        }
        Ok(checkpoint)
    }

    fn stored(&self, s: &SectionEntry) -> Stored<'_> {
        Stored { file: &self.file, at: self.base + s.offset, end: self.base + s.offset + s.stored_len }
    }

    fn entry(&self, name: &str) -> Result<&SectionEntry, CheckpointError> {
        self.header.sections.iter().find(|s| s.name == name).ok_or_else(|| CheckpointError::Corrupt { path: self.path.display().to_string(), detail: format!("no section {name}") })
    }

    /// A reader of section `name`'s decompressed bytes (at most its declared length).
    fn decoder(&self, name: &str) -> Result<impl Read + '_, CheckpointError> {
        let s = self.entry(name)?;
        let decoder = zstd::stream::read::Decoder::new(self.stored(s)).map_err(|e| CheckpointError::Corrupt { path: self.path.display().to_string(), detail: format!("section {name}: {e}") })?;
        Ok(decoder.take(s.raw_len))
    }

    /// Decompresses section `name` without keeping it, checking that it expands to the length
    /// its header entry declares; that length.
    fn verify_section(&self, name: &str) -> Result<u64, CheckpointError> {
        let corrupt = |e: std::io::Error| CheckpointError::Corrupt { path: self.path.display().to_string(), detail: format!("section {name}: {e}") };
        let len = std::io::copy(&mut self.decoder(name)?, &mut std::io::sink()).map_err(corrupt)?;
        let declared = self.entry(name)?.raw_len;
        if len != declared {
            return Err(CheckpointError::Corrupt { path: self.path.display().to_string(), detail: format!("section {name}: {len} bytes, header says {declared}") });
        }
        Ok(len)
    }

    /// The decompressed bytes of a section. The data is decompressed twice: once counting what
    /// it really expands to (up to the declared length), then into a buffer of exactly that
    /// size. So a hostile length field cannot make it allocate more than the data expands to,
    /// and a growing buffer never holds up to three times the section while it reallocates.
    /// Restores are rare; the second pass costs less than the disk read.
    pub fn section(&self, name: &str) -> Result<Vec<u8>, CheckpointError> {
        let len = self.verify_section(name)?;
        let mut raw = Vec::with_capacity(len as usize);
        self.decoder(name)?.read_to_end(&mut raw).map_err(|e| CheckpointError::Corrupt { path: self.path.display().to_string(), detail: format!("section {name}: {e}") })?;
        Ok(raw)
    }

    /// The model text the checkpoint was written with.
    pub fn model_text(&self) -> Result<String, CheckpointError> {
        String::from_utf8(self.section("model.toml")?).map_err(|_| CheckpointError::Corrupt { path: self.path.display().to_string(), detail: "model text is not UTF-8".into() })
    }

    fn column<T: bytemuck::Pod>(&self, name: &str, expected_len: Option<usize>) -> Result<Vec<T>, CheckpointError> {
        let raw = self.section(name)?;
        let size = std::mem::size_of::<T>();
        let ok = raw.len() % size == 0 && expected_len.is_none_or(|n| n * size == raw.len());
        if !ok {
            return Err(CheckpointError::Corrupt { path: self.path.display().to_string(), detail: format!("section {name}: {} bytes do not fit the network", raw.len()) });
        }
        Ok(bytemuck::pod_collect_to_vec(&raw))
    }

    /// Loads the state into `world`, built from the same model with the same cut
    /// ([`Header::cut`]). Everything is decoded and checked before anything in the world
    /// changes; a paged column is checked without being kept and then streamed into its pages,
    /// so only a disk failing during that pass can leave the world half restored (the error
    /// says so, and `fum resume` then drops that world). Recorded output whose logs are lost or
    /// fail their checksums is dropped, and listed.
    pub fn restore(&self, world: &mut World, model_hash: u64) -> Result<Vec<MissingOutput>, CheckpointError> {
        let path = self.path.display().to_string();
        let corrupt = |detail: String| CheckpointError::Corrupt { path: path.clone(), detail };
        if self.header.model_hash != model_hash {
            return Err(CheckpointError::OtherModel { path: path.clone(), found: self.header.model_hash, expected: model_hash });
        }
        // The shards built here: all of them, or across ranks this rank's (`crate::ranks`).
        let built = structure(world).map_err(corrupt)?;
        let all = crate::ranks::transport().is_none();
        if built.iter().any(|(index, _)| *index >= self.header.shards) || (all && built.len() != self.header.shards) || self.header.structure.len() != self.header.shards {
            return Err(corrupt(format!("{} shards in the checkpoint, {} built", self.header.shards, built.len())));
        }
        let cut = &world.resource::<crate::components::ShardRanges>().0;
        if self.header.cut(cut.last().map_or(0, |r| r.end)).as_ref() != Some(cut) {
            return Err(corrupt("the network here is cut into other shards than the checkpointed one (build it with the checkpoint's cut, `Header::cut`)".into()));
        }
        if let Some((index, _)) = built.iter().find(|(index, crcs)| *crcs != self.header.structure[*index]) {
            return Err(corrupt(format!("the synapses of shard {index} rebuilt differently from the checkpointed network")));
        }
        // Decode everything first: every declared state column, checked against the built
        // network's column (element type and length), in the declaration's order. A column
        // paged to disk (`crate::paging`: the weights of a network larger than --host-memory)
        // is decompressed and checked here without being kept, and streamed into its pages
        // while applying, so that the restore never holds it whole.
        let mut columns = Vec::new();
        let mut failed = None;
        let tables = crate::paging::take_tables(world);
        state::visit_checkpointed(world, &mut |d| {
            if failed.is_some() {
                return;
            }
            let paged = match d.owner {
                state::Owner::Block { shard, block } => tables.get(&(shard, block)).is_some_and(|t| t.pages_column(d.name)),
                _ => false,
            };
            let name = d.section();
            // A column the network keeps that the checkpoint lacks: written by a fum that did
            // not keep it (a model's extra state added since), or not for this network.
            if !self.header.sections.iter().any(|s| s.name == name) {
                failed = Some(corrupt(format!(
                    "no section {name}: this network keeps the column {:?}, which the checkpoint (written by fum {}) does not hold; resume it with the fum that wrote it",
                    d.name, self.header.fum_version
                )));
                return;
            }
            let decoded = self.section(&format!("{name}.type")).and_then(|ty| {
                if ty != d.column.element_type().as_bytes() {
                    return Err(corrupt(format!("section {name}.type: stored as {}, the model keeps {}", String::from_utf8_lossy(&ty), d.column.element_type())));
                }
                if paged {
                    let len = self.verify_section(&name)?;
                    if len != (d.column.len() * d.column.element_bytes()) as u64 {
                        return Err(corrupt(format!("section {name}: {len} bytes do not fit the network")));
                    }
                    return Ok(Restored::Paged);
                }
                let raw = self.section(&name)?;
                let raw = match (self.header.format_version, d.name) {
                    (3 | 4, "plan_grown") => crate::structural::Grown::widen_v4(&raw).ok_or_else(|| corrupt(format!("section {name}: {} bytes are not whole records", raw.len())))?,
                    _ => raw,
                };
                let fits = match d.shape {
                    state::Shape::Varying => raw.len() % d.column.element_bytes() == 0,
                    _ => raw.len() == d.column.len() * d.column.element_bytes(),
                };
                if !fits {
                    return Err(corrupt(format!("section {name}: {} bytes do not fit the network", raw.len())));
                }
                Ok(Restored::Bytes(raw))
            });
            match decoded {
                Ok(raw) => columns.push(raw),
                Err(e) => failed = Some(e),
            }
        });
        crate::paging::put_tables(world, tables);
        if let Some(e) = failed {
            return Err(e);
        }
        let enabled = self.section("plasticity/enabled")?;
        let overflows: [u8; 8] = self.section("plasticity/history_overflows")?.try_into().map_err(|_| corrupt("section plasticity/history_overflows is not a u64".into()))?;
        let counts = self.column::<u64>("recorder/spike_counts", Some(world.resource::<Recorder>().spike_counts.len()))?;
        let mut recorded = Vec::new();
        let (run_id, outputs) = {
            let mut rec = world.resource_mut::<Recorder>();
            let (log_dir, run_id, outputs) = (rec.log_dir.clone(), rec.run_id, rec.outputs());
            // Across ranks only rank 0 records and keeps the logs; the others' recordings stay
            // empty (they sample probes for rank 0 and keep no rows).
            let records = crate::ranks::writes();
            for (name, column) in rec.columns_mut() {
                if !records {
                    let element_bytes = column.element_bytes();
                    recorded.push(Logged { name, log: None, log_bytes: 0, spilled: 0, pending: Vec::new(), element_bytes, damage: None });
                    continue;
                }
                let pending = self.section(&format!("recorder/{name}"))?;
                let spilled: [u8; 8] = self.section(&format!("recorder/{name}.spilled"))?.try_into().map_err(|_| corrupt(format!("section recorder/{name}.spilled is not a u64")))?;
                let spilled = u64::from_le_bytes(spilled);
                let log_bytes = spilled.checked_mul(column.element_bytes() as u64).ok_or_else(|| corrupt(format!("recording cursor of {name} overflows")))?;
                if pending.len() % column.element_bytes() != 0 {
                    return Err(corrupt(format!("section recorder/{name} is not whole elements")));
                }
                spilled.checked_add((pending.len() / column.element_bytes()) as u64).ok_or_else(|| corrupt(format!("recording cursor of {name} overflows")))?;
                let log = log_dir.as_ref().map(|d| d.join(format!("{name}.bin")));
                let damage = match &log {
                    None if spilled > 0 => return Err(corrupt(format!("recording cursor of {name} points into a log, and there is no log folder"))),
                    Some(log) if spilled > 0 => recording::verify_log(log, run_id, log_bytes).err(),
                    _ => None,
                };
                recorded.push(Logged { name, log, log_bytes, spilled, pending, element_bytes: column.element_bytes(), damage });
            }
            (run_id, outputs)
        };
        // A damaged log loses what was logged of its output (both columns, which stay in
        // step); the state is intact, so the run goes on and records again from here.
        let mut missing = Vec::new();
        for (pair, output) in recorded.chunks_mut(2).zip(outputs) {
            if let Some(reason) = pair.iter().find_map(|c| c.damage.clone()) {
                let (before_step, before_ms) = (self.header.step, recording::step_time_ms(self.header.step, self.header.dt_ms));
                missing.push(MissingOutput { output, before_step, before_ms, reason });
                for c in pair {
                    (c.spilled, c.log_bytes) = (0, 0);
                }
            }
        }
        let lengths: std::collections::HashMap<String, u64> = recorded.iter().map(|c| (c.name.clone(), c.spilled + (c.pending.len() / c.element_bytes) as u64)).collect();
        // Columns recorded together must stay in step (log and pending together): one node id
        // per spike step, one row of values per probe time. A checkpoint whose columns disagree
        // used to restore, and the run then panicked writing probes.h5 (`ndarray_2d` expects
        // whole rows).
        {
            let rec = world.resource::<Recorder>();
            let len = |name: String| lengths.get(&name).copied().unwrap_or(0);
            for r in 0..rec.spikes.len() {
                let (steps, ids) = (len(format!("spikes-{r}-steps")), len(format!("spikes-{r}-node_ids")));
                if steps != ids {
                    return Err(corrupt(format!("recorded spikes {r}: {steps} steps but {ids} node ids")));
                }
            }
            for (r, p) in rec.probes.iter().enumerate() {
                let (times, values) = (len(format!("probe-{r}-times_ms")), len(format!("probe-{r}-values")));
                if u128::from(times) * p.sites.len() as u128 != u128::from(values) {
                    return Err(corrupt(format!("probe {r}: {values} values for {times} samples of {} sites", p.sites.len())));
                }
            }
        }
        // Output written after this checkpoint (before a crash) is cut off: it will be recorded
        // again. This is done before anything in the world changes (it used to be done while
        // applying), so that an I/O error here does not leave the world half restored.
        for c in &recorded {
            if let Some(log) = &c.log {
                recording::cut_log(log, run_id, c.log_bytes).map_err(|source| CheckpointError::Io { path: log.display().to_string(), source })?;
            }
        }

        // Then apply.
        let mut decoded = columns.into_iter();
        let mut tables = crate::paging::take_tables(world);
        let (mut failed, mut disk_bytes) = (None, std::collections::HashMap::<usize, i64>::new());
        state::visit_checkpointed(world, &mut |d| {
            match decoded.next().expect("one section per declared column") {
                Restored::Bytes(raw) if d.shape == state::Shape::Varying => d.column.replace_host_bytes(&raw),
                Restored::Bytes(raw) => d.column.set_host_bytes(&raw),
                Restored::Paged => {
                    let state::Owner::Block { shard, block } = d.owner else { unreachable!("only blocks are paged") };
                    let table = tables.get_mut(&(shard, block)).expect("a paged block's table");
                    let name = d.section();
                    // Checked above, so an error here is the disk failing under the restore.
                    let written = self.decoder(&name).map_err(|e| e.to_string()).and_then(|mut reader| {
                        crate::paging::write_paged(table, d.name, d.column, &mut |dst| reader.read_exact(dst).map_err(|e| format!("section {name}: {e}")))
                    });
                    match written {
                        Ok(delta) => *disk_bytes.entry(shard).or_default() += delta.unwrap_or(0),
                        Err(e) => _ = failed.get_or_insert(e),
                    }
                }
            }
        });
        crate::paging::put_tables(world, tables);
        let mut shards = world.query::<(&crate::components::Shard, &mut crate::paging::ShardPages)>();
        for (shard, mut pages) in shards.iter_mut(world) {
            pages.add_disk_bytes(disk_bytes.get(&shard.index).copied().unwrap_or(0));
        }
        if let Some(e) = failed {
            return Err(corrupt(format!("{e} (while writing the restored pages: this network is half restored)")));
        }
        crate::structural::check_restored(world).map_err(corrupt)?;
        if world.contains_resource::<Recorder>() {
            Recorder::relocate_synapses(world);
        }
        world.resource_mut::<StdpHistoryOverflows>().0 = u64::from_le_bytes(overflows);
        world.resource_mut::<Plasticity>().enabled = enabled.first() == Some(&1);
        let mut rec = world.resource_mut::<Recorder>();
        rec.spike_counts = counts;
        for ((_, column), c) in rec.columns_mut().into_iter().zip(recorded) {
            column.reset(c.spilled, &c.pending);
        }
        world.resource_mut::<Clock>().step = self.header.step;
        Ok(missing)
    }
}

/// A declared column's section as a restore applies it: its bytes, or, for a column paged to
/// disk, nothing yet (it is streamed into the pages).
enum Restored {
    Bytes(Vec<u8>),
    Paged,
}

/// A recorded column as a checkpoint restores it: its log and cursor (in bytes and elements),
/// the elements held in the checkpoint, and why its log cannot be used, if it cannot.
struct Logged {
    name: String,
    log: Option<PathBuf>,
    log_bytes: u64,
    spilled: u64,
    pending: Vec<u8>,
    element_bytes: usize,
    damage: Option<String>,
}

/// Checkpoint files in `dir`, newest first.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ckpt-")))
        .collect();
    files.sort();
    files.reverse();
    files
}

/// Deletes all but the newest `keep` checkpoints of run `run_id` in `dir`; files of another
/// run, or that cannot be read, are left alone.
pub fn prune(dir: &Path, keep: usize, run_id: u64) {
    let ours = list(dir).into_iter().filter(|p| Header::open(p).is_ok_and(|h| h.run_id() == Some(run_id)));
    for old in ours.skip(keep.max(1)) {
        let _ = std::fs::remove_file(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint's cut of 10 neurons: the recorded starts; none recorded (format 5 and
    /// before) is the equal cut those were built with; starts that do not fit are refused.
    #[test]
    fn a_checkpoint_rebuilds_the_cut_it_was_written_with() {
        let header = |shards: usize, shard_starts: Vec<u32>| Header {
            fum_version: String::new(),
            model_hash: 0,
            step: 0,
            dt_ms: 0.1,
            shards,
            shard_starts,
            structure: Vec::new(),
            run: serde_json::Value::Null,
            sections: Vec::new(),
            format_version: FORMAT_VERSION,
        };
        assert_eq!(header(3, vec![0, 2, 7]).cut(10), Some(vec![0..2, 2..7, 7..10]));
        assert_eq!(header(3, Vec::new()).cut(10), Some(crate::build::equal_cut(10, 3)));
        for starts in [vec![1, 2, 7], vec![0, 7, 7], vec![0, 2, 12], vec![0, 2]] {
            assert_eq!(header(3, starts.clone()).cut(10), None, "{starts:?}");
        }
    }
}
