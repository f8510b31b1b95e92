//! Bucket policies (PutBucketPolicy): parsing the JSON S3 takes and
//! deciding a request with it, as pure functions.
//!
//! The account's own keys may do anything unless a `Deny` statement names
//! them (or everyone); an anonymous request may do only what an `Allow`
//! statement for everyone grants, and never what a `Deny` takes away: an
//! explicit deny wins, as in IAM. Statements name principals (`*`, or the
//! gateway's access key ids), actions (`s3:GetObject`, with `*` and `?`
//! wildcards) and resources (`arn:aws:s3:::bucket` and
//! `arn:aws:s3:::bucket/key-pattern`) of the bucket itself. `Condition`,
//! `NotAction`, `NotPrincipal` and `NotResource` are refused with
//! `NotImplemented`: a policy the gateway would apply only in part is
//! never stored.
//!
//! A request that touches many keys at once (DeleteObjects) is decided as
//! one on every key of the bucket: a deny of any of its keys refuses the
//! batch, and an anonymous batch needs an allow for all of them.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::GatewayError;

/// Who may a statement apply to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Principals {
    /// Everyone, signed or not (`"*"`).
    Anyone,
    /// These access key ids of the gateway.
    Keys(Vec<String>),
}

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// `Effect` is `Allow` (else `Deny`).
    pub allow: bool,
    /// `Principal`.
    pub principals: Principals,
    /// `Action` patterns, such as `s3:GetObject` or `s3:Get*`.
    pub actions: Vec<String>,
    /// `Resource` patterns (ARNs).
    pub resources: Vec<String>,
}

/// A bucket's policy, as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The statements, in order.
    pub statements: Vec<Statement>,
}

/// Who sent a request.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    /// No signature.
    Anonymous,
    /// Signed with this access key id of the account.
    Key(&'a str),
}

/// The largest policy text accepted (S3's limit).
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

