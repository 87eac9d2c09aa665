//! Columns: one contiguous array per quantity (structure of arrays), and where its copies live.
//!
//! Residency. A column always has a host copy. A device backend gives it a [`Mirror`]: the same
//! elements in the same order in a device buffer, as one or more contiguous ranges of it (shards
//! on one device share one buffer per quantity, an arena in which a shard's column is a range,
//! so that one kernel covers every shard; a ring column, slot-major on both sides, is one range
//! per slot of a slot-major arena). Which copy is current is tracked, not remembered:
//!
//! - The device buffer reports a *generation* that advances whenever the device may have written
//!   it (every device step, for state; never, for structure). The host copy records the
//!   generation it was last made equal to. Reading the host copy of a column whose device copy
//!   is newer panics, naming the column: a stale read cannot happen silently. The reader makes
//!   the host current first with [`crate::backend::sync_to_host`], which moves every column
//!   through [`Column::download`].
//! - Writing the host copy of a mirrored column marks it newer than the device copy, and raises
//!   the buffer's "host written" flag, which the device backend checks before each step to
//!   upload such columns ([`Column::upload`]).
//!
//! All movement between tiers goes through a column's ranges, one copy per contiguous range,
//! and the buffer counts the bytes. Later tiers (pinned host, compressed disk pages) are further
//! implementations of [`DeviceBuffer`] behind the same [`Mirror`].

use std::fmt;
use std::sync::Arc;

use bytemuck::Pod;

/// A failed copy between a column's host copy and its mirror.
#[derive(Debug, thiserror::Error)]
#[error("copying a column between host and device: {0}")]
pub struct TransferError(pub String);

/// Memory outside the host that columns are mirrored into: one buffer of bytes.
pub trait DeviceBuffer: Send + Sync + fmt::Debug {
    /// Copies the bytes at `at..at + dst.len()` of this buffer into `dst`, after every queued
    /// device step.
    fn read(&self, at: usize, dst: &mut [u8]) -> Result<(), TransferError>;
    /// Copies `src` into bytes `at..at + src.len()` of this buffer.
    fn write(&self, at: usize, src: &[u8]) -> Result<(), TransferError>;
    /// Advances whenever the device may have changed this buffer (0 forever for a buffer the
    /// device only reads).
    fn generation(&self) -> u64;
    /// Tells the device that a column in this buffer was written on the host.
    fn host_written(&self);
}

/// Where a column's elements sit in a [`DeviceBuffer`]: `chunks` contiguous ranges of
/// `chunk_len` elements, the first at byte `offset`, each `stride` bytes after the previous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub offset: usize,
    pub chunk_len: usize,
    pub chunks: usize,
    pub stride: usize,
}

impl Placement {
    /// `len` elements in one range at byte `offset`.
    pub fn contiguous(offset: usize, len: usize) -> Self {
        Placement { offset, chunk_len: len, chunks: 1, stride: 0 }
    }
}

/// `Mirror::synced` of a host copy that never equalled its device copy.
const NEVER_SYNCED: u64 = u64::MAX;

/// The device copy of a column (see the module comment).
#[derive(Clone, Debug)]
pub struct Mirror {
    buffer: Arc<dyn DeviceBuffer>,
    placement: Placement,
    /// The buffer generation the host copy equals.
    synced: u64,
    /// The host copy was written after the device copy was made.
    host_newer: bool,
}

/// A contiguous column of one per-neuron or per-synapse quantity.
///
/// All state the systems touch lives in columns, so that there is one place where data is
/// mirrored on a device, snapshotted for the viewer, spilled or checkpointed. Systems slice a
/// column (`&col[..]`, `&mut col[..]`) once per shard and hand the slices to the kernels.
#[derive(Default, PartialEq)]
pub struct Column<T: Pod> {
    host: Vec<T>,
    mirror: Option<Mirror>,
}

impl PartialEq for Mirror {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.buffer, &other.buffer) && self.placement == other.placement
    }
}

impl<T: Pod> Column<T> {
    pub fn from_vec(host: Vec<T>) -> Self {
        Column { host, mirror: None }
    }

    pub fn filled(len: usize, value: T) -> Self {
        Column::from_vec(vec![value; len])
    }

    /// Bytes held by the host copy (its capacity), for memory reports.
    pub fn bytes(&self) -> usize {
        self.host.capacity() * std::mem::size_of::<T>()
    }

