//! Bucket policies (PutBucketPolicy): parsing the JSON S3 takes and
//! deciding a request with it, as pure functions.
//!
//! The account's own keys may do anything unless a `Deny` statement names
//! them (or everyone); an anonymous request may do only what an `Allow`
//! statement for everyone grants, and never what a `Deny` takes away: an
//! explicit deny wins, as in IAM. Statements name principals, actions
//! (`s3:GetObject`, with `*` and `?` wildcards) and resources
//! (`arn:aws:s3:::bucket` and `arn:aws:s3:::bucket/key-pattern`) of the
//! bucket itself, or everything but them (`NotPrincipal`, `NotAction`,
//! `NotResource`).
//!
//! **Principals.** `"*"` (or `{"AWS": "*"}`) is everyone; `{"AWS": …}`
//! names access key ids of the gateway (a bare id, or an ARN's last
//! part), or a whole account by its root ARN (`arn:aws:iam::ID:root`) or
//! bare id; `{"CanonicalUser": id}` names an account too. The account's
//! id is its canonical id (the owner id ListBuckets and GetBucketAcl
//! report): it names every key of the account; any other account id
//! (such as a 12-digit AWS one) names no one. `Service` and `Federated`
//! principals name identities that cannot exist here (no AWS service and
//! no federated user ever signs a request to the gateway): they are
//! accepted and match no request, so an `Allow` for them grants nothing
//! and a `Deny` for them refuses nothing, which is what AWS decides for
//! every request not made by them. The types of one map are unioned.
//!
//! **Conditions** are decided as IAM decides them against the request's
//! [`Context`]: operators are ANDed, keys under one operator ANDed, the
//! values of one key ORed (NORed for the negated operators);
//! `ForAnyValue:` and `ForAllValues:` qualify multi-valued keys;
//! `BinaryEquals` compares the key's bytes with base64 values.
//!
//! **Condition keys.** The gateway knows [`KEYS`] of a request, and the
//! object tag keys [`KEY_PREFIXES`] (each present when the request
//! carries it):
//! - `s3:RequestObjectTag/<tag>` and `s3:RequestObjectTagKeys` (every tag
//!   key, multi-valued: use `ForAnyValue:`/`ForAllValues:`) are the tags a
//!   write sets in its `x-amz-tagging` header: PutObject,
//!   CreateMultipartUpload, and CopyObject with
//!   `x-amz-tagging-directive: REPLACE`; and the tags PutObjectTagging (by
//!   version id too) sets in its XML body. s3s parses that body only
//!   after its general access check, which sees headers alone, so
//!   PutObjectTagging is decided in the per-operation check s3s makes
//!   with the parsed input instead (`crate::authorize_tagging`).
//! - `s3:ExistingObjectTag/<tag>` are the tags of the object (or the
//!   version `versionId` names) that an object read or tagging or ACL
//!   request acts on (GetObject, HeadObject, Get/Put/DeleteObjectTagging,
//!   Get/PutObjectAcl), of a copy's source for its read, and of the
//!   objects a bucket website serves. Reading them costs index reads, so
//!   the access check does it only when the bucket's policy names such a
//!   key ([`Policy::uses_key_prefix`]); an object that does not exist has
//!   none (its request fails anyway).
//!
//! Tag keys are matched case-insensitively, as every condition key is.
//! Every other key AWS documents for S3 requests ([`MISSING_KEYS`], and
//! tag keys such as `aws:PrincipalTag/team` or `s3:BucketTag/team`,
//! [`MISSING_KEY_PREFIXES`]) is accepted and always missing: Cairn has no
//! organizations, roles, sessions, MFA, VPCs or regions. A missing key
//! makes a condition false, except that a negated operator
//! (`StringNotEquals`, `StringNotLike`, `NotIpAddress`, `ArnNotLike`, …)
//! is true, `…IfExists` is true, `ForAllValues:` is true (all of none)
//! and `Null: true` matches. So an `Allow` conditioned on
//! `aws:PrincipalOrgID` grants nothing, and a `Deny` on `StringEquals` of
//! `aws:ResourceTag/…` never applies (one on `StringNotEquals` always
//! does); likewise a `Deny` on `StringNotEquals` of
//! `s3:RequestObjectTag/team` refuses every write that sets no such tag.
//! A key AWS does not document, such as a typo, is refused with
//! `MalformedPolicy` naming it: a `Deny` conditioned on a misspelt key
//! would otherwise silently never apply.
//!
//! **Policy variables** ([`template`]): in a `"2012-10-17"` policy,
//! `Resource` and `NotResource` patterns and the values of string and ARN
//! conditions may hold `${key}` (any key above, such as `${aws:username}`,
//! the signing access key id), `${key, 'default'}`, and `${*}`, `${?}`,
//! `${$}` for those characters; each request fills them in from its own
//! context, and what is filled in matches only itself. A variable whose
//! key the request lacks, with no default, leaves its string null, as in
//! IAM: a `Resource` or `NotResource` holding it names nothing, a positive
//! operator does not match it and a negated one does. In a `"2008-10-17"`
//! policy `${` is plain text.
//!
//! A request that touches many keys at once (DeleteObjects) is decided as
//! one on every key of the bucket: a deny of any of its keys refuses the
//! batch, and an anonymous batch needs an allow for all of them.

pub mod template;

use std::collections::BTreeMap;
use std::net::IpAddr;

use data_encoding::BASE64;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::GatewayError;
use template::{Template, Tok};

/// Who may a statement apply to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Principals {
    /// Everyone, signed or not (`"*"`).
    Anyone,
    /// These access key ids of the gateway (none: a principal that no
    /// request can be, such as an AWS service).
    Keys(Vec<String>),
    /// Every access key of the account (`{"CanonicalUser": <its id>}`).
    Account,
}

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// `Effect` is `Allow` (else `Deny`).
    pub allow: bool,
    /// `Principal`, or with `not_principals` `NotPrincipal`.
    pub principals: Principals,
    /// The statement applies to everyone but `principals`.
    pub not_principals: bool,
    /// `Action` patterns, such as `s3:GetObject` or `s3:Get*`.
    pub actions: Vec<String>,
    /// The statement applies to every action but `actions`.
    pub not_actions: bool,
    /// `Resource` patterns (ARNs), perhaps with policy variables.
    pub resources: Vec<Template>,
    /// The statement applies to every resource of the bucket but `resources`.
    pub not_resources: bool,
    /// `Condition`: all must hold.
    pub conditions: Vec<Condition>,
}

/// A statement as version 1 of [`crate::meta::BucketPolicy`] kept it,
/// before `Not*` elements and conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementV1 {
    /// `Effect` is `Allow`.
    pub allow: bool,
    /// `Principal`.
    pub principals: Principals,
    /// `Action` patterns.
    pub actions: Vec<String>,
    /// `Resource` patterns.
    pub resources: Vec<String>,
}

impl From<StatementV1> for Statement {
    fn from(s: StatementV1) -> Self {
        StatementV2 {
            allow: s.allow,
            principals: s.principals,
            not_principals: false,
            actions: s.actions,
            not_actions: false,
            resources: s.resources,
            not_resources: false,
            conditions: Vec::new(),
        }
        .into()
    }
}

/// A statement as version 2 of [`crate::meta::BucketPolicy`] kept it,
/// before policy variables: its strings are plain text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementV2 {
    /// `Effect` is `Allow`.
    pub allow: bool,
    /// `Principal` or `NotPrincipal`.
    pub principals: Principals,
    /// `NotPrincipal`.
    pub not_principals: bool,
    /// `Action` patterns.
    pub actions: Vec<String>,
    /// `NotAction`.
    pub not_actions: bool,
    /// `Resource` patterns.
    pub resources: Vec<String>,
    /// `NotResource`.
    pub not_resources: bool,
    /// `Condition`.
    pub conditions: Vec<ConditionV2>,
}

/// A condition as version 2 of [`crate::meta::BucketPolicy`] kept it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionV2 {
    /// The comparison.
    pub test: Test,
    /// A negated operator.
    pub negated: bool,
    /// `…IfExists`.
    pub if_exists: bool,
    /// `ForAnyValue:` / `ForAllValues:`.
    pub set: Set,
    /// The key, lower case.
    pub key: String,
    /// The policy's values.
    pub values: Vec<String>,
}

impl From<StatementV2> for Statement {
    fn from(s: StatementV2) -> Self {
        // Version 2 took a resource's `${` literally (only conditions
        // refused variables): it keeps meaning what it meant.
        Statement {
            allow: s.allow,
            principals: s.principals,
            not_principals: s.not_principals,
            actions: s.actions,
            not_actions: s.not_actions,
            resources: s.resources.into_iter().map(Template::text).collect(),
            not_resources: s.not_resources,
            conditions: s
                .conditions
                .into_iter()
                .map(|c| Condition {
                    test: c.test,
                    negated: c.negated,
                    if_exists: c.if_exists,
                    set: c.set,
                    key: c.key,
                    values: c.values.into_iter().map(Template::text).collect(),
                })
                .collect(),
        }
    }
}

/// What a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Test {
    /// `StringEquals`, `ArnEquals`.
    StringEquals,
    /// `StringEqualsIgnoreCase`.
    StringEqualsIgnoreCase,
    /// `StringLike`, `ArnLike`: `*` and `?` wildcards.
    StringLike,
    /// `NumericEquals`.
    NumericEquals,
    /// `NumericLessThan`.
    NumericLessThan,
    /// `NumericLessThanEquals`.
    NumericLessThanEquals,
    /// `NumericGreaterThan`.
    NumericGreaterThan,
    /// `NumericGreaterThanEquals`.
    NumericGreaterThanEquals,
    /// `DateEquals` (RFC 3339 or epoch seconds).
    DateEquals,
    /// `DateLessThan`.
    DateLessThan,
    /// `DateLessThanEquals`.
    DateLessThanEquals,
    /// `DateGreaterThan`.
    DateGreaterThan,
    /// `DateGreaterThanEquals`.
    DateGreaterThanEquals,
    /// `Bool`.
    Bool,
    /// `IpAddress`: CIDR blocks or single addresses.
    IpAddress,
    /// `Null`: `true` if the key is absent, `false` if present.
    Null,
    /// `BinaryEquals`: the key's bytes are a base64 value's.
    Binary,
}

