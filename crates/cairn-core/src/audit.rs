//! Storage proofs (audits): checking that a holder still keeps a piece
//! without downloading it.
//!
//! A steward sends a holder a [`Challenge`]: a piece id and a random nonce.
//! The nonce picks one 16 KiB chunk group of the piece. The holder answers
//! with the BLAKE3 verified-streaming (bao) encoding of that group: the hash
//! pairs on the path from the root down to the group, then the group's bytes.
//! Anyone who knows the piece's BLAKE3 (the manifest and the store index
//! already record it) and its size can check the answer with [`verify`]; the
//! root of the bao tree is exactly `blake3::hash(piece)`, so no new hash has
//! to be stored anywhere.
//!
//! This module owns the pure parts: the tree ([`outboard`]), which group a
//! challenge asks for, building ([`prove`]) and checking ([`verify`]) proofs,
//! and the signed statements around them: the holder's [`AuditAnswer`] and
//! the steward's [`AuditEvidence`] of a failure. Reading the bytes is the
//! store's job; sending them, the network's; time is passed in.
//!
//! # Why chunk groups of 16 KiB
//!
//! The holder keeps the tree's interior hashes (the *outboard*) next to the
//! piece, so answering reads one group and the outboard instead of the whole
//! piece. With 16 KiB groups (`BlockSize::from_chunk_log(4)` in bao-tree)
//! the outboard is 64 bytes per group, 0.4 % of the piece (256 KiB for
//! 64 MiB), and a proof for a 64 MiB piece is 16 KiB of data plus 12 pairs:
//! 17 152 bytes. Smaller groups would shrink proofs and grow outboards.
//!
//! # Which group a challenge asks for
//!
//! `g = (x * groups) >> 64` where `groups = max(1, ceil(size / 16 KiB))` and
//! `x` is the first 8 bytes, little-endian, of
//! `BLAKE3-derive_key("cairn v1 audit group", piece id | nonce | size as u64 BE)`.
//! A recorded challenge plus the piece size therefore fix what was asked, and
//! a badly chosen nonce (a counter, say) still spreads over the piece.
//!
//! # Proof format
//!
//! The bao-tree pre-order encoding of the one group, without a size prefix
//! (both sides know the size):
//!
//! | bytes | field |
//! |---|---|
//! | 64 × depth | the hash pairs (left child CV, right child CV) on the path from the root to the group, root first |
//! | 1..=16384 | the group's bytes (0 for an empty piece) |
//!
//! Its length is a function of size and group ([`proof_len`]), at most
//! [`MAX_PROOF_BYTES`] for a piece of up to [`MAX_PIECE_BYTES`]; [`verify`]
//! refuses any other length before hashing anything. The verifier must take
//! the size from where it takes the root (the manifest or the record): a
//! proof pins the group's bytes and their path to the root, not the size.
//!
//! The outboard ([`outboard`]) is bao's pre-order outboard: every interior
//! node's hash pair, parent before its left subtree before its right subtree,
//! `64 × (groups - 1)` bytes ([`outboard_len`]), no size prefix.
//!
//! # Signed statements (version [`AUDIT_VERSION`])
//!
//! Both travel as postcard of their struct, fields in declaration order, and
//! start with the version byte (postcard writes a `u8` as one raw byte), so a
//! reader checks the version before decoding the rest. Signatures use
//! [`crate::keys`] (Ed25519 over a domain string and a message) with these
//! fixed-layout messages, integers big-endian:
//!
//! [`AuditAnswer`], domain `"cairn v1 audit answer"`, signed by the holder:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version |
//! | 32 | piece id |
//! | 32 | nonce |
//! | 32 | BLAKE3 of the proof |
//!
//! [`AuditEvidence`], domain `"cairn v1 audit evidence"`, signed by the steward:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version |
//! | 32 | steward public key |
//! | 32 | holder public key |
//! | 32 | piece id |
//! | 32 | nonce |
//! | 32 | piece root (BLAKE3) the steward checked against |
//! | 8 | piece size |
//! | 8 | `at`: unix seconds of the verdict |
//! | 1 | failure: 0 wrong proof, 1 missing, 2 timeout |
//! | 96 / 0 / 4 | wrong proof: BLAKE3 of the proof, then the holder's 64-byte answer signature; missing: nothing; timeout: seconds waited (u32) |
//!
//! A wrong proof is evidence anyone holding the root can check: the holder
//! signed it, and it fails [`verify`]. A missing piece or a timeout is the
//! steward's word only; whoever weighs evidence must treat it so.

use std::fmt;
use std::ops::Range;

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::{DecodeResponseIter, ReadAt, encode_ranges_validated, truncate_ranges};
use bao_tree::io::{BaoContentItem, DecodeError, EncodeError};
use bao_tree::iter::BaoChunk;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
use serde::{Deserialize, Serialize};

use crate::PieceId;
use crate::keys::{PublicKey, SecretKey, Signature, SignatureError};
pub use crate::params::MAX_PIECE_BYTES;

/// Version byte of [`AuditAnswer`] and [`AuditEvidence`].
pub const AUDIT_VERSION: u8 = 1;

/// Chunk groups of 16 chunks: 16 KiB.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

/// Bytes in one chunk group, the unit a challenge asks for.
pub const GROUP_BYTES: u64 = 16 * 1024;

/// Bytes of one outboard entry: a pair of 32-byte chaining values.
const PAIR_BYTES: u64 = 64;

/// Depth of the tree over the largest piece: 13 pairs above the group.
const MAX_DEPTH: u64 = {
    let groups = MAX_PIECE_BYTES.div_ceil(GROUP_BYTES);
    (u64::BITS - (groups - 1).leading_zeros()) as u64
};

/// Largest proof for a piece of at most [`MAX_PIECE_BYTES`].
pub const MAX_PROOF_BYTES: usize = (GROUP_BYTES + PAIR_BYTES * MAX_DEPTH) as usize;

/// Largest encoded [`AuditAnswer`]: the proof plus version, challenge, key,
/// signature and postcard length prefixes, with room to spare.
pub const MAX_ANSWER_BYTES: usize = MAX_PROOF_BYTES + 256;

/// Largest encoded [`AuditEvidence`]: an answer plus the steward's fields.
pub const MAX_EVIDENCE_BYTES: usize = MAX_ANSWER_BYTES + 512;

const ANSWER_DOMAIN: &str = "cairn v1 audit answer";
const EVIDENCE_DOMAIN: &str = "cairn v1 audit evidence";
const GROUP_CONTEXT: &str = "cairn v1 audit group";

