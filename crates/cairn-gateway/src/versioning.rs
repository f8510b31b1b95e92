//! Object versioning (PutBucketVersioning): what a bucket keeps when a key
//! is overwritten or deleted, and how old versions are read, listed and
//! removed.
//!
//! # Layout
//! A bucket whose versioning was ever turned on keeps every version of
//! every key in namespace `versions/<bucket>`, under `<key>\0<version id>`
//! (keys may not hold a NUL), next to `objects/<bucket>`, which keeps only
//! the current version of each key, so GETs and listings cost what they
//! cost without versioning. The current version may be a delete marker
//! (an [`ObjectMeta`] with `delete_marker`): such a key reads as deleted
//! and is left out of listings.
//!
//! A version id is 16 hex digits of `u64::MAX - ms` and 8 random ones, so
//! a key's versions sort newest first. The `null` version (written while
//! versioning was off or suspended) is stored under the id `null`, after
//! them in the index, but lists by the time it was written, as in S3
//! ([`list_order`]): a `null` version written after suspending is the
//! key's first (and latest) entry. ListObjectVersions reads a key's
//! `null` entry ahead when a window ends inside the key, and a
//! `VersionIdMarker` of `null` continues after where `null` lists. The
//! promotion of a version after a delete by id and the lifecycle rules
//! for noncurrent versions go by the same order.
//!
//! # What happens on a write
//! - Off: as without versioning: the write replaces the key, and the data
//!   it replaced is removed.
//! - Enabled: a PUT, copy or completed upload is a new version; a DELETE
//!   without a version id writes a delete marker. Nothing is removed.
//! - Suspended: writes make the `null` version (a delete marker, for a
//!   DELETE), and the data of the `null` version they replace is removed;
//!   versions with ids stay.
//! - Turning versioning on for the first time copies every current object
//!   into `versions/<bucket>` as its `null` version, a window at a time.
//! - A DELETE with a version id removes that version for good (with its
//!   data); if it was the current one, the newest remaining version (the
//!   one that lists first) becomes current, so deleting a delete marker
//!   brings the object back, as in S3.
//!
//! # Tags
//! Tags set after a write (PutObjectTagging, DeleteObjectTagging) are a
//! [`meta::TagsMeta`] entry in `tags/<bucket>` of their own, never a
//! rewrite of a version's entry (which could bring back a version a
//! concurrent DELETE by id removed, data gone): the `null` version's under
//! the object key, as without versioning, and a version with an id's under
//! its version key ([`tags_key`]). Each version has that one slot whether
//! it is current or not, so tagging the current version by id or without
//! one is the same change, and a version keeps its tags when it becomes
//! noncurrent or current again. An entry applies only to the write it was
//! set on (its generation), so a new `null` version starts untagged.
//!
//! Concurrent writes of one key through two gateways both become versions;
//! the current one is the index's last-writer-wins winner, which lists as
//! `IsLatest`. A write (or delete marker) over a `null` version, with
//! versioning Enabled, first makes sure that version is in the versions
//! namespace: the first enabling copies current objects in window by
//! window, and a write that beats the copy to its key would otherwise
//! leave the `null` version in neither place.

use std::time::Duration;

use crate::error::GatewayError;
use crate::indexes::Change;
use crate::listing::uploads_page;
use crate::meta::{self, BucketVersioning, NULL_VERSION, ObjectMeta};
use crate::s3::{Gateway, objects_ns};

/// The index namespace of a bucket's versions.
pub fn versions_ns(bucket: &str) -> String {
    format!("versions/{bucket}")
}

/// A bucket's versioning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// Never turned on: a key holds one object.
    Off,
    /// Every write is a new version.
    Enabled,
    /// Writes replace the `null` version; older versions stay.
    Suspended,
}

/// The key of version `version_id` of `key` in [`versions_ns`].
pub fn version_key(key: &str, version_id: &str) -> Vec<u8> {
    version_name(key, version_id).into_bytes()
}

/// [`version_key`] as a string (a key and a version id are UTF-8, and so
/// is the NUL between them).
fn version_name(key: &str, version_id: &str) -> String {
    format!("{key}\0{version_id}")
}

