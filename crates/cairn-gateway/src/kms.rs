//! SSE-KMS with a gateway-held key store: the account's KMS keys live in
//! the network, in the account index namespace [`NS`], so every gateway
//! of the account (and `cairn gateway kms …`) sees the same keys, and an
//! object sealed by one gateway opens through another. There is no KMS
//! service: the gateway is the KMS.
//!
//! **Keys.** Entry `key/<id>` holds a [`KmsKey`]: a random id shaped as
//! AWS's (a UUID), 32 random bytes of material, a description, its state
//! (Enabled or Disabled) and creation time. The material never leaves the
//! index, whose values are already sealed under the account's index key
//! (XChaCha20-Poly1305) and signed by the account, so storing nodes see
//! neither it nor the ids. A key is never deleted (objects sealed under
//! it would become unreadable); it is disabled instead. The ARN S3
//! answers is `arn:aws:kms:<region>:<account>:key/<id>`, the account being
//! its canonical id (the hex public key policies name it by).
//!
//! **The default key.** `aws:kms` without a key id uses `alias/aws/s3`,
//! entry [`DEFAULT_ALIAS`], a [`KmsAlias`] naming a key, made on first
//! use. Two gateways may make it at once: each writes a key of its own and
//! the alias, then reads the alias back from the replicas and seals only
//! under the key it names then. The index's last-writer-wins settles on
//! one alias everywhere; a gateway that read its own alias before the
//! other write landed has sealed some objects under a key the alias no
//! longer names, which stays an ordinary key of the account (objects name
//! the key id, never the alias), so nothing becomes unreadable.
//!
//! **Objects.** An SSE-KMS object (or multipart upload) keeps an
//! [`SseKms`]: the key id, a random salt, the encryption context it was
//! written with and the bucket-key flag (accepted and echoed; every object
//! has a data key of its own anyway). Its data key is `BLAKE3
//! derive_key("cairn v1 gateway sse-kms object key", material ‖ salt ‖
//! context)` (the context length-prefixed, or a 0 byte for none), and the
//! body is sealed exactly as SSE-C's ([`crate::sse`]: 64 KiB AES-256-GCM
//! chunks), so reads reproduce the key from the entry alone.
//!
//! **Who may use a key.** Only the account's requests signed with
//! Signature Version 4 (S3 refuses SSE-KMS requests signed otherwise, and
//! its anonymous principal cannot use a KMS key, so a public bucket policy
//! does not open SSE-KMS objects). TLS is not required, unlike SSE-C: no
//! key travels in the request, and the gateway's plain HTTP is for
//! loopback or behind a TLS proxy. HEAD needs no key (S3 answers it
//! without asking KMS), so a disabled key does not hide an object's
//! metadata. `aws:kms:dsse` is `NotImplemented`.
//!
//! **Lookups.** Keys read are cached in memory ([`CACHE_KEYS`] at most) for
//! [`crate::indexes::FRESH`], the index's own freshness: the material never
//! changes, but the state may, so a key disabled through another gateway
//! or the CLI is refused here within about 4 s (this cache's 2 s and the
//! index copy's 2 s). A key not found is looked up again from the
//! replicas before it is refused, so a key made a moment ago by the CLI
//! is usable at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::GatewayError;
use crate::indexes::{FRESH, Indexes};
use crate::meta::{self, Value};
use crate::sse::DataKey;

/// The index namespace of the account's KMS keys.
pub const NS: &str = "kmskeys";
/// The account's default key, as S3 names it.
pub const DEFAULT_ALIAS: &str = "alias/aws/s3";
/// Map keys of key entries start with this; the rest is the id.
const KEY_PREFIX: &str = "key/";
/// The data key derivation's context.
const KEY_CONTEXT: &str = "cairn v1 gateway sse-kms object key";
/// The version of [`SseKms`]'s sealing (the derivation above and
/// [`crate::sse`]'s chunk format).
pub const KMS_FORMAT: u16 = 1;
/// Keys kept in the memory cache at most.
pub const CACHE_KEYS: usize = 1024;
/// The longest encryption context accepted (S3 and KMS bound it too).
const MAX_CONTEXT: usize = 8192;
/// What [`Indexes::write`] names in a "full" error for this namespace.
const WHAT: &str = "kms keys";

