//! Recycled large buffers: segments, and piece bodies off the wire.
//!
//! A segment is 64 MiB by default and a piece about 4 MiB. The allocator
//! serves blocks that large with a fresh `mmap` and returns them with
//! `munmap`, so without reuse every segment a node puts or gets faults in and
//! zeroes some 16,000 new pages; measured on the 12-node devnet that cost
//! more CPU than the encryption.
//! The pool keeps a bounded number of bytes in spare buffers and lets them
//! all go once it has been idle for a while, so an idle node stays small.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_core::buf::Buffers;

/// Buffers smaller than this are not worth keeping.
const MIN_KEPT: usize = 1 << 20;

/// A bounded pool of reusable byte buffers. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct BufPool {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    free: Vec<Vec<u8>>,
    /// Capacity of the buffers in `free`.
    held: usize,
    /// Most bytes `free` may hold.
    limit: usize,
    last_used: Instant,
}

impl BufPool {
    /// A pool that keeps at most `limit` bytes of spare buffers.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                free: Vec::new(),
                held: 0,
                limit,
                last_used: Instant::now(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The pool holds no invariant a panicking holder could break.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A spare buffer with room for at least `capacity` bytes, if any.
    fn spare(&self, capacity: usize) -> Option<Vec<u8>> {
        if capacity < MIN_KEPT {
            // Small requests would pin a large spare buffer.
            return None;
        }
        let mut inner = self.lock();
        inner.last_used = Instant::now();
        // The smallest spare buffer that fits.
        let best = inner
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= capacity)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i)?;
        let buf = inner.free.swap_remove(best);
        inner.held -= buf.capacity();
        Some(buf)
    }

    /// A buffer of `len` bytes for the caller to overwrite whole (a body
    /// read with `read_exact`). A spare one keeps what it last held, and only
    /// bytes past its old length are zeroed: zeroing every reused body again
    /// cost as much CPU as a memory copy of everything received. A fresh one
    /// comes from `calloc`, whose untouched pages cost no memory until
    /// written, so a peer that announces a large body and sends nothing
    /// gains nothing.
    pub fn take_filled(&self, len: usize) -> Vec<u8> {
        match self.spare(len) {
            Some(mut buf) => {
                buf.resize(len, 0);
                buf
            }
            None => vec![0; len],
        }
    }

    pub fn trim_idle(&self, idle: Duration) -> usize {
        let mut inner = self.lock();
        if inner.last_used.elapsed() < idle {
            return 0;
        }
        let freed = inner.held;
        inner.free = Vec::new();
        inner.held = 0;
        freed
    }

    /// Bytes held in spare buffers.
    pub fn held(&self) -> usize {
        self.lock().held
    }
}

impl Buffers for BufPool {
    fn take(&self, capacity: usize) -> Vec<u8> {
        match self.spare(capacity) {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Keeps `buf` for reuse if the pool has room for it. Its bytes stay
    /// (see [`BufPool::take_filled`]); [`Buffers::take`] empties it.
    fn give(&self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap < MIN_KEPT {
            return;
        }
        let mut inner = self.lock();
        inner.last_used = Instant::now();
        if inner.held + cap <= inner.limit {
            inner.held += cap;
            inner.free.push(buf);
        }
    }

    /// The buffer comes back to the pool when the last slice of it drops.
    fn share(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }
}

/// A pooled buffer behind a [`Bytes`].
struct Pooled {
    buf: Vec<u8>,
    pool: BufPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_within_the_limit() {
        let pool = BufPool::new(3 << 20);
        let a = pool.take(2 << 20);
        let ptr = a.as_ptr();
        pool.give(a);
        assert_eq!(pool.held(), 2 << 20);
        assert_eq!(
            pool.take(1000).capacity(),
            1000,
            "a small request took a spare"
        );
        let b = pool.take(1 << 20);
        assert_eq!(b.as_ptr(), ptr, "the spare buffer was not reused");
        assert!(b.is_empty());
        assert_eq!(pool.held(), 0);
        // Over the limit: the second buffer is dropped, not kept.
        pool.give(b);
        pool.give(Vec::with_capacity(2 << 20));
        assert_eq!(pool.held(), 2 << 20);
        // Too small to keep.
        pool.give(Vec::with_capacity(1000));
        assert_eq!(pool.held(), 2 << 20);
    }

    #[test]
    fn shared_bytes_return_when_the_last_slice_drops() {
        let pool = BufPool::new(8 << 20);
        let mut v = pool.take(2 << 20);
        v.extend_from_slice(&[7u8; 4096]);
        let bytes = pool.share(v);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.held(), 0, "returned while a slice was alive");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(pool.held(), 2 << 20);
    }

    #[test]
    fn filled_buffers_are_reused_without_zeroing_and_taken_ones_are_empty() {
        let pool = BufPool::new(8 << 20);
        let mut v = pool.take(2 << 20);
        v.resize(1 << 20, 0xAB);
        pool.give(v);
        // Longer than it was: the old bytes stay, the new ones are zero.
        let f = pool.take_filled(3 << 19);
        assert_eq!(f.len(), 3 << 19);
        assert!(
            f[..1 << 20].iter().all(|b| *b == 0xAB),
            "it was zeroed again"
        );
        assert!(f[1 << 20..].iter().all(|b| *b == 0));
        assert_eq!(pool.held(), 0, "the spare buffer was not used");
        pool.give(f);
        let t = pool.take(1 << 20);
        assert!(t.is_empty() && t.capacity() >= 2 << 20);
    }

    #[test]
    fn an_idle_pool_lets_its_buffers_go() {
        let pool = BufPool::new(8 << 20);
        pool.give(Vec::with_capacity(2 << 20));
        assert_eq!(pool.trim_idle(Duration::from_secs(3600)), 0);
        assert_eq!(pool.held(), 2 << 20);
        assert_eq!(pool.trim_idle(Duration::ZERO), 2 << 20);
        assert_eq!(pool.held(), 0);
    }
}
