//! Lifecycle rules (PutBucketLifecycleConfiguration): which objects expire
//! and which unfinished uploads are aborted, as S3 decides it. Pure; the
//! gateway's maintenance pass applies it to every object and upload.
//!
//! Cairn has one storage class and no versions, so a rule may expire
//! objects (after a number of days or from a date, filtered by prefix,
//! tags and size) and abort incomplete multipart uploads; transitions and
//! noncurrent-version actions are refused as `NotImplemented` rather than
//! stored and ignored.

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
        if r.expire_days.is_none() && r.expire_at_ms.is_none() && r.abort_days.is_none() {
            return bad(
                "a lifecycle rule needs an Expiration or AbortIncompleteMultipartUpload".into(),
            );
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
        let applies = r.enabled
            && key.starts_with(&r.prefix)
            && r.tags.iter().all(|t| tags.contains(t))
            && r.size_greater_than.is_none_or(|gt| size > gt)
            && r.size_less_than.is_none_or(|lt| size < lt);
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
        }
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
