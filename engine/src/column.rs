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
//! and the buffer counts the bytes.
//!
//! Below the host, a synapse column may be *paged* ([`crate::paging`]): its host copy then lives
//! in an anonymous mapping, and ranges of it (pages) are spilled to compressed disk pages and
//! their memory given back to the system. While any range is spilled, reading the column whole
//! panics as a stale read does; the code that made the ranges it reads resident (delivery, once
//! it has fetched a row's page) reads them through [`Column::pages`].

use std::fmt;
use std::ops::Range;
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
    host: Host<T>,
    mirror: Option<Mirror>,
    /// Ranges of the host copy spilled to a lower tier (their memory given back): while any
    /// is, only [`Column::pages`] reads the column.
    spilled: usize,
}

/// The memory of a column's host copy: the heap, or an anonymous mapping whose ranges can be
/// given back to the system while their bytes live in a lower tier (see [`crate::paging`]).
enum Host<T: Pod> {
    Heap(Vec<T>),
    Mapped { map: memmap2::MmapMut, len: usize, _element: std::marker::PhantomData<T> },
}

impl<T: Pod> Default for Host<T> {
    fn default() -> Self {
        Host::Heap(Vec::new())
    }
}

impl<T: Pod + PartialEq> PartialEq for Host<T> {
    fn eq(&self, other: &Self) -> bool {
        <[T] as PartialEq>::eq(self, other)
    }
}

impl<T: Pod> std::ops::Deref for Host<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        match self {
            Host::Heap(v) => v,
            Host::Mapped { map, len, .. } => bytemuck::cast_slice(&map[..len * size_of::<T>()]),
        }
    }
}

impl<T: Pod> std::ops::DerefMut for Host<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Host::Heap(v) => v,
            Host::Mapped { map, len, .. } => bytemuck::cast_slice_mut(&mut map[..*len * size_of::<T>()]),
        }
    }
}

impl PartialEq for Mirror {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.buffer, &other.buffer) && self.placement == other.placement
    }
}

impl<T: Pod> Column<T> {
    pub fn from_vec(host: Vec<T>) -> Self {
        Column { host: Host::Heap(host), mirror: None, spilled: 0 }
    }

    pub fn filled(len: usize, value: T) -> Self {
        Column::from_vec(vec![value; len])
    }