/// Why an audit proof, answer or piece of evidence is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Pieces larger than [`MAX_PIECE_BYTES`] are not audited.
    #[error("a {size}-byte piece is larger than the {max}-byte limit for audited pieces")]
    PieceTooLarge {
        /// The claimed size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The proof is truncated or extended.
    #[error(
        "the audit proof is {found} bytes, but a proof of chunk group {group} of a {size}-byte \
         piece is exactly {expected} bytes (truncated or padded)"
    )]
    ProofLength {
        /// The group asked for.
        group: u64,
        /// The piece size.
        size: u64,
        /// The required length.
        expected: usize,
        /// The length received.
        found: usize,
    },
    /// A hash pair of the proof does not chain up to the piece root.
    #[error(
        "hash pair {index} (counting from the root) on the path to chunk group {group} does not \
         match the piece root: a wrong sibling hash, or a proof of another piece or group"
    )]
    PathMismatch {
        /// The group asked for.
        group: u64,
        /// Which pair failed, 0 = the root's.
        index: usize,
    },
    /// The group's bytes in the proof are not the piece's.
    #[error(
        "the bytes of chunk group {group} (piece bytes {}..{}) do not match the piece root",
        range.start, range.end
    )]
    GroupMismatch {
        /// The group asked for.
        group: u64,
        /// Its byte range in the piece.
        range: Range<u64>,
    },
    /// [`prove`] was given an outboard of the wrong length.
    #[error(
        "the outboard is {found} bytes, but a {size}-byte piece has a {expected}-byte outboard"
    )]
    OutboardLength {
        /// The piece size.
        size: u64,
        /// The required length.
        expected: u64,
        /// The length given.
        found: u64,
    },
    /// [`prove`] was given an outboard that does not match the root.
    #[error(
        "the outboard does not match the piece root (hash pair {index} on the path to chunk \
         group {group}); it is damaged and must be recomputed from the piece"
    )]
    OutboardMismatch {
        /// The group asked for.
        group: u64,
        /// Which pair failed, 0 = the root's.
        index: usize,
    },
    /// [`prove`] was given the wrong number of group bytes.
    #[error(
        "chunk group {group} of a {size}-byte piece is {expected} bytes, but {found} were given"
    )]
    GroupLength {
        /// The group asked for.
        group: u64,
        /// The piece size.
        size: u64,
        /// Its length.
        expected: u64,
        /// The length given.
        found: u64,
    },
    /// A statement in a format version this build does not know.
    #[error("audit format version {found} is not supported; this build reads version {supported}")]
    Version {
        /// The version byte found.
        found: u8,
        /// The version this build reads and writes.
        supported: u8,
    },
    /// Encoded bytes longer than the limit for their kind.
    #[error("{what} is {size} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// Its length.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes that do not decode.
    #[error("could not decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// A statement that could not be encoded (never happens for well-formed values).
    #[error("could not encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's complaint.
        reason: String,
    },
    /// A signature that does not verify.
    #[error("the {what} signature does not verify: {source}")]
    Signature {
        /// Whose signature: "holder's answer" or "steward's evidence".
        what: &'static str,
        /// Why.
        #[source]
        source: SignatureError,
    },
    /// An answer to another challenge than the one asked.
    #[error(
        "the answer is for challenge (piece {}, nonce {}…), not the one asked (piece {}, nonce {}…)",
        found.piece, &crate::hex(&found.nonce)[..12], expected.piece, &crate::hex(&expected.nonce)[..12]
    )]
    WrongChallenge {
        /// The challenge sent (boxed: keeps the error small).
        expected: Box<Challenge>,
        /// The challenge answered.
        found: Box<Challenge>,
    },
    /// An answer signed by another node than the one asked.
    #[error("the answer is signed by {found:?}, not by the holder that was asked ({expected:?})")]
    WrongHolder {
        /// The holder asked.
        expected: PublicKey,
        /// The signer.
        found: PublicKey,
    },
    /// Evidence of a wrong proof whose proof is right.
    #[error(
        "the evidence claims a wrong proof, but the holder's proof verifies against the root \
         the steward names"
    )]
    ProofIsValid,
}

/// A steward's question: prove you hold `piece` by sending the chunk group
/// `nonce` selects.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Challenge {
    /// The piece asked about.
    pub piece: PieceId,
    /// Fresh randomness per challenge; selects the group and makes the
    /// signed answer unique to this challenge.
    pub nonce: [u8; 32],
}

impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Challenge({:?}, nonce {}…)",
            self.piece,
            &crate::hex(&self.nonce)[..12]
        )
    }
}

impl Challenge {
    /// A challenge with a fresh random nonce.
    pub fn random(piece: PieceId) -> Self {
        Self {
            piece,
            nonce: rand::random(),
        }
    }

    /// The chunk group this challenge asks for in a piece of `size` bytes.
    pub fn group(&self, size: u64) -> u64 {
        let mut h = blake3::Hasher::new_derive_key(GROUP_CONTEXT);
        h.update(&self.piece.0);
        h.update(&self.nonce);
        h.update(&size.to_be_bytes());
        let out = h.finalize();
        let b = out.as_bytes();
        let x = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        // Multiply-shift maps x uniformly onto 0..groups without a division.
        ((u128::from(x) * u128::from(group_count(size))) >> 64) as u64
    }

    /// The bytes of the piece the holder has to read to answer.
    pub fn byte_range(&self, size: u64) -> Range<u64> {
        group_range(size, self.group(size))
    }
}

/// Number of chunk groups of a piece of `size` bytes; an empty piece has one.
pub fn group_count(size: u64) -> u64 {
    size.div_ceil(GROUP_BYTES).max(1)
}

/// Byte range of chunk group `group` in a piece of `size` bytes.
fn group_range(size: u64, group: u64) -> Range<u64> {
    let start = group.saturating_mul(GROUP_BYTES).min(size);
    start..start.saturating_add(GROUP_BYTES).min(size)
}

/// Length of the pre-order outboard of a piece of `size` bytes.
pub fn outboard_len(size: u64) -> u64 {
    (group_count(size) - 1) * PAIR_BYTES
}

