//! Columnar buffers: one contiguous array per quantity (structure of arrays).

use bytemuck::Pod;

/// A contiguous column of one per-neuron or per-synapse quantity.
///
/// All state the systems touch lives in columns, so that there is one place where data can be
/// mirrored on a device, snapshotted for the viewer, spilled or checkpointed. On the CPU backend
/// the host copy is the only copy; a device backend keeps its mirror next to it and tracks which
/// side is valid, without changing how systems slice columns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Column<T: Pod> {
    host: Vec<T>,
}

impl<T: Pod> Column<T> {
    pub fn from_vec(host: Vec<T>) -> Self {
        Column { host }
    }

    pub fn filled(len: usize, value: T) -> Self {
        Column { host: vec![value; len] }
    }

    /// Bytes held by this column (its capacity), for memory reports.
    pub fn bytes(&self) -> usize {
        self.host.capacity() * std::mem::size_of::<T>()
    }

    /// The raw bytes, for checkpoints and snapshots.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.host)
    }
}

impl<T: Pod> std::ops::Deref for Column<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.host
    }
}

impl<T: Pod> std::ops::DerefMut for Column<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.host
    }
}
