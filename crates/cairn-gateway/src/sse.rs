//! Customer-provided encryption keys (SSE-C): the key a request carries,
//! what an object keeps of it, and the second encryption layer the
//! gateway puts over the data under that key.
//!
//! Every Cairn object is already encrypted by the node under a key its
//! capability holds, which the account (so the gateway) has. SSE-C adds a
//! layer only the customer's key opens: the gateway seals the body before
//! the node stores it and opens it on the way out, and keeps only the
//! key's MD5 (to check the next request's key, as S3 does) and a random
//! salt. Background work (lease renewal, removal, lifecycle) needs only the
//! capability, so it goes on without the key.
//!
//! **Stored format, version 1** (`SSE_FORMAT`): the plaintext of each
//! stored Cairn object (a PutObject's, or one multipart part's) in chunks
//! of [`CHUNK`] bytes (the last shorter; none for an empty body), each
//! stored as a random 12-byte nonce, the AES-256-GCM ciphertext and its
//! 16-byte tag. The key is `BLAKE3 derive_key("cairn v1 gateway sse-c
//! object key", customer key ‖ salt)`, one per object or multipart upload
//! (all its parts); the additional data is the chunk's index in its
//! Cairn object (u64, big-endian) and whether it is that object's last
//! chunk, so chunks cannot be reordered, dropped at the end or moved
//! between places. Random nonces keep a part uploaded twice under one key
//! from reusing one: a 5 TiB object is 2^26 chunks, far inside the 2^32
//! messages NIST allows one key with random nonces. A range read fetches
//! the chunks it touches ([`stored_span`]).
//!
//! SSE-KMS objects ([`crate::kms`]) are sealed in this same format under a
//! data key derived from a KMS key of the account instead ([`DataKey`]).
//!
//! S3 answers: a request for an SSE-C object without the key is
//! `InvalidRequest` (400), with another key `AccessDenied` (403); keys
//! travel only over TLS (`InvalidRequest` over plain HTTP), as in S3.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use crate::body::BodyRules;
use crate::error::GatewayError;

/// Plaintext bytes per sealed chunk.
pub const CHUNK: usize = 64 << 10;
/// AES-GCM's tag.
const TAG_LEN: usize = 16;
/// Bytes a chunk grows by when sealed (nonce and tag).
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// A full chunk, sealed.
pub const SEALED_CHUNK: u64 = (CHUNK + OVERHEAD) as u64;
/// The version of the stored format above.
pub const SSE_FORMAT: u16 = 1;
/// The key derivation's context.
const KEY_CONTEXT: &str = "cairn v1 gateway sse-c object key";

/// A customer key from a request's `x-amz-server-side-encryption-customer-*`
/// headers (or their copy-source twins).
#[derive(Clone)]
pub struct CustomerKey {
    key: [u8; 32],
    md5: [u8; 16],
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "CustomerKey(md5 {})", hex::encode(self.md5))
    }
}

fn b64(s: &str) -> Option<Vec<u8>> {
    data_encoding::BASE64.decode(s.trim().as_bytes()).ok()
}

impl CustomerKey {
    /// The key of a request, checked as S3 checks it: all three headers or
    /// none, algorithm `AES256`, a 256-bit key (base64) whose MD5 (base64)
    /// is the one given. `tls`: whether the request came over TLS; S3
    /// refuses keys sent in the clear.
    pub fn from_request(
        algorithm: Option<&str>,
        key: Option<&str>,
        key_md5: Option<&str>,
        tls: bool,
    ) -> Result<Option<Self>, GatewayError> {
        let bad = |why: &str| GatewayError::InvalidArgument(why.into());
        let (algorithm, key, key_md5) = match (algorithm, key, key_md5) {
            (None, None, None) => return Ok(None),
            (Some(a), Some(k), Some(m)) => (a, k, m),
            _ => {
                return Err(bad(
                    "a customer key needs the algorithm, key and key MD5 headers together",
                ));
            }
        };
        if !tls {
            return Err(GatewayError::InvalidRequest(
                "requests with customer-provided keys (SSE-C) must be made over HTTPS".into(),
            ));
        }
        if algorithm != "AES256" {
            return Err(bad("the customer key's algorithm must be AES256"));
        }
        let key: [u8; 32] = b64(key)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| bad("the customer key must be 256 bits, base64-encoded"))?;
        let md5: [u8; 16] = Md5::digest(key).into();
        if b64(key_md5).as_deref() != Some(&md5[..]) {
            return Err(bad("the MD5 of the customer key is not the key MD5 given"));
        }
        Ok(Some(Self { key, md5 }))
    }

    /// The key's MD5, base64, as S3 answers it.
    pub fn md5_base64(&self) -> String {
        data_encoding::BASE64.encode(&self.md5)
    }
}