/// The key in `tags/<bucket>` of the tags set on version `m` of `key`: the
/// object key for the `null` version (as in a bucket never versioned, so
/// its tags carry over when versioning is turned on), else its version key.
pub fn tags_key(key: &str, m: &ObjectMeta) -> String {
    match &m.version_id {
        None => key.to_string(),
        Some(id) => version_name(key, id),
    }
}

/// The object key and version id of a [`versions_ns`] key.
pub fn split_version_key(k: &[u8]) -> Option<(&str, &str)> {
    let at = k.iter().position(|&b| b == 0)?;
    let key = std::str::from_utf8(&k[..at]).ok()?;
    let id = std::str::from_utf8(&k[at + 1..]).ok()?;
    Some((key, id))
}

/// A new version id for a version written at `now_ms`: later versions
/// sort first. Within this process every id is of a later time than the
/// one before (two writes in one millisecond get successive ones), so the
/// versions one gateway writes list in the order it wrote them.
pub fn new_version_id(now_ms: u64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let mut last = LAST.load(Ordering::Relaxed);
    let at = loop {
        let at = now_ms.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, at, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break at,
            Err(seen) => last = seen,
        }
    };
    format!("{:016x}{:08x}", u64::MAX - at, rand::random::<u32>())
}

/// Where version `id` (`m`) lists among its key's versions: they list in
/// ascending order of this, newest first. A version with an id lists by
/// its id; the `null` version by the 16 hex digits of `u64::MAX - ms` of
/// its write, so it takes its place by time. A shorter string sorts before
/// a longer one it begins, so a `null` version lists before versions with
/// ids of the same millisecond: a write while suspended comes after the
/// versions before it (within one millisecond the order of two gateways'
/// writes is not known anyway).
pub fn list_order(id: &str, m: &ObjectMeta) -> String {
    if id == NULL_VERSION {
        format!("{:016x}", u64::MAX - m.last_modified_ms)
    } else {
        id.to_string()
    }
}

/// Whether `id` is a version id this gateway could have made.
pub fn valid_version_id(id: &str) -> bool {
    id == NULL_VERSION
        || (id.len() == 24
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn check_version_id(id: &str) -> Result<(), GatewayError> {
    if valid_version_id(id) {
        Ok(())
    } else {
        Err(GatewayError::InvalidArgument(format!(
            "{id:?} is not a valid version id"
        )))
    }
}

/// Whether `a` and `b` are the same version.
fn same_version(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.version_id == b.version_id
        && a.delete_marker == b.delete_marker
        && meta::generation(a) == meta::generation(b)
}

/// What a DELETE did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The version it made (a delete marker) or removed.
    pub version_id: Option<String>,
    /// Whether that version is a delete marker.
    pub delete_marker: bool,
}

/// One entry of a ListObjectVersions page.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The object key.
    pub key: String,
    /// The version.
    pub meta: ObjectMeta,
    /// Whether it is the key's current version.
    pub is_latest: bool,
}

/// A version a listing keeps.
#[derive(Default)]
struct VersionEntry {
    /// The object key.
    key: String,
    /// Where it lists among the key's versions ([`list_order`]).
    order: String,
    /// The version id.
    id: String,
    /// The stored [`ObjectMeta`].
    value: Vec<u8>,
}

impl VersionEntry {
    /// The entry of index key `k` (`<key>\0<version id>`), if it is one.
    fn parse(k: &[u8], value: Vec<u8>) -> Option<Self> {
        let (key, id) = split_version_key(k)?;
        let order = if id == NULL_VERSION {
            // A value that does not decode lists where the index has it.
            match meta::decode::<ObjectMeta>(&value) {
                Ok(m) => list_order(id, &m),
                Err(_) => id.to_string(),
            }
        } else {
            id.to_string()
        };
        Some(Self {
            key: key.to_string(),
            order,
            id: id.to_string(),
            value,
        })
    }
}

impl AsRef<str> for VersionEntry {
    fn as_ref(&self) -> &str {
        &self.key
    }
}