/// The BLAKE3 root of `data` (equal to `blake3::hash(data)`) and its
/// pre-order outboard with 16 KiB chunk groups.
///
/// Built here with BLAKE3's subtree API rather than through bao-tree's
/// `io::sync::outboard`, which goes through `io::Read` and an outboard trait
/// and so returns an `io::Result` although nothing can fail for memory
/// buffers. The bytes are bao-tree's `PreOrderMemOutboard` format; a test
/// pins them to it.
pub fn outboard(data: &[u8]) -> ([u8; 32], Vec<u8>) {
    let size = data.len() as u64;
    let mut out = Vec::with_capacity(usize::try_from(outboard_len(size)).unwrap_or(0));
    let root = subtree(data, 0, true, &mut out);
    (root, out)
}

/// Appends the pre-order hash pairs of the subtree over `data` (starting at
/// byte `offset` of the piece) to `out`; returns its chaining value, or the
/// root hash if `is_root`.
fn subtree(data: &[u8], offset: u64, is_root: bool, out: &mut Vec<u8>) -> [u8; 32] {
    let len = data.len() as u64;
    if len <= GROUP_BYTES {
        return if is_root {
            *blake3::hash(data).as_bytes()
        } else {
            blake3::Hasher::new()
                .set_input_offset(offset)
                .update(data)
                .finalize_non_root()
        };
    }
    // The BLAKE3 tree's split: the left subtree is the largest power of two
    // of chunks that leaves at least one byte on the right. Above 16 KiB it
    // is a whole number of groups.
    let left_len = blake3::hazmat::left_subtree_len(len);
    let (left, right) = data.split_at(usize::try_from(left_len).unwrap_or(data.len()));
    let slot = out.len();
    out.extend_from_slice(&[0; PAIR_BYTES as usize]);
    let l = subtree(left, offset, false, out);
    let r = subtree(right, offset + left_len, false, out);
    out[slot..slot + 32].copy_from_slice(&l);
    out[slot + 32..slot + 64].copy_from_slice(&r);
    if is_root {
        *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(&l, &r, Mode::Hash)
    }
}

fn check_size(size: u64) -> Result<(), AuditError> {
    if size > MAX_PIECE_BYTES {
        return Err(AuditError::PieceTooLarge {
            size,
            max: MAX_PIECE_BYTES,
        });
    }
    Ok(())
}

/// The bao query for exactly one chunk group.
fn group_ranges(group: u64) -> ChunkRanges {
    let chunks = GROUP_BYTES / 1024;
    ChunkRanges::from(ChunkNum(group * chunks)..ChunkNum((group + 1) * chunks))
}

/// Length of the proof of `group` in a piece of `size` bytes: the number of
/// hash pairs bao-tree puts on the path, times 64, plus the group's length.
pub fn proof_len(size: u64, group: u64) -> usize {
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let ranges = group_ranges(group);
    let ranges = truncate_ranges(&ranges, size);
    let mut len = 0usize;
    for item in tree.ranges_pre_order_chunks_iter_ref(ranges, 0) {
        len += match item {
            BaoChunk::Parent { .. } => PAIR_BYTES as usize,
            BaoChunk::Leaf { size, .. } => size,
        };
    }
    len
}

/// The group's bytes, readable only at the group's offset: what
/// bao-tree's encoder reads the data through.
struct GroupAt<'a> {
    start: u64,
    bytes: &'a [u8],
}

impl ReadAt for GroupAt<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let skip = pos
            .checked_sub(self.start)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|s| *s <= self.bytes.len())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let avail = &self.bytes[skip..];
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        Ok(n)
    }
}

/// Builds the proof for `challenge` of a piece with BLAKE3 `root` and `size`
/// bytes, from exactly the bytes the holder read: the group
/// ([`Challenge::byte_range`]) and the whole outboard.
///
/// The proof is checked while it is built, so a damaged piece never yields a
/// bad proof: [`AuditError::GroupMismatch`] means the group's bytes are
/// wrong, [`AuditError::OutboardMismatch`] that the outboard is (the piece
/// may still be intact; recompute the outboard from it).
pub fn prove(
    root: &[u8; 32],
    size: u64,
    challenge: &Challenge,
    group_bytes: &[u8],
    outboard: &[u8],
) -> Result<Vec<u8>, AuditError> {
    check_size(size)?;
    let group = challenge.group(size);
    let range = group_range(size, group);
    let expected_ob = outboard_len(size);
    if outboard.len() as u64 != expected_ob {
        // Also what keeps bao-tree's in-memory outboard from slicing out of bounds.
        return Err(AuditError::OutboardLength {
            size,
            expected: expected_ob,
            found: outboard.len() as u64,
        });
    }
    if group_bytes.len() as u64 != range.end - range.start {
        return Err(AuditError::GroupLength {
            group,
            size,
            expected: range.end - range.start,
            found: group_bytes.len() as u64,
        });
    }
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let ob = PreOrderMemOutboard {
        root: blake3::Hash::from_bytes(*root),
        tree,
        data: outboard,
    };
    let data = GroupAt {
        start: range.start,
        bytes: group_bytes,
    };
    let mut proof = Vec::with_capacity(proof_len(size, group));
    match encode_ranges_validated(data, &ob, &group_ranges(group), &mut proof) {
        Ok(()) => Ok(proof),
        Err(EncodeError::LeafHashMismatch(_)) => Err(AuditError::GroupMismatch { group, range }),
        // The encoder writes each pair after checking it, so the pairs
        // written so far are the ones that passed.
        Err(EncodeError::ParentHashMismatch(_)) => Err(AuditError::OutboardMismatch {
            group,
            index: proof.len() / PAIR_BYTES as usize,
        }),
        Err(e) => Err(AuditError::Encode {
            what: "audit proof",
            reason: e.to_string(),
        }),
    }
}

