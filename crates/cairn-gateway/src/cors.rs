//! CORS: a bucket's rules (PutBucketCors) and how a browser's request is
//! matched against them, as S3 does. Pure: the server answers preflights
//! (`OPTIONS`, which carry no signature) and adds the headers to answers
//! of signed requests with it.
//!
//! A request matches the first rule that allows its origin (an exact
//! string or a pattern with one `*`), its method, and for a preflight every
//! header it asks for (case-insensitive, patterns allowed). Without a
//! match a preflight is refused (403) and an answer gets no CORS headers,
//! so the browser withholds it from the page.

use serde::{Deserialize, Serialize};

use crate::error::GatewayError;

/// Rules in one bucket's configuration, at most (S3's limit).
pub const MAX_RULES: usize = 100;
/// The methods a rule may allow.
pub const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// One CORS rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The rule's `ID`, if given.
    pub id: Option<String>,
    /// Origins allowed: exact, `*`, or with one `*` (`https://*.example.com`).
    pub origins: Vec<String>,
    /// Methods allowed, from [`METHODS`].
    pub methods: Vec<String>,
    /// Request headers a preflight may ask for (patterns as origins).
    pub headers: Vec<String>,
    /// Response headers the page may read.
    pub expose: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    pub max_age_secs: Option<i32>,
}

/// Checks a configuration as S3 does: 1 to [`MAX_RULES`] rules, each with
/// an origin and a method, methods from [`METHODS`], at most one `*` in an
/// origin or header.
pub fn check(rules: &[Rule]) -> Result<(), GatewayError> {
    let bad = |why: String| Err(GatewayError::MalformedXml(why));
    if rules.is_empty() || rules.len() > MAX_RULES {
        return bad(format!(
            "a CORS configuration has 1 to {MAX_RULES} rules, not {}",
            rules.len()
        ));
    }
    for r in rules {
        if r.origins.is_empty() || r.methods.is_empty() {
            return bad("every CORS rule names at least one origin and one method".into());
        }
        if let Some(m) = r.methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(GatewayError::InvalidArgument(format!(
                "CORS method {m:?} is not one of {}",
                METHODS.join(", ")
            )));
        }
        if let Some(p) = r
            .origins
            .iter()
            .chain(&r.headers)
            .find(|p| p.matches('*').count() > 1)
        {
            return Err(GatewayError::InvalidArgument(format!(
                "{p:?} has more than one wildcard"
            )));
        }
    }
    Ok(())
}

/// Whether `value` fits `pattern`, which has at most one `*`.
fn fits(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let (p, v) = if ignore_case {
        (pattern.to_ascii_lowercase(), value.to_ascii_lowercase())
    } else {
        (pattern.to_string(), value.to_string())
    };
    match p.split_once('*') {
        None => p == v,
        Some((head, tail)) => {
            v.len() >= head.len() + tail.len() && v.starts_with(head) && v.ends_with(tail)
        }
    }
}

/// The first rule allowing `origin` to send `method` with `headers`
/// (the headers a preflight asks for; none for an actual request).
pub fn find<'a>(
    rules: &'a [Rule],
    origin: &str,
    method: &str,
    headers: &[&str],
) -> Option<&'a Rule> {
    rules.iter().find(|r| {
        r.origins.iter().any(|o| fits(o, origin, false))
            && r.methods.iter().any(|m| m == method)
            && headers
                .iter()
                .all(|h| r.headers.iter().any(|p| fits(p, h, true)))
    })
}

/// The value of `Access-Control-Allow-Origin` for `origin` under `rule`.
fn allow_origin(rule: &Rule, origin: &str) -> String {
    if rule.origins.iter().any(|o| o == "*") {
        "*".into()
    } else {
        origin.into()
    }
}

/// The headers of a preflight's answer under `rule`.
pub fn preflight_headers(
    rule: &Rule,
    origin: &str,
    headers: &[&str],
) -> Vec<(&'static str, String)> {
    let allow = allow_origin(rule, origin);
    let mut out = vec![
        ("access-control-allow-methods", rule.methods.join(", ")),
        (
            "vary",
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".into(),
        ),
    ];
    if allow != "*" {
        out.push(("access-control-allow-credentials", "true".into()));
    }
    out.push(("access-control-allow-origin", allow));
    if !headers.is_empty() {
        out.push(("access-control-allow-headers", headers.join(", ")));
    }
    if !rule.expose.is_empty() {
        out.push(("access-control-expose-headers", rule.expose.join(", ")));
    }
    if let Some(age) = rule.max_age_secs {
        out.push(("access-control-max-age", age.to_string()));
    }
    out
}