impl crate::s3::Windowed for VersionEntry {
    /// The `null` version of the key a window ends inside: it is the
    /// key's last index entry, but may list before the entries read.
    fn read_ahead(next: &[u8]) -> Option<String> {
        let at = next.iter().position(|&b| b == 0)?;
        let key = std::str::from_utf8(&next[..at]).ok()?;
        let null = version_name(key, NULL_VERSION);
        (next <= null.as_bytes()).then_some(null)
    }

    /// By key, then [`list_order`]; a `null` version read ahead and again
    /// in its own window is kept once.
    fn arrange(kept: &mut Vec<Self>) {
        let mut nulls = std::collections::HashSet::new();
        kept.retain(|e| e.id != NULL_VERSION || nulls.insert(e.key.clone()));
        kept.sort_by(|a, b| (&a.key, &a.order).cmp(&(&b.key, &b.order)));
    }
}

/// One ListObjectVersions page.
#[derive(Debug, Clone, Default)]
pub struct VersionsPage {
    /// The versions and delete markers, by key, newest first.
    pub versions: Vec<Listed>,
    /// Common prefixes.
    pub prefixes: Vec<String>,
    /// Whether more remain.
    pub truncated: bool,
    /// Where the next page starts (key marker, version id marker).
    pub next: Option<(String, Option<String>)>,
}

impl Gateway {
    /// The versioning state of `bucket`.
    pub(crate) async fn versioning(&self, bucket: &str) -> Result<Versioning, GatewayError> {
        Ok(
            match self.bucket_setting::<BucketVersioning>(bucket).await? {
                None => Versioning::Off,
                Some(v) if v.enabled => Versioning::Enabled,
                Some(_) => Versioning::Suspended,
            },
        )
    }

    /// Turns versioning of `bucket` on (`enabled`) or suspends it. The
    /// first time, every current object is copied into the versions as
    /// its `null` version (after the setting is stored, so writes from
    /// then on are versions already).
    pub(crate) async fn set_versioning(
        &self,
        bucket: &str,
        enabled: bool,
    ) -> Result<(), GatewayError> {
        let first = self.versioning(bucket).await? == Versioning::Off;
        self.set_bucket_setting(
            bucket,
            Some(BucketVersioning {
                version: meta::META_VERSION,
                created_at_ms: 0,
                enabled,
            }),
        )
        .await?;
        if !first {
            return Ok(());
        }
        let (ons, vns) = (objects_ns(bucket), versions_ns(bucket));
        let mut from = vec![];
        loop {
            let (live, next) = self.idx.window(&ons, &from, self.idx.window_size()).await?;
            let mut changes: Vec<Change> = vec![];
            for (k, v) in live {
                let Ok(key) = std::str::from_utf8(&k) else {
                    continue;
                };
                if meta::decode::<ObjectMeta>(&v).is_ok_and(|m| m.version_id.is_none()) {
                    changes.push((version_key(key, NULL_VERSION), Some(v)));
                }
            }
            // One delta per window.
            self.idx.write(&vns, bucket, &changes).await?;
            match next {
                Some(n) => from = n,
                None => return Ok(()),
            }
        }
    }

    /// [`Gateway::commit_object`] in a bucket with versioning: `meta`
    /// becomes a new version (enabled) or the `null` version (suspended,
    /// removing the data of the `null` version it replaces).
    pub(crate) async fn commit_version(
        &self,
        bucket: &str,
        key: &str,
        meta: &mut ObjectMeta,
        previous: Option<ObjectMeta>,
        mode: Versioning,
    ) -> Result<(), GatewayError> {
        let replaced = if mode == Versioning::Enabled {
            meta.version_id = Some(new_version_id(meta.last_modified_ms));
            if let Some(null) = previous.filter(|p| p.version_id.is_none() && !p.delete_marker) {
                self.keep_null_version(bucket, key, &null).await?;
            }
            None
        } else {
            meta.version_id = None;
            match previous {
                Some(p) if p.version_id.is_none() => Some(p),
                _ => self.stored_version(bucket, key, NULL_VERSION).await?,
            }
        };
        let stored = self.stored_form(bucket, meta).await?;
        self.write_current(bucket, key, &stored).await?;
        if let Some(old) = replaced.filter(|o| !o.delete_marker && !same_version(o, meta)) {
            let mine: Vec<String> = meta.parts.iter().map(|p| p.cap.clone()).collect();
            self.forget_data(bucket, old, &mine);
        }
        Ok(())
    }

