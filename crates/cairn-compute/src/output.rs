//! The run's output: the files of the output directory and the output hash.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::{OUTPUT_HASH_CONTEXT, OutputHash, RunError};

/// At most this many files in the output directory.
pub const MAX_OUTPUT_FILES: usize = 10_000;
/// At most this deep a directory tree in the output directory.
pub const MAX_OUTPUT_DEPTH: usize = 32;

fn other(message: String) -> RunError {
    RunError::Other { message }
}

/// The regular files under `root`, as (path relative to `root` with `/`
/// separators, host path), sorted by the relative path's bytes.
/// Directories are walked; symbolic links and other special files are not
/// outputs and are skipped (the module can make them, but they must not
/// lead the host outside the directory).
pub(crate) fn collect(root: &Path) -> Result<Vec<(String, PathBuf)>, RunError> {
    let mut files = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = dirs.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| {
            other(format!(
                "cannot list the output directory {}: {e}",
                dir.display()
            ))
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                other(format!(
                    "cannot list the output directory {}: {e}",
                    dir.display()
                ))
            })?;
            let name = entry.file_name().into_string().map_err(|n| {
                other(format!(
                    "the output file name {n:?} is not UTF-8; name outputs in UTF-8"
                ))
            })?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry
                .file_type()
                .map_err(|e| other(format!("cannot read the output file {rel}: {e}")))?;
            if kind.is_dir() {
                if depth + 1 > MAX_OUTPUT_DEPTH {
                    return Err(other(format!(
                        "the output directory is nested deeper than {MAX_OUTPUT_DEPTH} levels \
                         (at {rel}); flatten it"
                    )));
                }
                dirs.push((entry.path(), rel, depth + 1));
            } else if kind.is_file() {
                if files.len() >= MAX_OUTPUT_FILES {
                    return Err(other(format!(
                        "the module wrote more than {MAX_OUTPUT_FILES} output files; \
                         bundle them into fewer files"
                    )));
                }
                files.push((rel, entry.path()));
            }
        }
    }
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(files)
}

/// The total size of the files, in bytes.
pub(crate) fn total_size(files: &[(String, PathBuf)]) -> Result<u64, RunError> {
    let mut total = 0u64;
    for (rel, path) in files {
        let len = fs::symlink_metadata(path)
            .map_err(|e| other(format!("cannot read the output file {rel}: {e}")))?
            .len();
        total = total.saturating_add(len);
    }
    Ok(total)
}

/// The output hash of a run's stdout file and output files (see the crate
/// docs for the exact byte stream). `files` must be sorted by relative
/// path, as [`RunOutput::files`](crate::RunOutput::files) is. Reads the
/// files in a stream; never holds one in memory.
pub fn output_hash(stdout: &Path, files: &[(String, PathBuf)]) -> io::Result<OutputHash> {
    let mut h = blake3::Hasher::new_derive_key(OUTPUT_HASH_CONTEXT);
    hash_content(&mut h, stdout)?;
    for (rel, path) in files {
        h.update(&(rel.len() as u64).to_le_bytes());
        h.update(rel.as_bytes());
        hash_content(&mut h, path)?;
    }
    Ok(OutputHash(*h.finalize().as_bytes()))
}

/// Length (u64 LE), then the bytes.
fn hash_content(h: &mut blake3::Hasher, path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    h.update(&len.to_le_bytes());
    let copied = io::copy(&mut file.take(len), h)?;
    if copied != len {
        return Err(io::Error::other(format!(
            "{} shrank while it was hashed",
            path.display()
        )));
    }
    Ok(())
}