/// How a condition treats a key with several values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Set {
    /// No qualifier: the key's value (any of them) must match.
    Single,
    /// `ForAnyValue:`: some value matches (false if there are none).
    AnyValue,
    /// `ForAllValues:`: every value matches (true if there are none).
    AllValues,
}

/// One condition: an operator, a key and the values it is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// The comparison.
    pub test: Test,
    /// A negated operator (`StringNotEquals`, `NotIpAddress`, …): true when
    /// no value matches.
    pub negated: bool,
    /// `…IfExists`: true when the request lacks the key.
    pub if_exists: bool,
    /// `ForAnyValue:` / `ForAllValues:`.
    pub set: Set,
    /// The key, lower case (keys are case-insensitive).
    pub key: String,
    /// The policy's values (with variables only for string tests).
    pub values: Vec<Template>,
}

/// The condition keys the gateway knows of a request (lower case; keys
/// are case-insensitive, `aws:SourceIp` is `aws:sourceip`). A key the
/// request lacks (no `User-Agent`, no `prefix` on a listing) is absent.
pub const KEYS: &[&str] = &[
    // The client's address, as the gateway's socket sees it.
    "aws:sourceip",
    // "true" when the request came over the gateway's own TLS (--tls-cert);
    // behind a TLS proxy it still says what the gateway saw: "false".
    "aws:securetransport",
    "aws:currenttime",
    "aws:epochtime",
    "aws:useragent",
    "aws:referer",
    // "Anonymous" or "User" (a key of the account).
    "aws:principaltype",
    // The access key id that signed the request.
    "aws:username",
    // The same, or "anonymous" (as S3 has it for anonymous requests).
    "aws:userid",
    // "false" on signed requests, and "false" always: no AWS service ever
    // calls the gateway, for itself or for anyone.
    "aws:principalisawsservice",
    "aws:viaawsservice",
    // ListObjects and ListObjectsV2 parameters.
    "s3:prefix",
    "s3:delimiter",
    "s3:max-keys",
    // The `versionId` parameter.
    "s3:versionid",
    // "AWS4-HMAC-SHA256" on signed requests ("AWS" for signature version 2).
    "s3:signatureversion",
    // Milliseconds since a version 4 signature's `X-Amz-Date`.
    "s3:signatureage",
    // "REST-HEADER" or "REST-QUERY-STRING" (presigned).
    "s3:authtype",
    // Writes (s3:PutObject): "true" for those that make the object
    // (PutObject, CopyObject, CompleteMultipartUpload), "false" for the
    // rest of an upload.
    "s3:objectcreationoperation",
    // `If-Match` and `If-None-Match` of PutObject and CompleteMultipartUpload.
    "s3:if-match",
    "s3:if-none-match",
    // Request headers.
    "s3:x-amz-acl",
    "s3:x-amz-content-sha256",
    "s3:x-amz-copy-source",
    "s3:x-amz-grant-full-control",
    "s3:x-amz-grant-read",
    "s3:x-amz-grant-read-acp",
    "s3:x-amz-grant-write",
    "s3:x-amz-grant-write-acp",
    "s3:x-amz-metadata-directive",
    "s3:x-amz-object-ownership",
    "s3:x-amz-server-side-encryption",
    "s3:x-amz-server-side-encryption-aws-kms-key-id",
    "s3:x-amz-server-side-encryption-customer-algorithm",
    "s3:x-amz-storage-class",
    "s3:x-amz-website-redirect-location",
    "s3:object-lock-mode",
    "s3:object-lock-retain-until-date",
    "s3:object-lock-legal-hold",
    // The keys of the tags a write sets (`x-amz-tagging`): multi-valued.
    "s3:requestobjecttagkeys",
];

/// Prefixes of the tag keys the gateway knows (`s3:ExistingObjectTag/team`),
/// with any tag name: see the module docs for which requests have them.
pub const KEY_PREFIXES: &[&str] = &[EXISTING_OBJECT_TAG, REQUEST_OBJECT_TAG];

/// The prefix of the keys of the tags of the object a request acts on.
pub const EXISTING_OBJECT_TAG: &str = "s3:existingobjecttag/";

/// The prefix of the keys of the tags a write sets.
pub const REQUEST_OBJECT_TAG: &str = "s3:requestobjecttag/";

/// The condition keys AWS documents for S3 requests that no request to the
/// gateway ever has (lower case): accepted, and always missing.
pub const MISSING_KEYS: &[&str] = &[
    // The principal: no AWS accounts, organizations, tags or services.
    "aws:principalarn",
    "aws:principalaccount",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:principalservicename",
    "aws:principalservicenameslist",
    // Role sessions, federation and MFA.
    "aws:assumedroot",
    "aws:federatedprovider",
    "aws:tokenissuetime",
    "aws:signinsessionarn",
    "aws:multifactorauthage",
    "aws:multifactorauthpresent",
    "aws:chatbotsourcearn",
    "aws:ec2instancesourcevpc",
    "aws:ec2instancesourceprivateipv4",
    "aws:sourceidentity",
    "ec2:roledelivery",
    "ec2:sourceinstancearn",
    "glue:roleassumedby",
    "glue:credentialissuingservice",
    "codebuild:buildarn",
    "codebuild:projectarn",
    "lambda:sourcefunctionarn",
    "ssm:sourceinstancearn",
    "identitystore:userid",
    // The network: no VPCs or endpoints.
    "aws:sourcevpc",
    "aws:sourcevpcarn",
    "aws:sourcevpce",
    "aws:vpceaccount",
    "aws:vpceorgid",
    "aws:vpceorgpaths",
    "aws:vpcsourceip",
    // The resource's account and organization.
    "aws:resourceaccount",
    "aws:resourceorgid",
    "aws:resourceorgpaths",
    // Requests made by or through AWS services, regions, request tags.
    "aws:calledvia",
    "aws:calledviafirst",
    "aws:calledvialast",
    "aws:calledviaawsmcp",
    "aws:viaawsmcpservice",
    "aws:ismcpserviceaction",
    "aws:requestedregion",
    "aws:tagkeys",
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:sourceorgid",
    "aws:sourceorgpaths",
    // S3: access points and grants, batch jobs, inventory, replication,
    // accounts, regions, the TLS version, and retention days.
    "s3:accessgrantscope",
    "s3:accessgrantsinstancearn",
    "s3:accessgrantslocationscope",
    "s3:accesspointnetworkorigin",
    "s3:dataaccesspointaccount",
    "s3:dataaccesspointarn",
    "s3:existingjoboperation",
    "s3:existingjobpriority",
    "s3:jobsuspendedcause",
    "s3:requestjoboperation",
    "s3:requestjobpriority",
    "s3:inventoryaccessibleoptionalfields",
    "s3:destinationregion",
    "s3:isreplicationpauserequest",
    "s3:resourceaccount",
    "s3:locationconstraint",
    "s3:tlsversion",
    "s3:object-lock-remaining-retention-days",
    "s3:x-amz-bucket-namespace",
];

/// Prefixes of the documented keys that name a tag (`aws:PrincipalTag/team`):
/// accepted with any tag name, and always missing, as [`MISSING_KEYS`].
pub const MISSING_KEY_PREFIXES: &[&str] = &[
    "aws:principaltag/",
    "aws:requesttag/",
    "aws:resourcetag/",
    "s3:buckettag/",
    "s3:accesspointtag/",
];

/// Whether `key` (lower case) is a condition key a policy may name.
pub fn known_key(key: &str) -> bool {
    KEYS.contains(&key)
        || MISSING_KEYS.contains(&key)
        || KEY_PREFIXES
            .iter()
            .chain(MISSING_KEY_PREFIXES)
            .any(|p| key.strip_prefix(p).is_some_and(|tag| !tag.is_empty()))
}

/// What the gateway knows of a request, for conditions: key (lower case)
/// to values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    values: BTreeMap<String, Vec<String>>,
}

impl Context {
    /// An empty context (every key absent).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (any case) to one value.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.values
            .insert(key.to_ascii_lowercase(), vec![value.into()]);
        self
    }

    /// Sets `key` (any case) to several values (none: absent), as IAM's
    /// multi-valued keys such as `s3:RequestObjectTagKeys`.
    pub fn set_all(&mut self, key: &str, values: Vec<String>) -> &mut Self {
        let key = key.to_ascii_lowercase();
        if values.is_empty() {
            self.values.remove(&key);
        } else {
            self.values.insert(key, values);
        }
        self
    }

    /// Adds the tags a write sets: `s3:RequestObjectTag/<key>` for each,
    /// and their keys as `s3:RequestObjectTagKeys`.
    pub fn set_request_tags(&mut self, tags: &[(String, String)]) -> &mut Self {
        self.set_tags(REQUEST_OBJECT_TAG, tags);
        self.set_all(
            "s3:requestobjecttagkeys",
            tags.iter().map(|(k, _)| k.clone()).collect(),
        )
    }

    /// Adds the tags of the object a request acts on, as
    /// `s3:ExistingObjectTag/<key>`.
    pub fn set_existing_tags(&mut self, tags: &[(String, String)]) -> &mut Self {
        self.set_tags(EXISTING_OBJECT_TAG, tags)
    }

    fn set_tags(&mut self, prefix: &str, tags: &[(String, String)]) -> &mut Self {
        for (k, v) in tags {
            // Condition keys are case-insensitive, tag keys are not: tags
            // differing only in case share one key, with both values.
            self.values
                .entry(format!("{prefix}{}", k.to_ascii_lowercase()))
                .or_default()
                .push(v.clone());
        }
        self
    }

    fn get(&self, key: &str) -> Option<&[String]> {
        self.values.get(key).map(Vec::as_slice)
    }

    /// The value a policy variable of `key` (lower case) stands for: none
    /// if the key is absent or has several values, as in IAM.
    fn variable(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// A bucket's policy, as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The statements, in order.
    pub statements: Vec<Statement>,
}

