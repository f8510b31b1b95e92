//! The module's stdout and stderr: host files with a byte budget.
//!
//! Stdout is part of the result, so going over its budget stops the run
//! (a trap the runtime reports as an output-too-large error). Stderr is
//! only a diagnostic: bytes past its budget are dropped silently.

use std::fs::File;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// How much one write may carry (the permit `check_write` hands out).
const WRITE_PERMIT: usize = 64 << 10;

/// What happens to bytes past the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Stop the run.
    Fail,
    /// Drop them and go on.
    Drop,
}

/// The stream went over its budget.
#[derive(Debug, thiserror::Error)]
#[error("the module wrote more than {limit} bytes to stdout")]
pub(crate) struct OutputTooLarge {
    pub(crate) limit: u64,
}

struct Shared {
    file: Mutex<File>,
    written: AtomicU64,
    limit: u64,
    overflow: Overflow,
    exceeded: AtomicBool,
    io_failed: Mutex<Option<String>>,
}

/// A host file as a WASI output stream, with a budget. Clones share the
/// file and the count.
#[derive(Clone)]
pub(crate) struct BoundedOutput(Arc<Shared>);

impl BoundedOutput {
    pub(crate) fn new(file: File, limit: u64, overflow: Overflow) -> Self {
        Self(Arc::new(Shared {
            file: Mutex::new(file),
            written: AtomicU64::new(0),
            limit,
            overflow,
            exceeded: AtomicBool::new(false),
            io_failed: Mutex::new(None),
        }))
    }

    /// Whether a write went over the budget (with [`Overflow::Fail`]).
    pub(crate) fn exceeded(&self) -> bool {
        self.0.exceeded.load(Ordering::Relaxed)
    }

    /// The host I/O error a write hit, if any (the disk, not the module).
    pub(crate) fn io_failure(&self) -> Option<String> {
        self.0.io_failed.lock().ok().and_then(|e| e.clone())
    }

    /// Flushes the file to the OS.
    pub(crate) fn flush_file(&self) -> io::Result<()> {
        match self.0.file.lock() {
            Ok(mut f) => f.flush(),
            Err(_) => Err(io::Error::other("the stdout lock was poisoned")),
        }
    }

    fn write_bytes(&self, buf: &[u8]) -> Result<(), WriteError> {
        let s = &self.0;
        let len = buf.len() as u64;
        let before = s.written.load(Ordering::Relaxed);
        let mut take = buf.len();
        if before.saturating_add(len) > s.limit {
            match s.overflow {
                Overflow::Fail => {
                    s.exceeded.store(true, Ordering::Relaxed);
                    return Err(WriteError::TooLarge);
                }
                Overflow::Drop => {
                    // Fits in usize: it is at most `buf.len()`.
                    take = usize::try_from(s.limit.saturating_sub(before)).unwrap_or(0);
                }
            }
        }
        if take == 0 {
            return Ok(());
        }
        let result = match s.file.lock() {
            Ok(mut f) => f.write_all(&buf[..take]),
            Err(_) => Err(io::Error::other("the output lock was poisoned")),
        };
        match result {
            Ok(()) => {
                s.written.fetch_add(take as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                if let Ok(mut slot) = s.io_failed.lock() {
                    slot.get_or_insert_with(|| e.to_string());
                }
                Err(WriteError::Io(e))
            }
        }
    }
}

enum WriteError {
    TooLarge,
    Io(io::Error),
}

impl IsTerminal for BoundedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for BoundedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        match self.write_bytes(&bytes) {
            Ok(()) => Ok(()),
            Err(WriteError::TooLarge) => {
                Err(StreamError::Trap(wasmtime::Error::new(OutputTooLarge {
                    limit: self.0.limit,
                })))
            }
            Err(WriteError::Io(e)) => {
                Err(StreamError::LastOperationFailed(wasmtime::Error::new(e)))
            }
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for BoundedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(match self.write_bytes(buf) {
            Ok(()) => Ok(buf.len()),
            Err(WriteError::TooLarge) => Err(io::Error::other(OutputTooLarge {
                limit: self.0.limit,
            })),
            Err(WriteError::Io(e)) => Err(e),
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