/// Checks `proof` against a piece with BLAKE3 `root` and `size` bytes: it
/// must be exactly the proof of the group `challenge` selects.
pub fn verify(
    root: &[u8; 32],
    size: u64,
    challenge: &Challenge,
    proof: &[u8],
) -> Result<(), AuditError> {
    check_size(size)?;
    let group = challenge.group(size);
    let range = group_range(size, group);
    let expected = proof_len(size, group);
    if proof.len() != expected {
        return Err(AuditError::ProofLength {
            group,
            size,
            expected,
            found: proof.len(),
        });
    }
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let ranges = group_ranges(group);
    let mut reader = std::io::Cursor::new(proof);
    let mut pairs = 0usize;
    let mut leaves = 0usize;
    for item in DecodeResponseIter::new(blake3::Hash::from_bytes(*root), tree, &mut reader, &ranges)
    {
        match item {
            Ok(BaoContentItem::Parent(_)) => pairs += 1,
            Ok(BaoContentItem::Leaf(leaf)) => {
                // The query names one group, so the decoder yields one leaf,
                // at its offset; anything else is a bug, not a pass.
                if leaf.offset != range.start || leaf.data.len() as u64 != range.end - range.start {
                    return Err(AuditError::GroupMismatch { group, range });
                }
                leaves += 1;
            }
            Err(DecodeError::ParentHashMismatch(_)) => {
                return Err(AuditError::PathMismatch {
                    group,
                    index: pairs,
                });
            }
            Err(DecodeError::LeafHashMismatch(_)) => {
                return Err(AuditError::GroupMismatch { group, range });
            }
            Err(e) => {
                return Err(AuditError::Decode {
                    what: "audit proof",
                    reason: e.to_string(),
                });
            }
        }
    }
    if leaves != 1 || reader.position() != proof.len() as u64 {
        return Err(AuditError::ProofLength {
            group,
            size,
            expected,
            found: proof.len(),
        });
    }
    Ok(())
}

/// A holder's signed answer to a [`Challenge`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnswer {
    /// [`AUDIT_VERSION`].
    pub version: u8,
    /// The challenge answered.
    pub challenge: Challenge,
    /// The proof ([`prove`]).
    pub proof: Vec<u8>,
    /// The holder's key; its libp2p peer id is [`PublicKey::peer_bytes`].
    pub holder: PublicKey,
    /// The holder's signature over the challenge and BLAKE3 of the proof.
    pub signature: Signature,
}

impl fmt::Debug for AuditAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditAnswer")
            .field("version", &self.version)
            .field("challenge", &self.challenge)
            .field("proof_bytes", &self.proof.len())
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

fn answer_message(version: u8, challenge: &Challenge, proof_hash: &[u8; 32]) -> [u8; 97] {
    let mut m = [0u8; 97];
    m[0] = version;
    m[1..33].copy_from_slice(&challenge.piece.0);
    m[33..65].copy_from_slice(&challenge.nonce);
    m[65..97].copy_from_slice(proof_hash);
    m
}

fn check_version(found: u8) -> Result<(), AuditError> {
    if found != AUDIT_VERSION {
        return Err(AuditError::Version {
            found,
            supported: AUDIT_VERSION,
        });
    }
    Ok(())
}

/// Bounded, versioned postcard decoding: the length and the version byte are
/// checked before anything is decoded or allocated.
fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    max: usize,
    what: &'static str,
) -> Result<T, AuditError> {
    if bytes.len() > max {
        return Err(AuditError::TooLarge {
            what,
            size: bytes.len(),
            max,
        });
    }
    let Some(&version) = bytes.first() else {
        return Err(AuditError::Decode {
            what,
            reason: "no bytes".into(),
        });
    };
    check_version(version)?;
    postcard::from_bytes(bytes).map_err(|e| AuditError::Decode {
        what,
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, AuditError> {
    postcard::to_allocvec(value).map_err(|e| AuditError::Encode {
        what,
        reason: e.to_string(),
    })
}

impl AuditAnswer {
    /// The holder's answer: `proof` for `challenge`, signed with `key`.
    pub fn sign(key: &SecretKey, challenge: Challenge, proof: Vec<u8>) -> Self {
        let hash = blake3::hash(&proof);
        let message = answer_message(AUDIT_VERSION, &challenge, hash.as_bytes());
        Self {
            version: AUDIT_VERSION,
            challenge,
            holder: key.public(),
            signature: key.sign(ANSWER_DOMAIN, &message),
            proof,
        }
    }

    /// Checks the version and that `holder` signed this challenge and proof;
    /// says nothing about whether the proof is right.
    pub fn check_signature(&self) -> Result<(), AuditError> {
        check_version(self.version)?;
        let hash = blake3::hash(&self.proof);
        let message = answer_message(self.version, &self.challenge, hash.as_bytes());
        self.holder
            .verify(ANSWER_DOMAIN, &message, &self.signature)
            .map_err(|source| AuditError::Signature {
                what: "holder's answer",
                source,
            })
    }

    /// Checks everything a steward needs: this answers `challenge`, `holder`
    /// signed it, and the proof is right for a piece with BLAKE3 `root` and
    /// `size` bytes.
    pub fn verify(
        &self,
        root: &[u8; 32],
        size: u64,
        challenge: &Challenge,
        holder: &PublicKey,
    ) -> Result<(), AuditError> {
        check_version(self.version)?;
        if self.challenge != *challenge {
            return Err(AuditError::WrongChallenge {
                expected: Box::new(*challenge),
                found: Box::new(self.challenge),
            });
        }
        if self.holder != *holder {
            return Err(AuditError::WrongHolder {
                expected: *holder,
                found: self.holder,
            });
        }
        self.check_signature()?;
        verify(root, size, &self.challenge, &self.proof)
    }

    /// Postcard bytes (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>, AuditError> {
        encode(self, "audit answer")
    }

    /// Decodes at most [`MAX_ANSWER_BYTES`] of a known version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuditError> {
        decode(bytes, MAX_ANSWER_BYTES, "audit answer")
    }
}

/// What went wrong in an audit a steward ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuditFailure {
    /// The holder signed an answer whose proof does not verify: checkable by
    /// anyone with the root.
    WrongProof(AuditAnswer),
    /// The holder answered without a proof: it does not hold the piece, its
    /// copy is damaged, or it refused.
    Missing,
    /// No answer within the deadline.
    Timeout {
        /// How long the steward waited, in seconds.
        waited_secs: u32,
    },
}

impl AuditFailure {
    fn tag(&self) -> u8 {
        match self {
            AuditFailure::WrongProof(_) => 0,
            AuditFailure::Missing => 1,
            AuditFailure::Timeout { .. } => 2,
        }
    }
}

/// A steward's signed record of an audit a holder failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvidence {
    /// [`AUDIT_VERSION`].
    pub version: u8,
    /// Who ran the audit and signs this.
    pub steward: PublicKey,
    /// Who failed it.
    pub holder: PublicKey,
    /// What was asked.
    pub challenge: Challenge,
    /// The piece's BLAKE3 the steward checked against (from the record).
    pub root: [u8; 32],
    /// The piece's size.
    pub size: u64,
    /// When the steward reached the verdict, unix seconds.
    pub at: u64,
    /// What went wrong.
    pub failure: AuditFailure,
    /// The steward's signature over all of the above.
    pub signature: Signature,
}

