//! What stewards tell each other about holders that failed audits, and
//! when audits happen.
//!
//! A steward that catches a holder (a wrong proof or a missing piece) signs
//! [`AuditEvidence`] and sends it to the record's other stewards. They did
//! not see the failure themselves, so they do not lower the holder's score
//! (a lying steward could then ruin an honest node); they only stop giving
//! it rebuilt pieces for [`SUSPICION_SECS`], which is all a lie can cost an
//! honest node. Before taking it, [`check_shared`] makes sure the evidence
//! is signed by the steward that sends it, is a failure that says something
//! about the data (not a timeout, which is liveness's business), and names
//! a piece of this record with the root and size the record gives it.
//! Whether the sender is a steward of the record is the caller's check,
//! like every other op on a record.
//!
//! [`Suspects`] keeps what was learned: bounded, each entry forgotten a day
//! after the newest evidence, at most [`MAX_REPORTERS`] reporters each.
//!
//! [`next_audit_in`] spaces a steward's audits of one holder as a Poisson
//! process (exponential gaps with a given mean), so a holder cannot tell
//! when the next challenge comes and fetch a piece back just in time.

use std::collections::HashMap;

use crate::audit::{AuditError, AuditEvidence, AuditFailure};
use crate::erasure::shard_size;
use crate::keys::PublicKey;
use crate::record::Genesis;

/// How long shared evidence keeps a holder out of repair placement.
pub const SUSPICION_SECS: u64 = 86_400;
/// Holders remembered at most (anyone can join, so this is bounded).
pub const MAX_SUSPECTS: usize = 4096;
/// Reporters remembered per holder.
pub const MAX_REPORTERS: usize = 8;
/// How far in the future evidence may be dated (clock skew).
pub const MAX_SKEW_SECS: u64 = 300;

/// Why shared evidence is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SharedEvidenceError {
    /// The evidence does not verify.
    #[error("the evidence does not verify: {0}")]
    Invalid(#[from] AuditError),
    /// Signed by another steward than the peer that sent it.
    #[error("the evidence is signed by another steward than the sender")]
    NotTheSender,
    /// A timeout says nothing about the data.
    #[error("a timeout is not evidence of lost data")]
    Timeout,
    /// The piece, its root or its size is not the record's.
    #[error("the evidence names piece {segment}/{index}, which this record does not have as such")]
    WrongPiece {
        /// Segment named.
        segment: u32,
        /// Index named.
        index: u16,
    },
    /// Older than [`SUSPICION_SECS`] or dated in the future.
    #[error("the evidence is dated {at}, outside the window around {now}")]
    OutOfTime {
        /// The evidence's date.
        at: u64,
        /// This node's clock.
        now: u64,
    },
}

/// Checks evidence that `sender` shares about piece `(segment, index)` of
/// the record with genesis `genesis` (see the module docs).
pub fn check_shared(
    evidence: &AuditEvidence,
    sender: &PublicKey,
    genesis: &Genesis,
    segment: u32,
    index: u16,
    now: u64,
) -> Result<(), SharedEvidenceError> {
    evidence.verify()?;
    if evidence.steward != *sender {
        return Err(SharedEvidenceError::NotTheSender);
    }
    if matches!(evidence.failure, AuditFailure::Timeout { .. }) {
        return Err(SharedEvidenceError::Timeout);
    }
    let size = genesis
        .segments
        .get(segment as usize)
        .map(|s| shard_size(s.sealed_len as usize, genesis.k) as u64);
    if index >= genesis.coded
        || genesis.piece_id(segment, index) != evidence.challenge.piece
        || genesis.piece_hash(segment, index) != Some(evidence.root)
        || size != Some(evidence.size)
    {
        return Err(SharedEvidenceError::WrongPiece { segment, index });
    }
    if evidence.at + SUSPICION_SECS <= now || evidence.at > now + MAX_SKEW_SECS {
        return Err(SharedEvidenceError::OutOfTime {
            at: evidence.at,
            now,
        });
    }
    Ok(())
}

/// One suspected holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    /// Date of the newest evidence, unix seconds.
    pub last: u64,
    /// Stewards that reported it, oldest first.
    pub reporters: Vec<PublicKey>,
}

impl Suspect {
    /// Until when the holder stays suspect.
    pub fn until(&self) -> u64 {
        self.last.saturating_add(SUSPICION_SECS)
    }
}

/// Holders that stewards reported, bounded (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Suspects {
    entries: HashMap<PublicKey, Suspect>,
}

