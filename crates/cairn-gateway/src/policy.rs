//! What the gateway answers about access control and
//! server-side encryption, as pure functions: the truth about a Cairn
//! bucket.
//!
//! - **ACLs.** One account owns every bucket and object, and there is no
//!   other principal to grant anything to, which is S3's "bucket owner
//!   enforced" object ownership (the S3 default since 2023): ACL reads
//!   show the owner with `FULL_CONTROL`, and a request that sets any ACL
//!   but `private` or `bucket-owner-full-control` is refused with S3's
//!   own `AccessControlListNotSupported`. Access is granted through bucket
//!   policies instead, as S3 has it in this mode (see [`crate::access`]).
//! - **Encryption.** Every object is encrypted by the node (AES-256-GCM,
//!   before erasure coding), so the bucket's default encryption is
//!   `AES256` and an `AES256` request is honoured as it stands. KMS keys
//!   are `NotImplemented`. A customer-provided key (SSE-C) seals the
//!   object a second time in the gateway ([`crate::sse`]); such an object
//!   reports SSE-C, not `AES256`.

use cairn_core::keys::PublicKey;
use s3s::dto::{
    AccessControlPolicy, Grant, Grantee, Owner, Permission, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    Type,
};

use crate::error::GatewayError;

/// The account's canonical id, as S3 names owners and `CanonicalUser`
/// principals: its public key in hex.
pub fn canonical_id(account: &PublicKey) -> String {
    hex::encode(account.0)
}

/// The owner of everything: the account, by its public key.
pub fn owner(account: &PublicKey) -> Owner {
    Owner {
        display_name: Some("cairn".into()),
        id: Some(canonical_id(account)),
    }
}

/// The one grant there is: the owner's `FULL_CONTROL`.
pub fn owner_grants(account: &PublicKey) -> Vec<Grant> {
    let o = owner(account);
    vec![Grant {
        grantee: Some(Grantee {
            display_name: o.display_name,
            email_address: None,
            id: o.id,
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }]
}

/// What a request asks of ACLs: a canned ACL, `x-amz-grant-*` headers,
/// or a whole policy.
#[derive(Debug, Default)]
pub struct AclRequest<'a> {
    /// `x-amz-acl`.
    pub canned: Option<&'a str>,
    /// Any `x-amz-grant-*` header was given.
    pub grants: bool,
    /// An `AccessControlPolicy` body.
    pub policy: Option<&'a AccessControlPolicy>,
}

/// Whether any `x-amz-grant-*` header is among `grants`.
pub fn any_grant(grants: &[&Option<String>]) -> bool {
    grants.iter().any(|g| g.is_some())
}

/// Refuses any ACL other than the owner's full control.
pub fn check_acl(req: &AclRequest<'_>, account: &PublicKey) -> Result<(), GatewayError> {
    let refuse = |what: String| {
        Err(GatewayError::AclNotSupported(format!(
            "{what}: this gateway serves one account, which owns and alone may read every object \
             (S3's bucket-owner-enforced ownership); only the private ACL applies"
        )))
    };
    if let Some(c) = req.canned
        && !matches!(c, "private" | "bucket-owner-full-control")
    {
        return refuse(format!("the canned ACL {c:?} is not supported"));
    }
    if req.grants {
        return refuse("x-amz-grant-* headers are not supported".into());
    }
    if let Some(p) = req.policy {
        let me = canonical_id(account);
        let only_owner = p.grants.iter().flatten().all(|g| {
            g.grantee.as_ref().and_then(|e| e.id.as_deref()) == Some(me.as_str())
                && g.permission.as_ref().map(Permission::as_str) == Some(Permission::FULL_CONTROL)
        });
        if !only_owner {
            return refuse("an access control policy granting others access".into());
        }
    }
    Ok(())
}

/// The encryption a PUT asks for: `x-amz-server-side-encryption`, and
/// whether it names a KMS key or carries a customer key (SSE-C). Returns
/// what to report back (`AES256`, which is what Cairn does anyway).
pub fn check_sse(
    sse: Option<&ServerSideEncryption>,
    kms_key: bool,
    customer_key: bool,
) -> Result<Option<ServerSideEncryption>, GatewayError> {
    if customer_key {
        // Sealed under the customer's key (crate::sse), reported as SSE-C.
        if sse.is_some() {
            return Err(GatewayError::InvalidArgument(
                "a customer key (SSE-C) and x-amz-server-side-encryption cannot be given together"
                    .into(),
            ));
        }
        return Ok(None);
    }
    match sse.map(ServerSideEncryption::as_str) {
        None => Ok(None),
        Some(ServerSideEncryption::AES256) if !kms_key => Ok(sse.cloned()),
        Some(other) => Err(GatewayError::NotImplemented(format!(
            "server-side encryption {other:?} with KMS keys is not supported: Cairn encrypts every \
             object itself (AES256)"
        ))),
    }
}

/// The bucket's default encryption: `AES256`, always.
pub fn encryption() -> ServerSideEncryptionConfiguration {
    ServerSideEncryptionConfiguration {
        rules: vec![ServerSideEncryptionRule {
            apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                kms_master_key_id: None,
                sse_algorithm: ServerSideEncryption::from_static(ServerSideEncryption::AES256),
            }),
            bucket_key_enabled: Some(false),
        }],
    }
}

