//! Lifecycle rules (PutBucketLifecycleConfiguration): which objects expire
//! and which unfinished uploads are aborted, as S3 decides it. Pure; the
//! gateway's maintenance pass applies it to every object and upload.
//!
//! A rule may expire objects (after a number of days or from a date,
//! filtered by prefix, tags and size; in a versioned bucket that writes a
//! delete marker), expire noncurrent versions (a number of days after a
//! newer version replaced them, keeping the newest few if asked), remove
//! delete markers that no version is left behind, and abort incomplete
//! multipart uploads. Cairn has one storage class, so transitions are
//! refused as `NotImplemented` rather than stored and ignored.

use serde::{Deserialize, Serialize};

use crate::error::GatewayError;

/// Rules in one configuration, at most (S3's limit).
pub const MAX_RULES: usize = 1000;
/// A day, in milliseconds.
const DAY_MS: u64 = 86_400_000;

/// One lifecycle rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The rule's `ID`, if given.
    pub id: Option<String>,
    /// `Status` is `Enabled`.
    pub enabled: bool,
    /// Keys it applies to start with this.
    pub prefix: String,
    /// Objects it applies to carry all these tags.
    pub tags: Vec<(String, String)>,
    /// Objects it applies to are larger than this (`ObjectSizeGreaterThan`).
    pub size_greater_than: Option<u64>,
    /// Objects it applies to are smaller than this (`ObjectSizeLessThan`).
    pub size_less_than: Option<u64>,
    /// Objects expire this many days after they were written.
    pub expire_days: Option<u32>,
    /// Objects expire from this time (Unix ms).
    pub expire_at_ms: Option<u64>,
    /// Uploads are aborted this many days after they began.
    pub abort_days: Option<u32>,
    /// Noncurrent versions expire this many days after they became
    /// noncurrent (`NoncurrentVersionExpiration`).
    pub noncurrent_days: Option<u32>,
    /// ... except the newest this many noncurrent versions of each key
    /// (`NewerNoncurrentVersions`).
    pub newer_noncurrent: Option<u32>,
    /// A delete marker with no version behind it is removed
    /// (`ExpiredObjectDeleteMarker`).
    pub expired_marker: bool,
}

/// A rule as version 2 of [`crate::meta::BucketLifecycle`] kept it,
/// before versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleV2 {
    /// `ID`.
    pub id: Option<String>,
    /// `Status` is `Enabled`.
    pub enabled: bool,
    /// Key prefix.
    pub prefix: String,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// `ObjectSizeGreaterThan`.
    pub size_greater_than: Option<u64>,
    /// `ObjectSizeLessThan`.
    pub size_less_than: Option<u64>,
    /// Expiry in days.
    pub expire_days: Option<u32>,
    /// Expiry date (Unix ms).
    pub expire_at_ms: Option<u64>,
    /// Abort uploads after days.
    pub abort_days: Option<u32>,
}

impl From<RuleV2> for Rule {
    fn from(r: RuleV2) -> Self {
        Rule {
            id: r.id,
            enabled: r.enabled,
            prefix: r.prefix,
            tags: r.tags,
            size_greater_than: r.size_greater_than,
            size_less_than: r.size_less_than,
            expire_days: r.expire_days,
            expire_at_ms: r.expire_at_ms,
            abort_days: r.abort_days,
            noncurrent_days: None,
            newer_noncurrent: None,
            expired_marker: false,
        }
    }
}

/// A rule as version 1 of [`crate::meta::BucketLifecycle`] kept it,
/// before size filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleV1 {
    /// `ID`.
    pub id: Option<String>,
    /// `Status` is `Enabled`.
    pub enabled: bool,
    /// Key prefix.
    pub prefix: String,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// Expiry in days.
    pub expire_days: Option<u32>,
    /// Expiry date (Unix ms).
    pub expire_at_ms: Option<u64>,
    /// Abort uploads after days.
    pub abort_days: Option<u32>,
}

impl From<RuleV1> for Rule {
    fn from(r: RuleV1) -> Self {
        Rule {
            id: r.id,
            enabled: r.enabled,
            prefix: r.prefix,
            tags: r.tags,
            size_greater_than: None,
            size_less_than: None,
            expire_days: r.expire_days,
            expire_at_ms: r.expire_at_ms,
            abort_days: r.abort_days,
            noncurrent_days: None,
            newer_noncurrent: None,
            expired_marker: false,
        }
    }
}