/// The headers added to the answer of an actual request under `rule`.
pub fn response_headers(rule: &Rule, origin: &str) -> Vec<(&'static str, String)> {
    let allow = allow_origin(rule, origin);
    let mut out = vec![("vary", "Origin".to_string())];
    if allow != "*" {
        out.push(("access-control-allow-credentials", "true".into()));
    }
    out.push(("access-control-allow-origin", allow));
    out.push(("access-control-allow-methods", rule.methods.join(", ")));
    if !rule.expose.is_empty() {
        out.push(("access-control-expose-headers", rule.expose.join(", ")));
    }
    out
}

/// The bucket a path-style request names (`/bucket/key…`), if any.
pub fn bucket_of(path: &str) -> Option<&str> {
    let b = path.trim_start_matches('/').split('/').next()?;
    (!b.is_empty()).then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> Rule {
        Rule {
            id: None,
            origins: origins.iter().map(|s| s.to_string()).collect(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            headers: headers.iter().map(|s| s.to_string()).collect(),
            expose: vec!["ETag".into()],
            max_age_secs: Some(600),
        }
    }

    #[test]
    fn the_first_rule_allowing_origin_method_and_headers_matches() {
        let rules = vec![
            rule(&["https://app.example.com"], &["PUT", "POST"], &["*"]),
            rule(&["https://*.example.com"], &["GET"], &["x-amz-*", "Range"]),
            rule(&["*"], &["HEAD"], &[]),
        ];
        let f = |o, m, h: &[&str]| find(&rules, o, m, h).map(|r| r.methods[0].clone());
        assert_eq!(
            f("https://app.example.com", "PUT", &["content-type"]),
            Some("PUT".into())
        );
        assert_eq!(
            f("https://cdn.example.com", "GET", &["X-Amz-Date", "range"]),
            Some("GET".into())
        );
        // A header no pattern allows, a method no rule allows, a near-miss origin.
        assert_eq!(
            f("https://cdn.example.com", "GET", &["authorization"]),
            None
        );
        assert_eq!(f("https://cdn.example.com", "DELETE", &[]), None);
        assert_eq!(f("https://example.com.evil.org", "GET", &[]), None);
        assert_eq!(f("http://cdn.example.com", "GET", &[]), None);
        // Origins are exact: case matters, as in S3.
        assert_eq!(f("https://APP.example.com", "PUT", &[]), None);
        assert_eq!(f("https://anything.org", "HEAD", &[]), Some("HEAD".into()));
    }

    #[test]
    fn answers_echo_the_origin_unless_any_is_allowed() {
        let r = rule(&["https://app.example.com"], &["GET", "PUT"], &["*"]);
        let h = preflight_headers(
            &r,
            "https://app.example.com",
            &["content-type", "x-amz-date"],
        );
        let get = |name: &str| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(
            get("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(get("access-control-allow-credentials"), Some("true"));
        assert_eq!(get("access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(
            get("access-control-allow-headers"),
            Some("content-type, x-amz-date")
        );
        assert_eq!(get("access-control-max-age"), Some("600"));
        let any = rule(&["*"], &["GET"], &[]);
        let h = response_headers(&any, "https://x.org");
        assert!(h.contains(&("access-control-allow-origin", "*".into())));
        assert!(h.contains(&("access-control-expose-headers", "ETag".into())));
        assert!(
            !h.iter()
                .any(|(n, _)| *n == "access-control-allow-credentials")
        );
    }

    #[test]
    fn configurations_are_checked_as_s3_does() {
        assert!(check(&[]).is_err());
        assert!(check(&[rule(&["*"], &["GET"], &[])]).is_ok());
        assert!(check(&[rule(&["*"], &["PATCH"], &[])]).is_err());
        assert!(check(&[rule(&[], &["GET"], &[])]).is_err());
        assert!(check(&[rule(&["https://*.*.com"], &["GET"], &[])]).is_err());
        let many: Vec<Rule> = (0..=MAX_RULES)
            .map(|_| rule(&["*"], &["GET"], &[]))
            .collect();
        assert!(check(&many).is_err());
        assert_eq!(bucket_of("/photos/a/b.jpg"), Some("photos"));
        assert_eq!(bucket_of("/"), None);
    }
}