/// Accepts a default-encryption setting that is what Cairn does.
pub fn check_encryption(c: &ServerSideEncryptionConfiguration) -> Result<(), GatewayError> {
    for rule in &c.rules {
        if let Some(d) = &rule.apply_server_side_encryption_by_default {
            check_sse(Some(&d.sse_algorithm), d.kms_master_key_id.is_some(), false)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: PublicKey = PublicKey([3; 32]);

    fn grant(id: &str, permission: &'static str) -> Grant {
        Grant {
            grantee: Some(Grantee {
                display_name: None,
                email_address: None,
                id: Some(id.into()),
                type_: Type::from_static(Type::CANONICAL_USER),
                uri: None,
            }),
            permission: Some(Permission::from_static(permission)),
        }
    }

    #[test]
    fn only_the_owners_full_control_is_accepted() {
        let ok = |r: AclRequest<'_>| check_acl(&r, &ME).is_ok();
        assert!(ok(AclRequest::default()));
        assert!(ok(AclRequest {
            canned: Some("private"),
            ..Default::default()
        }));
        assert!(ok(AclRequest {
            canned: Some("bucket-owner-full-control"),
            ..Default::default()
        }));
        for c in ["public-read", "public-read-write", "authenticated-read"] {
            let e = check_acl(
                &AclRequest {
                    canned: Some(c),
                    ..Default::default()
                },
                &ME,
            );
            assert!(matches!(e, Err(GatewayError::AclNotSupported(_))), "{c}");
        }
        assert!(!ok(AclRequest {
            grants: true,
            ..Default::default()
        }));
        let mine = AccessControlPolicy {
            grants: Some(owner_grants(&ME)),
            owner: Some(owner(&ME)),
        };
        assert!(ok(AclRequest {
            policy: Some(&mine),
            ..Default::default()
        }));
        let shared = AccessControlPolicy {
            grants: Some(vec![
                grant(&hex::encode(ME.0), Permission::FULL_CONTROL),
                grant("someone-else", Permission::READ),
            ]),
            owner: None,
        };
        assert!(!ok(AclRequest {
            policy: Some(&shared),
            ..Default::default()
        }));
        let read_only = AccessControlPolicy {
            grants: Some(vec![grant(&hex::encode(ME.0), Permission::READ)]),
            owner: None,
        };
        assert!(!ok(AclRequest {
            policy: Some(&read_only),
            ..Default::default()
        }));
    }

    #[test]
    fn aes256_and_customer_keys_are_honoured_and_kms_refused() {
        let aes = ServerSideEncryption::from_static(ServerSideEncryption::AES256);
        let kms = ServerSideEncryption::from_static(ServerSideEncryption::AWS_KMS);
        assert_eq!(check_sse(None, false, false).unwrap(), None);
        assert_eq!(
            check_sse(Some(&aes), false, false).unwrap(),
            Some(aes.clone())
        );
        // A customer key: sealed by the gateway, reported as SSE-C.
        assert_eq!(check_sse(None, false, true).unwrap(), None);
        assert!(matches!(
            check_sse(Some(&aes), false, true),
            Err(GatewayError::InvalidArgument(_))
        ));
        for (sse, kms_key, customer) in [(Some(&kms), false, false), (Some(&aes), true, false)] {
            assert!(
                matches!(
                    check_sse(sse, kms_key, customer),
                    Err(GatewayError::NotImplemented(_))
                ),
                "{sse:?} {kms_key} {customer}"
            );
        }
        assert!(check_encryption(&encryption()).is_ok());
        let mut c = encryption();
        if let Some(d) = c.rules[0].apply_server_side_encryption_by_default.as_mut() {
            d.sse_algorithm = kms;
        }
        assert!(check_encryption(&c).is_err());
    }
}