/// Checks a configuration as S3 does: 1 to [`MAX_RULES`] rules with
/// distinct ids, each with an action, days of at least 1, no tag or size
/// filter on a rule that aborts uploads (uploads have neither yet), and a
/// size range that is not empty.
pub fn check(rules: &[Rule]) -> Result<(), GatewayError> {
    let bad = |why: String| Err(GatewayError::MalformedXml(why));
    if rules.is_empty() || rules.len() > MAX_RULES {
        return bad(format!(
            "a lifecycle configuration has 1 to {MAX_RULES} rules, not {}",
            rules.len()
        ));
    }
    for (i, r) in rules.iter().enumerate() {
        if r.expire_days.is_none()
            && r.expire_at_ms.is_none()
            && r.abort_days.is_none()
            && r.noncurrent_days.is_none()
            && !r.expired_marker
        {
            return bad(
                "a lifecycle rule needs an Expiration, NoncurrentVersionExpiration or AbortIncompleteMultipartUpload".into(),
            );
        }
        if r.expired_marker && (r.expire_days.is_some() || r.expire_at_ms.is_some()) {
            return bad(
                "an Expiration has Days, Date or ExpiredObjectDeleteMarker, only one".into(),
            );
        }
        if r.expired_marker && !r.tags.is_empty() {
            return Err(GatewayError::InvalidArgument(
                "ExpiredObjectDeleteMarker cannot be specified with Tags".into(),
            ));
        }
        if r.noncurrent_days == Some(0) {
            return Err(GatewayError::InvalidArgument(
                "NoncurrentDays must be a positive integer".into(),
            ));
        }
        if r.newer_noncurrent.is_some() && r.noncurrent_days.is_none() {
            return bad("NewerNoncurrentVersions needs NoncurrentDays".into());
        }
        if r.newer_noncurrent.is_some_and(|n| !(1..=100).contains(&n)) {
            return Err(GatewayError::InvalidArgument(
                "NewerNoncurrentVersions is between 1 and 100".into(),
            ));
        }
        if r.expire_days.is_some() && r.expire_at_ms.is_some() {
            return bad("an Expiration has Days or Date, not both".into());
        }
        if r.expire_days == Some(0) || r.abort_days == Some(0) {
            return Err(GatewayError::InvalidArgument(
                "lifecycle days must be a positive integer".into(),
            ));
        }
        if r.abort_days.is_some() && !r.tags.is_empty() {
            return Err(GatewayError::InvalidArgument(
                "AbortIncompleteMultipartUpload cannot be specified with Tags".into(),
            ));
        }
        let sized = r.size_greater_than.is_some() || r.size_less_than.is_some();
        if r.abort_days.is_some() && sized {
            return Err(GatewayError::InvalidArgument(
                "AbortIncompleteMultipartUpload cannot be specified with an object size filter"
                    .into(),
            ));
        }
        if let (Some(gt), Some(lt)) = (r.size_greater_than, r.size_less_than)
            && gt >= lt
        {
            return Err(GatewayError::InvalidArgument(format!(
                "ObjectSizeGreaterThan ({gt}) must be less than ObjectSizeLessThan ({lt})"
            )));
        }
        if let Some(id) = &r.id {
            if id.len() > 255 {
                return Err(GatewayError::InvalidArgument(
                    "a lifecycle rule ID is at most 255 characters".into(),
                ));
            }
            if rules[..i].iter().any(|o| o.id.as_ref() == Some(id)) {
                return Err(GatewayError::InvalidArgument(format!(
                    "lifecycle rule ID {id:?} appears twice"
                )));
            }
        }
    }
    Ok(())
}

/// The first midnight (UTC) at or after `ms`: S3 counts days in whole
/// days, so an object written any time on day D with a one-day rule
/// expires at the start of day D + 2.
fn next_midnight(ms: u64) -> u64 {
    ms.div_ceil(DAY_MS) * DAY_MS
}

/// Whether the object `key` of `size` bytes with `tags`, written at
/// `written_ms`, has expired at `now_ms` under `rules`.
pub fn expired(
    rules: &[Rule],
    key: &str,
    tags: &[(String, String)],
    size: u64,
    written_ms: u64,
    now_ms: u64,
) -> bool {
    rules.iter().any(|r| {
        let applies = applies(r, key, tags, size);
        let due = match (r.expire_days, r.expire_at_ms) {
            (Some(d), _) => {
                now_ms >= next_midnight(written_ms.saturating_add(u64::from(d) * DAY_MS))
            }
            (None, Some(at)) => now_ms >= at,
            (None, None) => false,
        };
        applies && due
    })
}

/// Whether a rule applies to a version of `key` of `size` bytes with `tags`.
fn applies(r: &Rule, key: &str, tags: &[(String, String)], size: u64) -> bool {
    r.enabled
        && key.starts_with(&r.prefix)
        && r.tags.iter().all(|t| tags.contains(t))
        && r.size_greater_than.is_none_or(|gt| size > gt)
        && r.size_less_than.is_none_or(|lt| size < lt)
}

