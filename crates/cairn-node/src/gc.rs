//! Garbage collection: the node's loop that reclaims the pieces whose lease has run out.
//!
//! This module owns *when* expired pieces are collected: a sweep at start and then every
//! `interval`, each sweep taking them in batches of `batch` on the blocking pool until a batch
//! comes back short, so a node with a large backlog reclaims its space a batch at a time and
//! never holds a blocking thread or the store's index for long. *Which* pieces are expired,
//! and removing them so that a crash loses no live piece, belong to the store
//! ([`PieceStore::collect_expired`]); renewing leases does not belong here.

use std::sync::Arc;
use std::time::Duration;

use cairn_store::{PieceStore, StoreError};
use tokio::task::JoinError;

use crate::now_secs;

/// Why a sweep stopped before collecting everything that was due.
#[derive(Debug, thiserror::Error)]
enum SweepError {
    /// The store failed; the next sweep tries again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task panicked or was cancelled.
    #[error("the garbage collection task failed: {0}")]
    Task(#[from] JoinError),
}

/// Collects expired pieces from `store` forever: a sweep now, then one every `interval` after
/// the previous sweep ends, each removing batches of at most `batch` pieces (at least 1) until
/// nothing more is due. A failed sweep is logged and retried at the next interval. Cancel it by
/// dropping the future; a batch already on the blocking pool finishes first.
pub async fn run(store: Arc<PieceStore>, interval: Duration, batch: usize) {
    loop {
        match sweep(&store, now_secs(), batch).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "garbage collection removed expired pieces"),
            Err(e) => tracing::warn!(
                "garbage collection stopped early and will retry in {interval:?}: {e}"
            ),
        }
        tokio::time::sleep(interval).await;
    }
}

/// One sweep: removes the pieces expired at `now`, `batch` at a time (each batch on the
/// blocking pool, since the store does synchronous disk I/O), until a batch comes back with
/// fewer than `batch`, which means nothing more is due. Returns how many were removed.
async fn sweep(store: &Arc<PieceStore>, now: u64, batch: usize) -> Result<usize, SweepError> {
    // A batch of 0 would always come back "full" and never end the sweep.
    let batch = batch.max(1);
    let mut removed = 0;
    loop {
        let store = Arc::clone(store);
        let ids = tokio::task::spawn_blocking(move || store.collect_expired(now, batch)).await??;
        removed += ids.len();
        tracing::debug!(
            batch = ids.len(),
            removed,
            "garbage collection removed a batch"
        );
        if ids.len() < batch {
            return Ok(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use cairn_store::{NewPiece, PieceId, PieceKind};

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn id(n: u16) -> PieceId {
        let mut b = [0u8; 32];
        b[..2].copy_from_slice(&n.to_be_bytes());
        PieceId(b)
    }

    fn put(store: &PieceStore, n: u16, expires_at: u64) {
        let data = n.to_le_bytes();
        let piece = NewPiece {
            id: id(n),
            kind: PieceKind::Data,
            data: &data,
            expected_hash: None,
            owner: b"owner",
            expires_at,
        };
        store.put(piece, NOW).unwrap();
    }

    /// A store with `expired` pieces due by NOW (ids 0..) and three that are not: one expiring
    /// a second after NOW, one far in the future, one never.
    fn store(dir: &Path, expired: u16) -> Arc<PieceStore> {
        let store = PieceStore::open(dir, 1 << 20).unwrap();
        for n in 0..expired {
            put(&store, n, NOW - u64::from(n % 7));
        }
        put(&store, 1000, NOW + 1);
        put(&store, 1001, u64::MAX);
        put(&store, 1002, 0);
        Arc::new(store)
    }

    fn live_kept(store: &PieceStore) {
        for n in [1000, 1001, 1002] {
            assert!(store.has(&id(n)).unwrap(), "live piece {n} collected");
        }
    }

    #[tokio::test]
    async fn a_sweep_takes_batches_until_one_comes_back_short() {
        // 25 = two full batches and a short one; 20 = two full batches and an empty one; 3 = one
        // short batch.
        for (expired, batch) in [(25, 10), (20, 10), (3, 10), (5, 1)] {
            let tmp = tempfile::tempdir().unwrap();
            let store = store(tmp.path(), expired);
            assert_eq!(
                sweep(&store, NOW, batch).await.unwrap(),
                usize::from(expired),
                "{expired} expired, batches of {batch}"
            );
            assert_eq!(store.usage().pieces, 3);
            live_kept(&store);
            assert_eq!(sweep(&store, NOW, batch).await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn a_zero_batch_still_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path(), 4);
        assert_eq!(sweep(&store, NOW, 0).await.unwrap(), 4);
        live_kept(&store);
    }

    #[tokio::test]
    async fn run_sweeps_at_start_and_again_every_interval() {
        let tmp = tempfile::tempdir().unwrap();
        // Expired by the real clock `run` reads: any time before now.
        let store = PieceStore::open(tmp.path(), 1 << 20).unwrap();
        for n in 0..7 {
            put(&store, n, 1 + u64::from(n));
        }
        put(&store, 1002, 0);
        let store = Arc::new(store);
        let gc = tokio::spawn(run(Arc::clone(&store), Duration::from_millis(20), 3));

        let until = |pieces: u64| {
            let store = Arc::clone(&store);
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while store.usage().pieces != pieces {
                    assert!(tokio::time::Instant::now() < deadline, "not collected");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        until(1).await;
        // Pieces that expire later are caught by a later sweep.
        put(&store, 50, 1);
        put(&store, 51, 2);
        until(1).await;
        assert!(store.has(&id(1002)).unwrap());
        gc.abort();
    }
}