    /// The raw bytes of the host copy, for checkpoints and checksums.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self)
    }

    /// Whether the host copy may be read: no mirror, or the mirror holds nothing newer.
    pub fn host_is_current(&self) -> bool {
        self.mirror.as_ref().is_none_or(|m| m.host_newer || m.synced == m.buffer.generation())
    }

    /// Mirrors this column at `placement` in `buffer`; the host copy is the newer one until
    /// [`Column::upload`] copies it there.
    pub fn attach(&mut self, buffer: Arc<dyn DeviceBuffer>, placement: Placement) {
        assert_eq!(placement.chunk_len * placement.chunks, self.host.len(), "a placement covers the column");
        let synced = buffer.generation();
        self.mirror = Some(Mirror { buffer, placement, synced, host_newer: true });
    }

    /// Mirrors this column at `placement` in `buffer`, which the device already filled with
    /// the column's values (a structural commit rebuilds a block there); the host copy holds
    /// them too if `host_current`, else it is behind until a download.
    pub fn attach_filled(&mut self, buffer: Arc<dyn DeviceBuffer>, placement: Placement, host_current: bool) {
        assert_eq!(placement.chunk_len * placement.chunks, self.host.len(), "a placement covers the column");
        let synced = if host_current { buffer.generation() } else { NEVER_SYNCED };
        self.mirror = Some(Mirror { buffer, placement, synced, host_newer: false });
    }

    /// Elements in the column (whichever copy is current).
    pub fn len(&self) -> usize {
        self.host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }

    /// Drops the mirror, keeping the host copy (made current first).
    pub fn detach(&mut self) -> Result<(), TransferError> {
        self.download()?;
        self.mirror = None;
        Ok(())
    }

    pub fn mirror(&self) -> Option<&Mirror> {
        self.mirror.as_ref()
    }

    /// Makes the host copy current: copies each range of the mirror back if the device copy is
    /// newer. Nothing to do without a mirror or when the host copy is current.
    pub fn download(&mut self) -> Result<(), TransferError> {
        let Some(m) = &mut self.mirror else { return Ok(()) };
        let generation = m.buffer.generation();
        if m.host_newer || m.synced == generation {
            return Ok(());
        }
        let p = m.placement;
        let size = std::mem::size_of::<T>();
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.host);
        for (c, chunk) in bytes.chunks_mut(p.chunk_len * size).enumerate().take(p.chunks) {
            m.buffer.read(p.offset + c * p.stride, chunk)?;
        }
        m.synced = generation;
        Ok(())
    }

    /// Makes the device copy current: copies each range there if the host copy is newer.
    pub fn upload(&mut self) -> Result<(), TransferError> {
        let Some(m) = &mut self.mirror else { return Ok(()) };
        if !m.host_newer {
            return Ok(());
        }
        let p = m.placement;
        let size = std::mem::size_of::<T>();
        let bytes: &[u8] = bytemuck::cast_slice(&self.host);
        for (c, chunk) in bytes.chunks(p.chunk_len * size).enumerate().take(p.chunks) {
            m.buffer.write(p.offset + c * p.stride, chunk)?;
        }
        m.host_newer = false;
        m.synced = m.buffer.generation();
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn stale() -> ! {
        panic!(
            "read of a {} column whose device copy is newer: call fum_engine::backend::sync_to_host first",
            std::any::type_name::<T>()
        )
    }
}

impl<T: Pod> Clone for Column<T> {
    /// A copy of the host data, without the mirror (a copy lives on the host only).
    fn clone(&self) -> Self {
        Column::from_vec(self.to_vec())
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Column<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Column").field("len", &self.host.len()).field("mirror", &self.mirror.as_ref().map(|m| m.placement)).finish()
    }
}

impl<T: Pod> std::ops::Deref for Column<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        if !self.host_is_current() {
            Self::stale();
        }
        &self.host
    }
}

impl<T: Pod> std::ops::DerefMut for Column<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        if let Some(m) = &mut self.mirror {
            if !(m.host_newer || m.synced == m.buffer.generation()) {
                Self::stale();
            }
            if !m.host_newer {
                m.host_newer = true;
                m.buffer.host_written();
            }
        }
        &mut self.host
    }
}

