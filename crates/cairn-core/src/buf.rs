//! Where the pipeline's large buffers come from.
//!
//! Coding a 64 MiB segment needs buffers far above the allocator's mmap
//! threshold, so fresh ones cost a page fault and a zeroed page every 4 KiB.
//! The pipeline asks a [`Buffers`] for them, so a node can recycle them; the
//! pure functions and tests use [`Heap`].

use bytes::Bytes;

/// A source of large byte buffers.
pub trait Buffers {
    /// An empty buffer with room for at least `capacity` bytes.
    fn take(&self, capacity: usize) -> Vec<u8> {
        Vec::with_capacity(capacity)
    }

    /// Hands back a buffer that is no longer needed.
    fn give(&self, buf: Vec<u8>) {
        drop(buf);
    }

    /// `buf` as shared [`Bytes`]; a pool takes it back once the last slice drops.
    fn share(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from(buf)
    }
}

/// Plain heap allocation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Heap;

impl Buffers for Heap {}