impl Policy {
    /// Whether any statement names a condition key starting with `prefix`
    /// (lower case), in a condition or a policy variable: the access check
    /// asks before paying for keys that cost reads
    /// ([`EXISTING_OBJECT_TAG`]).
    pub fn uses_key_prefix(&self, prefix: &str) -> bool {
        self.statements.iter().any(|s| {
            s.resources.iter().any(|r| r.mentions_prefix(prefix))
                || s.conditions.iter().any(|c| {
                    c.key.starts_with(prefix) || c.values.iter().any(|v| v.mentions_prefix(prefix))
                })
        })
    }
}

/// Who sent a request.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    /// No signature.
    Anonymous,
    /// Signed with this access key id of the account.
    Key(&'a str),
}

/// The largest policy text accepted (S3's limit).
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

/// One or many strings (`"x"` or `["x", "y"]`).
fn strings(v: &Json, what: &str) -> Result<Vec<String>, GatewayError> {
    let bad =
        || GatewayError::MalformedPolicy(format!("{what} must be a string or a list of strings"));
    match v {
        Json::String(s) => Ok(vec![s.clone()]),
        Json::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

/// Parses and checks the policy `text` for `bucket` of the account whose
/// canonical id (S3's owner id) is `account`.
pub fn parse(text: &str, bucket: &str, account: &str) -> Result<Policy, GatewayError> {
    let bad = |why: String| GatewayError::MalformedPolicy(why);
    if text.len() > MAX_POLICY_BYTES {
        return Err(bad(format!(
            "a bucket policy is at most {MAX_POLICY_BYTES} bytes"
        )));
    }
    let doc: Json = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    // Policy variables came with version 2012-10-17; before, `${` is text.
    let variables = match doc.get("Version").and_then(Json::as_str) {
        Some("2012-10-17") => true,
        Some("2008-10-17") => false,
        _ => {
            return Err(bad(
                "Version must be \"2012-10-17\" (or \"2008-10-17\")".into()
            ));
        }
    };
    let template = |s: &str| {
        if variables {
            Template::parse(s)
        } else {
            Ok(Template::text(s))
        }
    };
    let list = match doc.get("Statement") {
        Some(Json::Array(a)) => a.clone(),
        Some(s @ Json::Object(_)) => vec![s.clone()],
        _ => return Err(bad("Statement must be a statement or a list of them".into())),
    };
    if list.is_empty() {
        return Err(bad("a policy has at least one statement".into()));
    }
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let objects = format!("{bucket_arn}/");
    let mut statements = Vec::with_capacity(list.len());
    for s in &list {
        let Json::Object(m) = s else {
            return Err(bad("each statement is an object".into()));
        };
        for key in m.keys() {
            match key.as_str() {
                "Sid" | "Effect" | "Principal" | "NotPrincipal" | "Action" | "NotAction"
                | "Resource" | "NotResource" | "Condition" => {}
                other => return Err(bad(format!("unknown statement element {other:?}"))),
            }
        }
        let allow = match m.get("Effect").and_then(Json::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            _ => return Err(bad("Effect must be \"Allow\" or \"Deny\"".into())),
        };
        let (principal, not_principals) = one_of(m, "Principal")?;
        let principals = principals(principal, account)?;
        let (action, not_actions) = one_of(m, "Action")?;
        let actions = strings(action, if not_actions { "NotAction" } else { "Action" })?;
        if let Some(a) = actions
            .iter()
            .find(|a| !(a.starts_with("s3:") || *a == "*"))
        {
            return Err(bad(format!("action {a:?} is not an s3: action")));
        }
        let (resource, not_resources) = one_of(m, "Resource")?;
        let mut resources = Vec::new();
        for r in strings(
            resource,
            if not_resources {
                "NotResource"
            } else {
                "Resource"
            },
        )? {
            let t = template(&r)?;
            // What a resource names whatever its variables hold must be
            // the bucket or inside it.
            let (fixed, varies) = t.fixed_prefix();
            if !((!varies && fixed == bucket_arn) || fixed.starts_with(&objects)) {
                return Err(bad(format!(
                    "resource {r:?} is not this bucket ({bucket_arn}) or its objects"
                )));
            }
            resources.push(t);
        }
        if actions.is_empty() || resources.is_empty() {
            return Err(bad("every statement names an action and a resource".into()));
        }
        let conditions = match m.get("Condition") {
            Some(c) => conditions(c, variables)?,
            None => Vec::new(),
        };
        statements.push(Statement {
            allow,
            principals,
            not_principals,
            actions,
            not_actions,
            resources,
            not_resources,
            conditions,
        });
    }
    Ok(Policy { statements })
}

/// A statement's `element` or `Notelement` (exactly one of them), and
/// whether it was the `Not` one.
fn one_of<'a>(
    m: &'a serde_json::Map<String, Json>,
    element: &str,
) -> Result<(&'a Json, bool), GatewayError> {
    let not = format!("Not{element}");
    match (m.get(element), m.get(&not)) {
        (Some(v), None) => Ok((v, false)),
        (None, Some(v)) => Ok((v, true)),
        (Some(_), Some(_)) => Err(GatewayError::MalformedPolicy(format!(
            "a statement has {element} or {not}, not both"
        ))),
        (None, None) => Err(GatewayError::MalformedPolicy(format!(
            "every statement names a {element} (or {not})"
        ))),
    }
}

/// A `Principal` (or `NotPrincipal`) element, for the account whose
/// canonical id is `account`.
fn principals(v: &Json, account: &str) -> Result<Principals, GatewayError> {
    let bad = |why: String| GatewayError::MalformedPolicy(why);
    let p = match v {
        Json::String(s) if s == "*" => return Ok(Principals::Anyone),
        Json::Object(p) if !p.is_empty() => p,
        _ => {
            return Err(bad(
                "Principal must be \"*\" or an object of principal types \
                 (AWS, CanonicalUser, Service, Federated)"
                    .into(),
            ));
        }
    };
    let (mut anyone, mut whole_account, mut keys) = (false, false, Vec::new());
    for (kind, ids) in p {
        let ids = strings(ids, &format!("Principal.{kind}"))?;
        if ids.is_empty() {
            return Err(bad(format!("Principal.{kind} names no one")));
        }
        match kind.as_str() {
            "AWS" => {
                for id in &ids {
                    match aws_principal(id, account) {
                        AwsPrincipal::Anyone => anyone = true,
                        AwsPrincipal::Account(ours) => whole_account |= ours,
                        AwsPrincipal::Key(k) => keys.push(k),
                    }
                }
            }
            // The account's id is hex; any case names it.
            "CanonicalUser" => whole_account |= ids.iter().any(|i| i.eq_ignore_ascii_case(account)),
            // No AWS service or federated user can sign a request here:
            // these name no one who can ask.
            "Service" | "Federated" => {}
            other => {
                return Err(bad(format!(
                    "unknown principal type {other:?} (AWS, CanonicalUser, Service or Federated)"
                )));
            }
        }
    }
    Ok(if anyone {
        Principals::Anyone
    } else if whole_account {
        Principals::Account
    } else {
        Principals::Keys(keys)
    })
}

/// What one `{"AWS": …}` principal names.
#[derive(Debug, PartialEq, Eq)]
enum AwsPrincipal {
    /// `"*"`.
    Anyone,
    /// An account (`arn:aws:iam::ID:root`, or a bare account id): this
    /// account (true) or one that does not exist here (false).
    Account(bool),
    /// An access key of the gateway.
    Key(String),
}

/// Reads one `{"AWS": …}` principal. IAM names a whole account by its root
/// ARN or bare id; here the account's id is its canonical id (hex, any
/// case), and a 12-digit AWS account id can only be another account. A
/// user ARN (`arn:aws:iam::ID:user/KEY`), or any other ARN, names the
/// access key in its last part, as does a bare key id.
fn aws_principal(id: &str, account: &str) -> AwsPrincipal {
    if id == "*" {
        return AwsPrincipal::Anyone;
    }
    let is_account = |a: &str| a.eq_ignore_ascii_case(account);
    let aws_account_id = |a: &str| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = id.strip_prefix("arn:aws:iam::")
        && let Some((acct, "root")) = rest.split_once(':')
    {
        return AwsPrincipal::Account(is_account(acct));
    }
    if is_account(id) || aws_account_id(id) {
        return AwsPrincipal::Account(is_account(id));
    }
    AwsPrincipal::Key(id.rsplit(['/', ':']).next().unwrap_or(id).to_string())
}

/// A `Condition` element: `{operator: {key: value or [values]}}`;
/// `variables`: string values may hold policy variables.
fn conditions(v: &Json, variables: bool) -> Result<Vec<Condition>, GatewayError> {
    let bad = |why: String| GatewayError::MalformedPolicy(why);
    let Json::Object(ops) = v else {
        return Err(bad("Condition must be an object of operators".into()));
    };
    let mut out = Vec::new();
    for (name, keys) in ops {
        let (set, op) = if let Some(rest) = name.strip_prefix("ForAnyValue:") {
            (Set::AnyValue, rest)
        } else if let Some(rest) = name.strip_prefix("ForAllValues:") {
            (Set::AllValues, rest)
        } else {
            (Set::Single, name.as_str())
        };
        let (op, if_exists) = match op.strip_suffix("IfExists") {
            Some(op) => (op, true),
            None => (op, false),
        };
        let (test, negated) = match op {
            "StringEquals" => (Test::StringEquals, false),
            "StringNotEquals" => (Test::StringEquals, true),
            "StringEqualsIgnoreCase" => (Test::StringEqualsIgnoreCase, false),
            "StringNotEqualsIgnoreCase" => (Test::StringEqualsIgnoreCase, true),
            // IAM's ARN operators both take wildcards.
            "StringLike" | "ArnEquals" | "ArnLike" => (Test::StringLike, false),
            "StringNotLike" | "ArnNotEquals" | "ArnNotLike" => (Test::StringLike, true),
            "NumericEquals" => (Test::NumericEquals, false),
            "NumericNotEquals" => (Test::NumericEquals, true),
            "NumericLessThan" => (Test::NumericLessThan, false),
            "NumericLessThanEquals" => (Test::NumericLessThanEquals, false),
            "NumericGreaterThan" => (Test::NumericGreaterThan, false),
            "NumericGreaterThanEquals" => (Test::NumericGreaterThanEquals, false),
            "DateEquals" => (Test::DateEquals, false),
            "DateNotEquals" => (Test::DateEquals, true),
            "DateLessThan" => (Test::DateLessThan, false),
            "DateLessThanEquals" => (Test::DateLessThanEquals, false),
            "DateGreaterThan" => (Test::DateGreaterThan, false),
            "DateGreaterThanEquals" => (Test::DateGreaterThanEquals, false),
            "Bool" => (Test::Bool, false),
            "IpAddress" => (Test::IpAddress, false),
            "NotIpAddress" => (Test::IpAddress, true),
            "Null" if !if_exists && set == Set::Single => (Test::Null, false),
            "BinaryEquals" => (Test::Binary, false),
            _ => return Err(bad(format!("unknown condition operator {name:?}"))),
        };
        let Json::Object(keys) = keys else {
            return Err(bad(format!("{name} must be an object of condition keys")));
        };
        // IAM fills variables in string and ARN conditions only.
        let string_test = matches!(
            test,
            Test::StringEquals | Test::StringEqualsIgnoreCase | Test::StringLike
        );
        for (key, values) in keys {
            let lower = key.to_ascii_lowercase();
            if !known_key(&lower) {
                return Err(bad(format!(
                    "condition key {key:?} is not a condition key AWS documents for S3 \
                     (a misspelling?); the gateway knows {} and treats the other \
                     documented keys as missing",
                    KEYS.join(", ")
                )));
            }
            let values = condition_values(values).ok_or_else(|| {
                bad(format!(
                    "{name} {key}: values are strings, numbers or booleans"
                ))
            })?;
            if values.is_empty() {
                return Err(bad(format!("{name} {key}: no values")));
            }
            let mut templates = Vec::with_capacity(values.len());
            for v in &values {
                let fits = match test {
                    Test::NumericEquals
                    | Test::NumericLessThan
                    | Test::NumericLessThanEquals
                    | Test::NumericGreaterThan
                    | Test::NumericGreaterThanEquals => number(v).is_some(),
                    Test::DateEquals
                    | Test::DateLessThan
                    | Test::DateLessThanEquals
                    | Test::DateGreaterThan
                    | Test::DateGreaterThanEquals => date(v).is_some(),
                    Test::Bool | Test::Null => {
                        v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")
                    }
                    Test::IpAddress => Cidr::parse(v).is_some(),
                    Test::Binary => BASE64.decode(v.as_bytes()).is_ok(),
                    Test::StringEquals | Test::StringEqualsIgnoreCase | Test::StringLike => true,
                };
                if !fits {
                    let why = if test == Test::Binary {
                        " (BinaryEquals takes base64)"
                    } else if v.contains("${") {
                        " (policy variables work in string and ARN conditions only)"
                    } else {
                        ""
                    };
                    return Err(bad(format!(
                        "{name} {key}: {v:?} is not a valid value{why}"
                    )));
                }
                templates.push(if variables && string_test {
                    Template::parse(v)?
                } else {
                    Template::text(v.as_str())
                });
            }
            out.push(Condition {
                test,
                negated,
                if_exists,
                set,
                key: lower,
                values: templates,
            });
        }
    }
    Ok(out)
}

/// A condition's value or values, as strings (`true`, `10` and `"10"`
/// are all allowed, as IAM allows them).
fn condition_values(v: &Json) -> Option<Vec<String>> {
    let one = |v: &Json| match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Json::Array(a) => a.iter().map(one).collect(),
        v => one(v).map(|s| vec![s]),
    }
}

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A date as IAM takes it: RFC 3339 (`2026-12-07T12:00:00Z`), a bare
/// date (`2026-12-07`), or epoch seconds; in Unix seconds.
fn date(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Some(secs);
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    let day =
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(day.midnight().assume_utc().unix_timestamp())
}