impl Suspects {
    /// No suspects.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that `reporter` caught `holder` at `at`. Expired entries go
    /// first; when still full, the entry with the oldest evidence.
    pub fn report(&mut self, holder: PublicKey, reporter: PublicKey, at: u64, now: u64) {
        if !self.entries.contains_key(&holder) && self.entries.len() >= MAX_SUSPECTS {
            self.entries.retain(|_, s| s.until() > now);
            if self.entries.len() >= MAX_SUSPECTS
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(k, s)| (s.last, **k))
                    .map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
            }
        }
        let entry = self.entries.entry(holder).or_insert(Suspect {
            last: at,
            reporters: Vec::new(),
        });
        entry.last = entry.last.max(at);
        if !entry.reporters.contains(&reporter) {
            if entry.reporters.len() >= MAX_REPORTERS {
                entry.reporters.remove(0);
            }
            entry.reporters.push(reporter);
        }
    }

    /// Whether some steward caught `holder` within [`SUSPICION_SECS`].
    pub fn is_suspect(&self, holder: &PublicKey, now: u64) -> bool {
        self.entries.get(holder).is_some_and(|s| s.until() > now)
    }

    /// The current suspects, by key.
    pub fn current(&self, now: u64) -> Vec<(PublicKey, Suspect)> {
        let mut out: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, s)| s.until() > now)
            .map(|(k, s)| (*k, s.clone()))
            .collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }

    /// Entries kept (expired ones included until they are pushed out).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Milliseconds until the next audit of a holder when audits of it come at