/// What an SSE-C object (or multipart upload) keeps: the key's MD5 and the
/// salt of its data key. Part of `ObjectMeta` and `UploadMeta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SseC {
    /// [`SSE_FORMAT`].
    pub format: u16,
    /// MD5 of the customer key.
    pub key_md5: [u8; 16],
    /// Random, one per object or upload.
    pub salt: [u8; 32],
}

impl SseC {
    /// A new object's (or upload's), under `key`.
    pub fn new(key: &CustomerKey) -> Self {
        Self {
            format: SSE_FORMAT,
            key_md5: key.md5,
            salt: rand::random(),
        }
    }

    /// The sealer of this object for `key`, if it is the object's key:
    /// `InvalidRequest` without a key, `AccessDenied` with another.
    pub fn sealer(&self, key: Option<&CustomerKey>, what: &str) -> Result<Sealer, GatewayError> {
        self.data_key(key, what)?.sealer()
    }

    /// The data key of this object for `key`, checked as [`Self::sealer`]
    /// checks it.
    pub fn data_key(&self, key: Option<&CustomerKey>, what: &str) -> Result<DataKey, GatewayError> {
        let key = key.ok_or_else(|| {
            GatewayError::InvalidRequest(format!(
                "{what} is encrypted with a customer-provided key (SSE-C): send that key"
            ))
        })?;
        if key.md5 != self.key_md5 || self.format != SSE_FORMAT {
            return Err(GatewayError::Denied(format!(
                "{what} is encrypted with another customer key"
            )));
        }
        let mut material = [0u8; 64];
        material[..32].copy_from_slice(&key.key);
        material[32..].copy_from_slice(&self.salt);
        Ok(DataKey(blake3::derive_key(KEY_CONTEXT, &material)))
    }

    /// The customer key's MD5, base64.
    pub fn md5_base64(&self) -> String {
        data_encoding::BASE64.encode(&self.key_md5)
    }
}

/// One object's (or multipart upload's) AES-256 key, derived from a
/// customer key (SSE-C) or a gateway-held KMS key ([`crate::kms`]) and the
/// object's salt: what seals and opens its chunks.
#[derive(Clone)]
pub struct DataKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// AES-256-GCM under this key.
    pub fn sealer(&self) -> Result<Sealer, GatewayError> {
        let unbound = UnboundKey::new(&AES_256_GCM, &self.0)
            .map_err(|_| GatewayError::Internal("AES-256-GCM key setup failed".into()))?;
        Ok(Sealer(LessSafeKey::new(unbound)))
    }
}

/// Bytes a plaintext of `plain` bytes takes stored.
pub fn sealed_len(plain: u64) -> u64 {
    plain + plain.div_ceil(CHUNK as u64) * OVERHEAD as u64
}

/// The chunks of a stored object of `plain` plaintext bytes that hold
/// plaintext `[start, end)` (within it, `start < end`): the first chunk's
/// index and the stored byte range of the chunks.
pub fn stored_span(plain: u64, start: u64, end: u64) -> (u64, u64, u64) {
    let first = start / CHUNK as u64;
    let last = end.div_ceil(CHUNK as u64);
    (
        first,
        first * SEALED_CHUNK,
        (last * SEALED_CHUNK).min(sealed_len(plain)),
    )
}

/// AES-256-GCM under one object's data key (cloned for each part a read
/// opens: one key derivation per read, not per part).
#[derive(Clone)]
pub struct Sealer(LessSafeKey);

fn aad(index: u64, last: bool) -> [u8; 9] {
    let mut a = [0u8; 9];
    a[..8].copy_from_slice(&index.to_be_bytes());
    a[8] = u8::from(last);
    a
}

impl Sealer {
    /// Chunk `index` (the object's `last` or not), sealed.
    pub fn seal(&self, index: u64, last: bool, plain: &[u8]) -> Result<Vec<u8>, GatewayError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(index, last)),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| GatewayError::Internal("sealing a chunk failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens sealed chunk `index`: an error if it was changed, moved or is
    /// not the chunk asked for.
    pub fn open(&self, index: u64, last: bool, sealed: &[u8]) -> Result<Vec<u8>, GatewayError> {
        let broken = || {
            GatewayError::Internal(format!(
                "stored chunk {index} of a sealed object does not open: it was damaged"
            ))
        };
        if sealed.len() < OVERHEAD {
            return Err(broken());
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).map_err(|_| broken())?;
        let mut buf = sealed[NONCE_LEN..].to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad(index, last)), &mut buf)
            .map_err(|_| broken())?;
        let n = plain.len();
        buf.truncate(n);
        Ok(buf)
    }
}

