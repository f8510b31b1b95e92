//! The gateway's local secrets: S3 credentials (`keys.json`) and the
//! account key (`account.key`), both mode 0600 from creation and replaced
//! atomically (temp file, fsync, rename, directory fsync). Also the s3s
//! auth and access hooks that consult them.
//!
//! `keys.json` is `{"version": 1, "keys": [{access_key_id,
//! secret_access_key, created_ms}]}`. It is read again on every
//! authentication (it is small), so `cairn gateway keys revoke` takes
//! effect at the next request without a restart.
//!
//! `account.key` is one line, `cairn-account-v1 <64 hex>`: the 32-byte
//! Ed25519 seed of the account that signs every index entry. Losing it
//! loses access to the buckets (the data stays encrypted in the network).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::Rng;
use s3s::S3Result;
use s3s::auth::{S3Auth, SecretKey};
use serde::{Deserialize, Serialize};

use crate::error::GatewayError;

/// Errors of the key files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing a file failed.
    #[error("cannot access {path}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not in a format this build reads.
    #[error("{path} is not a gateway key file this version reads: {why}")]
    Format {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

const KEYS_VERSION: u16 = 1;
const ACCOUNT_TAG: &str = "cairn-account-v1";
const ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// One S3 credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// 20 characters, `CK` then upper-case base32.
    pub access_key_id: String,
    /// 40 alphanumeric characters.
    pub secret_access_key: String,
    /// When it was made (Unix ms).
    pub created_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u16,
    keys: Vec<AccessKey>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// The credentials in `GATEWAY_DIR/keys.json`.
#[derive(Debug, Clone)]
pub struct KeyStore {
    path: PathBuf,
}

impl KeyStore {
    /// The store in `dir` (the file need not exist yet).
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("keys.json"),
        }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every credential.
    pub fn list(&self) -> Result<Vec<AccessKey>, KeyError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| KeyError::Format {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        if file.version != KEYS_VERSION {
            return Err(KeyError::Format {
                path: self.path.clone(),
                why: format!("version {} (this build reads {KEYS_VERSION})", file.version),
            });
        }
        Ok(file.keys)
    }

    fn save(&self, keys: Vec<AccessKey>) -> Result<(), KeyError> {
        let file = KeyFile {
            version: KEYS_VERSION,
            keys,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| KeyError::Format {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        write_private(&self.path, &bytes)
    }

    /// Holds an exclusive lock on `keys.lock` beside the file, so two
    /// `keys create` or `revoke` runs do not lose each other's change.
    fn lock(&self) -> Result<std::fs::File, KeyError> {
        let path = self.path.with_extension("lock");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err(&path)(e.into()))?;
        Ok(f)
    }

    /// Makes and stores a new random credential.
    pub fn create(&self) -> Result<AccessKey, KeyError> {
        let _lock = self.lock()?;
        let mut rng = rand::thread_rng();
        let mut pick = |chars: &[u8], n: usize| -> String {
            (0..n)
                .map(|_| chars[rng.gen_range(0..chars.len())] as char)
                .collect()
        };
        let key = AccessKey {
            access_key_id: format!("CK{}", pick(ID_CHARS, 18)),
            secret_access_key: pick(SECRET_CHARS, 40),
            created_ms: crate::now_ms(),
        };
        let mut keys = self.list()?;
        keys.push(key.clone());
        self.save(keys)?;
        Ok(key)
    }

    /// Removes a credential; whether it existed.
    pub fn revoke(&self, access_key_id: &str) -> Result<bool, KeyError> {
        let _lock = self.lock()?;
        let mut keys = self.list()?;
        let before = keys.len();
        keys.retain(|k| k.access_key_id != access_key_id);
        if keys.len() == before {
            return Ok(false);
        }
        self.save(keys)?;
        Ok(true)
    }

    /// The secret of `access_key_id`, if it is a current credential.
    pub fn secret(&self, access_key_id: &str) -> Result<Option<String>, KeyError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|k| k.access_key_id == access_key_id)
            .map(|k| k.secret_access_key))
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyStore {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let store = self.clone();
        let id = access_key.to_string();
        let found = tokio::task::spawn_blocking(move || store.secret(&id))
            .await
            .map_err(|e| GatewayError::Internal(format!("the key lookup failed: {e}")))?;
        match found {
            Ok(Some(secret)) => Ok(SecretKey::from(secret)),
            Ok(None) => Err(GatewayError::UnknownAccessKey.into()),
            Err(e) => Err(GatewayError::Internal(e.to_string()).into()),
        }
    }
}

/// Reads the account seed from `path`, or makes one there if it is absent
/// and `create` is set.
pub fn load_account(path: &Path, create: bool) -> Result<[u8; 32], KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bad = |why: &str| KeyError::Format {
                path: path.to_path_buf(),
                why: why.into(),
            };
            let hex_part = text
                .trim()
                .strip_prefix(ACCOUNT_TAG)
                .ok_or_else(|| bad("it does not start with cairn-account-v1"))?
                .trim();
            let bytes = hex::decode(hex_part).map_err(|_| bad("the key is not hex"))?;
            <[u8; 32]>::try_from(bytes).map_err(|_| bad("the key is not 32 bytes"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let seed: [u8; 32] = rand::random();
            write_private(
                path,
                format!("{ACCOUNT_TAG} {}\n", hex::encode(seed)).as_bytes(),
            )?;
            Ok(seed)
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_private_listed_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        assert!(store.list().unwrap().is_empty());
        let a = store.create().unwrap();
        let b = store.create().unwrap();
        assert_eq!(a.access_key_id.len(), 20);
        assert_eq!(a.secret_access_key.len(), 40);
        assert_ne!(a.access_key_id, b.access_key_id);
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(
            store.secret(&a.access_key_id).unwrap(),
            Some(a.secret_access_key.clone())
        );
        assert!(store.revoke(&a.access_key_id).unwrap());
        assert!(!store.revoke(&a.access_key_id).unwrap());
        assert_eq!(store.secret(&a.access_key_id).unwrap(), None);
        assert_eq!(store.list().unwrap(), vec![b]);
        assert_eq!(mode(store.path()), 0o600);
        // No temp file is left behind.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("keys.json"), "keys.lock".into()]
        );
    }

    #[tokio::test]
    async fn a_revoked_key_is_refused_at_the_next_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        let a = store.create().unwrap();
        assert!(store.get_secret_key(&a.access_key_id).await.is_ok());
        // Another process (the CLI) revokes it.
        KeyStore::new(dir.path()).revoke(&a.access_key_id).unwrap();
        let err = store.get_secret_key(&a.access_key_id).await.unwrap_err();
        assert_eq!(err.code().as_str(), "InvalidAccessKeyId");
    }

    #[test]
    fn a_newer_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        std::fs::write(store.path(), br#"{"version": 2, "keys": []}"#).unwrap();
        assert!(matches!(store.list(), Err(KeyError::Format { .. })));
    }

    #[test]
    fn the_account_key_is_made_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("account.key");
        assert!(load_account(&path, false).is_err());
        let a = load_account(&path, true).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(load_account(&path, true).unwrap(), a);
        assert_eq!(load_account(&path, false).unwrap(), a);
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            load_account(&path, false),
            Err(KeyError::Format { .. })
        ));
    }
}
