//! Static website hosting (PutBucketWebsite): a bucket with a website
//! configuration is served to browsers at `http://BUCKET.WEB-DOMAIN/`
//! (`--web-domain`; S3's website endpoints are per-bucket host names too,
//! and `*.localhost` reaches the loopback in browsers), on the gateway's
//! own port, without signatures.
//!
//! As on S3's website endpoints: only `GET` and `HEAD` (with conditional
//! requests and single ranges, as browsers and media players send them);
//! a path ending in
//! `/` (or the root) serves its index document; a path whose object is
//! missing but whose `path/` index exists is redirected there; a missing
//! object answers 404 with the error document if there is one; routing
//! rules redirect by key prefix before the lookup or by the error code
//! after it; `RedirectAllRequestsTo` sends everything to another host. And
//! as there, the objects must be readable by everyone: each read is
//! checked as an unsigned `s3:GetObject` against the bucket policy
//! ([`crate::access`]), so a website bucket without a public-read policy
//! answers 403.
//!
//! The configuration is checked and decided by pure functions here; the
//! server calls [`respond`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::GatewayError;

/// Routing rules a configuration may have (S3's limit).
pub const MAX_RULES: usize = 50;

/// Where a redirect goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// Host name (default: the request's).
    pub host: Option<String>,
    /// `http` or `https` (default: `http`, what the gateway speaks).
    pub protocol: Option<String>,
    /// Status (default 301).
    pub code: Option<u16>,
    /// Replaces the prefix the rule matched.
    pub replace_prefix: Option<String>,
    /// Replaces the whole key.
    pub replace_key: Option<String>,
}

/// A routing rule: when it applies, and where it sends the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The key starts with this.
    pub key_prefix: Option<String>,
    /// The lookup answered this error status (4xx or 5xx).
    pub error_code: Option<u16>,
    /// Where to.
    pub redirect: Redirect,
}

/// A bucket's website configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    /// `IndexDocument.Suffix` (such as `index.html`).
    pub index: Option<String>,
    /// `ErrorDocument.Key`.
    pub error_key: Option<String>,
    /// `RedirectAllRequestsTo`: host and protocol.
    pub redirect_all: Option<(String, Option<String>)>,
    /// `RoutingRules`, in order.
    pub rules: Vec<Rule>,
}

/// Checks a configuration as S3 does.
pub fn check(site: &Site) -> Result<(), GatewayError> {
    let bad = |why: &str| Err(GatewayError::InvalidArgument(why.into()));
    if let Some((host, protocol)) = &site.redirect_all {
        if site.index.is_some() || site.error_key.is_some() || !site.rules.is_empty() {
            return bad("RedirectAllRequestsTo cannot be combined with other website settings");
        }
        if host.is_empty() {
            return bad("RedirectAllRequestsTo needs a HostName");
        }
        return check_protocol(protocol.as_deref());
    }
    match site.index.as_deref() {
        None => return bad("a website configuration needs an IndexDocument"),
        Some(s) if s.is_empty() || s.contains('/') => {
            return bad("the IndexDocument suffix must be non-empty and contain no slash");
        }
        Some(_) => {}
    }
    if site.error_key.as_deref() == Some("") {
        return bad("the ErrorDocument key must not be empty");
    }
    if site.rules.len() > MAX_RULES {
        return bad("a website configuration has at most 50 routing rules");
    }
    for r in &site.rules {
        if r.error_code.is_some_and(|c| !(400..600).contains(&c)) {
            return bad("HttpErrorCodeReturnedEquals must be a 4XX or 5XX status");
        }
        let d = &r.redirect;
        if d.replace_prefix.is_some() && d.replace_key.is_some() {
            return bad("a redirect has ReplaceKeyPrefixWith or ReplaceKeyWith, not both");
        }
        if d.code.is_some_and(|c| !(300..400).contains(&c)) {
            return bad("HttpRedirectCode must be a 3XX status");
        }
        if d.host.is_none()
            && d.protocol.is_none()
            && d.code.is_none()
            && d.replace_prefix.is_none()
            && d.replace_key.is_none()
        {
            return bad("a redirect needs at least one element");
        }
        check_protocol(d.protocol.as_deref())?;
    }
    Ok(())
}

fn check_protocol(p: Option<&str>) -> Result<(), GatewayError> {
    match p {
        None | Some("http" | "https") => Ok(()),
        Some(_) => Err(GatewayError::InvalidArgument(
            "Protocol must be http or https".into(),
        )),
    }
}

/// The bucket a website request is for: the host (port dropped) is
/// `BUCKET.DOMAIN`.
pub fn bucket_of_host<'a>(host: &'a str, domain: &str) -> Option<&'a str> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let bucket = host.strip_suffix(domain)?.strip_suffix('.')?;
    (!bucket.is_empty()).then_some(bucket)
}

/// What to do with a request before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Redirect: status and `Location`.
    Redirect(u16, String),
    /// Look up this key.
    Serve(String),
}