    /// Bytes held by the host copy (its capacity; a paged column's whole length, spilled or
    /// not), for memory reports.
    pub fn bytes(&self) -> usize {
        match &self.host {
            Host::Heap(v) => v.capacity() * size_of::<T>(),
            Host::Mapped { len, .. } => len * size_of::<T>(),
        }
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
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.host[..]);
        for (c, chunk) in bytes.chunks_mut(p.chunk_len * size).enumerate().take(p.chunks) {
            m.buffer.read(p.offset + c * p.stride, chunk)?;
        }
        m.synced = generation;
        Ok(())
    }

    /// Makes the device copy current: copies each range there if the host copy is newer. A
    /// column with ranges spilled is uploaded page by page instead ([`crate::paging`]), never
    /// with the zeros its spilled ranges hold here.
    pub fn upload(&mut self) -> Result<(), TransferError> {
        let Some(m) = &mut self.mirror else { return Ok(()) };
        if !m.host_newer {
            return Ok(());
        }
        if self.spilled > 0 {
            return Err(TransferError(format!("a {} column with pages spilled to disk is uploaded through fum_engine::paging", std::any::type_name::<T>())));
        }
        let p = m.placement;
        let size = std::mem::size_of::<T>();
        let bytes: &[u8] = bytemuck::cast_slice(&self.host[..]);
        for (c, chunk) in bytes.chunks(p.chunk_len * size).enumerate().take(p.chunks) {
            m.buffer.write(p.offset + c * p.stride, chunk)?;
        }
        m.host_newer = false;
        m.synced = m.buffer.generation();
        Ok(())
    }

    /// Copies `bytes`, the elements from `first` on, to a mirror of one contiguous range (a
    /// block's column), whatever the host copy holds there: a paged column's upload, page by
    /// page ([`crate::paging::upload_paged`]), which then calls [`Column::mark_uploaded`].
    pub fn write_mirror(&self, first: usize, bytes: &[u8]) -> Result<(), TransferError> {
        let m = self.mirror.as_ref().expect("a mirrored column");
        assert_eq!(m.placement.chunks, 1, "a block's column is one range of its buffer");
        m.buffer.write(m.placement.offset + first * size_of::<T>(), bytes)
    }

    /// Records that [`Column::write_mirror`] made the device copy current.
    pub fn mark_uploaded(&mut self) {
        if let Some(m) = &mut self.mirror {
            m.host_newer = false;
            m.synced = m.buffer.generation();
        }
    }

    /// Moves the host copy into an anonymous mapping, so that ranges of it can be spilled
    /// ([`Column::spill`]); the same elements, the same order.
    pub fn make_pageable(&mut self) -> std::io::Result<()> {
        if matches!(self.host, Host::Mapped { .. }) || self.host.is_empty() {
            return Ok(());
        }
        let bytes: &[u8] = bytemuck::cast_slice(&self.host[..]);
        let mut map = memmap2::MmapMut::map_anon(bytes.len())?;
        map.copy_from_slice(bytes);
        self.host = Host::Mapped { map, len: self.host.len(), _element: std::marker::PhantomData };
        Ok(())
    }

    /// The host copy whatever its spilled ranges hold (zeros): for code that made the ranges
    /// it reads resident ([`crate::paging`]). Panics, as `Deref` does, if the device copy is
    /// newer.
    #[inline]
    pub fn pages(&self) -> &[T] {
        if !self.host_is_current() {
            Self::stale();
        }
        &self.host
    }

    /// [`Column::pages`], writable (marks the host copy newer, as `DerefMut` does).
    #[inline]
    pub fn pages_mut(&mut self) -> &mut [T] {
        self.mark_host_written();
        &mut self.host
    }

    /// Gives the memory of elements `range` back to the system: their bytes now live in a lower
    /// tier (the caller wrote them there), and the column is readable only through
    /// [`Column::pages`] until [`Column::restore`] brings them back. Only whole memory pages
    /// inside the range are released, so neighbouring ranges keep their bytes.
    pub fn spill(&mut self, range: Range<usize>) -> std::io::Result<()> {
        let size = size_of::<T>();
        if let Host::Mapped { map, .. } = &self.host {
            const OS_PAGE: usize = 4096;
            let (start, end) = ((range.start * size).next_multiple_of(OS_PAGE), (range.end * size) / OS_PAGE * OS_PAGE);
            if end > start {
                // SAFETY: MADV_DONTNEED on a private anonymous mapping only replaces the pages
                // with zero-filled ones; this column owns the mapping and no reference into it
                // outlives `&mut self`.
                unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)? };
            }
        }
        self.spilled += 1;
        Ok(())
    }

    /// Puts back the elements of a spilled `range`: `fill` writes their raw bytes.
    pub fn restore_with<E>(&mut self, range: Range<usize>, fill: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<(), E> {
        fill(bytemuck::cast_slice_mut::<T, u8>(&mut self.host[range]))?;
        self.spilled -= 1;
        Ok(())
    }

    /// Whether some range is spilled.
    pub fn is_spilled(&self) -> bool {
        self.spilled > 0
    }

    fn mark_host_written(&mut self) {
        if let Some(m) = &mut self.mirror {
            if !(m.host_newer || m.synced == m.buffer.generation()) {
                Self::stale();
            }
            if !m.host_newer {
                m.host_newer = true;
                m.buffer.host_written();
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn spilled_read() -> ! {
        panic!("read of a whole {} column with pages spilled to disk: read its resident pages (Column::pages) or bring them back first (fum_engine::paging)", std::any::type_name::<T>())
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
        if self.spilled > 0 {
            Self::spilled_read();
        }
        self.pages()
    }
}

impl<T: Pod> std::ops::DerefMut for Column<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        if self.spilled > 0 {
            Self::spilled_read();
        }
        self.pages_mut()
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
    /// Paging ([`crate::paging`]): see [`Column::make_pageable`], [`Column::spill`],
    /// [`Column::restore_with`]; `range_bytes` and `range_bytes_mut` read and write a resident
    /// range whatever else is spilled.
    fn make_pageable(&mut self) -> std::io::Result<()>;
    fn spill(&mut self, range: Range<usize>) -> std::io::Result<()>;
    fn restore_with(&mut self, range: Range<usize>, fill: &mut dyn FnMut(&mut [u8]) -> Result<(), String>) -> Result<(), String>;
    fn range_bytes(&self, range: Range<usize>) -> &[u8];
    fn range_bytes_mut(&mut self, range: Range<usize>) -> &mut [u8];
    /// See [`Column::write_mirror`] and [`Column::mark_uploaded`].
    fn write_mirror(&self, first: usize, bytes: &[u8]) -> Result<(), TransferError>;
    fn mark_uploaded(&mut self);
    fn is_spilled(&self) -> bool;
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
        self.host = Host::Heap(bytemuck::pod_collect_to_vec(bytes));
        self.spilled = 0;
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
    fn make_pageable(&mut self) -> std::io::Result<()> {
        Column::make_pageable(self)
    }
    fn spill(&mut self, range: Range<usize>) -> std::io::Result<()> {
        Column::spill(self, range)
    }
    fn restore_with(&mut self, range: Range<usize>, fill: &mut dyn FnMut(&mut [u8]) -> Result<(), String>) -> Result<(), String> {
        Column::restore_with(self, range, fill)
    }
    fn range_bytes(&self, range: Range<usize>) -> &[u8] {
        bytemuck::cast_slice(&self.pages()[range])
    }
    fn range_bytes_mut(&mut self, range: Range<usize>) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.pages_mut()[range])
    }
    fn write_mirror(&self, first: usize, bytes: &[u8]) -> Result<(), TransferError> {
        Column::write_mirror(self, first, bytes)
    }
    fn mark_uploaded(&mut self) {
        Column::mark_uploaded(self)
    }
    fn is_spilled(&self) -> bool {
        Column::is_spilled(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// A device buffer in host memory whose "device" can be made to write.
    #[derive(Debug, Default)]
    pub(crate) struct FakeDevice {
        pub(crate) bytes: Mutex<Vec<u8>>,
        pub(crate) generation: AtomicU64,
        pub(crate) written: AtomicBool,
        pub(crate) copies: AtomicU64,
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

    /// A column with a range spilled holds zeros there: uploading it whole is refused (paging
    /// uploads it page by page).
    #[test]
    fn a_spilled_column_is_not_uploaded_whole() {
        let device = Arc::new(FakeDevice { bytes: Mutex::new(vec![0; 4 * 4096]), ..Default::default() });
        let mut column = Column::from_vec((0..4096u32).collect());
        column.make_pageable().unwrap();
        column.spill(1024..2048).unwrap();
        column.attach(device.clone(), Placement::contiguous(0, 4096));
        let error = column.upload().unwrap_err();
        assert!(error.to_string().contains("uploaded through fum_engine::paging"), "{error}");
        assert_eq!(device.copies.load(Ordering::Relaxed), 0);
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
    fn a_spilled_range_gives_its_memory_back_and_refuses_whole_reads_until_restored() {
        let mut column = Column::from_vec((0..4096u32).collect());
        column.make_pageable().unwrap();
        assert_eq!(column[4095], 4095, "the same elements in the mapping");
        let bytes: Vec<u8> = bytemuck::cast_slice(&column[1024..3072]).to_vec();
        column.spill(1024..3072).unwrap();
        assert!(column.is_spilled());
        assert_eq!(column.pages()[1024..2048], [0; 1024], "whole memory pages inside the range were given back");
        assert_eq!(column.pages()[..1024], (0..1024).collect::<Vec<u32>>()[..], "the rest is untouched");
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| column[0])).is_err(), "a whole read panics");
        column.restore_with(1024..3072, |dst| Ok::<_, ()>(dst.copy_from_slice(&bytes))).unwrap();
        assert_eq!(&column[..], &(0..4096).collect::<Vec<u32>>()[..]);
    }

    #[test]
    fn a_clone_lives_on_the_host_only() {
        let (_, column) = mirrored();
        assert!(column.clone().mirror().is_none());
    }
}