/// A column of any element type, as the state declaration hands it out (see [`crate::state`]).
pub trait AnyColumn {
    /// Elements, and bytes per element.
    fn len(&self) -> usize;
    fn element_bytes(&self) -> usize;
    /// The element type's name ("f32", "u32", ...).
    fn element_type(&self) -> &'static str;
    /// The host copy's bytes (panics if the device copy is newer, like `Deref`).
    fn host_bytes(&self) -> &[u8];
    /// Overwrites the host copy with `bytes` (exactly its length).
    fn set_host_bytes(&mut self, bytes: &[u8]);
    /// Replaces the host copy with `bytes` (whole elements), whatever its length was. Only for
    /// a column without a device mirror (a restore happens before a backend places columns).
    fn replace_host_bytes(&mut self, bytes: &[u8]);
    fn attach(&mut self, buffer: Arc<dyn DeviceBuffer>, placement: Placement);
    /// See [`Column::attach_filled`].
    fn attach_filled(&mut self, buffer: Arc<dyn DeviceBuffer>, placement: Placement, host_current: bool);
    fn detach(&mut self) -> Result<(), TransferError>;
    fn download(&mut self) -> Result<(), TransferError>;
    fn upload(&mut self) -> Result<(), TransferError>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Pod> AnyColumn for Column<T> {
    fn len(&self) -> usize {
        self.host.len()
    }
    fn element_bytes(&self) -> usize {
        std::mem::size_of::<T>()
    }
    fn element_type(&self) -> &'static str {
        let name = std::any::type_name::<T>();
        name.rsplit("::").next().unwrap_or(name)
    }
    fn host_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
    fn set_host_bytes(&mut self, bytes: &[u8]) {
        let host: &mut [T] = self;
        bytemuck::cast_slice_mut::<T, u8>(host).copy_from_slice(bytes);
    }
    fn replace_host_bytes(&mut self, bytes: &[u8]) {
        assert!(self.mirror.is_none(), "a mirrored column keeps its length");
        self.host = bytemuck::pod_collect_to_vec(bytes);
    }
    fn attach(&mut self, buffer: Arc<dyn DeviceBuffer>, placement: Placement) {
        Column::attach(self, buffer, placement)
    }
    fn attach_filled(&mut self, buffer: Arc<dyn DeviceBuffer>, placement: Placement, host_current: bool) {
        Column::attach_filled(self, buffer, placement, host_current)
    }
    fn detach(&mut self) -> Result<(), TransferError> {
        Column::detach(self)
    }
    fn download(&mut self) -> Result<(), TransferError> {
        Column::download(self)
    }
    fn upload(&mut self) -> Result<(), TransferError> {
        Column::upload(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// A device buffer in host memory whose "device" can be made to write.
    #[derive(Debug, Default)]
    struct FakeDevice {
        bytes: Mutex<Vec<u8>>,
        generation: AtomicU64,
        written: AtomicBool,
        copies: AtomicU64,
    }

    impl DeviceBuffer for FakeDevice {
        fn read(&self, at: usize, dst: &mut [u8]) -> Result<(), TransferError> {
            self.copies.fetch_add(1, Ordering::Relaxed);
            dst.copy_from_slice(&self.bytes.lock().unwrap()[at..at + dst.len()]);
            Ok(())
        }
        fn write(&self, at: usize, src: &[u8]) -> Result<(), TransferError> {
            self.copies.fetch_add(1, Ordering::Relaxed);
            self.bytes.lock().unwrap()[at..at + src.len()].copy_from_slice(src);
            Ok(())
        }
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::Relaxed)
        }
        fn host_written(&self) {
            self.written.store(true, Ordering::Relaxed);
        }
    }

    impl FakeDevice {
        /// The device writes `value` over the whole buffer (a step).
        fn step(&self, value: u32) {
            let mut b = self.bytes.lock().unwrap();
            for w in b.chunks_mut(4) {
                w.copy_from_slice(&value.to_le_bytes());
            }
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Column `[0, 1, 2, 3, 4, 5]` mirrored as 3 chunks of 2 in a 4-word-strided layout.
    fn mirrored() -> (Arc<FakeDevice>, Column<u32>) {
        let device = Arc::new(FakeDevice { bytes: Mutex::new(vec![0; 4 * 12]), ..Default::default() });
        let mut column = Column::from_vec((0..6u32).collect());
        let placement = Placement { offset: 4, chunk_len: 2, chunks: 3, stride: 16 };
        column.attach(device.clone(), placement);
        column.upload().unwrap();
        (device, column)
    }

    #[test]
    fn a_column_moves_as_one_copy_per_contiguous_range() {
        let (device, column) = mirrored();
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&device.bytes.lock().unwrap());
        assert_eq!(words, [0, 0, 1, 0, 0, 2, 3, 0, 0, 4, 5, 0]);
        assert_eq!(device.copies.load(Ordering::Relaxed), 3);
        assert_eq!(&column[..], &[0, 1, 2, 3, 4, 5]);
    }

    #[test]
    #[should_panic(expected = "device copy is newer")]
    fn reading_the_host_while_the_device_is_newer_panics() {
        let (device, column) = mirrored();
        device.step(9);
        let _ = column[0];
    }

    #[test]
    fn download_makes_the_host_current_and_a_host_write_is_uploaded() {
        let (device, mut column) = mirrored();
        device.step(9);
        assert!(!column.host_is_current());
        column.download().unwrap();
        assert_eq!(&column[..], &[9; 6]);
        column[2] = 7;
        assert!(device.written.load(Ordering::Relaxed), "the device learns of the host write");
        device.step(1);
        assert_eq!(column[2], 7, "a host copy written since is newer than the device copy, and stays readable");
        column.upload().unwrap();
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&device.bytes.lock().unwrap());
        assert_eq!(words[1..3], [9, 9]);
        assert_eq!(words[5], 7);
    }

    #[test]
    fn a_column_filled_on_the_device_is_read_after_a_download() {
        let device = Arc::new(FakeDevice { bytes: Mutex::new(vec![0; 4 * 3]), ..Default::default() });
        device.step(5);
        let mut column = Column::from_vec(vec![0u32; 3]);
        column.attach_filled(device.clone(), Placement::contiguous(0, 3), false);
        assert!(!column.host_is_current());
        column.download().unwrap();
        assert_eq!(&column[..], &[5; 3]);
        let mut synced = Column::from_vec(vec![5u32; 3]);
        synced.attach_filled(device, Placement::contiguous(0, 3), true);
        assert!(synced.host_is_current());
    }

    #[test]
    fn a_clone_lives_on_the_host_only() {
        let (_, column) = mirrored();
        assert!(column.clone().mirror().is_none());
    }
}