/// `plain` sealed whole (an inline object's bytes).
pub fn seal_all(sealer: &Sealer, plain: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let n = plain.len().div_ceil(CHUNK);
    let mut out = Vec::with_capacity(plain.len() + n * OVERHEAD);
    for (i, chunk) in plain.chunks(CHUNK).enumerate() {
        out.extend(sealer.seal(i as u64, i + 1 == n, chunk)?);
    }
    Ok(out)
}

/// `sealed`, a whole object of `plain` plaintext bytes, opened.
pub fn open_all(sealer: Sealer, plain: u64, sealed: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let mut o = Opener::new(sealer, plain, 0, plain);
    let out = o.push(sealed)?.concat();
    if !o.finished() {
        return Err(GatewayError::Internal("a sealed object is short".into()));
    }
    Ok(out)
}

/// What a sealed body must meet as plaintext; the sealed stream's own
/// rules (for [`crate::body::store`]) are [`stored_rules`].
pub fn stored_rules(plain: BodyRules) -> BodyRules {
    BodyRules {
        max: sealed_len(plain.max),
        declared: plain.declared.map(sealed_len),
        // The plaintext's MD5 is checked while sealing.
        md5: None,
        idle: plain.idle,
    }
}

/// The sealed form of `body`, chunk by chunk, checking the plaintext
/// against `rules` (size, declared length, Content-MD5); a failure is the
/// stream's last item, so the node's put fails with it and nothing is
/// stored. The plaintext's MD5 (hex) and size go to `done` at the end.
pub fn seal_stream<S>(
    body: S,
    sealer: Sealer,
    rules: BodyRules,
    done: tokio::sync::oneshot::Sender<(String, u64)>,
) -> impl Stream<Item = Result<Bytes, GatewayError>> + Unpin
where
    S: Stream<Item = Result<Bytes, GatewayError>> + Unpin,
{
    struct State<S> {
        body: S,
        sealer: Sealer,
        rules: BodyRules,
        buf: BytesMut,
        index: u64,
        md5: Md5,
        size: u64,
        done: Option<tokio::sync::oneshot::Sender<(String, u64)>>,
        finished: bool,
    }
    let state = State {
        body,
        sealer,
        rules,
        buf: BytesMut::new(),
        index: 0,
        md5: Md5::new(),
        size: 0,
        done: Some(done),
        finished: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        loop {
            // A full chunk is sealed once a byte after it shows it is not
            // the last.
            if st.buf.len() > CHUNK {
                let chunk = st.buf.split_to(CHUNK);
                let sealed = st.sealer.seal(st.index, false, &chunk);
                st.index += 1;
                return Some((sealed.map(Bytes::from), st));
            }
            match st.body.next().await {
                Some(Ok(b)) => {
                    st.size += b.len() as u64;
                    if st.size > st.rules.max || st.rules.declared.is_some_and(|d| st.size > d) {
                        st.finished = true;
                        let max = st.rules.declared.unwrap_or(st.rules.max).min(st.rules.max);
                        let e = GatewayError::EntityTooLarge { size: st.size, max };
                        return Some((Err(e), st));
                    }
                    st.md5.update(&b);
                    st.buf.extend_from_slice(&b);
                }
                Some(Err(e)) => {
                    st.finished = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.finished = true;
                    let digest: [u8; 16] = std::mem::take(&mut st.md5).finalize().into();
                    if let Some(d) = st.rules.declared
                        && st.size < d
                    {
                        let e = GatewayError::IncompleteBody(format!(
                            "{} of the declared {d} bytes arrived",
                            st.size
                        ));
                        return Some((Err(e), st));
                    }
                    if let Some(expected) = st.rules.md5
                        && expected != digest
                    {
                        let e = GatewayError::BadDigest {
                            expected: hex::encode(expected),
                            actual: hex::encode(digest),
                        };
                        return Some((Err(e), st));
                    }
                    if let Some(tx) = st.done.take() {
                        let _ = tx.send((hex::encode(digest), st.size));
                    }
                    if st.buf.is_empty() {
                        // An empty body: no chunks.
                        return None;
                    }
                    let chunk = std::mem::take(&mut st.buf);
                    let sealed = st.sealer.seal(st.index, true, &chunk);
                    return Some((sealed.map(Bytes::from), st));
                }
            }
        }
    }))
}