    /// Copies `null`, the key's current `null` version about to become
    /// noncurrent, into the versions namespace unless it is there already
    /// (the first enabling's copy may not have reached the key yet).
    async fn keep_null_version(
        &self,
        bucket: &str,
        key: &str,
        null: &ObjectMeta,
    ) -> Result<(), GatewayError> {
        let k = version_key(key, NULL_VERSION);
        let name = std::str::from_utf8(&k)
            .map_err(|_| GatewayError::InvalidArgument("a key must be UTF-8".into()))?;
        if self.idx.get(&versions_ns(bucket), name).await?.is_some() {
            return Ok(());
        }
        // The entry as stored (naming the same part lists, as the first
        // enabling's copy does), if it is still that version.
        let Some(raw) = self.idx.get(&objects_ns(bucket), key).await? else {
            return Ok(());
        };
        let entry: ObjectMeta = meta::decode(&raw)?;
        if entry.version_id.is_some()
            || entry.delete_marker
            || meta::generation(&entry) != meta::generation(null)
        {
            return Ok(());
        }
        self.idx
            .write(&versions_ns(bucket), bucket, &[(k, Some(raw))])
            .await?;
        Ok(())
    }

    /// Writes version `stored` (as its entry keeps it) into the versions,
    /// then as the key's current version.
    async fn write_current(
        &self,
        bucket: &str,
        key: &str,
        stored: &ObjectMeta,
    ) -> Result<(), GatewayError> {
        let value = meta::encode(stored)?;
        self.idx
            .write(
                &versions_ns(bucket),
                bucket,
                &[(
                    version_key(key, stored.shown_version()),
                    Some(value.clone()),
                )],
            )
            .await?;
        self.idx
            .write(
                &objects_ns(bucket),
                bucket,
                &[(key.as_bytes().to_vec(), Some(value))],
            )
            .await?;
        Ok(())
    }

    /// Version `version_id` of `bucket/key` as stored (delete markers
    /// included, part lists read in), if there is one.
    pub(crate) async fn stored_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectMeta>, GatewayError> {
        let k = version_key(key, version_id);
        let k = std::str::from_utf8(&k)
            .map_err(|_| GatewayError::InvalidArgument("a key must be UTF-8".into()))?;
        if let Some(v) = self.idx.get(&versions_ns(bucket), k).await? {
            return Ok(Some(self.resolve(bucket, meta::decode(&v)?).await?));
        }
        // Never versioned: the null version is the current object.
        if version_id == NULL_VERSION {
            return Ok(self
                .current(bucket, key)
                .await?
                .filter(|c| c.version_id.is_none()));
        }
        Ok(None)
    }

    /// Version `version_id` of `bucket/key` to read: `NoSuchVersion` if
    /// there is none, `MethodNotAllowed` if it is a delete marker.
    pub(crate) async fn readable_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<ObjectMeta, GatewayError> {
        check_version_id(version_id)?;
        match self.stored_version(bucket, key, version_id).await? {
            Some(m) if m.delete_marker => {
                Err(GatewayError::DeleteMarker(key.into(), version_id.into()))
            }
            Some(m) => Ok(m),
            None => {
                self.require_bucket(bucket).await?;
                Err(GatewayError::NoSuchVersion(key.into(), version_id.into()))
            }
        }
    }

    /// The version an object-tagging request names (none: the current
    /// one): `NoSuchKey` without an id if the key has no current object,
    /// `NoSuchVersion` for a missing version, `MethodNotAllowed` for a
    /// delete marker (it has no tags), as in S3.
    pub(crate) async fn tagged_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<ObjectMeta, GatewayError> {
        match version_id {
            Some(v) => self.readable_version(bucket, key, v).await,
            None => self.existing_object(bucket, key).await,
        }
    }