/// The object key a request path names (percent-decoded, without the
/// leading `/`), with the index document for a "directory".
fn key_of(site: &Site, key: &str) -> String {
    match &site.index {
        Some(index) if key.is_empty() || key.ends_with('/') => format!("{key}{index}"),
        _ => key.to_string(),
    }
}

fn location(rule: &Rule, key: &str, host: &str) -> (u16, String) {
    let d = &rule.redirect;
    let key = match (&d.replace_key, &d.replace_prefix, &rule.key_prefix) {
        (Some(k), _, _) => k.clone(),
        (None, Some(p), prefix) => {
            let rest = key
                .strip_prefix(prefix.as_deref().unwrap_or(""))
                .unwrap_or(key);
            format!("{p}{rest}")
        }
        (None, None, _) => key.to_string(),
    };
    let protocol = d.protocol.as_deref().unwrap_or("http");
    let host = d.host.as_deref().unwrap_or(host);
    (d.code.unwrap_or(301), format!("{protocol}://{host}/{key}"))
}

/// Decides a request for `key` (the decoded path without its leading
/// `/`) on `host`, before the lookup: redirect all, a prefix rule without
/// an error condition, or the key to serve.
pub fn plan(site: &Site, key: &str, host: &str) -> Plan {
    if let Some((to, protocol)) = &site.redirect_all {
        let protocol = protocol.as_deref().unwrap_or("http");
        return Plan::Redirect(301, format!("{protocol}://{to}/{key}"));
    }
    for rule in &site.rules {
        let prefix = rule.key_prefix.as_deref();
        if rule.error_code.is_none() && prefix.is_some_and(|p| key.starts_with(p)) {
            let (code, to) = location(rule, key, host);
            return Plan::Redirect(code, to);
        }
    }
    Plan::Serve(key_of(site, key))
}

/// After a lookup of `key` failed with `status`: the redirect of the first
/// rule for that status (and prefix, if it names one).
pub fn on_error(site: &Site, key: &str, status: u16, host: &str) -> Option<(u16, String)> {
    site.rules
        .iter()
        .find(|r| {
            r.error_code == Some(status)
                && r.key_prefix.as_deref().is_none_or(|p| key.starts_with(p))
        })
        .map(|r| location(r, key, host))
}

/// The response to a website request for `bucket` (see the module docs).
pub async fn respond(
    gateway: Arc<crate::s3::Gateway>,
    req: &hyper::Request<hyper::body::Incoming>,
    bucket: &str,
    client: crate::server::ClientAddr,
) -> hyper::Response<s3s::Body> {
    match serve(&gateway, req, bucket, client).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("website {bucket}: {e}");
            page(500, "Internal Server Error", &e.to_string())
        }
    }
}

/// A small HTML page, as S3's website endpoints answer errors.
fn page(status: u16, title: &str, message: &str) -> hyper::Response<s3s::Body> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<html>\n<head><title>{status} {title}</title></head>\n<body>\n<h1>{status} {title}</h1>\n<p>{}</p>\n</body>\n</html>\n",
        escape(message)
    );
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .body(s3s::Body::from(body))
        .unwrap_or_else(|_| hyper::Response::new(s3s::Body::empty()))
}

fn redirect(code: u16, to: &str) -> hyper::Response<s3s::Body> {
    hyper::Response::builder()
        .status(code)
        .header("location", to)
        .body(s3s::Body::empty())
        .unwrap_or_else(|_| hyper::Response::new(s3s::Body::empty()))
}

