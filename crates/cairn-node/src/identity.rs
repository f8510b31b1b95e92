//! The node's persistent Ed25519 identity, kept in `DATA_DIR/identity.key`.
//!
//! Format: libp2p's protobuf keypair encoding (self-describing and
//! versioned by key type). Created on first start with mode 0600 through a
//! temporary file and a rename, so a crash never leaves a half-written key.
//!
//! The same key signs the node's statements (audit answers, evidence):
//! [`signing_key`] turns it into a [`cairn_core::keys::SecretKey`], whose
//! public key's peer bytes are this node's `PeerId`.

use std::io::Write;
use std::path::Path;

use cairn_core::keys::SecretKey;
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

/// The node's signing key: the Ed25519 secret of its libp2p identity.
pub fn signing_key(keypair: &Keypair) -> Result<SecretKey, NodeError> {
    let ed = keypair.clone().try_into_ed25519().map_err(|_| {
        NodeError::Config(
            "the node identity is not an Ed25519 key; cairn signs audit answers with Ed25519, \
             so start the node with a fresh data directory"
                .into(),
        )
    })?;
    let secret: [u8; 32] = ed
        .secret()
        .as_ref()
        .try_into()
        .map_err(|_| NodeError::Config("the Ed25519 identity secret is not 32 bytes".into()))?;
    Ok(SecretKey::from_bytes(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::keys::PublicKey;
    use libp2p::PeerId;

    #[test]
    fn signing_key_is_the_peer_identity() {
        for _ in 0..8 {
            let keypair = Keypair::generate_ed25519();
            let key = signing_key(&keypair).unwrap().public();
            let peer = PeerId::from_public_key(&keypair.public());
            assert_eq!(key.peer_bytes(), peer.to_bytes());
            assert_eq!(PublicKey::from_peer_bytes(&peer.to_bytes()), Some(key));
            // What the core signs, libp2p's view of the same key verifies.
            let sig = signing_key(&keypair).unwrap().sign("d", b"m");
            let ed = keypair.public().try_into_ed25519().unwrap();
            assert_eq!(ed.to_bytes(), key.0);
            assert!(key.verify("d", b"m", &sig).is_ok());
        }
    }

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