/// Whether a key may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    /// Seals and opens objects.
    Enabled,
    /// Refused for writes and reads (`KMS.DisabledException`) until enabled.
    Disabled,
}

impl KeyState {
    /// As AWS spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
        }
    }
}

/// A KMS key, in namespace [`NS`] under `key/<id>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsKey {
    /// [`meta::META_VERSION`].
    pub version: u16,
    /// UUID-shaped, random.
    pub id: String,
    /// Random; never leaves the (sealed) index entry.
    pub material: [u8; 32],
    /// As given at creation.
    pub description: String,
    /// Enabled or disabled.
    pub state: KeyState,
    /// When it was made (Unix ms).
    pub created_ms: u64,
}

impl std::fmt::Debug for KmsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the material.
        f.debug_struct("KmsKey")
            .field("id", &self.id)
            .field("description", &self.description)
            .field("state", &self.state)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

impl Value for KmsKey {
    const VERSION: u16 = meta::META_VERSION;
}

/// An alias, in namespace [`NS`] under its name ([`DEFAULT_ALIAS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsAlias {
    /// [`meta::META_VERSION`].
    pub version: u16,
    /// The key it names.
    pub key_id: String,
    /// When it was set (Unix ms).
    pub created_ms: u64,
}

impl Value for KmsAlias {
    const VERSION: u16 = meta::META_VERSION;
}

/// What an SSE-KMS object (or multipart upload) keeps. Part of
/// `ObjectMeta` and `UploadMeta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SseKms {
    /// [`KMS_FORMAT`].
    pub format: u16,
    /// The key's id (never an alias, which may come to name another key).
    pub key_id: String,
    /// Random, one per object or upload.
    pub salt: [u8; 32],
    /// The encryption context (JSON text) it was written with, if any.
    pub context: Option<String>,
    /// `x-amz-server-side-encryption-bucket-key-enabled`, echoed.
    pub bucket_key: bool,
}

impl SseKms {
    /// A new object's (or upload's), under `key`.
    pub fn new(key: &KmsKey, context: Option<String>, bucket_key: bool) -> Self {
        Self {
            format: KMS_FORMAT,
            key_id: key.id.clone(),
            salt: rand::random(),
            context,
            bucket_key,
        }
    }

    /// This object's data key from its KMS key (which must be the one it
    /// names, enabled: see [`KmsStore::usable`]).
    pub fn data_key(&self, key: &KmsKey) -> Result<DataKey, GatewayError> {
        if key.id != self.key_id || self.format != KMS_FORMAT {
            return Err(GatewayError::Internal(format!(
                "an SSE-KMS object of key {} (format {}) was asked to open with key {}",
                self.key_id, self.format, key.id
            )));
        }
        Ok(derive(&key.material, &self.salt, self.context.as_deref()))
    }

    /// The encryption context as S3 answers it: base64 of the JSON.
    pub fn context_base64(&self) -> Option<String> {
        self.context
            .as_ref()
            .map(|c| data_encoding::BASE64.encode(c.as_bytes()))
    }
}

/// The data key of an object sealed under `material` with `salt` and
/// encryption `context`. Material and salt are fixed-length and the
/// context is length-prefixed, so no two inputs run together.
pub fn derive(material: &[u8; 32], salt: &[u8; 32], context: Option<&str>) -> DataKey {
    let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
    h.update(material);
    h.update(salt);
    match context {
        None => {
            h.update(&[0]);
        }
        Some(c) => {
            h.update(&[1]);
            h.update(&(c.len() as u64).to_be_bytes());
            h.update(c.as_bytes());
        }
    }
    DataKey(*h.finalize().as_bytes())
}

/// A new random key id, shaped as AWS's (a version 4 UUID).
pub fn new_key_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Whether `s` is shaped as a key id (a lower- or upper-case UUID).
pub fn is_key_id(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What a request's key id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A key, by its id.
    Id(String),
    /// `alias/aws/s3`: the account's default key.
    Default,
}

