//! S3's rules as pure functions: bucket names, key lengths, byte ranges,
//! conditional requests, multipart ETags and tag sets. No I/O, so each is tested on
//! its own and the service only wires them up.

use md5::{Digest, Md5};
use s3s::dto::{ETagCondition, Range};

use crate::error::GatewayError;

/// S3's key length limit, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks a bucket name against S3's rules for new buckets: 3 to 63
/// characters of lower-case letters, digits, dots and hyphens, starting and
/// ending with a letter or digit, no `..`, not an IPv4 address, and none of
/// the reserved prefixes and suffixes.
pub fn validate_bucket_name(name: &str) -> Result<(), GatewayError> {
    let bad = |why: &str| Err(GatewayError::InvalidBucketName(name.into(), why.into()));
    if !(3..=63).contains(&name.len()) {
        return bad("a bucket name has 3 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("only lower-case letters, digits, dots and hyphens are allowed");
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !edge_ok(name.bytes().next()) || !edge_ok(name.bytes().last()) {
        return bad("a bucket name starts and ends with a letter or digit");
    }
    if name.contains("..") {
        return bad("two adjacent dots are not allowed");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("a bucket name may not look like an IP address");
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return bad("this prefix is reserved");
        }
    }
    for suffix in ["-s3alias", "--ol-s3", "--x-s3", "--table-s3", ".mrap"] {
        if name.ends_with(suffix) {
            return bad("this suffix is reserved");
        }
    }
    Ok(())
}

/// Checks an object key: 1 to 1,024 bytes.
pub fn validate_key(key: &str) -> Result<(), GatewayError> {
    if key.is_empty() {
        return Err(GatewayError::InvalidArgument(
            "an object key may not be empty".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(GatewayError::KeyTooLong(key.len()));
    }
    if key.contains('\0') {
        // XML cannot carry it (so no listing could show it), and the
        // versions index uses it to end a key.
        return Err(GatewayError::InvalidArgument(
            "an object key may not contain a NUL character".into(),
        ));
    }
    Ok(())
}

/// The bytes `[start, end)` of an object of `size` bytes that `range`
/// asks for. `bytes=a-b` is clipped to the object; `bytes=-n` is the last
/// `n` bytes (all of a shorter object). A range that starts past the end,
/// or an empty suffix, is `InvalidRange` (416).
pub fn resolve_range(range: &Range, size: u64) -> Result<(u64, u64), GatewayError> {
    let invalid = || GatewayError::InvalidRange { size };
    match *range {
        Range::Int { first, last } => {
            if first >= size {
                return Err(invalid());
            }
            let end = match last {
                Some(last) if last < first => return Err(invalid()),
                Some(last) => last.saturating_add(1).min(size),
                None => size,
            };
            Ok((first, end))
        }
        Range::Suffix { length } => {
            if length == 0 || size == 0 {
                return Err(invalid());
            }
            Ok((size.saturating_sub(length), size))
        }
    }
}

/// What a conditional request comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Serve the object.
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
}

/// The conditional headers of a GET or HEAD.
#[derive(Debug, Default, Clone)]
pub struct Conditions {
    /// `If-Match`.
    pub if_match: Option<ETagCondition>,
    /// `If-None-Match`.
    pub if_none_match: Option<ETagCondition>,
    /// `If-Modified-Since`, Unix seconds.
    pub if_modified_since: Option<i64>,
    /// `If-Unmodified-Since`, Unix seconds.
    pub if_unmodified_since: Option<i64>,
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value().trim_matches('"') == etag.trim_matches('"'),
    }
}

/// What a conditional write (PutObject or CompleteMultipartUpload with
/// `If-None-Match: *` or `If-Match`) requires of the key's current object.
#[derive(Debug, Clone, Default)]
pub struct WriteConditions {
    /// `If-Match`: the current object's ETag (`*`: any object).
    pub if_match: Option<ETagCondition>,
    /// `If-None-Match`: S3 takes only `*`, no current object.
    pub if_none_match: Option<ETagCondition>,
}

impl WriteConditions {
    /// Whether the write is unconditional.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Checks the write against the ETag of `key`'s current object (none:
    /// there is none, or a delete marker): `PreconditionFailed` (412) for
    /// an `If-None-Match: *` over an object or an `If-Match` with another
    /// ETag, `NoSuchKey` for an `If-Match` with no object, as in S3.
    pub fn check(&self, key: &str, current: Option<&str>) -> Result<(), GatewayError> {
        match (&self.if_none_match, current) {
            (Some(ETagCondition::ETag(_)), _) => {
                return Err(GatewayError::NotImplemented(
                    "If-None-Match on a write takes only *".into(),
                ));
            }
            (Some(ETagCondition::Any), Some(_)) => return Err(GatewayError::PreconditionFailed),
            _ => {}
        }
        match (&self.if_match, current) {
            (Some(_), None) => Err(GatewayError::NoSuchKey(key.into())),
            (Some(cond), Some(etag)) if !etag_matches(cond, etag) => {
                Err(GatewayError::PreconditionFailed)
            }
            _ => Ok(()),
        }
    }
}

/// Evaluates conditions against an object's ETag and modification time
/// (milliseconds), in RFC 9110's order: `If-Match`, else
/// `If-Unmodified-Since` (412 when they fail); then `If-None-Match`, else
/// `If-Modified-Since` (304 when they fail). HTTP dates have whole
/// seconds, so the time is compared in seconds.
pub fn evaluate(c: &Conditions, etag: &str, last_modified_ms: u64) -> Condition {
    let modified = i64::try_from(last_modified_ms / 1000).unwrap_or(i64::MAX);
    if let Some(m) = &c.if_match {
        if !etag_matches(m, etag) {
            return Condition::PreconditionFailed;
        }
    } else if let Some(since) = c.if_unmodified_since
        && modified > since
    {
        return Condition::PreconditionFailed;
    }
    if let Some(m) = &c.if_none_match {
        if etag_matches(m, etag) {
            return Condition::NotModified;
        }
    } else if let Some(since) = c.if_modified_since
        && modified <= since
    {
        return Condition::NotModified;
    }
    Condition::Proceed
}

/// Lower-case hex MD5 of `data`.
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// The ETag of a multipart object: MD5 of the parts' binary MD5s, then
/// `-` and the part count. `part_etags` are the parts' hex MD5s (quotes
/// allowed).
pub fn multipart_etag(part_etags: &[&str]) -> Result<String, GatewayError> {
    let mut h = Md5::new();
    for e in part_etags {
        let raw = hex::decode(e.trim_matches('"'))
            .ok()
            .filter(|r| r.len() == 16)
            .ok_or_else(|| GatewayError::InvalidPart(format!("{e:?} is not a part ETag")))?;
        h.update(&raw);
    }
    Ok(format!(
        "{}-{}",
        hex::encode(h.finalize()),
        part_etags.len()
    ))
}

/// The Content-MD5 header's 16 bytes (base64), or `InvalidDigest`.
pub fn parse_content_md5(header: &str) -> Result<[u8; 16], GatewayError> {
    decode_base64(header.trim())
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .ok_or_else(|| GatewayError::InvalidDigest(header.into()))
}

/// Standard base64 with padding (the only form Content-MD5 uses).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// Tags on one object, at most.
pub const MAX_TAGS: usize = 10;
/// A tag key's length, in characters.
pub const MAX_TAG_KEY: usize = 128;
/// A tag value's length, in characters.
pub const MAX_TAG_VALUE: usize = 256;

/// Tags on one bucket, at most.
pub const MAX_BUCKET_TAGS: usize = 50;

/// Checks an object's tag set as S3 does: at most [`MAX_TAGS`], keys of 1
/// to [`MAX_TAG_KEY`] characters and values of up to [`MAX_TAG_VALUE`],
/// no key twice, none in the reserved `aws:` space.
pub fn check_tags(tags: Vec<(String, String)>) -> Result<Vec<(String, String)>, GatewayError> {
    check_tag_set(tags, MAX_TAGS, "an object")
}

/// Checks a bucket's tag set: as [`check_tags`], with at most
/// [`MAX_BUCKET_TAGS`].
pub fn check_bucket_tags(
    tags: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, GatewayError> {
    check_tag_set(tags, MAX_BUCKET_TAGS, "a bucket")
}

fn check_tag_set(
    tags: Vec<(String, String)>,
    max: usize,
    what: &str,
) -> Result<Vec<(String, String)>, GatewayError> {
    if tags.len() > max {
        return Err(GatewayError::InvalidTag(format!(
            "{what} can have at most {max} tags, not {}",
            tags.len()
        )));
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        let bad = |why: String| Err(GatewayError::InvalidTag(why));
        let len = k.chars().count();
        if len == 0 || len > MAX_TAG_KEY {
            return bad(format!(
                "a tag key must be 1 to {MAX_TAG_KEY} characters, not {len}"
            ));
        }
        if v.chars().count() > MAX_TAG_VALUE {
            return bad(format!(
                "the value of tag {k:?} is longer than {MAX_TAG_VALUE} characters"
            ));
        }
        if k.starts_with("aws:") {
            return bad(format!("tag key {k:?} is in the reserved aws: prefix"));
        }
        if tags[..i].iter().any(|(other, _)| other == k) {
            return bad(format!("tag key {k:?} appears twice"));
        }
    }
    Ok(tags)
}

/// Parses and checks an `x-amz-tagging` header: URL-encoded query
/// parameters (`k1=v1&k2=v2`, `+` for a space).
pub fn parse_tagging(header: &str) -> Result<Vec<(String, String)>, GatewayError> {
    let mut tags = vec![];
    for pair in header.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| {
                GatewayError::InvalidTag(format!(
                    "the x-amz-tagging header has a bad escape in {pair:?}"
                ))
            })
        };
        tags.push((decode(k)?, decode(v)?));
    }
    check_tags(tags)
}