/// The fields of a piece of evidence, before signing.
struct Verdict<'a> {
    steward: &'a PublicKey,
    holder: &'a PublicKey,
    challenge: &'a Challenge,
    root: &'a [u8; 32],
    size: u64,
    at: u64,
    failure: &'a AuditFailure,
}

impl Verdict<'_> {
    fn message(&self, version: u8) -> Vec<u8> {
        let mut m = Vec::with_capacity(274);
        m.push(version);
        m.extend_from_slice(&self.steward.0);
        m.extend_from_slice(&self.holder.0);
        m.extend_from_slice(&self.challenge.piece.0);
        m.extend_from_slice(&self.challenge.nonce);
        m.extend_from_slice(self.root);
        m.extend_from_slice(&self.size.to_be_bytes());
        m.extend_from_slice(&self.at.to_be_bytes());
        m.push(self.failure.tag());
        match self.failure {
            AuditFailure::WrongProof(answer) => {
                m.extend_from_slice(blake3::hash(&answer.proof).as_bytes());
                m.extend_from_slice(&answer.signature.0);
            }
            AuditFailure::Missing => {}
            AuditFailure::Timeout { waited_secs } => {
                m.extend_from_slice(&waited_secs.to_be_bytes())
            }
        }
        m
    }
}

impl AuditEvidence {
    fn signed(
        key: &SecretKey,
        holder: PublicKey,
        challenge: Challenge,
        root: [u8; 32],
        size: u64,
        at: u64,
        failure: AuditFailure,
    ) -> Self {
        let steward = key.public();
        let message = Verdict {
            steward: &steward,
            holder: &holder,
            challenge: &challenge,
            root: &root,
            size,
            at,
            failure: &failure,
        }
        .message(AUDIT_VERSION);
        Self {
            version: AUDIT_VERSION,
            steward,
            holder,
            challenge,
            root,
            size,
            at,
            failure,
            signature: key.sign(EVIDENCE_DOMAIN, &message),
        }
    }

    /// Evidence that `answer`'s holder signed a wrong proof for a piece with
    /// BLAKE3 `root` and `size` bytes. Refused unless the answer's signature
    /// holds and its proof really fails, so a steward cannot sign evidence
    /// that does not stand up.
    pub fn wrong_proof(
        steward: &SecretKey,
        root: [u8; 32],
        size: u64,
        answer: AuditAnswer,
        at: u64,
    ) -> Result<Self, AuditError> {
        answer.check_signature()?;
        if verify(&root, size, &answer.challenge, &answer.proof).is_ok() {
            return Err(AuditError::ProofIsValid);
        }
        Ok(Self::signed(
            steward,
            answer.holder,
            answer.challenge,
            root,
            size,
            at,
            AuditFailure::WrongProof(answer),
        ))
    }

    /// Evidence that `holder` answered `challenge` without a proof.
    pub fn missing(
        steward: &SecretKey,
        holder: PublicKey,
        challenge: Challenge,
        root: [u8; 32],
        size: u64,
        at: u64,
    ) -> Self {
        Self::signed(
            steward,
            holder,
            challenge,
            root,
            size,
            at,
            AuditFailure::Missing,
        )
    }

    /// Evidence that `holder` did not answer `challenge` within `waited_secs`.
    pub fn timeout(
        steward: &SecretKey,
        holder: PublicKey,
        challenge: Challenge,
        root: [u8; 32],
        size: u64,
        at: u64,
        waited_secs: u32,
    ) -> Self {
        Self::signed(
            steward,
            holder,
            challenge,
            root,
            size,
            at,
            AuditFailure::Timeout { waited_secs },
        )
    }

    /// Checks the steward's signature and, for a wrong proof, that the
    /// holder signed that answer to this challenge and that its proof fails
    /// against `root`. Whether `root` is the piece's real root is for the
    /// caller to check against the record.
    pub fn verify(&self) -> Result<(), AuditError> {
        check_version(self.version)?;
        let message = Verdict {
            steward: &self.steward,
            holder: &self.holder,
            challenge: &self.challenge,
            root: &self.root,
            size: self.size,
            at: self.at,
            failure: &self.failure,
        }
        .message(self.version);
        self.steward
            .verify(EVIDENCE_DOMAIN, &message, &self.signature)
            .map_err(|source| AuditError::Signature {
                what: "steward's evidence",
                source,
            })?;
        if let AuditFailure::WrongProof(answer) = &self.failure {
            if answer.challenge != self.challenge {
                return Err(AuditError::WrongChallenge {
                    expected: Box::new(self.challenge),
                    found: Box::new(answer.challenge),
                });
            }
            if answer.holder != self.holder {
                return Err(AuditError::WrongHolder {
                    expected: self.holder,
                    found: answer.holder,
                });
            }
            answer.check_signature()?;
            if verify(&self.root, self.size, &answer.challenge, &answer.proof).is_ok() {
                return Err(AuditError::ProofIsValid);
            }
        }
        Ok(())
    }