/// One or many strings (`"x"` or `["x", "y"]`).
fn strings(v: &Json, what: &str) -> Result<Vec<String>, GatewayError> {
    let bad =
        || GatewayError::MalformedPolicy(format!("{what} must be a string or a list of strings"));
    match v {
        Json::String(s) => Ok(vec![s.clone()]),
        Json::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

/// Parses and checks the policy `text` for `bucket`.
pub fn parse(text: &str, bucket: &str) -> Result<Policy, GatewayError> {
    let bad = |why: String| GatewayError::MalformedPolicy(why);
    if text.len() > MAX_POLICY_BYTES {
        return Err(bad(format!(
            "a bucket policy is at most {MAX_POLICY_BYTES} bytes"
        )));
    }
    let doc: Json = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let version = doc.get("Version").and_then(Json::as_str);
    if !matches!(version, Some("2012-10-17" | "2008-10-17")) {
        return Err(bad(
            "Version must be \"2012-10-17\" (or \"2008-10-17\")".into()
        ));
    }
    let list = match doc.get("Statement") {
        Some(Json::Array(a)) => a.clone(),
        Some(s @ Json::Object(_)) => vec![s.clone()],
        _ => return Err(bad("Statement must be a statement or a list of them".into())),
    };
    if list.is_empty() {
        return Err(bad("a policy has at least one statement".into()));
    }
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let mut statements = Vec::with_capacity(list.len());
    for s in &list {
        let Json::Object(m) = s else {
            return Err(bad("each statement is an object".into()));
        };
        for key in m.keys() {
            match key.as_str() {
                "Sid" | "Effect" | "Principal" | "Action" | "Resource" => {}
                "Condition" | "NotAction" | "NotPrincipal" | "NotResource" => {
                    return Err(GatewayError::NotImplemented(format!(
                        "bucket policy statements with {key} are not supported"
                    )));
                }
                other => return Err(bad(format!("unknown statement element {other:?}"))),
            }
        }
        let allow = match m.get("Effect").and_then(Json::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            _ => return Err(bad("Effect must be \"Allow\" or \"Deny\"".into())),
        };
        let principals = match m.get("Principal") {
            Some(Json::String(s)) if s == "*" => Principals::Anyone,
            Some(Json::Object(p)) => match (p.len(), p.get("AWS")) {
                (1, Some(aws)) => {
                    let ids = strings(aws, "Principal.AWS")?;
                    if ids.iter().any(|i| i == "*") {
                        Principals::Anyone
                    } else {
                        // An ARN's last part, or a bare id, names an access key.
                        Principals::Keys(
                            ids.iter()
                                .map(|i| i.rsplit(['/', ':']).next().unwrap_or(i).to_string())
                                .collect(),
                        )
                    }
                }
                _ => {
                    return Err(GatewayError::NotImplemented(
                        "only \"*\" and {\"AWS\": …} principals are supported".into(),
                    ));
                }
            },
            _ => return Err(bad("Principal must be \"*\" or {\"AWS\": …}".into())),
        };
        let actions = strings(m.get("Action").unwrap_or(&Json::Null), "Action")?;
        if let Some(a) = actions
            .iter()
            .find(|a| !(a.starts_with("s3:") || *a == "*"))
        {
            return Err(bad(format!("action {a:?} is not an s3: action")));
        }
        let resources = strings(m.get("Resource").unwrap_or(&Json::Null), "Resource")?;
        for r in &resources {
            let own = r == &bucket_arn
                || r.strip_prefix(&bucket_arn)
                    .is_some_and(|rest| rest.starts_with('/'));
            if !own {
                return Err(bad(format!(
                    "resource {r:?} is not this bucket ({bucket_arn}) or its objects"
                )));
            }
        }
        if actions.is_empty() || resources.is_empty() {
            return Err(bad("every statement names an action and a resource".into()));
        }
        statements.push(Statement {
            allow,
            principals,
            actions,
            resources,
        });
    }
    Ok(Policy { statements })
}

/// Whether `s` fits `pattern` (`*` any run, `?` one character).
fn glob(pattern: &str, s: &str, ignore_case: bool) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = if ignore_case {
        (
            pattern.to_ascii_lowercase().chars().collect(),
            s.to_ascii_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), s.chars().collect())
    };
    // Iterative matching with one backtrack point: linear in practice.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < s.len() {
        if i < p.len() && (p[i] == '?' || p[i] == s[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(st) = star {
            i = st + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// What a request is, for a policy: the action S3 would name and the
/// resource (an object key, or none for the bucket itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The bucket (`arn:aws:s3:::bucket`).
    Bucket,
    /// One object.
    Object(&'a str),
    /// Objects named in the request body (DeleteObjects): any key.
    AnyObject,
}

/// The policy action of an S3 operation, and whether it names an object.
pub fn action_of(op: &str) -> (String, bool) {
    let object = |a: &str| (format!("s3:{a}"), true);
    match op {
        "GetObject" | "HeadObject" => object("GetObject"),
        "PutObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => object("PutObject"),
        "DeleteObject" | "DeleteObjects" => object("DeleteObject"),
        "AbortMultipartUpload" => object("AbortMultipartUpload"),
        "ListParts" => object("ListMultipartUploadParts"),
        "GetObjectTagging"
        | "PutObjectTagging"
        | "DeleteObjectTagging"
        | "GetObjectAcl"
        | "PutObjectAcl" => object(op),
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => ("s3:ListBucket".into(), false),
        "ListMultipartUploads" => ("s3:ListBucketMultipartUploads".into(), false),
        "ListBuckets" => ("s3:ListAllMyBuckets".into(), false),
        "DeleteBucketTagging" => ("s3:PutBucketTagging".into(), false),
        "DeleteBucketCors" => ("s3:PutBucketCORS".into(), false),
        "GetBucketCors" => ("s3:GetBucketCORS".into(), false),
        "PutBucketCors" => ("s3:PutBucketCORS".into(), false),
        "GetBucketLifecycleConfiguration" => ("s3:GetLifecycleConfiguration".into(), false),
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => {
            ("s3:PutLifecycleConfiguration".into(), false)
        }
        other => (format!("s3:{other}"), false),
    }
}

/// The bucket and key an `x-amz-copy-source` header names
/// (`bucket/key` or `/bucket/key`, percent-encoded, perhaps with
/// `?versionId=`).
pub fn copy_source(header: &str) -> Option<(String, String)> {
    let path = header.split('?').next()?;
    let decoded = crate::rules::percent_decode(path.trim_start_matches('/'))?;
    let (bucket, key) = decoded.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

/// The policy's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A `Deny` statement applies.
    Deny,
    /// An `Allow` statement applies and no `Deny`.
    Allow,
    /// No statement applies.
    None,
}

/// Decides `action` on `target` in `bucket` by `who` under `policy`.
pub fn decide(
    policy: &Policy,
    bucket: &str,
    who: Who<'_>,
    action: &str,
    target: Target<'_>,
) -> Decision {
    let arn = format!("arn:aws:s3:::{bucket}");
    let mut allowed = false;
    for s in &policy.statements {
        let principal = match (&s.principals, who) {
            (Principals::Anyone, _) => true,
            (Principals::Keys(ids), Who::Key(k)) => ids.iter().any(|i| i == k),
            (Principals::Keys(_), Who::Anonymous) => false,
        };
        if !principal || !s.actions.iter().any(|a| glob(a, action, true)) {
            continue;
        }
        let resource = s.resources.iter().any(|r| match target {
            Target::Bucket => glob(r, &arn, false),
            Target::Object(key) => glob(r, &format!("{arn}/{key}"), false),
            // A deny of any key covers the batch; an allow must cover all.
            Target::AnyObject if !s.allow => r.starts_with(&format!("{arn}/")),
            Target::AnyObject => r == &format!("{arn}/*"),
        });
        if !resource {
            continue;
        }
        if !s.allow {
            return Decision::Deny;
        }
        allowed = true;
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::None
    }
}

/// Whether the policy grants anything to everyone (GetBucketPolicyStatus's
/// `IsPublic`).
pub fn is_public(policy: &Policy) -> bool {
    policy
        .statements
        .iter()
        .any(|s| s.allow && s.principals == Principals::Anyone)
}

/// Whether `who` may do `action` on `target`: the account's keys unless
/// denied, anonymous requests only if allowed.
pub fn permits(
    policy: Option<&Policy>,
    bucket: &str,
    who: Who<'_>,
    action: &str,
    target: Target<'_>,
) -> bool {
    let d = policy.map_or(Decision::None, |p| decide(p, bucket, who, action, target));
    match who {
        Who::Key(_) => d != Decision::Deny,
        Who::Anonymous => d == Decision::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC_READ: &str = r#"{
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "read", "Effect": "Allow", "Principal": "*",
             "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::site/public/*"},
            {"Effect": "Allow", "Principal": {"AWS": "*"},
             "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::site"},
            {"Effect": "Deny", "Principal": {"AWS": ["arn:aws:iam::000:user/CKLIMITED"]},
             "Action": "s3:Delete*", "Resource": "arn:aws:s3:::site/*"},
            {"Effect": "Deny", "Principal": "*",
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/public/secret?.txt"}
        ]
    }"#;

    #[test]
    fn anonymous_requests_get_only_what_an_allow_grants_and_a_deny_wins() {
        let p = parse(PUBLIC_READ, "site").unwrap();
        let anon = |action: &str, target| permits(Some(&p), "site", Who::Anonymous, action, target);
        assert!(anon("s3:GetObject", Target::Object("public/index.html")));
        assert!(!anon("s3:GetObject", Target::Object("private/x")));
        assert!(
            !anon("s3:GetObject", Target::Object("public/secret1.txt")),
            "deny wins"
        );
        assert!(
            anon("s3:GetObject", Target::Object("public/secret10.txt")),
            "? is one character"
        );
        assert!(anon("s3:ListBucket", Target::Bucket));
        assert!(!anon("s3:PutObject", Target::Object("public/x")));
        assert!(!anon("s3:DeleteObject", Target::AnyObject));
        assert!(!permits(
            None,
            "site",
            Who::Anonymous,
            "s3:GetObject",
            Target::Object("a")
        ));
        assert!(is_public(&p));
        let private = Policy {
            statements: p.statements.iter().filter(|s| !s.allow).cloned().collect(),
        };
        assert!(!is_public(&private), "denies make nothing public");
    }

    #[test]
    fn account_keys_may_do_anything_not_denied_to_them() {
        let p = parse(PUBLIC_READ, "site").unwrap();
        let key = |k, action: &str, target| permits(Some(&p), "site", Who::Key(k), action, target);
        assert!(key("CKOTHER", "s3:DeleteObject", Target::Object("a")));
        assert!(!key("CKLIMITED", "s3:DeleteObject", Target::Object("a")));
        assert!(
            !key("CKLIMITED", "s3:DeleteObject", Target::AnyObject),
            "a batch is refused whole"
        );
        assert!(key("CKLIMITED", "s3:PutObject", Target::Object("a")));
        assert!(!key(
            "CKOTHER",
            "s3:GetObject",
            Target::Object("public/secret2.txt")
        ));
        assert!(permits(
            None,
            "site",
            Who::Key("CK"),
            "s3:DeleteObject",
            Target::Object("a")
        ));
    }

    #[test]
    fn policies_the_gateway_cannot_apply_whole_are_refused() {
        let one = |stmt: &str| format!(r#"{{"Version": "2012-10-17", "Statement": {stmt}}}"#);
        let ok = r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}"#;
        assert!(parse(&one(ok), "b").is_ok());
        let code = |text: &str| match parse(text, "b") {
            Err(GatewayError::NotImplemented(_)) => "NotImplemented",
            Err(GatewayError::MalformedPolicy(_)) => "MalformedPolicy",
            Err(_) => "other",
            Ok(_) => "ok",
        };
        let cond = r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}"#;
        assert_eq!(code(&one(cond)), "NotImplemented");
        let other_bucket = r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bb/*"}"#;
        assert_eq!(code(&one(other_bucket)), "MalformedPolicy");
        assert_eq!(code("not json"), "MalformedPolicy");
        assert_eq!(
            code(r#"{"Version": "2020-01-01", "Statement": []}"#),
            "MalformedPolicy"
        );
        let maybe = r#"{"Effect": "Maybe", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b"}"#;
        assert_eq!(code(&one(maybe)), "MalformedPolicy");
        let federated = r#"{"Effect": "Allow", "Principal": {"Federated": "x"}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b"}"#;
        assert_eq!(code(&one(federated)), "NotImplemented");
        assert_eq!(code(&"x".repeat(MAX_POLICY_BYTES + 1)), "MalformedPolicy");
    }

    #[test]
    fn globs_match_as_iam_does() {
        assert!(glob("s3:Get*", "s3:GetObject", true));
        assert!(glob("S3:getobject", "s3:GetObject", true));
        assert!(!glob("s3:Put*", "s3:GetObject", true));
        assert!(glob("a*b*c", "aXXbYYc", false));
        assert!(!glob("a*b*c", "aXXbYY", false));
        assert!(glob("*", "", false));
        assert!(!glob("a?", "a", false));
        assert_eq!(action_of("HeadObject"), ("s3:GetObject".to_string(), true));
        assert_eq!(
            action_of("ListObjectsV2"),
            ("s3:ListBucket".to_string(), false)
        );
        assert_eq!(
            copy_source("/src/a%20b/c.txt?versionId=null"),
            Some(("src".to_string(), "a b/c.txt".to_string()))
        );
        assert_eq!(copy_source("nokey"), None);
    }
}
