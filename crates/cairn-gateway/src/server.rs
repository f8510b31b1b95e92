//! Serving: the TCP accept loop, the TLS handshake when the gateway has a
//! certificate ([`crate::tls`]), hyper's HTTP/1 connections and the limits
//! s3s does not have. A handshake that does not finish within the header
//! read time is dropped. A request first passes the per-client concurrency
//! limit (by remote IP; over it, `SlowDown` 503) and the declared-size
//! check (a Content-Length over the object limit is `EntityTooLarge`
//! before any byte is read); its body is wrapped so that one which sends
//! nothing for the idle time ends with an error instead of holding the
//! connection. hyper's header read timeout covers slow headers.
//!
//! CORS is answered here, around s3s: a preflight (`OPTIONS`, unsigned)
//! is matched against the bucket's rules ([`crate::cors`]) and answered
//! without reaching s3s; the answer to a request with an `Origin` gets the
//! matching rule's headers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use s3s::service::S3Service;
use s3s::{HttpError, S3Error};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::tls::Tls;

/// The serving limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest object or part body accepted.
    pub max_body: u64,
    /// Requests one client IP may have in flight.
    pub per_client: usize,
    /// Time to read a request's headers.
    pub header_timeout: Duration,
    /// A body that sends nothing this long fails.
    pub body_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: crate::MAX_OBJECT_BYTES,
            per_client: 64,
            header_timeout: Duration::from_secs(30),
            body_idle: Duration::from_secs(60),
        }
    }
}

/// Requests in flight per client IP; an entry lives while it has any.
#[derive(Default)]
struct Clients(Mutex<HashMap<IpAddr, usize>>);

struct Slot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut map = self.0.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.clients.0.lock()
            && let Some(n) = map.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A request body that fails after `idle` without data. It holds the
/// client's concurrency slot until it is dropped.
struct IdleBody {
    inner: Incoming,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    _slot: Option<Arc<Slot>>,
    /// Set once the body has been read to its end.
    done: Arc<AtomicBool>,
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                if r.is_none() || self.inner.is_end_stream() {
                    self.done.store(true, Ordering::Relaxed);
                }
                let idle = self.idle;
                self.timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + idle);
                Poll::Ready(r.map(|f| f.map_err(std::io::Error::other)))
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client sent nothing for {} s", self.idle.as_secs()),
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn error_response(e: S3Error) -> Result<s3s::HttpResponse, HttpError> {
    e.to_http_response()
        .map_err(|e| HttpError::new(Box::new(e)))
}

