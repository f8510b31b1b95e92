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
//!   before erasure coding), so a bucket's default encryption is
//!   `AES256` and an `AES256` request is honoured as it stands. `aws:kms`
//!   (in a request, or as the bucket's default from PutBucketEncryption)
//!   seals the object a second time in the gateway under a KMS key the
//!   account keeps in its index ([`crate::kms`]); such an object reports
//!   `aws:kms` and its key's ARN. `aws:kms:dsse` is `NotImplemented`. A
//!   customer-provided key (SSE-C) seals the object a second time under
//!   that key ([`crate::sse`]); such an object reports SSE-C, not
//!   `AES256`.

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

/// What a write asks of server-side encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// Nothing: the bucket's default applies.
    Default,
    /// `AES256`: the node's own encryption, which every object has.
    Aes256,
    /// `aws:kms`: sealed under a KMS key of the account ([`crate::kms`]).
    Kms,
    /// A customer-provided key (SSE-C, [`crate::sse`]).
    Customer,
}

/// The encryption a write asks for: `x-amz-server-side-encryption`, and
/// whether it names a KMS key or carries a customer key (SSE-C).
/// `aws:kms:dsse` (two KMS layers) is `NotImplemented`: the gateway has
/// one KMS layer, over the node's own.
pub fn check_sse(
    sse: Option<&ServerSideEncryption>,
    kms_key: bool,
    customer_key: bool,
) -> Result<Asked, GatewayError> {
    let bad = |why: &str| Err(GatewayError::InvalidArgument(why.into()));
    if customer_key {
        // Sealed under the customer's key (crate::sse), reported as SSE-C.
        if sse.is_some() || kms_key {
            return bad(
                "a customer key (SSE-C) and x-amz-server-side-encryption cannot be given together",
            );
        }
        return Ok(Asked::Customer);
    }
    match sse.map(ServerSideEncryption::as_str) {
        None if kms_key => bad(
            "x-amz-server-side-encryption-aws-kms-key-id needs x-amz-server-side-encryption: aws:kms",
        ),
        None => Ok(Asked::Default),
        Some(ServerSideEncryption::AES256) if kms_key => bad(
            "x-amz-server-side-encryption-aws-kms-key-id needs x-amz-server-side-encryption: aws:kms, not AES256",
        ),
        Some(ServerSideEncryption::AES256) => Ok(Asked::Aes256),
        Some(ServerSideEncryption::AWS_KMS) => Ok(Asked::Kms),
        Some(ServerSideEncryption::AWS_KMS_DSSE) => Err(GatewayError::NotImplemented(
            "dual-layer SSE-KMS (aws:kms:dsse) is not supported: use aws:kms, which the gateway \
             seals over the node's own encryption"
                .into(),
        )),
        Some(other) => bad(&format!(
            "{other:?} is not a server-side encryption: AES256 or aws:kms"
        )),
    }
}

/// A bucket's default encryption: `AES256` (the node's, the default of
/// every bucket), or `aws:kms` with the key id it was given (none: the
/// account's default key).
pub fn encryption(kms: Option<(Option<String>, bool)>) -> ServerSideEncryptionConfiguration {
    let (algorithm, key_id, bucket_key) = match kms {
        Some((key_id, bucket_key)) => (ServerSideEncryption::AWS_KMS, key_id, bucket_key),
        None => (ServerSideEncryption::AES256, None, false),
    };
    ServerSideEncryptionConfiguration {
        rules: vec![ServerSideEncryptionRule {
            apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                kms_master_key_id: key_id,
                sse_algorithm: ServerSideEncryption::from_static(algorithm),
            }),
            bucket_key_enabled: Some(bucket_key),
        }],
    }
}

/// What a default-encryption setting asks for: `None` for `AES256` (what
/// Cairn does anyway), else `aws:kms` with its key id (as given) and
/// bucket-key flag.
pub fn check_encryption(
    c: &ServerSideEncryptionConfiguration,
) -> Result<Option<(Option<String>, bool)>, GatewayError> {
    let mut out = None;
    for rule in &c.rules {
        if let Some(d) = &rule.apply_server_side_encryption_by_default {
            let key_id = d.kms_master_key_id.clone().filter(|k| !k.is_empty());
            out = match check_sse(Some(&d.sse_algorithm), key_id.is_some(), false)? {
                Asked::Kms => Some((key_id, rule.bucket_key_enabled.unwrap_or(false))),
                _ => None,
            };
        }
    }
    Ok(out)
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
    fn aes256_kms_and_customer_keys_are_told_apart() {
        let aes = ServerSideEncryption::from_static(ServerSideEncryption::AES256);
        let kms = ServerSideEncryption::from_static(ServerSideEncryption::AWS_KMS);
        let dsse = ServerSideEncryption::from_static(ServerSideEncryption::AWS_KMS_DSSE);
        assert_eq!(check_sse(None, false, false).unwrap(), Asked::Default);
        assert_eq!(check_sse(Some(&aes), false, false).unwrap(), Asked::Aes256);
        assert_eq!(check_sse(Some(&kms), false, false).unwrap(), Asked::Kms);
        assert_eq!(check_sse(Some(&kms), true, false).unwrap(), Asked::Kms);
        // A customer key: sealed by the gateway, reported as SSE-C.
        assert_eq!(check_sse(None, false, true).unwrap(), Asked::Customer);
        for (sse, kms_key, customer) in [
            (Some(&aes), false, true),
            (Some(&kms), false, true),
            (None, true, true),
            (None, true, false),
            (Some(&aes), true, false),
        ] {
            assert!(
                matches!(
                    check_sse(sse, kms_key, customer),
                    Err(GatewayError::InvalidArgument(_))
                ),
                "{sse:?} {kms_key} {customer}"
            );
        }
        assert!(matches!(
            check_sse(Some(&dsse), false, false),
            Err(GatewayError::NotImplemented(_))
        ));
        assert_eq!(check_encryption(&encryption(None)).unwrap(), None);
        let with_key = encryption(Some((Some("alias/aws/s3".into()), true)));
        assert_eq!(
            check_encryption(&with_key).unwrap(),
            Some((Some("alias/aws/s3".into()), true))
        );
        let mut c = encryption(None);
        if let Some(d) = c.rules[0].apply_server_side_encryption_by_default.as_mut() {
            d.sse_algorithm = kms;
        }
        assert_eq!(check_encryption(&c).unwrap(), Some((None, false)));
        if let Some(d) = c.rules[0].apply_server_side_encryption_by_default.as_mut() {
            d.sse_algorithm = dsse;
        }
        assert!(check_encryption(&c).is_err());
    }
}