    /// DeleteObject without a version id: removes the object (versioning
    /// off) or writes a delete marker.
    pub(crate) async fn delete_current(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Deleted, GatewayError> {
        let mode = self.versioning(bucket).await?;
        if mode == Versioning::Off {
            self.remove_object(bucket, key, None).await?;
            return Ok(Deleted::default());
        }
        self.mark_deleted(bucket, key, mode).await
    }

    /// Writes a delete marker as the current version of `bucket/key`.
    pub(crate) async fn mark_deleted(
        &self,
        bucket: &str,
        key: &str,
        mode: Versioning,
    ) -> Result<Deleted, GatewayError> {
        let previous = self.current(bucket, key).await?;
        let mut marker = ObjectMeta::marker(crate::now_ms(), None);
        self.commit_version(bucket, key, &mut marker, previous, mode)
            .await?;
        if mode == Versioning::Suspended {
            // The marker replaced the null version, whose tag entry this
            // was; enabled, the null version (if any) stays, tags and all.
            self.forget_tags(bucket, &[key]).await?;
        }
        Ok(Deleted {
            version_id: Some(marker.shown_version().to_string()),
            delete_marker: true,
        })
    }

    /// DeleteObject with a version id: removes that version for good, and
    /// its data. If it was the current one, the newest version left
    /// becomes current (none: the key is gone).
    pub(crate) async fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Deleted, GatewayError> {
        check_version_id(version_id)?;
        let Some(target) = self.stored_version(bucket, key, version_id).await? else {
            return Ok(Deleted {
                version_id: Some(version_id.into()),
                delete_marker: false,
            });
        };
        let deleted = Deleted {
            version_id: Some(version_id.into()),
            delete_marker: target.delete_marker,
        };
        if self.versioning(bucket).await? == Versioning::Off {
            // The null version of a bucket never versioned: the object.
            self.remove_object(bucket, key, Some(&meta::generation(&target)))
                .await?;
            return Ok(deleted);
        }
        let vns = versions_ns(bucket);
        let vk = version_key(key, version_id);
        self.idx.write(&vns, bucket, &[(vk.clone(), None)]).await?;
        let current = self.current(bucket, key).await?;
        if current.as_ref().is_none_or(|c| same_version(c, &target)) {
            // The version left that lists first (the newest) is current.
            let mut prefix = key.as_bytes().to_vec();
            prefix.push(0);
            let mut newest: Option<(String, Vec<u8>)> = None;
            for (k, v) in self.idx.prefixed(&vns, &prefix, Duration::ZERO).await? {
                if k == vk {
                    continue;
                }
                let (Some((_, id)), Ok(m)) =
                    (split_version_key(&k), meta::decode::<ObjectMeta>(&v))
                else {
                    continue;
                };
                let order = list_order(id, &m);
                if newest.as_ref().is_none_or(|(o, _)| order < *o) {
                    newest = Some((order, v));
                }
            }
            let change = newest.map(|(_, v)| v);
            if change.is_some() || current.is_some() {
                self.idx
                    .write(
                        &objects_ns(bucket),
                        bucket,
                        &[(key.as_bytes().to_vec(), change)],
                    )
                    .await?;
            }
        }
        // Its tag entry applies to nothing now (the version that became
        // current keeps its own).
        self.forget_tags(bucket, &[tags_key(key, &target).as_str()])
            .await?;
        if !target.delete_marker {
            self.forget_data(bucket, target, &[]);
        }
        Ok(deleted)
    }

    /// Applies lifecycle `rules` at `now_ms` to the versions of `key`
    /// (`(version id, version)`, all of them): removes the noncurrent
    /// versions they expire and a delete marker left alone. Returns how
    /// many versions it removed.
    pub(crate) async fn expire_versions(
        &self,
        bucket: &str,
        rules: &[crate::lifecycle::Rule],
        key: &str,
        mut versions: Vec<(String, ObjectMeta)>,
        now_ms: u64,
    ) -> Result<usize, GatewayError> {
        use crate::lifecycle::{marker_expired, noncurrent_expired};
        let current = match self.idx.get(&objects_ns(bucket), key).await? {
            Some(v) => Some(meta::decode::<ObjectMeta>(&v)?),
            None => None,
        };
        let is_current = |m: &ObjectMeta| current.as_ref().is_some_and(|c| same_version(c, m));
        if let [(id, m)] = versions.as_slice()
            && m.delete_marker
            && is_current(m)
            && marker_expired(rules, key)
        {
            self.delete_version(bucket, key, id).await?;
            tracing::info!("{bucket}/{key}: removed a delete marker with no versions behind it");
            return Ok(1);
        }
        // Newest first, as listed: each version became noncurrent when
        // the one before it was written.
        versions.sort_by_cached_key(|(id, m)| list_order(id, m));
        let (mut removed, mut newer) = (0, 0);
        let mut replaced_at: Option<u64> = None;
        for (id, m) in &versions {
            if !is_current(m) {
                if let Some(since) = replaced_at
                    && noncurrent_expired(
                        rules,
                        (key, &self.rule_tags(bucket, key, m, rules).await?, m.size),
                        since,
                        newer,
                        now_ms,
                    )
                {
                    self.delete_version(bucket, key, id).await?;
                    tracing::info!("{bucket}/{key}: noncurrent version {id} expired");
                    removed += 1;
                }
                newer += 1;
            }
            replaced_at = Some(m.last_modified_ms);
        }
        Ok(removed)
    }

    /// ListObjectVersions of a bucket never versioned: each object is its
    /// key's only version, `null` (a version marker can only be `null`, so
    /// a page continues after its key).
    async fn list_null_versions(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        key_marker: Option<&str>,
        max: usize,
    ) -> Result<VersionsPage, GatewayError> {
        let params = crate::listing::ListParams {
            prefix,
            delimiter,
            after: key_marker,
            max_keys: max,
        };
        // Never versioned: no delete markers to leave out.
        let (kept, page) = self
            .list_window(&objects_ns(bucket), &params, false)
            .await?;
        let mut versions = Vec::with_capacity(page.objects.len());
        for &i in &page.objects {
            versions.push(Listed {
                key: kept[i].0.clone(),
                meta: meta::decode(&kept[i].1)?,
                is_latest: true,
            });
        }
        // Where the next page starts: after the last key or common prefix.
        let next = page.next_marker.map(|m| {
            let is_key = versions.last().is_some_and(|v| v.key == m);
            (m, is_key.then(|| NULL_VERSION.to_string()))
        });
        Ok(VersionsPage {
            versions,
            prefixes: page.prefixes,
            truncated: page.truncated,
            next,
        })
    }

    /// One ListObjectVersions page: versions of keys under `prefix`,
    /// grouped by `delimiter`, after `key_marker` (or, within that key,
    /// after `version_marker`), at most `max` entries. Read window by
    /// window, keeping only the page, as object listings are.
    pub(crate) async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        (key_marker, version_marker): (Option<&str>, Option<&str>),
        max: usize,
    ) -> Result<VersionsPage, GatewayError> {
        self.require_bucket(bucket).await?;
        let key_marker = key_marker.filter(|m| !m.is_empty());
        let version_marker = version_marker.filter(|m| !m.is_empty());
        if let Some(v) = version_marker {
            check_version_id(v)?;
        }
        if self.versioning(bucket).await? == Versioning::Off {
            return self
                .list_null_versions(bucket, prefix, delimiter, key_marker, max)
                .await;
        }
        let vns = versions_ns(bucket);
        // The page continues after the marker's place in list order.
        let order_marker = match (key_marker, version_marker) {
            (Some(km), Some(NULL_VERSION)) => Some(
                match self.idx.get(&vns, &version_name(km, NULL_VERSION)).await? {
                    Some(v) => list_order(NULL_VERSION, &meta::decode(&v)?),
                    // Gone since (a client deleting page by page): the
                    // key's versions from its first on, none missed.
                    None => String::new(),
                },
            ),
            (_, vm) => vm.map(str::to_string),
        };
        let mut from = prefix.as_bytes().to_vec();
        if let Some(km) = key_marker {
            let start = match &order_marker {
                // The versions listed after it; the null version, wherever
                // it lists, is the key's last entry.
                Some(om) => version_key(km, om),
                // Past every version of the marker's key.
                None => [km.as_bytes(), &[1]].concat(),
            };
            from = from.max(start);
        }
        let (kept, page) = self
            .page_windows(
                &vns,
                from,
                prefix,
                max,
                |k, v| VersionEntry::parse(&k, v),
                |kept| {
                    let pairs: Vec<(&str, &str)> = kept
                        .iter()
                        .map(|e| (e.key.as_str(), e.order.as_str()))
                        .collect();
                    let markers = (key_marker, order_marker.as_deref());
                    uploads_page(&pairs, prefix, delimiter, markers, max)
                },
            )
            .await?;
        // The next page's version marker is the last version's id.
        let last = page.uploads.last().map(|&i| kept[i].id.clone());
        let mut out = VersionsPage {
            prefixes: page.prefixes,
            truncated: page.truncated,
            next: page.next.map(|(k, v)| (k, v.and(last))),
            versions: Vec::with_capacity(page.uploads.len()),
        };
        let mut latest: Option<(String, Option<ObjectMeta>)> = None;
        for i in page.uploads {
            let VersionEntry { key, value, .. } = &kept[i];
            let m: ObjectMeta = meta::decode(value)?;
            if latest.as_ref().is_none_or(|(k, _)| k != key) {
                let raw = match self.idx.get(&objects_ns(bucket), key).await? {
                    Some(v) => Some(meta::decode::<ObjectMeta>(&v)?),
                    None => None,
                };
                latest = Some((key.clone(), raw));
            }
            let is_latest = latest
                .as_ref()
                .and_then(|(_, c)| c.as_ref())
                .is_some_and(|c| same_version(c, &m));
            out.versions.push(Listed {
                key: key.clone(),
                meta: m,
                is_latest,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_null_version_lists_by_the_time_it_was_written() {
        // Ids as new_version_id makes them (not it: its clock only goes on).
        let id_at = |ms: u64| format!("{:016x}{:08x}", u64::MAX - ms, 7);
        let (v1, v2) = (id_at(10_000), id_at(20_000));
        let order = |id: &str, ms: u64| list_order(id, &ObjectMeta::marker(ms, None));
        // Written after v2: first; between v1 and v2: between; before: last.
        assert!(order(NULL_VERSION, 30_000) < order(&v2, 20_000));
        let mid = order(NULL_VERSION, 15_000);
        assert!(order(&v2, 20_000) < mid && mid < order(&v1, 10_000));
        assert!(order(&v1, 10_000) < order(NULL_VERSION, 5_000));
        // In one millisecond with a version: the null one first.
        let same = id_at(40_000);
        assert!(order(NULL_VERSION, 40_000) < order(&same, 40_000));
    }

    #[test]
    fn version_ids_sort_newest_first_and_null_last() {
        let old = new_version_id(1_000);
        let new = new_version_id(2_000);
        assert!(new < old);
        // In one millisecond, or with the clock stepping back: still later.
        let same = new_version_id(2_000);
        let back = new_version_id(1_500);
        assert!(same < new && back < same);
        assert!(old.as_str() < NULL_VERSION);
        assert!(valid_version_id(&old) && valid_version_id(NULL_VERSION));
        assert!(!valid_version_id("NULL"));
        assert!(!valid_version_id(&old[1..]));
        assert!(!valid_version_id(&old.to_uppercase()));
        // A key's versions stay together, before any longer key.
        let mut keys = [
            version_key("a/b", NULL_VERSION),
            version_key("a", &old),
            version_key("a", &new),
            version_key("a/", &old),
        ];
        keys.sort();
        let split: Vec<(&str, &str)> = keys.iter().filter_map(|k| split_version_key(k)).collect();
        assert_eq!(
            split,
            vec![
                ("a", new.as_str()),
                ("a", old.as_str()),
                ("a/", old.as_str()),
                ("a/b", NULL_VERSION)
            ]
        );
    }
}