/// The size a request declares for its payload: the decoded length of an
/// aws-chunked body, else Content-Length.
fn declared_size(req: &hyper::Request<Incoming>) -> Option<u64> {
    let h = req.headers();
    h.get("x-amz-decoded-content-length")
        .or_else(|| h.get(hyper::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Marks an answer given before its request's body was read to the end as
/// the connection's last: the rest of that body (or, after an `Expect:
/// 100-continue` the client then never sends, the next request) would
/// otherwise be read as the start of the next request.
fn close_unless_read<B>(resp: &mut hyper::Response<B>, had_body: bool, done: &AtomicBool) {
    if had_body && !done.load(Ordering::Relaxed) {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
}

fn header<'a>(req: &'a hyper::Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn add_headers(resp: &mut s3s::HttpResponse, headers: Vec<(&'static str, String)>) {
    for (name, value) in headers {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            resp.headers_mut()
                .insert(hyper::header::HeaderName::from_static(name), v);
        }
    }
}

/// Answers a CORS preflight for the bucket its path names.
async fn preflight(
    gateway: &crate::s3::Gateway,
    req: &hyper::Request<Incoming>,
) -> Result<s3s::HttpResponse, HttpError> {
    use crate::error::GatewayError;
    let (Some(origin), Some(method)) = (
        header(req, "origin"),
        header(req, "access-control-request-method"),
    ) else {
        return error_response(
            GatewayError::InvalidArgument(
                "a CORS preflight needs the Origin and Access-Control-Request-Method headers"
                    .into(),
            )
            .into(),
        );
    };
    let asked: Vec<&str> = header(req, "access-control-request-headers")
        .map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let rules = match crate::cors::bucket_of(req.uri().path()) {
        Some(bucket) => match gateway.cors_rules(bucket).await {
            Ok(r) => r,
            Err(e) => return error_response(e.into()),
        },
        None => vec![],
    };
    match crate::cors::find(&rules, origin, method, &asked) {
        Some(rule) => {
            let mut resp = hyper::Response::new(s3s::Body::empty());
            add_headers(
                &mut resp,
                crate::cors::preflight_headers(rule, origin, &asked),
            );
            Ok(resp)
        }
        None => error_response(
            GatewayError::CorsForbidden(format!(
                "no CORS rule of the bucket allows {method} from {origin}"
            ))
            .into(),
        ),
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, over TLS if
/// `tls` is given; `gateway` answers CORS.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Tls>,
    service: S3Service,
    gateway: Arc<crate::s3::Gateway>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let clients = Arc::new(Clients::default());
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            () = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        let gateway = gateway.clone();
        let clients = clients.clone();
        let limits = limits.clone();
        let header_timeout = limits.header_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            let client = ClientAddr {
                addr: peer,
                tls: tls.is_some(),
            };
            let handler = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let service = service.clone();
                let gateway = gateway.clone();
                let slot = clients.enter(peer.ip(), limits.per_client);
                let limits = limits.clone();
                async move {
                    let Some(slot) = slot else {
                        return error_response(
                            crate::error::GatewayError::SlowDown(limits.per_client).into(),
                        );
                    };
                    if let Some(size) = declared_size(&req)
                        && size > limits.max_body + (1 << 20)
                    {
                        return error_response(
                            crate::error::GatewayError::EntityTooLarge {
                                size,
                                max: limits.max_body,
                            }
                            .into(),
                        );
                    }
                    let had_body = !req.body().is_end_stream();
                    let done = Arc::new(AtomicBool::new(false));
                    // `BUCKET.WEB-DOMAIN`: the bucket's website, not S3.
                    let site = gateway.web_domain().and_then(|domain| {
                        let host = header(&req, "host")?;
                        crate::website::bucket_of_host(host, domain).map(str::to_owned)
                    });
                    if let Some(bucket) = site {
                        let mut r =
                            crate::website::respond(gateway.clone(), &req, &bucket, client).await;
                        drop(slot);
                        close_unless_read(&mut r, had_body, &done);
                        return Ok(r);
                    }
                    if req.method() == hyper::Method::OPTIONS {
                        let mut r = preflight(&gateway, &req).await;
                        if let Ok(r) = r.as_mut() {
                            close_unless_read(r, had_body, &done);
                        }
                        return r;
                    }
                    let (method, path) = (req.method().clone(), req.uri().path().to_string());
                    let origin = header(&req, "origin").map(str::to_owned);
                    let slot = Arc::new(slot);
                    let mut req = req;
                    // The access check's `aws:SourceIp` and `aws:SecureTransport`.
                    req.extensions_mut().insert(client);
                    let req = req.map(|inner| {
                        s3s::Body::http_body_unsync(IdleBody {
                            inner,
                            idle: limits.body_idle,
                            timer: Box::pin(tokio::time::sleep(limits.body_idle)),
                            _slot: Some(slot.clone()),
                            done: done.clone(),
                        })
                    });
                    let mut resp = service.call(req).await;
                    drop(slot);
                    if let Ok(r) = resp.as_mut() {
                        close_unless_read(r, had_body, &done);
                    }
                    if let (Some(origin), Some(bucket), Ok(r)) =
                        (origin, crate::cors::bucket_of(&path), resp.as_mut())
                    {
                        // A lookup that fails leaves the answer without CORS
                        // headers: the browser withholds it, nothing worse.
                        let rules = gateway.cors_rules(bucket).await.unwrap_or_default();
                        if let Some(rule) = crate::cors::find(&rules, &origin, method.as_str(), &[])
                        {
                            add_headers(r, crate::cors::response_headers(rule, &origin));
                        }
                    }
                    match &resp {
                        Ok(r) if r.status().is_server_error() => {
                            tracing::warn!("{method} {path} from {peer}: {}", r.status());
                        }
                        Err(e) => tracing::warn!("{method} {path} from {peer} failed: {e:?}"),
                        Ok(_) => {}
                    }
                    resp
                }
            });
            let http = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .clone();
            let ended = match tls {
                None => http.serve_connection(TokioIo::new(stream), handler).await,
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(header_timeout, tls.accept(stream.compat())).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            http.serve_connection(TokioIo::new(stream.compat()), handler)
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake with {peer} timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!("connection from {peer} ended: {e}");
            }
        });
    }
}

/// Who a request came from, in its extensions: the client's address (for
/// bucket policy conditions on `aws:SourceIp`) and whether the connection
/// is TLS (`aws:SecureTransport`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr {
    /// The client's address.
    pub addr: SocketAddr,
    /// Whether the request came over TLS.
    pub tls: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_at_most_its_share_of_slots() {
        let clients = Arc::new(Clients::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let held: Vec<Slot> = (0..3).map(|_| clients.enter(a, 3).unwrap()).collect();
        assert!(
            clients.enter(a, 3).is_none(),
            "a fourth request waits its turn"
        );
        let other = clients.enter(b, 3).expect("another client is not affected");
        drop(held);
        drop(other);
        // Entries go with their last request, so the table stays bounded.
        assert!(clients.0.lock().unwrap().is_empty());
        assert!(clients.enter(a, 3).is_some());
    }
}