/// An address block (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { net: addr, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefix = |a: u128, b: u128, width: u32| {
            let bits = u32::from(self.bits);
            bits == 0 || (a ^ b) >> (width - bits) == 0
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                prefix(u128::from(u32::from(n)), u128::from(u32::from(i)), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => prefix(u128::from(n), u128::from(i), 128),
            _ => false,
        }
    }
}

/// Whether `value` from the request `cx` matches the policy's `want`
/// under `test`. A `want` whose variable has no value is IAM's null,
/// which nothing equals or matches.
fn compare(test: Test, value: &str, want: &Template, cx: &Context) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    if test == Test::StringLike {
        return want
            .pattern(cx)
            .is_some_and(|p| template::glob(&p, value, false));
    }
    let Some(want) = want.string(cx) else {
        return false;
    };
    let want = want.as_ref();
    let numbers = || number(value)?.partial_cmp(&number(want)?);
    let dates = || Some(date(value)?.cmp(&date(want)?));
    match test {
        Test::StringEquals => value == want,
        Test::StringEqualsIgnoreCase => value.to_lowercase() == want.to_lowercase(),
        Test::StringLike => false,
        Test::NumericEquals => numbers() == Some(Equal),
        Test::NumericLessThan => numbers() == Some(Less),
        Test::NumericLessThanEquals => matches!(numbers(), Some(Less | Equal)),
        Test::NumericGreaterThan => numbers() == Some(Greater),
        Test::NumericGreaterThanEquals => matches!(numbers(), Some(Greater | Equal)),
        Test::DateEquals => dates() == Some(Equal),
        Test::DateLessThan => dates() == Some(Less),
        Test::DateLessThanEquals => matches!(dates(), Some(Less | Equal)),
        Test::DateGreaterThan => dates() == Some(Greater),
        Test::DateGreaterThanEquals => matches!(dates(), Some(Greater | Equal)),
        Test::Bool => value.eq_ignore_ascii_case(want),
        Test::IpAddress => match (value.parse::<IpAddr>(), Cidr::parse(want)) {
            (Ok(ip), Some(block)) => block.contains(ip),
            _ => false,
        },
        Test::Binary => BASE64
            .decode(want.as_bytes())
            .is_ok_and(|bytes| bytes == value.as_bytes()),
        Test::Null => false,
    }
}

/// Whether condition `c` holds for the request `cx`.
fn holds(c: &Condition, cx: &Context) -> bool {
    let present = cx.get(&c.key).filter(|v| !v.is_empty());
    if c.test == Test::Null {
        return c.values.iter().any(|v| {
            v.string(cx).is_some_and(|v| v.eq_ignore_ascii_case("true")) == present.is_none()
        });
    }
    let Some(request) = present else {
        // IAM: an absent key fails a condition, passes a negated one, an
        // `IfExists` one, and a `ForAllValues:` one (all of none).
        return c.if_exists || c.set == Set::AllValues || (c.negated && c.set == Set::Single);
    };
    let matches = |v: &String| c.values.iter().any(|want| compare(c.test, v, want, cx));
    match (c.set, c.negated) {
        (Set::Single | Set::AnyValue, false) => request.iter().any(matches),
        (Set::Single, true) => !request.iter().any(matches),
        (Set::AnyValue, true) => request.iter().any(|v| !matches(v)),
        (Set::AllValues, false) => request.iter().all(matches),
        (Set::AllValues, true) => request.iter().all(|v| !matches(v)),
    }
}

/// Whether `s` fits `pattern` (`*` any run, `?` one character).
fn glob(pattern: &str, s: &str, ignore_case: bool) -> bool {
    let p: Vec<Tok> = template::wild(pattern).collect();
    template::glob(&p, s, ignore_case)
}

/// What a request is, for a policy: the action S3 would name and the
/// resource (an object key, or none for the bucket itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The bucket (`arn:aws:s3:::bucket`).
    Bucket,
    /// One object.
    Object(&'a str),
    /// Objects named in the request body (DeleteObjects): any key.
    AnyObject,
}

/// The policy action of an S3 operation, and whether it names an object;
/// `version` says the request names an object version (`versionId`),
/// which S3 authorizes as its own actions.
pub fn action_of(op: &str, version: bool) -> (String, bool) {
    let object = |a: &str| (format!("s3:{a}"), true);
    match op {
        "GetObject" | "HeadObject" if version => object("GetObjectVersion"),
        "DeleteObject" if version => object("DeleteObjectVersion"),
        "GetObjectTagging" if version => object("GetObjectVersionTagging"),
        "PutObjectTagging" if version => object("PutObjectVersionTagging"),
        "DeleteObjectTagging" if version => object("DeleteObjectVersionTagging"),
        "GetObjectAcl" if version => object("GetObjectVersionAcl"),
        "PutObjectAcl" if version => object("PutObjectVersionAcl"),
        "GetObject" | "HeadObject" => object("GetObject"),
        "PutObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => object("PutObject"),
        "DeleteObject" | "DeleteObjects" => object("DeleteObject"),
        "AbortMultipartUpload" => object("AbortMultipartUpload"),
        "ListParts" => object("ListMultipartUploadParts"),
        "GetObjectTagging"
        | "PutObjectTagging"
        | "DeleteObjectTagging"
        | "GetObjectAcl"
        | "PutObjectAcl" => object(op),
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => ("s3:ListBucket".into(), false),
        "ListMultipartUploads" => ("s3:ListBucketMultipartUploads".into(), false),
        "ListObjectVersions" => ("s3:ListBucketVersions".into(), false),
        "ListBuckets" => ("s3:ListAllMyBuckets".into(), false),
        "DeleteBucketTagging" => ("s3:PutBucketTagging".into(), false),
        "DeleteBucketCors" => ("s3:PutBucketCORS".into(), false),
        "GetBucketCors" => ("s3:GetBucketCORS".into(), false),
        "PutBucketCors" => ("s3:PutBucketCORS".into(), false),
        "GetBucketLifecycleConfiguration" => ("s3:GetLifecycleConfiguration".into(), false),
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => {
            ("s3:PutLifecycleConfiguration".into(), false)
        }
        other => (format!("s3:{other}"), false),
    }
}