/// Reads `x-amz-server-side-encryption-aws-kms-key-id` (or a bucket's
/// `KMSMasterKeyID`): a bare key id, a key ARN of this account
/// (`account` is its canonical id; the region is not checked: one key
/// store serves the account in every region the gateway reports), or the
/// default alias, bare or as an ARN. Anything else names no key here.
pub fn parse_key_ref(s: &str, account: &str) -> Result<KeyRef, GatewayError> {
    let not_found = || {
        GatewayError::KmsNotFound(format!(
            "{s:?} names no KMS key of this account: give a key id, its ARN or {DEFAULT_ALIAS} \
             (`cairn gateway kms list` shows the keys)"
        ))
    };
    let s = s.trim();
    let name = match s.strip_prefix("arn:aws:kms:") {
        Some(rest) => {
            // <region>:<account>:<key/id | alias/name>
            let mut it = rest.splitn(3, ':');
            let (_region, acct, name) = match (it.next(), it.next(), it.next()) {
                (Some(r), Some(a), Some(n)) => (r, a, n),
                _ => return Err(not_found()),
            };
            if !acct.eq_ignore_ascii_case(account) {
                return Err(not_found());
            }
            match name.strip_prefix(KEY_PREFIX) {
                Some(id) => id,
                None => name,
            }
        }
        None => s,
    };
    if name == DEFAULT_ALIAS {
        return Ok(KeyRef::Default);
    }
    if is_key_id(name) {
        return Ok(KeyRef::Id(name.to_ascii_lowercase()));
    }
    Err(not_found())
}

/// The ARN of key `id` of `account` (canonical id) in `region`.
pub fn arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:kms:{region}:{account}:key/{id}")
}

/// Reads `x-amz-server-side-encryption-context`: base64 of a JSON object
/// of string values, as S3 takes it. Returns the JSON text, which is what
/// the object keeps and binds into its data key.
pub fn parse_context(b64: &str) -> Result<String, GatewayError> {
    let bad = |why: &str| {
        GatewayError::InvalidArgument(format!(
            "x-amz-server-side-encryption-context {why}: it must be base64 of a JSON object of strings"
        ))
    };
    let bytes = data_encoding::BASE64
        .decode(b64.trim().as_bytes())
        .map_err(|_| bad("is not base64"))?;
    if bytes.len() > MAX_CONTEXT {
        return Err(bad("is too long"));
    }
    let text = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8"))?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(map)) if map.values().all(serde_json::Value::is_string) => {
            Ok(text)
        }
        _ => Err(bad("is not a JSON object of strings")),
    }
}

/// The account's KMS keys, read from and written to its index, with a
/// bounded memory cache of the keys looked up.
pub struct KmsStore {
    idx: Arc<Indexes>,
    region: String,
    account: String,
    /// id → (when read, the key).
    cache: Mutex<HashMap<String, (Instant, KmsKey)>>,
    /// The default alias's key id, when read.
    default: Mutex<Option<(Instant, String)>>,
}

fn entry_key(id: &str) -> String {
    format!("{KEY_PREFIX}{id}")
}

impl KmsStore {
    /// The key store of `idx`'s account; ARNs name `region`.
    pub fn new(idx: Arc<Indexes>, region: &str) -> Self {
        let account = crate::policy::canonical_id(&idx.account().public());
        Self {
            idx,
            region: region.to_string(),
            account,
            cache: Mutex::new(HashMap::new()),
            default: Mutex::new(None),
        }
    }

    /// The account's canonical id, as ARNs name it.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The ARN of key `id`.
    pub fn arn(&self, id: &str) -> String {
        arn(&self.region, &self.account, id)
    }

    /// What `s` (a request's key id) names.
    pub fn parse(&self, s: &str) -> Result<KeyRef, GatewayError> {
        parse_key_ref(s, &self.account)
    }

    fn cached(&self, id: &str) -> Option<KmsKey> {
        let cache = self.cache.lock().ok()?;
        let (at, key) = cache.get(id)?;
        (at.elapsed() < FRESH).then(|| key.clone())
    }

    fn remember(&self, key: &KmsKey) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= CACHE_KEYS && !cache.contains_key(&key.id) {
            // Bounded: the oldest goes (a scan of at most CACHE_KEYS, and
            // only when an account uses that many keys).
            if let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(key.id.clone(), (Instant::now(), key.clone()));
    }