    /// Postcard bytes (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>, AuditError> {
        encode(self, "audit evidence")
    }

    /// Decodes at most [`MAX_EVIDENCE_BYTES`] of a known version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuditError> {
        decode(bytes, MAX_EVIDENCE_BYTES, "audit evidence")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const G: usize = GROUP_BYTES as usize;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
            .collect()
    }

    fn nonce(n: u64) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&n.to_le_bytes());
        out
    }

    /// A challenge of `piece` that asks for `group` of a `size`-byte piece.
    fn challenge_for(piece: PieceId, size: u64, group: u64) -> Challenge {
        (0..)
            .map(|n| Challenge {
                piece,
                nonce: nonce(n),
            })
            .find(|c| c.group(size) == group)
            .unwrap()
    }

    /// Reads what a holder would read and proves.
    fn prove_from(piece: &[u8], ob: &[u8], root: &[u8; 32], c: &Challenge) -> Vec<u8> {
        let size = piece.len() as u64;
        let r = c.byte_range(size);
        prove(root, size, c, &piece[r.start as usize..r.end as usize], ob).unwrap()
    }

    /// Sizes: empty, one byte, one group less a byte, one group, one group
    /// and a byte, a few groups, a few MiB and a bit.
    const SIZES: [usize; 8] = [
        0,
        1,
        G - 1,
        G,
        G + 1,
        2 * G,
        5 * G + 100,
        3 * 1024 * 1024 + 7,
    ];

    #[test]
    fn outboard_is_bao_trees_pre_order_outboard() {
        for size in SIZES.into_iter().chain([1024, 1025, 3 * G, 7 * G - 1]) {
            let d = data(size, 1);
            let (root, ob) = outboard(&d);
            let bao = PreOrderMemOutboard::create(&d, BLOCK_SIZE);
            assert_eq!(&root, bao.root.as_bytes(), "size {size}");
            assert_eq!(root, *blake3::hash(&d).as_bytes(), "size {size}");
            assert_eq!(ob, bao.data, "size {size}");
            assert_eq!(ob.len() as u64, outboard_len(size as u64), "size {size}");
        }
        assert_eq!(outboard_len(64 << 20), 4095 * 64);
    }

    #[test]
    fn honest_proofs_verify_for_every_size_class_and_group() {
        let piece = PieceId([7; 32]);
        for size in SIZES {
            let d = data(size, 2);
            let (root, ob) = outboard(&d);
            let groups = group_count(size as u64);
            // Every group of the small pieces; a spread of them in the large one.
            let step = (groups / 40).max(1);
            for g in (0..groups).step_by(step as usize).chain([groups - 1]) {
                let c = challenge_for(piece, size as u64, g);
                let proof = prove_from(&d, &ob, &root, &c);
                assert_eq!(
                    proof.len(),
                    proof_len(size as u64, g),
                    "size {size} group {g}"
                );
                assert!(proof.len() <= MAX_PROOF_BYTES);
                let r = c.byte_range(size as u64);
                assert!(proof.ends_with(&d[r.start as usize..r.end as usize]));
                assert_eq!(
                    verify(&root, size as u64, &c, &proof),
                    Ok(()),
                    "size {size} group {g}"
                );
            }
        }
    }

    #[test]
    fn proof_of_a_64_mib_piece_is_a_group_and_twelve_pairs() {
        let size = 64u64 << 20;
        assert_eq!(proof_len(size, 0), G + 12 * 64);
        assert_eq!(proof_len(size, 4095), G + 12 * 64);
        // The largest piece has 4100 groups: 13 levels on the left.
        assert_eq!(proof_len(MAX_PIECE_BYTES, 0), MAX_PROOF_BYTES);
        assert!(proof_len(MAX_PIECE_BYTES, group_count(MAX_PIECE_BYTES) - 1) <= MAX_PROOF_BYTES);
    }

    #[test]
    fn every_flipped_byte_of_a_proof_fails_where_it_was_flipped() {
        let size = 5 * G + 100;
        let d = data(size, 3);
        let (root, ob) = outboard(&d);
        let c = challenge_for(PieceId([1; 32]), size as u64, 2);
        let proof = prove_from(&d, &ob, &root, &c);
        let pairs = (proof.len() - G) / 64;
        assert_eq!(pairs, 3);
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] ^= 0x10;
            let err = verify(&root, size as u64, &c, &bad).unwrap_err();
            if i < pairs * 64 {
                assert_eq!(
                    err,
                    AuditError::PathMismatch {
                        group: 2,
                        index: i / 64
                    },
                    "byte {i}"
                );
            } else {
                assert!(
                    matches!(err, AuditError::GroupMismatch { group: 2, .. }),
                    "byte {i}: {err}"
                );
            }
        }
    }

    #[test]
    fn truncated_extended_or_empty_proofs_fail() {
        for size in SIZES {
            let d = data(size, 4);
            let (root, ob) = outboard(&d);
            let c = Challenge {
                piece: PieceId([2; 32]),
                nonce: nonce(9),
            };
            let proof = prove_from(&d, &ob, &root, &c);
            let mut longer = proof.clone();
            longer.push(0);
            assert!(matches!(
                verify(&root, size as u64, &c, &longer),
                Err(AuditError::ProofLength { .. })
            ));
            if !proof.is_empty() {
                let shorter = &proof[..proof.len() - 1];
                assert!(matches!(
                    verify(&root, size as u64, &c, shorter),
                    Err(AuditError::ProofLength { .. })
                ));
                assert!(verify(&root, size as u64, &c, &[]).is_err());
            }
        }
    }

    #[test]
    fn a_proof_for_another_group_fails() {
        let size = 5 * G + 100;
        let d = data(size, 5);
        let (root, ob) = outboard(&d);
        let piece = PieceId([3; 32]);
        let proofs: Vec<(Challenge, Vec<u8>)> = (0..6)
            .map(|g| {
                let c = challenge_for(piece, size as u64, g);
                let p = prove_from(&d, &ob, &root, &c);
                (c, p)
            })
            .collect();
        for (a, (ca, _)) in proofs.iter().enumerate() {
            for (b, (_, pb)) in proofs.iter().enumerate() {
                let res = verify(&root, size as u64, ca, pb);
                assert_eq!(
                    res.is_ok(),
                    a == b,
                    "challenge for {a}, proof of {b}: {res:?}"
                );
            }
        }
    }

    #[test]
    fn wrong_root_or_size_fails() {
        let size = 3 * G;
        let d = data(size, 6);
        let (root, ob) = outboard(&d);
        let c = challenge_for(PieceId([4; 32]), size as u64, 1);
        let proof = prove_from(&d, &ob, &root, &c);
        let mut other = root;
        other[31] ^= 1;
        assert!(verify(&other, size as u64, &c, &proof).is_err());
        // The size is trusted input like the root (both come from the
        // record); the proof pins the group's bytes and path, not the size,
        // so it is not checked beyond its limit.
        assert_eq!(
            verify(&root, MAX_PIECE_BYTES + 1, &c, &proof),
            Err(AuditError::PieceTooLarge {
                size: MAX_PIECE_BYTES + 1,
                max: MAX_PIECE_BYTES
            })
        );
    }

    #[test]
    fn prove_refuses_damaged_or_misread_inputs() {
        let size = 5 * G + 100;
        let d = data(size, 7);
        let (root, ob) = outboard(&d);
        let c = challenge_for(PieceId([5; 32]), size as u64, 4);
        let r = c.byte_range(size as u64);
        let group = &d[r.start as usize..r.end as usize];

        let mut bad_group = group.to_vec();
        bad_group[17] ^= 1;
        assert!(matches!(
            prove(&root, size as u64, &c, &bad_group, &ob),
            Err(AuditError::GroupMismatch { group: 4, .. })
        ));
        // Group 4 is on the right of the root: the root pair is the only
        // one on its path (a 6-group tree is 4 | 2).
        let mut bad_root_pair = ob.clone();
        bad_root_pair[40] ^= 1;
        assert_eq!(
            prove(&root, size as u64, &c, group, &bad_root_pair),
            Err(AuditError::OutboardMismatch { group: 4, index: 0 })
        );
        // Damage on the left subtree's pairs is off this group's path.
        let mut bad_elsewhere = ob.clone();
        bad_elsewhere[64 + 3] ^= 1;
        assert_eq!(
            prove(&root, size as u64, &c, group, &bad_elsewhere),
            prove(&root, size as u64, &c, group, &ob)
        );
        assert!(matches!(
            prove(&root, size as u64, &c, group, &ob[..ob.len() - 1]),
            Err(AuditError::OutboardLength { .. })
        ));
        assert!(matches!(
            prove(&root, size as u64, &c, &group[1..], &ob),
            Err(AuditError::GroupLength { .. })
        ));
        let mut other_root = root;
        other_root[0] ^= 1;
        assert_eq!(
            prove(&other_root, size as u64, &c, group, &ob),
            Err(AuditError::OutboardMismatch { group: 4, index: 0 })
        );
    }

    #[test]
    fn groups_depend_on_piece_nonce_and_size_and_cover_the_piece() {
        let size = 40 * GROUP_BYTES;
        let piece = PieceId([6; 32]);
        let mut seen = [false; 40];
        for n in 0..2000 {
            let c = Challenge {
                piece,
                nonce: nonce(n),
            };
            let g = c.group(size);
            assert_eq!(g, c.group(size), "deterministic");
            seen[g as usize] = true;
            let r = c.byte_range(size);
            assert_eq!(r, g * GROUP_BYTES..(g + 1) * GROUP_BYTES);
        }
        assert!(seen.iter().all(|s| *s), "2000 nonces reach all 40 groups");
        let differs = |f: &dyn Fn(u64) -> (Challenge, u64)| {
            (0..50).any(|n| {
                let (c, s) = f(n);
                c.group(s)
                    != Challenge {
                        piece,
                        nonce: nonce(n),
                    }
                    .group(size)
            })
        };
        assert!(differs(&|n| (
            Challenge {
                piece: PieceId([9; 32]),
                nonce: nonce(n)
            },
            size
        )));
        assert!(differs(&|n| (
            Challenge {
                piece,
                nonce: nonce(n + 1000)
            },
            size
        )));
        assert!(differs(&|n| (
            Challenge {
                piece,
                nonce: nonce(n)
            },
            size + GROUP_BYTES
        )));
        assert_eq!(
            Challenge {
                piece,
                nonce: nonce(1)
            }
            .byte_range(0),
            0..0
        );
        assert_eq!(
            Challenge {
                piece,
                nonce: nonce(1)
            }
            .byte_range(10),
            0..10
        );
    }

    fn answered(key: &SecretKey) -> ([u8; 32], u64, Challenge, AuditAnswer) {
        let size = 3 * G + 5;
        let d = data(size, 8);
        let (root, ob) = outboard(&d);
        let c = challenge_for(PieceId([8; 32]), size as u64, 3);
        let proof = prove_from(&d, &ob, &root, &c);
        (root, size as u64, c, AuditAnswer::sign(key, c, proof))
    }

    #[test]
    fn signed_answers_verify_and_survive_postcard() {
        let key = SecretKey::from_bytes([1; 32]);
        let (root, size, c, answer) = answered(&key);
        assert_eq!(answer.verify(&root, size, &c, &key.public()), Ok(()));
        let bytes = answer.to_bytes().unwrap();
        assert_eq!(bytes[0], AUDIT_VERSION);
        assert!(bytes.len() <= MAX_ANSWER_BYTES);
        assert_eq!(AuditAnswer::from_bytes(&bytes).unwrap(), answer);
    }

    #[test]
    fn forged_or_misdirected_answers_fail() {
        let key = SecretKey::from_bytes([1; 32]);
        let other = SecretKey::from_bytes([2; 32]);
        let (root, size, c, answer) = answered(&key);
        let holder = key.public();

        // Any bit of the signature.
        for bit in (0..512).step_by(7) {
            let mut a = answer.clone();
            a.signature.0[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(
                a.verify(&root, size, &c, &holder),
                Err(AuditError::Signature { .. })
            ));
        }
        // Someone else's key in the holder field, or someone else signing.
        let mut a = answer.clone();
        a.holder = other.public();
        assert!(a.check_signature().is_err());
        let by_other = AuditAnswer::sign(&other, c, answer.proof.clone());
        assert!(matches!(
            by_other.verify(&root, size, &c, &holder),
            Err(AuditError::WrongHolder { .. })
        ));
        // A different nonce under the old signature, or a different proof.
        let mut a = answer.clone();
        a.challenge.nonce[0] ^= 1;
        assert!(a.check_signature().is_err());
        assert!(matches!(
            a.verify(&root, size, &c, &holder),
            Err(AuditError::WrongChallenge { .. })
        ));
        let mut a = answer.clone();
        a.proof[100] ^= 1;
        assert!(matches!(
            a.check_signature(),
            Err(AuditError::Signature { .. })
        ));
        // A replayed answer to a new challenge of the same group.
        let mut again = c;
        again.nonce = nonce(123_456);
        assert!(matches!(
            answer.verify(&root, size, &again, &holder),
            Err(AuditError::WrongChallenge { .. })
        ));
        // A correctly signed wrong proof is caught by the proof check.
        let mut wrong = answer.proof.clone();
        wrong[70] ^= 1;
        let signed_wrong = AuditAnswer::sign(&key, c, wrong);
        assert!(signed_wrong.check_signature().is_ok());
        assert!(matches!(
            signed_wrong.verify(&root, size, &c, &holder),
            Err(AuditError::PathMismatch { .. })
        ));
        // Unknown versions are refused, encoded or not.
        let mut v2 = answer.clone();
        v2.version = 2;
        assert!(matches!(
            v2.check_signature(),
            Err(AuditError::Version { found: 2, .. })
        ));
        let mut bytes = answer.to_bytes().unwrap();
        bytes[0] = 2;
        assert!(matches!(
            AuditAnswer::from_bytes(&bytes),
            Err(AuditError::Version { found: 2, .. })
        ));
    }

    #[test]
    fn decoding_is_bounded_before_it_starts() {
        let huge = vec![AUDIT_VERSION; MAX_ANSWER_BYTES + 1];
        assert!(matches!(
            AuditAnswer::from_bytes(&huge),
            Err(AuditError::TooLarge { .. })
        ));
        let huge = vec![AUDIT_VERSION; MAX_EVIDENCE_BYTES + 1];
        assert!(matches!(
            AuditEvidence::from_bytes(&huge),
            Err(AuditError::TooLarge { .. })
        ));
        assert!(matches!(
            AuditAnswer::from_bytes(&[]),
            Err(AuditError::Decode { .. })
        ));
        // A declared proof length beyond the bytes present fails without allocating it.
        let mut short = vec![AUDIT_VERSION];
        short.extend_from_slice(&[0; 64]);
        short.extend_from_slice(&[0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            AuditAnswer::from_bytes(&short),
            Err(AuditError::Decode { .. })
        ));
        // The largest possible answer and evidence fit their limits.
        let key = SecretKey::from_bytes([3; 32]);
        let c = Challenge {
            piece: PieceId([1; 32]),
            nonce: [2; 32],
        };
        let answer = AuditAnswer::sign(&key, c, vec![0xaa; MAX_PROOF_BYTES]);
        assert!(answer.to_bytes().unwrap().len() <= MAX_ANSWER_BYTES);
        let ev = AuditEvidence::signed(
            &key,
            key.public(),
            c,
            [0; 32],
            u64::MAX,
            u64::MAX,
            AuditFailure::WrongProof(answer),
        );
        assert!(ev.to_bytes().unwrap().len() <= MAX_EVIDENCE_BYTES);
    }

    #[test]
    fn evidence_of_a_wrong_proof_is_checkable_by_anyone_with_the_root() {
        let holder = SecretKey::from_bytes([1; 32]);
        let steward = SecretKey::from_bytes([2; 32]);
        let (root, size, c, honest) = answered(&holder);
        let mut wrong = honest.proof.clone();
        let last = wrong.len() - 1;
        wrong[last] ^= 1;
        let lie = AuditAnswer::sign(&holder, c, wrong);

        let ev =
            AuditEvidence::wrong_proof(&steward, root, size, lie.clone(), 1_700_000_000).unwrap();
        assert_eq!(ev.verify(), Ok(()));
        assert_eq!(
            (ev.holder, ev.steward, ev.at),
            (holder.public(), steward.public(), 1_700_000_000)
        );
        let bytes = ev.to_bytes().unwrap();
        assert_eq!(AuditEvidence::from_bytes(&bytes).unwrap(), ev);

        // No evidence against an honest answer, or an unsigned one.
        assert_eq!(
            AuditEvidence::wrong_proof(&steward, root, size, honest.clone(), 1),
            Err(AuditError::ProofIsValid)
        );
        let mut unsigned = lie.clone();
        unsigned.signature.0[0] ^= 1;
        assert!(matches!(
            AuditEvidence::wrong_proof(&steward, root, size, unsigned, 1),
            Err(AuditError::Signature { .. })
        ));
        // A steward cannot frame an honest holder by signing it anyway.
        let framed = AuditEvidence::signed(
            &steward,
            holder.public(),
            c,
            root,
            size,
            1,
            AuditFailure::WrongProof(honest),
        );
        assert_eq!(framed.verify(), Err(AuditError::ProofIsValid));
        // Nor pin someone else's answer on this holder.
        let mut pinned = AuditEvidence::signed(
            &steward,
            SecretKey::from_bytes([5; 32]).public(),
            c,
            root,
            size,
            1,
            AuditFailure::WrongProof(lie.clone()),
        );
        assert!(matches!(
            pinned.verify(),
            Err(AuditError::WrongHolder { .. })
        ));
        pinned.version = 2;
        assert!(matches!(pinned.verify(), Err(AuditError::Version { .. })));
    }

    #[test]
    fn evidence_fields_are_all_signed() {
        let steward = SecretKey::from_bytes([2; 32]);
        let holder = SecretKey::from_bytes([1; 32]).public();
        let c = Challenge {
            piece: PieceId([1; 32]),
            nonce: [2; 32],
        };
        let missing = AuditEvidence::missing(&steward, holder, c, [3; 32], 100, 50);
        let timeout = AuditEvidence::timeout(&steward, holder, c, [3; 32], 100, 50, 30);
        assert_eq!(missing.verify(), Ok(()));
        assert_eq!(timeout.verify(), Ok(()));
        type Tamper = fn(&mut AuditEvidence);
        let tampers: [Tamper; 9] = [
            |e| e.steward = SecretKey::from_bytes([9; 32]).public(),
            |e| e.holder.0[0] ^= 1,
            |e| e.challenge.piece.0[0] ^= 1,
            |e| e.challenge.nonce[31] ^= 1,
            |e| e.root[5] ^= 1,
            |e| e.size += 1,
            |e| e.at -= 1,
            |e| e.failure = AuditFailure::Timeout { waited_secs: 31 },
            |e| e.signature.0[10] ^= 1,
        ];
        for (i, tamper) in tampers.iter().enumerate() {
            for ev in [&missing, &timeout] {
                let mut e = ev.clone();
                tamper(&mut e);
                assert!(e.verify().is_err(), "tamper {i} on {:?}", ev.failure);
            }
        }
        // Missing and timeout differ in what they claim.
        let mut swapped = missing.clone();
        swapped.failure = timeout.failure.clone();
        assert!(swapped.verify().is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_pieces_verify_and_any_flip_fails(
            size in 0usize..(12 * G),
            seed: u8,
            n: u64,
            at in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let d = data(size, seed);
            let (root, ob) = outboard(&d);
            let c = Challenge { piece: PieceId([seed; 32]), nonce: nonce(n) };
            let proof = prove_from(&d, &ob, &root, &c);
            prop_assert_eq!(verify(&root, size as u64, &c, &proof), Ok(()));
            if !proof.is_empty() {
                let mut bad = proof.clone();
                bad[at.index(proof.len())] ^= 1 << bit;
                prop_assert!(verify(&root, size as u64, &c, &bad).is_err());
            }
        }

        #[test]
        fn proofs_do_not_transfer_between_groups(
            size in (G + 1)..(12 * G),
            a: u64,
            b: u64,
        ) {
            let d = data(size, 1);
            let (root, ob) = outboard(&d);
            let ca = Challenge { piece: PieceId([1; 32]), nonce: nonce(a) };
            let cb = Challenge { piece: PieceId([1; 32]), nonce: nonce(b) };
            let pa = prove_from(&d, &ob, &root, &ca);
            let res = verify(&root, size as u64, &cb, &pa);
            prop_assert_eq!(res.is_ok(), ca.group(size as u64) == cb.group(size as u64));
        }
    }
}