async fn serve(
    gateway: &crate::s3::Gateway,
    req: &hyper::Request<hyper::body::Incoming>,
    bucket: &str,
    client: crate::server::ClientAddr,
) -> Result<hyper::Response<s3s::Body>, GatewayError> {
    let head = req.method() == hyper::Method::HEAD;
    if !head && req.method() != hyper::Method::GET {
        return Ok(page(
            405,
            "Method Not Allowed",
            "a website answers GET and HEAD only",
        ));
    }
    let Some(site) = gateway.website(bucket).await? else {
        return Ok(page(
            404,
            "Not Found",
            &format!("bucket {bucket:?} has no website configuration"),
        ));
    };
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let Some(path) = crate::rules::percent_decode(req.uri().path()) else {
        return Ok(page(400, "Bad Request", "the path is not valid UTF-8"));
    };
    let path = path.trim_start_matches('/').to_string();
    let key = match plan(&site, &path, host) {
        Plan::Redirect(code, to) => return Ok(redirect(code, &to)),
        Plan::Serve(key) => key,
    };
    let policy = gateway.bucket_policy(bucket).await?;
    let cx = crate::request_context(req.headers(), req.uri(), Some(client), None, "GetObject");
    // Each object with its own tags, if the policy tests them.
    let readable = async |key: &str| -> Result<bool, GatewayError> {
        let mut cx = cx.clone();
        if let Some(p) = &policy {
            crate::add_existing_tags(gateway, p, &mut cx, bucket, key, None).await?;
        }
        Ok(crate::access::permits(
            policy.as_ref(),
            bucket,
            crate::access::Who::Anonymous,
            "s3:GetObject",
            crate::access::Target::Object(key),
            &cx,
        ))
    };
    if !readable(&key).await? {
        if let Some((code, to)) = on_error(&site, &path, 403, host) {
            return Ok(redirect(code, &to));
        }
        return Ok(page(
            403,
            "Forbidden",
            "the bucket policy does not let everyone read this object",
        ));
    }
    if let Some(r) = gateway
        .website_object(bucket, &key, head, req.headers())
        .await?
    {
        return Ok(r);
    }
    // `/dir` whose `dir/index.html` exists: send the browser to `/dir/`.
    if let Some(index) = &site.index
        && !key.is_empty()
        && !key.ends_with('/')
    {
        let dir_index = format!("{key}/{index}");
        if readable(&dir_index).await? && gateway.website_exists(bucket, &dir_index).await? {
            return Ok(redirect(302, &format!("/{path}/")));
        }
    }
    if let Some((code, to)) = on_error(&site, &path, 404, host) {
        return Ok(redirect(code, &to));
    }
    if let Some(error_key) = &site.error_key
        && readable(error_key).await?
        && let Some(mut r) = gateway
            .website_object(bucket, error_key, head, &hyper::HeaderMap::new())
            .await?
    {
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        return Ok(r);
    }
    Ok(page(404, "Not Found", &format!("no object {key:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site {
            index: Some("index.html".into()),
            error_key: Some("404.html".into()),
            redirect_all: None,
            rules: vec![
                Rule {
                    key_prefix: Some("docs/".into()),
                    error_code: None,
                    redirect: Redirect {
                        host: None,
                        protocol: None,
                        code: None,
                        replace_prefix: Some("documents/".into()),
                        replace_key: None,
                    },
                },
                Rule {
                    key_prefix: None,
                    error_code: Some(404),
                    redirect: Redirect {
                        host: Some("example.com".into()),
                        protocol: Some("https".into()),
                        code: Some(302),
                        replace_prefix: None,
                        replace_key: Some("missing.html".into()),
                    },
                },
            ],
        }
    }

    #[test]
    fn requests_map_to_keys_indexes_and_redirects() {
        let mut s = site();
        let host = "site.web.localhost:9000";
        assert_eq!(plan(&s, "", host), Plan::Serve("index.html".into()));
        assert_eq!(plan(&s, "a/b/", host), Plan::Serve("a/b/index.html".into()));
        assert_eq!(plan(&s, "a/b.css", host), Plan::Serve("a/b.css".into()));
        assert_eq!(
            plan(&s, "docs/x.html", host),
            Plan::Redirect(301, format!("http://{host}/documents/x.html"))
        );
        assert_eq!(
            on_error(&s, "gone", 404, host),
            Some((302, "https://example.com/missing.html".into()))
        );
        assert_eq!(on_error(&s, "gone", 403, host), None);
        s.rules.clear();
        assert_eq!(on_error(&s, "gone", 404, host), None);
        let all = Site {
            index: None,
            error_key: None,
            redirect_all: Some(("example.org".into(), Some("https".into()))),
            rules: vec![],
        };
        assert_eq!(
            plan(&all, "a/b", host),
            Plan::Redirect(301, "https://example.org/a/b".into())
        );
    }

    #[test]
    fn the_host_names_the_bucket() {
        assert_eq!(
            bucket_of_host("site.web.localhost", "web.localhost"),
            Some("site")
        );
        assert_eq!(
            bucket_of_host("my.site.web.localhost:9000", "web.localhost"),
            Some("my.site")
        );
        assert_eq!(bucket_of_host("web.localhost", "web.localhost"), None);
        assert_eq!(bucket_of_host("siteweb.localhost", "web.localhost"), None);
        assert_eq!(bucket_of_host("127.0.0.1:9000", "web.localhost"), None);
    }

    #[test]
    fn configurations_are_checked_as_s3_does() {
        assert!(check(&site()).is_ok());
        let broken = |f: &dyn Fn(&mut Site)| {
            let mut s = site();
            f(&mut s);
            matches!(check(&s), Err(GatewayError::InvalidArgument(_)))
        };
        assert!(broken(&|s| s.index = None));
        assert!(broken(&|s| s.index = Some("a/index.html".into())));
        assert!(broken(&|s| s.index = Some(String::new())));
        assert!(broken(&|s| s.redirect_all = Some(("x".into(), None))));
        assert!(broken(
            &|s| s.rules[0].redirect.replace_key = Some("k".into())
        ));
        assert!(broken(&|s| s.rules[0].redirect.code = Some(200)));
        assert!(broken(&|s| s.rules[1].error_code = Some(200)));
        assert!(broken(
            &|s| s.rules[1].redirect.protocol = Some("ftp".into())
        ));
        assert!(broken(&|s| {
            s.rules[0].redirect = Redirect {
                host: None,
                protocol: None,
                code: None,
                replace_prefix: None,
                replace_key: None,
            }
        }));
        assert!(broken(
            &|s| s.rules = vec![s.rules[0].clone(); MAX_RULES + 1]
        ));
        let all = Site {
            index: None,
            error_key: None,
            redirect_all: Some(("example.org".into(), None)),
            rules: vec![],
        };
        assert!(check(&all).is_ok());
    }
}