/// Form-urlencoded text to a string; `None` on a bad `%` escape or bytes
/// that are not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::dto::ETag;

    #[test]
    fn bucket_names_follow_s3() {
        for ok in ["abc", "my-bucket.2", "a".repeat(63).as_str(), "0ab"] {
            assert!(validate_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Upper",
            "-abc",
            "abc-",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "abc-s3alias",
            "under_score",
            "",
        ] {
            assert!(
                matches!(
                    validate_bucket_name(bad),
                    Err(GatewayError::InvalidBucketName(..))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_are_at_most_1024_bytes() {
        assert!(validate_key(&"k".repeat(1024)).is_ok());
        assert!(matches!(
            validate_key(&"k".repeat(1025)),
            Err(GatewayError::KeyTooLong(1025))
        ));
        assert!(validate_key("").is_err());
    }

    fn range(s: &str) -> Range {
        Range::parse(s).unwrap()
    }

    #[test]
    fn ranges_resolve_like_s3() {
        assert_eq!(resolve_range(&range("bytes=0-9"), 100).unwrap(), (0, 10));
        assert_eq!(
            resolve_range(&range("bytes=90-200"), 100).unwrap(),
            (90, 100)
        );
        assert_eq!(resolve_range(&range("bytes=10-"), 100).unwrap(), (10, 100));
        assert_eq!(resolve_range(&range("bytes=-10"), 100).unwrap(), (90, 100));
        assert_eq!(resolve_range(&range("bytes=-500"), 100).unwrap(), (0, 100));
        assert_eq!(
            resolve_range(&range("bytes=99-99"), 100).unwrap(),
            (99, 100)
        );
        for bad in ["bytes=100-", "bytes=100-200", "bytes=-0"] {
            assert!(
                matches!(
                    resolve_range(&range(bad), 100),
                    Err(GatewayError::InvalidRange { size: 100 })
                ),
                "{bad}"
            );
        }
        assert!(resolve_range(&range("bytes=0-"), 0).is_err());
    }

    fn tag(s: &str) -> ETagCondition {
        ETagCondition::ETag(ETag::Strong(s.into()))
    }

    #[test]
    fn conditional_writes_create_only_or_replace_only_a_known_etag() {
        let w = |m: Option<ETagCondition>, n: Option<ETagCondition>| WriteConditions {
            if_match: m,
            if_none_match: n,
        };
        let code = |r: Result<(), GatewayError>| match r {
            Ok(()) => "ok",
            Err(GatewayError::PreconditionFailed) => "412",
            Err(GatewayError::NoSuchKey(_)) => "404",
            Err(GatewayError::NotImplemented(_)) => "501",
            Err(_) => "other",
        };
        assert!(w(None, None).is_empty());
        assert_eq!(code(w(None, None).check("k", Some("abc"))), "ok");
        // Create only.
        let create = w(None, Some(ETagCondition::Any));
        assert!(!create.is_empty());
        assert_eq!(code(create.check("k", None)), "ok");
        assert_eq!(code(create.check("k", Some("abc"))), "412");
        assert_eq!(code(w(None, Some(tag("abc"))).check("k", None)), "501");
        // Replace only what was read.
        let replace = w(Some(tag("abc")), None);
        assert_eq!(code(replace.check("k", Some("abc"))), "ok");
        assert_eq!(code(replace.check("k", Some("\"abc\""))), "ok");
        assert_eq!(code(replace.check("k", Some("zzz"))), "412");
        assert_eq!(code(replace.check("k", None)), "404");
        let any = w(Some(ETagCondition::Any), None);
        assert_eq!(code(any.check("k", Some("zzz"))), "ok");
        assert_eq!(code(any.check("k", None)), "404");
    }

    #[test]
    fn conditionals_follow_rfc_9110() {
        let (etag, at) = ("abc", 10_000u64); // modified at second 10
        let c = |f: fn(&mut Conditions)| {
            let mut c = Conditions::default();
            f(&mut c);
            evaluate(&c, etag, at)
        };
        assert_eq!(c(|_| {}), Condition::Proceed);
        assert_eq!(c(|c| c.if_match = Some(tag("abc"))), Condition::Proceed);
        assert_eq!(
            c(|c| c.if_match = Some(ETagCondition::Any)),
            Condition::Proceed
        );
        assert_eq!(
            c(|c| c.if_match = Some(tag("zzz"))),
            Condition::PreconditionFailed
        );
        assert_eq!(
            c(|c| c.if_none_match = Some(tag("abc"))),
            Condition::NotModified
        );
        assert_eq!(
            c(|c| c.if_none_match = Some(tag("zzz"))),
            Condition::Proceed
        );
        assert_eq!(
            c(|c| c.if_modified_since = Some(10)),
            Condition::NotModified
        );
        assert_eq!(c(|c| c.if_modified_since = Some(9)), Condition::Proceed);
        assert_eq!(
            c(|c| c.if_unmodified_since = Some(9)),
            Condition::PreconditionFailed
        );
        assert_eq!(c(|c| c.if_unmodified_since = Some(10)), Condition::Proceed);
        // If-Match wins over If-Unmodified-Since; If-None-Match over If-Modified-Since.
        assert_eq!(
            c(|c| {
                c.if_match = Some(tag("abc"));
                c.if_unmodified_since = Some(1);
            }),
            Condition::Proceed
        );
        assert_eq!(
            c(|c| {
                c.if_none_match = Some(tag("zzz"));
                c.if_modified_since = Some(99);
            }),
            Condition::Proceed
        );
    }

    #[test]
    fn multipart_etag_is_md5_of_part_md5s() {
        let a = md5_hex(b"hello ");
        let b = md5_hex(b"world");
        let mut raw = hex::decode(&a).unwrap();
        raw.extend(hex::decode(&b).unwrap());
        let expected = format!("{}-2", md5_hex(&raw));
        assert_eq!(
            multipart_etag(&[&a, &format!("\"{b}\"")]).unwrap(),
            expected
        );
        assert!(multipart_etag(&["nothex"]).is_err());
        // A known value: one part of "" (d41d8cd98f00b204e9800998ecf8427e).
        assert_eq!(
            multipart_etag(&["d41d8cd98f00b204e9800998ecf8427e"]).unwrap(),
            "59adb24ef3cdbe0297f05b395827453f-1"
        );
    }

    #[test]
    fn content_md5_is_base64_of_16_bytes() {
        // md5("") in base64.
        let got = parse_content_md5("1B2M2Y8AsgTpgAmY7PhCfg==").unwrap();
        assert_eq!(hex::encode(got), "d41d8cd98f00b204e9800998ecf8427e");
        assert!(matches!(
            parse_content_md5("abc"),
            Err(GatewayError::InvalidDigest(_))
        ));
        assert!(parse_content_md5("AAAA").is_err());
    }

    #[test]
    fn tag_sets_follow_s3() {
        let t = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            parse_tagging("project=cairn&team=storage+core&empty=&%C3%A9t%C3%A9=%3D").unwrap(),
            vec![
                t("project", "cairn"),
                t("team", "storage core"),
                t("empty", ""),
                t("été", "=")
            ]
        );
        assert_eq!(parse_tagging("").unwrap(), vec![]);
        for bad in ["a=1&a=2", "aws:x=1", "=v", "k=%zz", "k=%C3", "k=%4"] {
            assert!(
                matches!(parse_tagging(bad), Err(GatewayError::InvalidTag(_))),
                "{bad}"
            );
        }
        let eleven: Vec<_> = (0..11).map(|i| t(&format!("k{i}"), "v")).collect();
        assert!(check_tags(eleven[..10].to_vec()).is_ok());
        assert!(check_tags(eleven).is_err());
        assert!(check_tags(vec![t(&"k".repeat(128), &"é".repeat(256))]).is_ok());
        assert!(check_tags(vec![t(&"k".repeat(129), "")]).is_err());
        assert!(check_tags(vec![t("k", &"v".repeat(257))]).is_err());
    }
}