/// The bucket and key an `x-amz-copy-source` header names
/// (`bucket/key` or `/bucket/key`, percent-encoded, perhaps with
/// `?versionId=`).
pub fn copy_source(header: &str) -> Option<(String, String)> {
    let path = header.split('?').next()?;
    let decoded = crate::rules::percent_decode(path.trim_start_matches('/'))?;
    let (bucket, key) = decoded.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

/// The policy's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A `Deny` statement applies.
    Deny,
    /// An `Allow` statement applies and no `Deny`.
    Allow,
    /// No statement applies.
    None,
}

/// Decides `action` on `target` in `bucket` by `who` under `policy`, for
/// a request whose condition keys are `cx`.
pub fn decide(
    policy: &Policy,
    bucket: &str,
    who: Who<'_>,
    action: &str,
    target: Target<'_>,
    cx: &Context,
) -> Decision {
    let arn = format!("arn:aws:s3:::{bucket}");
    let objects: Vec<Tok> = format!("{arn}/").chars().map(Tok::Char).collect();
    let all_objects: Vec<Tok> = objects.iter().copied().chain([Tok::Any]).collect();
    // A resource whose variable has no value in this request names nothing.
    let names = |r: &Template, name: &str| {
        r.pattern(cx)
            .is_some_and(|p| template::glob(&p, name, false))
    };
    let mut allowed = false;
    for s in &policy.statements {
        let named = match (&s.principals, who) {
            (Principals::Anyone, _) | (Principals::Account, Who::Key(_)) => true,
            (Principals::Keys(ids), Who::Key(k)) => ids.iter().any(|i| i == k),
            (Principals::Keys(_) | Principals::Account, Who::Anonymous) => false,
        };
        let action_named = s.actions.iter().any(|a| glob(a, action, true));
        if named == s.not_principals || action_named == s.not_actions {
            continue;
        }
        let resource = match target {
            Target::Bucket => s.resources.iter().any(|r| names(r, &arn)) != s.not_resources,
            Target::Object(key) => {
                let object = format!("{arn}/{key}");
                s.resources.iter().any(|r| names(r, &object)) != s.not_resources
            }
            // A deny of any key covers the batch; an allow must cover all.
            Target::AnyObject => {
                let patterns: Vec<Vec<Tok>> =
                    s.resources.iter().filter_map(|r| r.pattern(cx)).collect();
                let some = patterns.iter().any(|p| p.starts_with(&objects));
                let all = patterns.contains(&all_objects);
                match (s.allow, s.not_resources) {
                    (false, false) => some,
                    (true, false) => all,
                    (false, true) => !all,
                    (true, true) => !some,
                }
            }
        };
        if !resource || !s.conditions.iter().all(|c| holds(c, cx)) {
            continue;
        }
        if !s.allow {
            return Decision::Deny;
        }
        allowed = true;
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::None
    }
}

/// Whether the policy grants anything to everyone (GetBucketPolicyStatus's
/// `IsPublic`). As in S3, a grant only to fixed addresses (an `IpAddress`
/// condition on `aws:SourceIp`) is not public.
pub fn is_public(policy: &Policy) -> bool {
    policy.statements.iter().any(|s| {
        let everyone = if s.not_principals {
            s.principals != Principals::Anyone
        } else {
            s.principals == Principals::Anyone
        };
        let fixed_addresses = s
            .conditions
            .iter()
            .any(|c| c.test == Test::IpAddress && !c.negated && c.key == "aws:sourceip");
        s.allow && everyone && !fixed_addresses
    })
}