/// random with mean gap `mean_ms`; `u` is uniform in `[0, 1)`. Capped at
/// 20 means, so one unlucky draw cannot skip a holder for days.
pub fn next_audit_in(mean_ms: u64, u: f64) -> u64 {
    let u = if u.is_finite() {
        u.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let gap = -(1.0 - u).max(f64::MIN_POSITIVE).ln() * mean_ms as f64;
    gap.min(mean_ms as f64 * 20.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileId;
    use crate::audit::{AuditAnswer, Challenge};
    use crate::keys::SecretKey;
    use crate::record::SegmentInfo;

    fn key(i: u8) -> SecretKey {
        SecretKey::from_bytes([i + 1; 32])
    }

    /// One segment of 4 pieces of 100 bytes each; the roots are real.
    fn genesis() -> (Genesis, Vec<Vec<u8>>) {
        let pieces: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100]).collect();
        let g = Genesis {
            file_id: FileId([9; 32]),
            owner: key(0).public(),
            k: 2,
            n: 4,
            coded: 4,
            created_at: 1000,
            segments: vec![SegmentInfo {
                sealed_len: 200,
                hashes: pieces.iter().map(|p| *blake3::hash(p).as_bytes()).collect(),
            }],
        };
        (g, pieces)
    }

    fn missing(steward: &SecretKey, g: &Genesis, index: u16, at: u64) -> AuditEvidence {
        AuditEvidence::missing(
            steward,
            key(7).public(),
            Challenge::random(g.piece_id(0, index)),
            g.piece_hash(0, index).unwrap(),
            100,
            at,
        )
    }

    #[test]
    fn evidence_of_a_record_piece_from_its_signer_is_taken() {
        let (g, _) = genesis();
        let e = missing(&key(1), &g, 2, 5000);
        assert_eq!(check_shared(&e, &key(1).public(), &g, 0, 2, 5000), Ok(()));
    }

    #[test]
    fn a_wrong_proof_signed_by_the_holder_is_taken() {
        let (g, pieces) = genesis();
        let holder = key(7);
        let challenge = Challenge::random(g.piece_id(0, 1));
        // The holder answers with another piece's bytes: a wrong proof.
        let (root3, ob) = crate::audit::outboard(&pieces[3]);
        let proof = crate::audit::prove(&root3, 100, &challenge, &pieces[3], &ob).unwrap();
        let answer = AuditAnswer::sign(&holder, challenge, proof);
        let e = AuditEvidence::wrong_proof(&key(1), g.piece_hash(0, 1).unwrap(), 100, answer, 5000)
            .unwrap();
        assert_eq!(check_shared(&e, &key(1).public(), &g, 0, 1, 5000), Ok(()));
    }

    #[test]
    fn evidence_relayed_by_another_peer_is_refused() {
        let (g, _) = genesis();
        let e = missing(&key(1), &g, 2, 5000);
        assert_eq!(
            check_shared(&e, &key(2).public(), &g, 0, 2, 5000),
            Err(SharedEvidenceError::NotTheSender)
        );
    }

    #[test]
    fn tampered_evidence_is_refused() {
        let (g, _) = genesis();
        let mut e = missing(&key(1), &g, 2, 5000);
        e.holder = key(8).public();
        assert!(matches!(
            check_shared(&e, &key(1).public(), &g, 0, 2, 5000),
            Err(SharedEvidenceError::Invalid(_))
        ));
    }

    #[test]
    fn a_timeout_is_not_shared_evidence() {
        let (g, _) = genesis();
        let e = AuditEvidence::timeout(
            &key(1),
            key(7).public(),
            Challenge::random(g.piece_id(0, 0)),
            g.piece_hash(0, 0).unwrap(),
            100,
            5000,
            10,
        );
        assert_eq!(
            check_shared(&e, &key(1).public(), &g, 0, 0, 5000),
            Err(SharedEvidenceError::Timeout)
        );
    }

    #[test]
    fn evidence_about_another_piece_root_or_size_is_refused() {
        let (g, _) = genesis();
        let sender = key(1).public();
        // Named as another slot than the one it is about.
        let e = missing(&key(1), &g, 2, 5000);
        assert!(check_shared(&e, &sender, &g, 0, 3, 5000).is_err());
        assert!(check_shared(&e, &sender, &g, 1, 2, 5000).is_err());
        assert!(check_shared(&e, &sender, &g, 0, 9, 5000).is_err());
        // Another root than the record's.
        let e = AuditEvidence::missing(
            &key(1),
            key(7).public(),
            Challenge::random(g.piece_id(0, 2)),
            [0; 32],
            100,
            5000,
        );
        assert!(check_shared(&e, &sender, &g, 0, 2, 5000).is_err());
        // Another size.
        let e = AuditEvidence::missing(
            &key(1),
            key(7).public(),
            Challenge::random(g.piece_id(0, 2)),
            g.piece_hash(0, 2).unwrap(),
            99,
            5000,
        );
        assert!(check_shared(&e, &sender, &g, 0, 2, 5000).is_err());
    }

    #[test]
    fn stale_or_future_evidence_is_refused() {
        let (g, _) = genesis();
        let sender = key(1).public();
        let now = 1_000_000;
        let old = missing(&key(1), &g, 0, now - SUSPICION_SECS);
        assert!(matches!(
            check_shared(&old, &sender, &g, 0, 0, now),
            Err(SharedEvidenceError::OutOfTime { .. })
        ));
        let future = missing(&key(1), &g, 0, now + MAX_SKEW_SECS + 1);
        assert!(check_shared(&future, &sender, &g, 0, 0, now).is_err());
        let skewed = missing(&key(1), &g, 0, now + MAX_SKEW_SECS);
        assert!(check_shared(&skewed, &sender, &g, 0, 0, now).is_ok());
    }

    #[test]
    fn suspects_expire_a_day_after_the_newest_evidence() {
        let mut s = Suspects::new();
        let (h, r1, r2) = (key(7).public(), key(1).public(), key(2).public());
        s.report(h, r1, 1000, 1000);
        assert!(s.is_suspect(&h, 1000 + SUSPICION_SECS - 1));
        assert!(!s.is_suspect(&h, 1000 + SUSPICION_SECS));
        s.report(h, r2, 5000, 5000);
        s.report(h, r1, 2000, 5000);
        assert!(s.is_suspect(&h, 5000 + SUSPICION_SECS - 1));
        let current = s.current(5000);
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].1.reporters, vec![r1, r2]);
        assert!(s.current(5000 + SUSPICION_SECS).is_empty());
        assert!(!s.is_suspect(&key(9).public(), 5000));
    }

    #[test]
    fn suspects_and_reporters_are_bounded() {
        let mut s = Suspects::new();
        let reporter = key(1).public();
        for i in 0..(MAX_SUSPECTS as u64 + 10) {
            let mut holder = [0u8; 32];
            holder[..8].copy_from_slice(&i.to_be_bytes());
            s.report(PublicKey(holder), reporter, 1000 + i, 1000 + i);
        }
        assert_eq!(s.len(), MAX_SUSPECTS);
        // The oldest evidence went first.
        let mut first = [0u8; 32];
        first[..8].copy_from_slice(&0u64.to_be_bytes());
        assert!(!s.is_suspect(&PublicKey(first), 2000));
        let h = key(7).public();
        for i in 0..(MAX_REPORTERS as u8 + 3) {
            s.report(h, key(10 + i).public(), 9000, 9000);
        }
        let r = &s
            .current(9000)
            .into_iter()
            .find(|(k, _)| *k == h)
            .unwrap()
            .1;
        assert_eq!(r.reporters.len(), MAX_REPORTERS);
        assert_eq!(
            r.reporters.last(),
            Some(&key(10 + MAX_REPORTERS as u8 + 2).public())
        );
    }

    #[test]
    fn audit_gaps_are_exponential_with_the_given_mean() {
        let mean = 60_000u64;
        let n = 20_000;
        let mut sum = 0u64;
        let mut below_mean = 0;
        for i in 0..n {
            let u = (i as f64 + 0.5) / n as f64;
            let gap = next_audit_in(mean, u);
            sum += gap;
            below_mean += usize::from(gap < mean);
        }
        let avg = sum as f64 / n as f64;
        assert!((avg - mean as f64).abs() < mean as f64 * 0.02, "mean {avg}");
        // P(gap < mean) = 1 - 1/e for an exponential distribution.
        let share = below_mean as f64 / n as f64;
        assert!((share - 0.632).abs() < 0.01, "share below the mean {share}");
        assert_eq!(next_audit_in(mean, 0.0), 0);
        assert_eq!(next_audit_in(mean, 1.0), mean * 20);
        assert_eq!(next_audit_in(mean, f64::NAN), 0);
    }
}