/// Whether a noncurrent version of `key` (`size` bytes, `tags`) that a
/// newer version replaced at `noncurrent_since_ms`, with `newer` noncurrent
/// versions of the key newer than it, has expired at `now_ms`.
pub fn noncurrent_expired(
    rules: &[Rule],
    (key, tags, size): (&str, &[(String, String)], u64),
    noncurrent_since_ms: u64,
    newer: usize,
    now_ms: u64,
) -> bool {
    rules.iter().any(|r| {
        applies(r, key, tags, size)
            && r.noncurrent_days.is_some_and(|d| {
                now_ms >= next_midnight(noncurrent_since_ms.saturating_add(u64::from(d) * DAY_MS))
            })
            && r.newer_noncurrent
                .is_none_or(|n| newer >= usize::try_from(n).unwrap_or(usize::MAX))
    })
}

/// Whether a delete marker of `key` that no version is left behind is to
/// be removed under `rules`.
pub fn marker_expired(rules: &[Rule], key: &str) -> bool {
    rules
        .iter()
        .any(|r| r.enabled && r.expired_marker && key.starts_with(&r.prefix))
}

/// Whether any rule expires noncurrent versions or delete markers (so the
/// maintenance pass must look at each key's versions).
pub fn uses_versions(rules: &[Rule]) -> bool {
    rules
        .iter()
        .any(|r| r.enabled && (r.noncurrent_days.is_some() || r.expired_marker))
}

/// Whether any rule names tags (so the maintenance pass must read each
/// object's current tags).
pub fn uses_tags(rules: &[Rule]) -> bool {
    rules.iter().any(|r| r.enabled && !r.tags.is_empty())
}