/// Whether `who` may do `action` on `target`: the account's keys unless
/// denied, anonymous requests only if allowed.
pub fn permits(
    policy: Option<&Policy>,
    bucket: &str,
    who: Who<'_>,
    action: &str,
    target: Target<'_>,
    cx: &Context,
) -> bool {
    let d = policy.map_or(Decision::None, |p| {
        decide(p, bucket, who, action, target, cx)
    });
    match who {
        Who::Key(_) => d != Decision::Deny,
        Who::Anonymous => d == Decision::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The account's canonical id in these tests.
    const ACCOUNT: &str = "00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee";

    const PUBLIC_READ: &str = r#"{
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "read", "Effect": "Allow", "Principal": "*",
             "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::site/public/*"},
            {"Effect": "Allow", "Principal": {"AWS": "*"},
             "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::site"},
            {"Effect": "Deny", "Principal": {"AWS": ["arn:aws:iam::000:user/CKLIMITED"]},
             "Action": "s3:Delete*", "Resource": "arn:aws:s3:::site/*"},
            {"Effect": "Deny", "Principal": "*",
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/public/secret?.txt"}
        ]
    }"#;

    #[test]
    fn anonymous_requests_get_only_what_an_allow_grants_and_a_deny_wins() {
        let p = parse(PUBLIC_READ, "site", ACCOUNT).unwrap();
        let cx = Context::new();
        let anon =
            |action: &str, target| permits(Some(&p), "site", Who::Anonymous, action, target, &cx);
        assert!(anon("s3:GetObject", Target::Object("public/index.html")));
        assert!(!anon("s3:GetObject", Target::Object("private/x")));
        assert!(
            !anon("s3:GetObject", Target::Object("public/secret1.txt")),
            "deny wins"
        );
        assert!(
            anon("s3:GetObject", Target::Object("public/secret10.txt")),
            "? is one character"
        );
        assert!(anon("s3:ListBucket", Target::Bucket));
        assert!(!anon("s3:PutObject", Target::Object("public/x")));
        assert!(!anon("s3:DeleteObject", Target::AnyObject));
        assert!(!permits(
            None,
            "site",
            Who::Anonymous,
            "s3:GetObject",
            Target::Object("a"),
            &cx
        ));
        assert!(is_public(&p));
        let private = Policy {
            statements: p.statements.iter().filter(|s| !s.allow).cloned().collect(),
        };
        assert!(!is_public(&private), "denies make nothing public");
    }

    #[test]
    fn account_keys_may_do_anything_not_denied_to_them() {
        let p = parse(PUBLIC_READ, "site", ACCOUNT).unwrap();
        let cx = Context::new();
        let key =
            |k, action: &str, target| permits(Some(&p), "site", Who::Key(k), action, target, &cx);
        assert!(key("CKOTHER", "s3:DeleteObject", Target::Object("a")));
        assert!(!key("CKLIMITED", "s3:DeleteObject", Target::Object("a")));
        assert!(
            !key("CKLIMITED", "s3:DeleteObject", Target::AnyObject),
            "a batch is refused whole"
        );
        assert!(key("CKLIMITED", "s3:PutObject", Target::Object("a")));
        assert!(!key(
            "CKOTHER",
            "s3:GetObject",
            Target::Object("public/secret2.txt")
        ));
        assert!(permits(
            None,
            "site",
            Who::Key("CK"),
            "s3:DeleteObject",
            Target::Object("a"),
            &cx
        ));
    }

    #[test]
    fn malformed_policies_are_refused_and_the_rest_accepted() {
        let one = |stmt: &str| format!(r#"{{"Version": "2012-10-17", "Statement": {stmt}}}"#);
        let ok = r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}"#;
        assert!(parse(&one(ok), "b", ACCOUNT).is_ok());
        let code = |text: &str| match parse(text, "b", ACCOUNT) {
            Err(GatewayError::NotImplemented(_)) => "NotImplemented",
            Err(GatewayError::MalformedPolicy(_)) => "MalformedPolicy",
            Err(_) => "other",
            Ok(_) => "ok",
        };
        let cond = |c: &str| {
            one(&format!(
                r#"{{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*", "Condition": {c}}}"#
            ))
        };
        // Documented keys the gateway never has, BinaryEquals and policy
        // variables are accepted.
        for good in [
            r#"{"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}"#,
            r#"{"StringEquals": {"aws:PrincipalOrgID": "o-1"}}"#,
            r#"{"StringEquals": {"aws:PrincipalTag/team": "blue"}}"#,
            r#"{"StringNotEquals": {"s3:ExistingObjectTag/class": "secret"}}"#,
            r#"{"NumericLessThan": {"s3:TlsVersion": "1.2"}}"#,
            r#"{"Bool": {"aws:MultiFactorAuthPresent": "true"}}"#,
            r#"{"ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": "a"}}"#,
            r#"{"StringEquals": {"s3:VersionId": "v1"}}"#,
            r#"{"NumericLessThan": {"s3:signatureAge": 600000}}"#,
            r#"{"BinaryEquals": {"aws:UserAgent": "QmluYXJ5"}}"#,
            r#"{"BinaryEqualsIfExists": {"aws:UserAgent": ["QmluYXJ5", ""]}}"#,
            r#"{"StringLike": {"s3:prefix": "home/${aws:username}/*"}}"#,
            r#"{"StringEquals": {"aws:Referer": "${aws:PrincipalTag/site, 'none'}"}}"#,
        ] {
            assert_eq!(code(&cond(good)), "ok", "{good}");
        }
        // Malformed ones are MalformedPolicy.
        for bad in [
            r#"{"StringSortOf": {"s3:prefix": "a"}}"#,
            r#"{"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}"#,
            r#"{"IpAddress": {"aws:SourceIp": "ten"}}"#,
            r#"{"NumericLessThan": {"s3:max-keys": "many"}}"#,
            r#"{"DateLessThan": {"aws:CurrentTime": "tomorrow"}}"#,
            r#"{"Bool": {"aws:SecureTransport": "maybe"}}"#,
            r#"{"StringEquals": {"s3:prefix": []}}"#,
            r#"{"StringEquals": {"s3:prefix": {"a": 1}}}"#,
            r#"{"NullIfExists": {"s3:prefix": "true"}}"#,
            r#"["IpAddress"]"#,
            // Not base64.
            r#"{"BinaryEquals": {"aws:UserAgent": "not base64!"}}"#,
            // Variables: unclosed, empty, unknown, and outside string tests.
            r#"{"StringLike": {"s3:prefix": "home/${aws:username/*"}}"#,
            r#"{"StringLike": {"s3:prefix": "home/${}/*"}}"#,
            r#"{"StringLike": {"s3:prefix": "home/${aws:usrname}/*"}}"#,
            r#"{"NumericLessThan": {"s3:max-keys": "${s3:max-keys}"}}"#,
            // Tag keys name a tag.
            r#"{"StringEquals": {"aws:PrincipalTag/": "blue"}}"#,
        ] {
            assert_eq!(code(&cond(bad)), "MalformedPolicy", "{bad}");
        }
        // A key AWS does not document (a typo) is refused, naming it: a
        // deny on it would silently never apply.
        match parse(
            &cond(r#"{"StringEquals": {"aws:PrincipleOrgID": "o-1"}}"#),
            "b",
            ACCOUNT,
        ) {
            Err(GatewayError::MalformedPolicy(why)) => {
                assert!(why.contains("aws:PrincipleOrgID"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let both = r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "NotAction": "s3:PutObject", "Resource": "arn:aws:s3:::b/*"}"#;
        assert_eq!(code(&one(both)), "MalformedPolicy");
        let neither = r#"{"Effect": "Allow", "Principal": "*", "Resource": "arn:aws:s3:::b/*"}"#;
        assert_eq!(code(&one(neither)), "MalformedPolicy");
        let other_bucket = r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bb/*"}"#;
        assert_eq!(code(&one(other_bucket)), "MalformedPolicy");
        // A variable may not stand for (part of) the bucket's name.
        for r in [
            "arn:aws:s3:::b${aws:username}/*",
            "arn:aws:s3:::${aws:username}",
            "arn:aws:s3:::b${*}",
        ] {
            let stmt = format!(
                r#"{{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "{r}"}}"#
            );
            assert_eq!(code(&one(&stmt)), "MalformedPolicy", "{r}");
        }
        assert_eq!(code("not json"), "MalformedPolicy");
        assert_eq!(
            code(r#"{"Version": "2020-01-01", "Statement": []}"#),
            "MalformedPolicy"
        );
        let maybe = r#"{"Effect": "Maybe", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b"}"#;
        assert_eq!(code(&one(maybe)), "MalformedPolicy");
        let principal = |p: &str| {
            one(&format!(
                r#"{{"Effect": "Allow", "Principal": {p}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b"}}"#
            ))
        };
        for good in [
            r#"{"Federated": "cognito-identity.amazonaws.com"}"#,
            r#"{"Service": ["cloudtrail.amazonaws.com", "logging.s3.amazonaws.com"]}"#,
            r#"{"CanonicalUser": "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"}"#,
            r#"{"AWS": "CK1", "CanonicalUser": "ab", "Service": "s3.amazonaws.com"}"#,
        ] {
            assert_eq!(code(&principal(good)), "ok", "{good}");
        }
        for bad in [
            r#"{"Alien": "x"}"#,
            r#"{}"#,
            r#"{"Service": 7}"#,
            r#"{"AWS": []}"#,
            r#""someone""#,
        ] {
            assert_eq!(code(&principal(bad)), "MalformedPolicy", "{bad}");
        }
        assert_eq!(code(&"x".repeat(MAX_POLICY_BYTES + 1)), "MalformedPolicy");
    }

    /// Documented keys no request has are missing: IAM's rules for a key a
    /// request lacks decide them.
    #[test]
    fn documented_keys_the_gateway_never_has_are_missing() {
        let c = |block: &str| holds(&condition(block), &context(&[("aws:sourceip", "10.0.0.1")]));
        // Positive operators fail, so an allow on them grants nothing...
        assert!(!c(r#"{"StringEquals": {"aws:PrincipalOrgID": "o-1"}}"#));
        assert!(!c(r#"{"StringLike": {"aws:PrincipalArn": "*"}}"#));
        assert!(!c(r#"{"Bool": {"aws:MultiFactorAuthPresent": "true"}}"#));
        assert!(!c(
            r#"{"NumericGreaterThanEquals": {"s3:TlsVersion": 1.2}}"#
        ));
        assert!(!c(
            r#"{"StringEquals": {"s3:ExistingObjectTag/class": "secret"}}"#
        ));
        assert!(!c(r#"{"IpAddress": {"aws:VpcSourceIp": "10.0.0.0/8"}}"#));
        assert!(!c(r#"{"ArnLike": {"aws:SourceArn": "arn:aws:*"}}"#));
        assert!(!c(r#"{"BinaryEquals": {"aws:SourceVpce": "QQ=="}}"#));
        assert!(!c(
            r#"{"ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": "a"}}"#
        ));
        // ... negated ones hold, so a deny on them always applies ...
        assert!(c(r#"{"StringNotEquals": {"aws:PrincipalOrgID": "o-1"}}"#));
        assert!(c(r#"{"StringNotLike": {"aws:PrincipalArn": "*"}}"#));
        assert!(c(r#"{"NotIpAddress": {"aws:VpcSourceIp": "10.0.0.0/8"}}"#));
        assert!(c(r#"{"ArnNotLike": {"aws:SourceArn": "arn:aws:*"}}"#));
        // ... as do IfExists ones, ForAllValues, and Null: true.
        assert!(c(
            r#"{"StringEqualsIfExists": {"aws:SourceVpce": "vpce-1"}}"#
        ));
        assert!(c(
            r#"{"BoolIfExists": {"aws:MultiFactorAuthPresent": "true"}}"#
        ));
        assert!(c(
            r#"{"ForAllValues:StringEquals": {"s3:RequestObjectTagKeys": "a"}}"#
        ));
        assert!(c(r#"{"Null": {"aws:TokenIssueTime": "true"}}"#));
        assert!(!c(r#"{"Null": {"aws:TokenIssueTime": "false"}}"#));
        // A deny on a tag the gateway never has: the positive form never
        // refuses, the negated one always does.
        let text = |op: &str| {
            format!(
                r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "Deny", "Principal": "*",
                "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*",
                "Condition": {{"{op}": {{"aws:ResourceTag/class": "secret"}}}}}}}}"#
            )
        };
        let get = |op: &str| {
            let p = parse(&text(op), "b", ACCOUNT).unwrap();
            permits(
                Some(&p),
                "b",
                Who::Key("CK"),
                "s3:GetObject",
                Target::Object("k"),
                &Context::new(),
            )
        };
        assert!(get("StringEquals"));
        assert!(!get("StringNotEquals"));
    }

    /// Object tags are condition keys when the request has them: request
    /// tags one key each plus their keys (multi-valued), existing tags
    /// one key each, all case-insensitive.
    #[test]
    fn object_tags_are_keys_when_the_request_has_them() {
        let tags = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut cx = Context::new();
        cx.set_request_tags(&tags(&[("Team", "storage"), ("env", "prod")]));
        cx.set_existing_tags(&tags(&[("classification", "secret")]));
        let c = |block: &str| holds(&condition(block), &cx);
        assert!(c(
            r#"{"StringEquals": {"s3:RequestObjectTag/team": "storage"}}"#
        ));
        assert!(c(
            r#"{"StringEquals": {"s3:RequestObjectTag/Team": "storage"}}"#
        ));
        assert!(!c(
            r#"{"StringNotEquals": {"s3:RequestObjectTag/team": "storage"}}"#
        ));
        assert!(!c(
            r#"{"StringEquals": {"s3:RequestObjectTag/other": "x"}}"#
        ));
        assert!(c(
            r#"{"ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": "env"}}"#
        ));
        assert!(c(
            r#"{"ForAllValues:StringEquals": {"s3:RequestObjectTagKeys": ["Team", "env"]}}"#
        ));
        assert!(!c(
            r#"{"ForAllValues:StringEquals": {"s3:RequestObjectTagKeys": ["env"]}}"#
        ));
        assert!(c(
            r#"{"StringEquals": {"s3:ExistingObjectTag/classification": "secret"}}"#
        ));
        assert!(c(r#"{"Null": {"s3:ExistingObjectTag/team": "true"}}"#));
        // No tags: the keys are absent, not empty.
        let mut none = Context::new();
        none.set_request_tags(&[]);
        assert_eq!(none, Context::new());
    }

    /// Only a policy that names an existing-object tag makes the access
    /// check read tags, whether in a condition key or a variable.
    #[test]
    fn policies_say_whether_they_use_a_key_prefix() {
        let policy = |condition: &str, resource: &str| {
            let text = format!(
                r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "Deny", "Principal": "*",
                "Action": "s3:GetObject", "Resource": "{resource}", "Condition": {condition}}}}}"#
            );
            parse(&text, "b", ACCOUNT).unwrap()
        };
        let uses = |p: &Policy| p.uses_key_prefix(EXISTING_OBJECT_TAG);
        assert!(uses(&policy(
            r#"{"StringEquals": {"s3:ExistingObjectTag/Class": "secret"}}"#,
            "arn:aws:s3:::b/*"
        )));
        assert!(uses(&policy(
            r#"{"StringEquals": {"aws:username": "${s3:ExistingObjectTag/owner}"}}"#,
            "arn:aws:s3:::b/*"
        )));
        assert!(uses(&policy(
            "{}",
            "arn:aws:s3:::b/${s3:ExistingObjectTag/dir}/*"
        )));
        assert!(!uses(&policy(
            r#"{"StringEquals": {"s3:RequestObjectTag/class": "secret"}}"#,
            "arn:aws:s3:::b/*"
        )));
        assert!(!uses(&policy("{}", "arn:aws:s3:::b/*")));
    }

    #[test]
    fn binary_equals_compares_bytes_with_base64() {
        let c = |block: &str, pairs: &[(&str, &str)]| holds(&condition(block), &context(pairs));
        // "curl/8" is Y3VybC84.
        let curl = r#"{"BinaryEquals": {"aws:UserAgent": ["eA==", "Y3VybC84"]}}"#;
        assert!(c(curl, &[("aws:useragent", "curl/8")]));
        assert!(!c(curl, &[("aws:useragent", "curl/9")]));
        assert!(
            !c(curl, &[("aws:useragent", "Y3VybC84")]),
            "bytes, not text"
        );
        assert!(!c(curl, &[]));
        assert!(c(
            r#"{"BinaryEqualsIfExists": {"aws:UserAgent": "Y3VybC84"}}"#,
            &[]
        ));
    }

    #[test]
    fn condition_values_fill_in_policy_variables() {
        let c = |block: &str, pairs: &[(&str, &str)]| holds(&condition(block), &context(pairs));
        let own = r#"{"StringLike": {"s3:prefix": ["home/${aws:username}/*", "public/"]}}"#;
        let ann = [("aws:username", "ann"), ("s3:prefix", "home/ann/docs/")];
        assert!(c(own, &ann));
        assert!(!c(
            own,
            &[("aws:username", "bob"), ("s3:prefix", "home/ann/docs/")]
        ));
        assert!(c(own, &[("aws:username", "bob"), ("s3:prefix", "public/")]));
        // A substituted `*` is no wildcard.
        assert!(!c(
            own,
            &[("aws:username", "*"), ("s3:prefix", "home/ann/docs/")]
        ));
        assert!(c(own, &[("aws:username", "*"), ("s3:prefix", "home/*/x")]));
        // StringEquals and IgnoreCase compare the filled-in text.
        let same = r#"{"StringEquals": {"aws:Referer": "https://${aws:username}.example/"}}"#;
        assert!(c(
            same,
            &[
                ("aws:username", "ann"),
                ("aws:referer", "https://ann.example/")
            ]
        ));
        assert!(!c(
            same,
            &[
                ("aws:username", "ann"),
                ("aws:referer", "https://ANN.example/")
            ]
        ));
        assert!(c(
            r#"{"StringEqualsIgnoreCase": {"aws:Referer": "https://${aws:username}.example/"}}"#,
            &[
                ("aws:username", "ann"),
                ("aws:referer", "https://ANN.example/")
            ]
        ));
        // A variable with no value is null: a positive operator does not
        // match it, a negated one does (IAM); a default stands in.
        let anon = [("s3:prefix", "home//docs/")];
        assert!(!c(own, &anon));
        assert!(c(
            r#"{"StringNotLike": {"s3:prefix": "home/${aws:username}/*"}}"#,
            &anon
        ));
        assert!(c(
            r#"{"StringLike": {"s3:prefix": "home/${aws:username, 'guest'}/*"}}"#,
            &[("s3:prefix", "home/guest/x")]
        ));
        // Special characters.
        assert!(c(
            r#"{"StringEquals": {"s3:prefix": "a${*}${?}${$}"}}"#,
            &[("s3:prefix", "a*?$")]
        ));
        // Variables in 2008-10-17 policies are text.
        let old = conditions(
            &serde_json::from_str(r#"{"StringEquals": {"s3:prefix": "${aws:username}"}}"#).unwrap(),
            false,
        )
        .unwrap();
        assert!(holds(
            &old[0],
            &context(&[("aws:username", "ann"), ("s3:prefix", "${aws:username}")])
        ));
        assert!(!holds(
            &old[0],
            &context(&[("aws:username", "ann"), ("s3:prefix", "ann")])
        ));
    }

    /// The home-directory policy: each key may write only under its own
    /// `home/<key id>/`, and everyone may read `home/<principal type>/`.
    #[test]
    fn resources_fill_in_policy_variables_per_request() {
        let text = r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": ["s3:PutObject", "s3:DeleteObject"],
             "NotResource": "arn:aws:s3:::b/home/${aws:username}/*"},
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": ["arn:aws:s3:::b/home/${aws:principaltype}/*",
                          "arn:aws:s3:::b/shared/${aws:username, 'guest'}/*"]}
        ]}"#;
        let p = parse(text, "b", ACCOUNT).unwrap();
        let may = |who: Who<'_>, action: &str, target| {
            let mut cx = Context::new();
            match who {
                Who::Key(k) => cx.set("aws:username", k).set("aws:PrincipalType", "User"),
                Who::Anonymous => cx.set("aws:PrincipalType", "Anonymous"),
            };
            permits(Some(&p), "b", who, action, target, &cx)
        };
        let put = |who, key| may(who, "s3:PutObject", Target::Object(key));
        let get = |who, key| may(who, "s3:GetObject", Target::Object(key));
        assert!(put(Who::Key("CKANN"), "home/CKANN/notes"));
        assert!(!put(Who::Key("CKANN"), "home/CKBOB/notes"));
        assert!(!put(Who::Key("CKANN"), "elsewhere"));
        assert!(put(Who::Key("CKBOB"), "home/CKBOB/x"));
        // A key id with a `*` is no wildcard over the others' homes.
        assert!(put(Who::Key("CK*"), "home/CK*/x"));
        assert!(!put(Who::Key("CK*"), "home/CKANN/x"));
        // Batches: a deny of any key outside one's home refuses it.
        assert!(!may(
            Who::Key("CKANN"),
            "s3:DeleteObject",
            Target::AnyObject
        ));
        // Anonymous readers: home/Anonymous/ and shared/guest/ (a default).
        assert!(get(Who::Anonymous, "home/Anonymous/a"));
        assert!(!get(Who::Anonymous, "home/User/a"));
        assert!(get(Who::Anonymous, "shared/guest/a"));
        assert!(!get(Who::Anonymous, "shared/CKANN/a"));
        assert!(!put(Who::Anonymous, "home/Anonymous/a"));
        // Without a username, `home/${aws:username}/*` names nothing, so
        // the NotResource deny covers everything for a key whose context
        // lacks it: as IAM, a NotResource holding a null names no resource.
        let mut nameless = Context::new();
        nameless.set("aws:PrincipalType", "User");
        assert!(!permits(
            Some(&p),
            "b",
            Who::Key("CKANN"),
            "s3:PutObject",
            Target::Object("home/CKANN/x"),
            &nameless
        ));
        // A 2008-10-17 policy takes `${` as text.
        let old = text.replace("2012-10-17", "2008-10-17");
        let p = parse(&old, "b", ACCOUNT).unwrap();
        let mut cx = Context::new();
        cx.set("aws:username", "CKANN");
        let put = |key| {
            permits(
                Some(&p),
                "b",
                Who::Key("CKANN"),
                "s3:PutObject",
                Target::Object(key),
                &cx,
            )
        };
        assert!(put("home/${aws:username}/x"));
        assert!(!put("home/CKANN/x"));
    }

    #[test]
    fn canonical_users_are_the_account_and_services_no_one() {
        let policy = |principal: &str, effect: &str| {
            let text = format!(
                r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "{effect}",
                "Principal": {principal}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}}}}"#
            );
            parse(&text, "b", ACCOUNT).unwrap()
        };
        let cx = Context::new();
        let get =
            |p: &Policy, who| permits(Some(p), "b", who, "s3:GetObject", Target::Object("k"), &cx);
        // The account's canonical id (any case) names every key.
        let me = format!(r#"{{"CanonicalUser": "{}"}}"#, ACCOUNT.to_uppercase());
        let deny = policy(&me, "Deny");
        assert_eq!(deny.statements[0].principals, Principals::Account);
        assert!(!get(&deny, Who::Key("CK1")));
        assert!(!get(&deny, Who::Key("CK2")));
        assert!(!get(&policy(&me, "Allow"), Who::Anonymous));
        // Another canonical id names no one here.
        let other = r#"{"CanonicalUser": "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"}"#;
        assert!(get(&policy(other, "Deny"), Who::Key("CK1")));
        // Services and federated users never sign a request to the gateway:
        // an allow for them grants nothing, a deny refuses nothing.
        for p in [
            r#"{"Service": "cloudtrail.amazonaws.com"}"#,
            r#"{"Federated": ["accounts.google.com", "cognito-identity.amazonaws.com"]}"#,
        ] {
            assert!(!get(&policy(p, "Allow"), Who::Anonymous), "{p}");
            assert!(get(&policy(p, "Deny"), Who::Key("CK1")), "{p}");
            assert!(!is_public(&policy(p, "Allow")), "{p}");
        }
        // The account's root ARN or bare id names the account too; another
        // account's names no one here; a user ARN names its access key.
        for me in [
            format!(r#"{{"AWS": "arn:aws:iam::{ACCOUNT}:root"}}"#),
            format!(r#"{{"AWS": ["{}"]}}"#, ACCOUNT.to_uppercase()),
        ] {
            let deny = policy(&me, "Deny");
            assert_eq!(deny.statements[0].principals, Principals::Account, "{me}");
            assert!(!get(&deny, Who::Key("CK9")), "{me}");
        }
        for other in [
            r#"{"AWS": "arn:aws:iam::123456789012:root"}"#,
            r#"{"AWS": "123456789012"}"#,
        ] {
            let deny = policy(other, "Deny");
            assert_eq!(
                deny.statements[0].principals,
                Principals::Keys(vec![]),
                "{other}"
            );
            assert!(get(&deny, Who::Key("CK1")), "{other}");
        }
        let user = policy(r#"{"AWS": "arn:aws:iam::123456789012:user/CK1"}"#, "Deny");
        assert!(!get(&user, Who::Key("CK1")));
        assert!(get(&user, Who::Key("CK2")));
        // A mixed map is the union of its types.
        let mixed = r#"{"AWS": "CK1", "Service": "s3.amazonaws.com"}"#;
        let deny = policy(mixed, "Deny");
        assert!(!get(&deny, Who::Key("CK1")));
        assert!(get(&deny, Who::Key("CK2")));
        let mixed = format!(r#"{{"AWS": ["CK1"], "CanonicalUser": "{ACCOUNT}"}}"#);
        assert!(!get(&policy(&mixed, "Deny"), Who::Key("CK2")));
        let everyone = r#"{"AWS": "*", "Federated": "x"}"#;
        assert!(get(&policy(everyone, "Allow"), Who::Anonymous));
        // NotPrincipal of a service: everyone but no one, so everyone.
        let text = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Deny",
            "NotPrincipal": {"Service": "s3.amazonaws.com"}, "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::b/*"}}"#;
        let p = parse(text, "b", ACCOUNT).unwrap();
        assert!(!get(&p, Who::Key("CK1")));
    }

    fn context(pairs: &[(&str, &str)]) -> Context {
        let mut c = Context::new();
        for (k, v) in pairs {
            c.set(k, *v);
        }
        c
    }

    fn condition(block: &str) -> Condition {
        let mut c = conditions(&serde_json::from_str(block).unwrap(), true).unwrap();
        assert_eq!(c.len(), 1, "{block}");
        c.remove(0)
    }

    #[test]
    fn conditions_are_decided_as_iam_decides_them() {
        let c = |block: &str, pairs: &[(&str, &str)]| holds(&condition(block), &context(pairs));
        fn ip(a: &str) -> [(&str, &str); 1] {
            [("aws:sourceip", a)]
        }
        // Addresses: blocks, single addresses, v6, and v4 seen through v6.
        let local = r#"{"IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "2001:db8::/32"]}}"#;
        assert!(c(local, &ip("127.0.0.1")));
        assert!(!c(local, &ip("10.0.0.1")));
        assert!(c(local, &ip("2001:db8::5")));
        assert!(c(local, &ip("::ffff:127.0.0.9")));
        assert!(c(
            r#"{"IpAddress": {"aws:SourceIp": "10.1.2.3"}}"#,
            &ip("10.1.2.3")
        ));
        assert!(!c(
            r#"{"IpAddress": {"aws:SourceIp": "10.1.2.3"}}"#,
            &ip("10.1.2.4")
        ));
        assert!(c(
            r#"{"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}"#,
            &ip("8.8.8.8")
        ));
        // Negated operators: NOR over the values.
        let not_local = r#"{"NotIpAddress": {"aws:SourceIp": ["127.0.0.0/8", "10.0.0.0/8"]}}"#;
        assert!(!c(not_local, &ip("10.9.9.9")));
        assert!(c(not_local, &ip("192.168.1.1")));
        // Strings: exact, case-insensitive, wildcards; values are ORed.
        let prefix = r#"{"StringLike": {"s3:prefix": ["home/*", "public/?"]}}"#;
        assert!(c(prefix, &[("s3:prefix", "home/ann/")]));
        assert!(c(prefix, &[("s3:prefix", "public/a")]));
        assert!(!c(prefix, &[("s3:prefix", "public/ab")]));
        assert!(c(
            r#"{"StringEqualsIgnoreCase": {"aws:UserAgent": "CURL"}}"#,
            &[("aws:useragent", "curl")]
        ));
        assert!(!c(
            r#"{"StringEquals": {"aws:UserAgent": "CURL"}}"#,
            &[("aws:useragent", "curl")]
        ));
        // Numbers and dates compare as numbers and dates, not strings.
        let few = r#"{"NumericLessThanEquals": {"s3:max-keys": "100"}}"#;
        assert!(c(few, &[("s3:max-keys", "99")]));
        assert!(!c(few, &[("s3:max-keys", "1000")]));
        assert!(!c(few, &[("s3:max-keys", "lots")]));
        let before = r#"{"DateLessThan": {"aws:CurrentTime": "2027-01-01T00:00:00Z"}}"#;
        assert!(c(before, &[("aws:currenttime", "2026-12-07T15:00:00Z")]));
        assert!(!c(
            before,
            &[("aws:currenttime", "2027-02-01T00:00:00+01:00")]
        ));
        assert!(c(
            r#"{"DateGreaterThan": {"aws:EpochTime": "2026-12-01"}}"#,
            &[("aws:epochtime", "1796600000")]
        ));
        // Booleans, case-insensitively; JSON true is "true".
        assert!(c(
            r#"{"Bool": {"aws:SecureTransport": false}}"#,
            &[("aws:securetransport", "FALSE")]
        ));
        // A key the request lacks: false, but true for a negated operator,
        // an IfExists one, and ForAllValues; Null tests just that.
        assert!(!c(prefix, &[]));
        assert!(c(r#"{"StringNotEquals": {"s3:prefix": "x"}}"#, &[]));
        assert!(c(r#"{"StringLikeIfExists": {"s3:prefix": "home/*"}}"#, &[]));
        assert!(!c(
            r#"{"StringLikeIfExists": {"s3:prefix": "home/*"}}"#,
            &[("s3:prefix", "etc/")]
        ));
        assert!(c(
            r#"{"ForAllValues:StringEquals": {"s3:prefix": "a"}}"#,
            &[]
        ));
        assert!(!c(
            r#"{"ForAnyValue:StringEquals": {"s3:prefix": "a"}}"#,
            &[]
        ));
        assert!(c(r#"{"Null": {"aws:Referer": "true"}}"#, &[]));
        assert!(!c(
            r#"{"Null": {"aws:Referer": "true"}}"#,
            &[("aws:referer", "x")]
        ));
        assert!(c(
            r#"{"Null": {"aws:Referer": false}}"#,
            &[("aws:referer", "x")]
        ));
        // Keys are case-insensitive.
        assert!(c(
            r#"{"StringEquals": {"AWS:PRINCIPALTYPE": "Anonymous"}}"#,
            &[("aws:PrincipalType", "Anonymous")]
        ));
    }

    #[test]
    fn a_statement_applies_only_when_all_its_conditions_hold() {
        let text = r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::b/*",
             "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"},
                           "StringEquals": {"aws:Referer": "https://example.com/"}}},
            {"Effect": "Deny", "Principal": "*", "Action": "s3:*",
             "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"],
             "Condition": {"NotIpAddress": {"aws:SourceIp": ["127.0.0.0/8", "::1/128"]}}}
        ]}"#;
        let p = parse(text, "b", ACCOUNT).unwrap();
        let cx = |ip: &str, referer: Option<&str>| {
            let mut c = context(&[("aws:SourceIp", ip)]);
            if let Some(r) = referer {
                c.set("aws:Referer", r);
            }
            c
        };
        let get =
            |who, c: &Context| permits(Some(&p), "b", who, "s3:GetObject", Target::Object("k"), c);
        let home = Some("https://example.com/");
        assert!(get(Who::Anonymous, &cx("127.0.0.1", home)));
        assert!(
            !get(Who::Anonymous, &cx("127.0.0.1", None)),
            "both must hold"
        );
        assert!(!get(
            Who::Anonymous,
            &cx("127.0.0.1", Some("https://evil/"))
        ));
        // The deny binds the account's own keys from elsewhere.
        assert!(get(Who::Key("CK"), &cx("::1", None)));
        assert!(!get(Who::Key("CK"), &cx("192.0.2.7", None)));
        assert!(!permits(
            Some(&p),
            "b",
            Who::Key("CK"),
            "s3:DeleteObject",
            Target::AnyObject,
            &cx("192.0.2.7", None)
        ));
        assert!(permits(
            Some(&p),
            "b",
            Who::Key("CK"),
            "s3:DeleteObject",
            Target::AnyObject,
            &cx("127.0.0.1", None)
        ));
        // A grant only to fixed addresses is not public.
        assert!(!is_public(&p));
    }

    #[test]
    fn not_elements_apply_to_everything_but_what_they_name() {
        let text = r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "NotAction": ["s3:Put*", "s3:Delete*"],
             "NotResource": "arn:aws:s3:::b/private/*"},
            {"Effect": "Deny", "NotPrincipal": {"AWS": "CKADMIN"}, "Action": "s3:DeleteObject",
             "Resource": "arn:aws:s3:::b/*"}
        ]}"#;
        let p = parse(text, "b", ACCOUNT).unwrap();
        let cx = Context::new();
        let may = |who, action: &str, target| permits(Some(&p), "b", who, action, target, &cx);
        assert!(may(Who::Anonymous, "s3:GetObject", Target::Object("a.txt")));
        assert!(may(Who::Anonymous, "s3:ListBucket", Target::Bucket));
        assert!(!may(
            Who::Anonymous,
            "s3:GetObject",
            Target::Object("private/a")
        ));
        assert!(!may(
            Who::Anonymous,
            "s3:PutObject",
            Target::Object("a.txt")
        ));
        // Everyone but CKADMIN is denied deletes, one key or a batch.
        assert!(may(
            Who::Key("CKADMIN"),
            "s3:DeleteObject",
            Target::Object("a")
        ));
        assert!(may(
            Who::Key("CKADMIN"),
            "s3:DeleteObject",
            Target::AnyObject
        ));
        assert!(!may(
            Who::Key("CKOTHER"),
            "s3:DeleteObject",
            Target::Object("a")
        ));
        assert!(!may(
            Who::Key("CKOTHER"),
            "s3:DeleteObject",
            Target::AnyObject
        ));
        // An allow with NotResource covering some objects does not allow
        // an anonymous batch over all of them.
        assert!(!may(Who::Anonymous, "s3:GetObject", Target::AnyObject));
        assert!(is_public(&p));
    }

    #[test]
    fn globs_match_as_iam_does() {
        assert!(glob("s3:Get*", "s3:GetObject", true));
        assert!(glob("S3:getobject", "s3:GetObject", true));
        assert!(!glob("s3:Put*", "s3:GetObject", true));
        assert!(glob("a*b*c", "aXXbYYc", false));
        assert!(!glob("a*b*c", "aXXbYY", false));
        assert!(glob("*", "", false));
        assert!(!glob("a?", "a", false));
        assert_eq!(
            action_of("HeadObject", false),
            ("s3:GetObject".to_string(), true)
        );
        assert_eq!(
            action_of("ListObjectsV2", false),
            ("s3:ListBucket".to_string(), false)
        );
        assert_eq!(
            copy_source("/src/a%20b/c.txt?versionId=null"),
            Some(("src".to_string(), "a b/c.txt".to_string()))
        );
        assert_eq!(copy_source("nokey"), None);
    }
}