/// Opens the chunks a node read of stored bytes (from chunk `first` of an
/// object of `plain` plaintext bytes) streams in, and yields plaintext
/// `[skip, skip + len)` of them.
pub struct Opener {
    sealer: Sealer,
    /// The index of the next chunk.
    index: u64,
    /// The object's last chunk.
    last: u64,
    /// The last chunk's plaintext bytes.
    last_len: usize,
    buf: BytesMut,
    skip: u64,
    left: u64,
}

impl Opener {
    /// An opener of object chunks from `first`, of plaintext `[start, end)`
    /// of an object of `plain` bytes (as [`stored_span`] chose them).
    pub fn new(sealer: Sealer, plain: u64, start: u64, end: u64) -> Self {
        let first = start / CHUNK as u64;
        let last = plain.div_ceil(CHUNK as u64).saturating_sub(1);
        Self {
            sealer,
            index: first,
            last,
            last_len: usize::try_from(plain - last * CHUNK as u64).unwrap_or(CHUNK),
            buf: BytesMut::new(),
            skip: start - first * CHUNK as u64,
            left: end - start,
        }
    }

    /// Takes stored bytes in; returns the plaintext they complete.
    pub fn push(&mut self, stored: &[u8]) -> Result<Vec<Bytes>, GatewayError> {
        self.buf.extend_from_slice(stored);
        let mut out = vec![];
        loop {
            // The last chunk may be short.
            let want = if self.index == self.last {
                self.last_len + OVERHEAD
            } else {
                CHUNK + OVERHEAD
            };
            if self.left == 0 || self.buf.len() < want {
                return Ok(out);
            }
            let sealed = self.buf.split_to(want);
            let plain = self
                .sealer
                .open(self.index, self.index == self.last, &sealed)?;
            self.index += 1;
            let from = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(plain.len());
            self.skip = 0;
            let take = (plain.len() - from).min(usize::try_from(self.left).unwrap_or(usize::MAX));
            self.left -= take as u64;
            out.push(Bytes::copy_from_slice(&plain[from..from + take]));
        }
    }

