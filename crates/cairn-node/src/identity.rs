//! The node's persistent Ed25519 identity, kept in `DATA_DIR/identity.key`.
//!
//! Format: libp2p's protobuf keypair encoding (self-describing and
//! versioned by key type). Created on first start with mode 0600 through a
//! temporary file and a rename, so a crash never leaves a half-written key.

use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;

use crate::NodeError;

/// Loads the identity, creating it on first start.
pub fn load_or_create(dir: &Path) -> Result<Keypair, NodeError> {
    let path = dir.join("identity.key");
    let io =
        |what: &str, e: std::io::Error| NodeError::Io(format!("{what} {}: {e}", path.display()));
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            NodeError::Config(format!("identity file {} is damaged: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| NodeError::Config(format!("cannot encode identity: {e}")))?;
            let tmp = dir.join("identity.key.tmp");
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(|e| io("cannot create", e))?;
            f.write_all(&bytes).map_err(|e| io("cannot write", e))?;
            f.sync_all().map_err(|e| io("cannot sync", e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io("cannot install", e))?;
            Ok(key)
        }
        Err(e) => Err(io("cannot read", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("identity.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("identity.key"), b"junk").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(NodeError::Config(_))
        ));
    }
}