    async fn read(&self, id: &str, max_age: Duration) -> Result<Option<KmsKey>, GatewayError> {
        let found = self
            .idx
            .get_aged(NS, &entry_key(id), max_age)
            .await?
            .map(|v| meta::decode::<KmsKey>(&v))
            .transpose()?;
        if let Some(k) = &found {
            self.remember(k);
        }
        Ok(found)
    }

    /// Key `id`, enabled or not: `KMS.NotFoundException` if the account
    /// has none (looked up afresh from the replicas before saying so).
    pub async fn get(&self, id: &str) -> Result<KmsKey, GatewayError> {
        if let Some(k) = self.cached(id) {
            return Ok(k);
        }
        if let Some(k) = self.read(id, FRESH).await? {
            return Ok(k);
        }
        self.read(id, Duration::ZERO).await?.ok_or_else(|| {
            GatewayError::KmsNotFound(format!(
                "there is no KMS key {} in this account",
                self.arn(id)
            ))
        })
    }

    /// Key `id` if it may seal and open objects: `KMS.DisabledException`
    /// if it is disabled.
    pub async fn usable(&self, id: &str) -> Result<KmsKey, GatewayError> {
        let key = self.get(id).await?;
        if key.state != KeyState::Enabled {
            return Err(GatewayError::KmsDisabled(format!(
                "the KMS key {} is disabled (`cairn gateway kms enable {id}` enables it)",
                self.arn(id)
            )));
        }
        Ok(key)
    }

    /// The usable key `r` names (the default key is made on first use).
    pub async fn resolve(&self, r: &KeyRef) -> Result<KmsKey, GatewayError> {
        match r {
            KeyRef::Id(id) => self.usable(id).await,
            KeyRef::Default => {
                let id = self.default_key_id().await?;
                self.usable(&id).await
            }
        }
    }

    async fn read_alias(&self, max_age: Duration) -> Result<Option<String>, GatewayError> {
        Ok(self
            .idx
            .get_aged(NS, DEFAULT_ALIAS, max_age)
            .await?
            .map(|v| meta::decode::<KmsAlias>(&v))
            .transpose()?
            .map(|a| a.key_id))
    }

    /// The id of the key `alias/aws/s3` names, made if there is none yet
    /// (see the module docs for two gateways doing so at once).
    pub async fn default_key_id(&self) -> Result<String, GatewayError> {
        if let Ok(d) = self.default.lock()
            && let Some((at, id)) = d.as_ref()
            && at.elapsed() < FRESH
        {
            return Ok(id.clone());
        }
        let found = match self.read_alias(FRESH).await? {
            Some(id) => Some(id),
            None => self.read_alias(Duration::ZERO).await?,
        };
        let id = match found {
            Some(id) => id,
            None => self.make_default().await?,
        };
        if let Ok(mut d) = self.default.lock() {
            *d = Some((Instant::now(), id.clone()));
        }
        Ok(id)
    }

    /// Makes a key and points `alias/aws/s3` at it; returns the key the
    /// alias names when read back from the replicas, which is another
    /// gateway's if its write won.
    pub async fn make_default(&self) -> Result<String, GatewayError> {
        let key = self
            .create(&format!("default key for {DEFAULT_ALIAS}"))
            .await?;
        let alias = KmsAlias {
            version: KmsAlias::VERSION,
            key_id: key.id.clone(),
            created_ms: crate::now_ms(),
        };
        self.idx
            .write(
                NS,
                WHAT,
                &[(
                    DEFAULT_ALIAS.as_bytes().to_vec(),
                    Some(meta::encode(&alias)?),
                )],
            )
            .await?;
        // Seal only under what the replicas hold now: another gateway's
        // alias may have won.
        self.read_alias(Duration::ZERO).await?.ok_or_else(|| {
            GatewayError::Internal(format!("{DEFAULT_ALIAS} was written but reads absent"))
        })
    }

    /// Makes a new enabled key with random material.
    pub async fn create(&self, description: &str) -> Result<KmsKey, GatewayError> {
        let key = KmsKey {
            version: KmsKey::VERSION,
            id: new_key_id(),
            material: rand::random(),
            description: description.to_string(),
            state: KeyState::Enabled,
            created_ms: crate::now_ms(),
        };
        self.put(&key).await?;
        Ok(key)
    }