    /// Whether every byte asked for came out.
    pub fn finished(&self) -> bool {
        self.left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn headers(key: &[u8; 32]) -> (String, String) {
        let md5: [u8; 16] = Md5::digest(key).into();
        (
            data_encoding::BASE64.encode(key),
            data_encoding::BASE64.encode(&md5),
        )
    }

    fn key(byte: u8) -> CustomerKey {
        let (k, m) = headers(&[byte; 32]);
        CustomerKey::from_request(Some("AES256"), Some(&k), Some(&m), true)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn request_keys_are_checked_as_s3_checks_them() {
        let (k, m) = headers(&[1; 32]);
        let code = |r: Result<Option<CustomerKey>, GatewayError>| match r {
            Ok(Some(_)) => "key",
            Ok(None) => "none",
            Err(GatewayError::InvalidArgument(_)) => "InvalidArgument",
            Err(GatewayError::InvalidRequest(_)) => "InvalidRequest",
            Err(_) => "other",
        };
        let f = CustomerKey::from_request;
        assert_eq!(code(f(None, None, None, false)), "none");
        assert_eq!(code(f(Some("AES256"), Some(&k), Some(&m), true)), "key");
        assert_eq!(
            code(f(Some("AES256"), Some(&k), Some(&m), false)),
            "InvalidRequest"
        );
        assert_eq!(
            code(f(Some("aws:kms"), Some(&k), Some(&m), true)),
            "InvalidArgument"
        );
        assert_eq!(
            code(f(Some("AES256"), Some(&k), None, true)),
            "InvalidArgument"
        );
        let (short, short_md5) = (data_encoding::BASE64.encode(&[1; 16]), m.clone());
        assert_eq!(
            code(f(Some("AES256"), Some(&short), Some(&short_md5), true)),
            "InvalidArgument"
        );
        let (_, other_md5) = headers(&[2; 32]);
        assert_eq!(
            code(f(Some("AES256"), Some(&k), Some(&other_md5), true)),
            "InvalidArgument"
        );
        assert!(
            !format!("{:?}", key(1)).contains(&k),
            "Debug never shows the key"
        );
    }

    #[test]
    fn only_the_objects_key_opens_it() {
        let sse = SseC::new(&key(1));
        assert!(sse.sealer(Some(&key(1)), "o").is_ok());
        assert!(matches!(
            sse.sealer(None, "o"),
            Err(GatewayError::InvalidRequest(_))
        ));
        assert!(matches!(
            sse.sealer(Some(&key(2)), "o"),
            Err(GatewayError::Denied(_))
        ));
        // Same key, another salt: another data key.
        let sealed = sse
            .sealer(Some(&key(1)), "o")
            .unwrap()
            .seal(0, true, b"x")
            .unwrap();
        let other = SseC::new(&key(1)).sealer(Some(&key(1)), "o").unwrap();
        assert!(other.open(0, true, &sealed).is_err());
    }

    #[test]
    fn chunks_open_only_in_their_place() {
        let s = SseC::new(&key(3)).sealer(Some(&key(3)), "o").unwrap();
        let c = s.seal(5, false, b"chunk five").unwrap();
        assert_eq!(c.len(), 10 + OVERHEAD);
        assert_eq!(s.open(5, false, &c).unwrap(), b"chunk five");
        assert!(s.open(4, false, &c).is_err(), "moved");
        assert!(s.open(5, true, &c).is_err(), "taken for the last");
        let mut flipped = c.clone();
        flipped[NONCE_LEN + 2] ^= 1;
        assert!(s.open(5, false, &flipped).is_err(), "changed");
        assert!(s.open(5, false, &c[..10]).is_err(), "cut");
        // Random nonces: sealing twice never repeats the ciphertext.
        assert_ne!(s.seal(5, false, b"chunk five").unwrap(), c);
    }

    fn rules(declared: Option<u64>, md5: Option<[u8; 16]>) -> BodyRules {
        BodyRules {
            max: 10 << 20,
            declared,
            md5,
            idle: Duration::from_secs(5),
        }
    }

    async fn seal_all(
        data: &[u8],
        pieces: usize,
        r: BodyRules,
    ) -> (Vec<Result<Bytes, GatewayError>>, Option<(String, u64)>) {
        let sse = SseC::new(&key(7));
        let body = futures::stream::iter(
            data.chunks(pieces.max(1))
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        let out: Vec<_> = seal_stream(body, sse.sealer(Some(&key(7)), "o").unwrap(), r, tx)
            .collect()
            .await;
        (out, rx.await.ok())
    }

    #[tokio::test]
    async fn sealed_streams_round_trip_every_range() {
        let sse = SseC::new(&key(9));
        for size in [0usize, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let body = futures::stream::iter(
                data.chunks(10_000)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect::<Vec<_>>(),
            );
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sealer = sse.sealer(Some(&key(9)), "o").unwrap();
            let stored: Vec<u8> = seal_stream(body, sealer, rules(Some(size as u64), None), tx)
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
                .await
                .concat();
            assert_eq!(stored.len() as u64, sealed_len(size as u64), "{size}");
            let (md5, n) = rx.await.unwrap();
            assert_eq!(n, size as u64);
            assert_eq!(md5, hex::encode(Md5::digest(&data)));
            let plain = size as u64;
            let cuts = [
                0,
                1,
                CHUNK as u64 - 1,
                CHUNK as u64,
                CHUNK as u64 + 5,
                plain,
            ];
            for &start in &cuts {
                for &end in &cuts {
                    if start >= end || end > plain {
                        continue;
                    }
                    let (_, s, e) = stored_span(plain, start, end);
                    let mut o =
                        Opener::new(sse.sealer(Some(&key(9)), "o").unwrap(), plain, start, end);
                    let mut got = vec![];
                    // Fed in awkward pieces, as a node's frames come.
                    for piece in stored[s as usize..e as usize].chunks(7_777) {
                        for b in o.push(piece).unwrap() {
                            got.extend_from_slice(&b);
                        }
                    }
                    assert!(o.finished(), "{size} {start}..{end}");
                    assert_eq!(
                        got,
                        &data[start as usize..end as usize],
                        "{size} {start}..{end}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn a_body_that_breaks_the_rules_ends_with_the_error() {
        let data = vec![5u8; 3 * CHUNK];
        let (out, done) = seal_all(&data, 1000, rules(Some(3 * CHUNK as u64), Some([0; 16]))).await;
        assert!(matches!(
            out.last(),
            Some(Err(GatewayError::BadDigest { .. }))
        ));
        assert!(done.is_none());
        let (out, _) = seal_all(&data, 1000, rules(Some(4 * CHUNK as u64), None)).await;
        assert!(matches!(
            out.last(),
            Some(Err(GatewayError::IncompleteBody(_)))
        ));
        let (out, _) = seal_all(&data, 1000, rules(Some(100), None)).await;
        assert!(matches!(
            out.last(),
            Some(Err(GatewayError::EntityTooLarge { .. }))
        ));
        let md5: [u8; 16] = Md5::digest(&data).into();
        let (out, done) = seal_all(&data, 1000, rules(None, Some(md5))).await;
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(out.len(), 3);
        assert_eq!(done.unwrap().1, 3 * CHUNK as u64);
    }
}