/// Whether the upload of `key` begun at `initiated_ms` is to be aborted at
/// `now_ms` under `rules`.
pub fn abort_due(rules: &[Rule], key: &str, initiated_ms: u64, now_ms: u64) -> bool {
    rules.iter().any(|r| {
        r.enabled
            && key.starts_with(&r.prefix)
            && r.abort_days.is_some_and(|d| {
                now_ms >= next_midnight(initiated_ms.saturating_add(u64::from(d) * DAY_MS))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str) -> Rule {
        Rule {
            id: None,
            enabled: true,
            prefix: prefix.into(),
            tags: vec![],
            size_greater_than: None,
            size_less_than: None,
            expire_days: None,
            expire_at_ms: None,
            abort_days: None,
            noncurrent_days: None,
            newer_noncurrent: None,
            expired_marker: false,
        }
    }

    #[test]
    fn noncurrent_versions_expire_days_after_they_were_replaced_keeping_the_newest() {
        let day0 = 20_000 * DAY_MS;
        let replaced = day0 + 3_600_000;
        let r = Rule {
            noncurrent_days: Some(2),
            ..rule("logs/")
        };
        let at = |newer, now| {
            noncurrent_expired(
                std::slice::from_ref(&r),
                ("logs/a", &[], 5),
                replaced,
                newer,
                now,
            )
        };
        // Two days after 01:00 on day 0, rounded up to midnight of day 3.
        assert!(!at(0, day0 + 3 * DAY_MS - 1));
        assert!(at(0, day0 + 3 * DAY_MS));
        assert!(!noncurrent_expired(
            std::slice::from_ref(&r),
            ("data/a", &[], 5),
            replaced,
            0,
            day0 + 9 * DAY_MS
        ));
        // Keep the newest two noncurrent versions of each key.
        let keep = Rule {
            newer_noncurrent: Some(2),
            ..r.clone()
        };
        let late = day0 + 9 * DAY_MS;
        let kept = |newer| {
            noncurrent_expired(
                std::slice::from_ref(&keep),
                ("logs/a", &[], 5),
                replaced,
                newer,
                late,
            )
        };
        assert!(!kept(0) && !kept(1) && kept(2) && kept(5));
        // A rule without NoncurrentDays never expires noncurrent versions.
        let plain = Rule {
            expire_days: Some(1),
            ..rule("")
        };
        assert!(!noncurrent_expired(
            std::slice::from_ref(&plain),
            ("a", &[], 5),
            0,
            9,
            late
        ));
        assert!(!uses_versions(&[plain]) && uses_versions(&[r]));
        let markers = Rule {
            expired_marker: true,
            ..rule("logs/")
        };
        assert!(
            marker_expired(std::slice::from_ref(&markers), "logs/x")
                && !marker_expired(std::slice::from_ref(&markers), "x")
        );
        check(std::slice::from_ref(&markers)).unwrap();
        let both = Rule {
            expire_days: Some(3),
            ..markers
        };
        assert!(check(&[both]).is_err());
        let orphan = Rule {
            newer_noncurrent: Some(3),
            ..rule("")
        };
        assert!(check(&[orphan]).is_err());
    }

    #[test]
    fn objects_expire_whole_days_after_their_write_under_a_matching_rule() {
        let day0 = 20_000 * DAY_MS; // a midnight
        let written = day0 + 10 * 3_600_000; // 10:00 on day 0
        let logs = Rule {
            expire_days: Some(1),
            ..rule("logs/")
        };
        let rules = [logs.clone()];
        // Day 0 + 1 day is 10:00 on day 1, rounded up to midnight of day 2.
        assert!(!expired(
            &rules,
            "logs/a",
            &[],
            10,
            written,
            day0 + 2 * DAY_MS - 1
        ));
        assert!(expired(
            &rules,
            "logs/a",
            &[],
            10,
            written,
            day0 + 2 * DAY_MS
        ));
        assert!(!expired(
            &rules,
            "data/a",
            &[],
            10,
            written,
            day0 + 9 * DAY_MS
        ));
        // A disabled rule expires nothing.
        let off = [Rule {
            enabled: false,
            ..logs.clone()
        }];
        assert!(!expired(
            &off,
            "logs/a",
            &[],
            10,
            written,
            day0 + 9 * DAY_MS
        ));
        // A tag filter needs every tag it names.
        let tagged = [Rule {
            tags: vec![("tmp".into(), "yes".into())],
            ..logs
        }];
        let t = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert!(!expired(
            &tagged,
            "logs/a",
            &[t("tmp", "no")],
            10,
            written,
            day0 + 9 * DAY_MS
        ));
        assert!(expired(
            &tagged,
            "logs/a",
            &[t("a", "b"), t("tmp", "yes")],
            10,
            written,
            day0 + 9 * DAY_MS
        ));
        // From a date, whatever the age.
        let dated = [Rule {
            expire_at_ms: Some(day0 + 5 * DAY_MS),
            ..rule("")
        }];
        assert!(!expired(&dated, "x", &[], 10, 0, day0 + 5 * DAY_MS - 1));
        assert!(expired(
            &dated,
            "x",
            &[],
            10,
            day0 + 5 * DAY_MS - 10,
            day0 + 5 * DAY_MS
        ));
    }

    #[test]
    fn size_filters_bound_the_objects_a_rule_expires() {
        let rules = [Rule {
            expire_days: Some(1),
            size_greater_than: Some(100),
            size_less_than: Some(1000),
            ..rule("")
        }];
        let later = 10 * DAY_MS;
        // Strictly between the bounds, as S3 counts them.
        assert!(!expired(&rules, "a", &[], 100, 0, later));
        assert!(expired(&rules, "a", &[], 101, 0, later));
        assert!(expired(&rules, "a", &[], 999, 0, later));
        assert!(!expired(&rules, "a", &[], 1000, 0, later));
        let big = [Rule {
            size_less_than: None,
            ..rules[0].clone()
        }];
        assert!(expired(&big, "a", &[], 5 << 30, 0, later));
        assert!(!expired(&big, "a", &[], 0, 0, later));
    }

    #[test]
    fn uploads_are_aborted_whole_days_after_they_began() {
        let day0 = 20_000 * DAY_MS;
        let rules = [Rule {
            abort_days: Some(7),
            ..rule("big/")
        }];
        assert!(!abort_due(&rules, "big/x", day0 + 1, day0 + 8 * DAY_MS - 1));
        assert!(abort_due(&rules, "big/x", day0 + 1, day0 + 8 * DAY_MS));
        assert!(!abort_due(&rules, "small/x", day0, day0 + 99 * DAY_MS));
        // An expiration rule aborts nothing.
        let exp = [Rule {
            expire_days: Some(1),
            ..rule("")
        }];
        assert!(!abort_due(&exp, "big/x", 0, day0));
    }

    #[test]
    fn configurations_are_checked_as_s3_does() {
        let ok = Rule {
            id: Some("a".into()),
            expire_days: Some(30),
            ..rule("")
        };
        assert!(check(std::slice::from_ref(&ok)).is_ok());
        assert!(check(&[]).is_err());
        assert!(check(&[rule("")]).is_err(), "a rule without an action");
        assert!(
            check(&[Rule {
                expire_days: Some(0),
                ..ok.clone()
            }])
            .is_err()
        );
        assert!(
            check(&[Rule {
                expire_at_ms: Some(1),
                ..ok.clone()
            }])
            .is_err()
        );
        assert!(check(&[ok.clone(), ok.clone()]).is_err(), "an id twice");
        let abort_tagged = Rule {
            abort_days: Some(1),
            tags: vec![("k".into(), "v".into())],
            ..rule("")
        };
        assert!(check(&[abort_tagged]).is_err());
        let abort_sized = Rule {
            abort_days: Some(1),
            size_greater_than: Some(1),
            ..rule("")
        };
        assert!(check(&[abort_sized]).is_err());
        let empty_range = Rule {
            size_greater_than: Some(10),
            size_less_than: Some(10),
            ..ok.clone()
        };
        assert!(check(&[empty_range]).is_err());
    }
}