    async fn put(&self, key: &KmsKey) -> Result<(), GatewayError> {
        self.idx
            .write(
                NS,
                WHAT,
                &[(entry_key(&key.id).into_bytes(), Some(meta::encode(key)?))],
            )
            .await?;
        self.remember(key);
        Ok(())
    }

    /// Every key of the account, sorted by id, read afresh.
    pub async fn list(&self) -> Result<Vec<KmsKey>, GatewayError> {
        self.idx
            .prefixed(NS, KEY_PREFIX.as_bytes(), Duration::ZERO)
            .await?
            .into_iter()
            .map(|(_, v)| meta::decode::<KmsKey>(&v))
            .collect()
    }

    /// Enables or disables key `id` (`KMS.NotFoundException` if none);
    /// returns it as it is now.
    pub async fn set_state(&self, id: &str, state: KeyState) -> Result<KmsKey, GatewayError> {
        let id = match self.parse(id)? {
            KeyRef::Id(id) => id,
            KeyRef::Default => self.default_key_id().await?,
        };
        let mut key = match self.read(&id, Duration::ZERO).await? {
            Some(k) => k,
            None => {
                return Err(GatewayError::KmsNotFound(format!(
                    "there is no KMS key {} in this account",
                    self.arn(&id)
                )));
            }
        };
        if key.state != state {
            key.state = state;
            self.put(&key).await?;
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> KmsKey {
        KmsKey {
            version: KmsKey::VERSION,
            id: id.into(),
            material: [byte; 32],
            description: "d".into(),
            state: KeyState::Enabled,
            created_ms: 5,
        }
    }

    #[test]
    fn key_values_round_trip_carry_their_version_and_hide_the_material() {
        let k = key(&new_key_id(), 7);
        let bytes = meta::encode(&k).unwrap();
        assert_eq!(postcard::take_from_bytes::<u16>(&bytes).unwrap().0, 1);
        assert_eq!(meta::decode::<KmsKey>(&bytes).unwrap(), k);
        let mut newer = bytes.clone();
        newer[0] = 2;
        assert!(meta::decode::<KmsKey>(&newer).is_err());
        assert!(!format!("{k:?}").contains("7, 7"), "{k:?}");
        let mut disabled = k.clone();
        disabled.state = KeyState::Disabled;
        assert_eq!(
            meta::decode::<KmsKey>(&meta::encode(&disabled).unwrap()).unwrap(),
            disabled
        );
        let a = KmsAlias {
            version: 1,
            key_id: k.id.clone(),
            created_ms: 9,
        };
        assert_eq!(
            meta::decode::<KmsAlias>(&meta::encode(&a).unwrap()).unwrap(),
            a
        );
    }

    #[tokio::test]
    async fn the_key_cache_is_bounded_and_entries_age_out() {
        // No request reaches the node here: only the memory cache is used.
        let node = crate::node::Node::new("http://127.0.0.1:9", [1; 32], 60).unwrap();
        let account = Arc::new(cairn_core::index::Account::new(
            cairn_core::keys::SecretKey::from_bytes([2; 32]),
        ));
        let idx = Arc::new(Indexes::open_in_memory(node, account).unwrap());
        let store = KmsStore::new(idx, "us-east-1");
        let first = key(&new_key_id(), 1);
        store.remember(&first);
        assert_eq!(store.cached(&first.id), Some(first.clone()));
        for i in 0..CACHE_KEYS + 10 {
            store.remember(&key(&new_key_id(), i as u8));
        }
        let len = store.cache.lock().unwrap().len();
        assert_eq!(len, CACHE_KEYS);
        assert_eq!(store.cached(&first.id), None, "the oldest went first");
        if let Some((at, _)) = store.cache.lock().unwrap().values_mut().next() {
            *at = Instant::now().checked_sub(FRESH).unwrap();
        }
        let stale = store
            .cache
            .lock()
            .unwrap()
            .iter()
            .find(|(_, (at, _))| at.elapsed() >= FRESH)
            .map(|(id, _)| id.clone())
            .unwrap();
        assert_eq!(
            store.cached(&stale),
            None,
            "a copy past FRESH is read again"
        );
    }

    #[test]
    fn ids_are_uuid_shaped_and_random() {
        let a = new_key_id();
        assert!(is_key_id(&a), "{a}");
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "a version 4 UUID: {a}");
        assert_ne!(a, new_key_id());
        for bad in ["", "alias/aws/s3", "1234", &a[1..], &format!("{a}0")] {
            assert!(!is_key_id(bad), "{bad}");
        }
    }

    #[test]
    fn data_keys_bind_material_salt_and_context() {
        let k = key("11111111-2222-4333-8444-555555555555", 1);
        let sse = SseKms::new(&k, Some(r#"{"a":"b"}"#.into()), false);
        let dk = sse.data_key(&k).unwrap();
        let sealed = dk.sealer().unwrap().seal(0, true, b"secret").unwrap();
        // The same entry gives the same key: reads reproduce it.
        assert_eq!(
            sse.data_key(&k)
                .unwrap()
                .sealer()
                .unwrap()
                .open(0, true, &sealed)
                .unwrap(),
            b"secret"
        );
        let opens = |sse: &SseKms, k: &KmsKey| {
            sse.data_key(k)
                .and_then(|d| d.sealer())
                .and_then(|s| s.open(0, true, &sealed))
                .is_ok()
        };
        // Another context, another salt, other material: another key.
        let mut other = sse.clone();
        other.context = Some(r#"{"a":"c"}"#.into());
        assert!(!opens(&other, &k));
        other.context = None;
        assert!(!opens(&other, &k));
        let mut salted = sse.clone();
        salted.salt[0] ^= 1;
        assert!(!opens(&salted, &k));
        let mut material = k.clone();
        material.material[0] ^= 1;
        assert!(!opens(&sse, &material));
        // Not the key it names.
        assert!(sse.data_key(&key(&new_key_id(), 1)).is_err());
        // No context and an empty one are not the same.
        assert_ne!(
            derive(&[1; 32], &[2; 32], None).0,
            derive(&[1; 32], &[2; 32], Some("")).0
        );
        let stored = meta::encode(&sse).unwrap();
        assert_eq!(postcard::from_bytes::<SseKms>(&stored).unwrap(), sse);
    }

    #[test]
    fn key_references_are_ids_arns_of_this_account_or_the_default_alias() {
        let me = "ab".repeat(32);
        let id = "11111111-2222-4333-8444-555555555555";
        let want = KeyRef::Id(id.into());
        assert_eq!(parse_key_ref(id, &me).unwrap(), want);
        assert_eq!(
            parse_key_ref(&id.to_uppercase(), &me).unwrap(),
            want,
            "ids are case-insensitive"
        );
        assert_eq!(
            parse_key_ref(&arn("us-east-1", &me, id), &me).unwrap(),
            want
        );
        assert_eq!(
            parse_key_ref(&arn("eu-west-3", &me.to_uppercase(), id), &me).unwrap(),
            want
        );
        assert_eq!(parse_key_ref("alias/aws/s3", &me).unwrap(), KeyRef::Default);
        assert_eq!(
            parse_key_ref(&format!("arn:aws:kms:us-east-1:{me}:alias/aws/s3"), &me).unwrap(),
            KeyRef::Default
        );
        for bad in [
            "alias/mine".to_string(),
            arn("us-east-1", "111122223333", id),
            format!("arn:aws:kms:us-east-1:{me}"),
            "nothing".into(),
        ] {
            assert!(
                matches!(parse_key_ref(&bad, &me), Err(GatewayError::KmsNotFound(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn contexts_are_base64_json_objects_of_strings() {
        let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
        let ok = r#"{"project":"cairn","team":"storage"}"#;
        assert_eq!(parse_context(&b64(ok)).unwrap(), ok);
        for bad in [
            b64(r#"{"n": 1}"#),
            b64("[]"),
            b64("not json"),
            "%%%".into(),
            b64(&format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_CONTEXT))),
        ] {
            assert!(
                matches!(parse_context(&bad), Err(GatewayError::InvalidArgument(_))),
                "{bad}"
            );
        }
        let sse = SseKms::new(&key(&new_key_id(), 1), Some(ok.into()), true);
        assert_eq!(sse.context_base64(), Some(b64(ok)));
    }
}
