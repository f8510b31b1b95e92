//! The piece service: answers other nodes' piece and record requests from the local store.
//!
//! Requests come from the swarm driver's bounded inbound channel; at most
//! [`MAX_CONCURRENT`] are served at once, each on the blocking pool because
//! the store does synchronous file and database I/O. Audits are answered
//! from the store's proof, signed with the node's identity key.
//!
//! Repair records: a `PutRepair` is merged into the steward's record store,
//! and a `SyncRepair` makes this node, as a holder, match the record: pieces
//! it is still assigned get the record's lease, pieces reassigned elsewhere
//! get at most [`ORPHAN_GRACE_SECS`] more (then garbage collection takes
//! them), and an owner-deleted object's pieces go at once. Ops in either
//! are accepted only from the owner or from peers among the
//! [`AUTHOR_WINDOW`] closest to the record in this node's routing table, so
//! a stranger cannot reassign or unassign pieces.
//!
//! Evidence: a fellow steward's signed `Evidence` that a holder failed an
//! audit is taken from the same peers that may write to the record, about
//! a piece of a record stewarded here, and keeps that holder out of this
//! node's repairs for a day ([`cairn_core::suspicion`]).
//!
//! Account indexes: a `PutIndex` is checked (every op that changes the
//! copy here signed by the account the index id commits to) and merged
//! into the index store; a
//! `GetIndex` is answered with the stored bytes as they are, or
//! `Unchanged` if their digest is the one the requester has. Any node may
//! be asked: an index needs no authority list.

use std::collections::HashSet;
use std::sync::Arc;

use cairn_core::PieceId;
use cairn_core::audit::{AuditAnswer, AuditEvidence, Challenge};
use cairn_core::buf::Buffers;
use cairn_core::keys::PublicKey;
use cairn_core::keys::SecretKey;
use cairn_core::record::{Record, RecordId};
use cairn_net::BufPool;
use cairn_net::libp2p::PeerId;
use cairn_net::{Comparison, ErrorCode, Request, RequestHeader, Response, ResponseHeader};
use cairn_store::{Expiry, NewPiece, PieceKind, PieceStore, StoreError};
use tokio::sync::{Semaphore, mpsc};

use crate::indexes::{IndexStore, IndexStoreError};
use crate::net::{Inbound, NetHandle};
use crate::now_secs;
use crate::records::{RecordStore, RecordStoreError};

/// Most requests served at once.
pub const MAX_CONCURRENT: usize = 16;
/// Stewards of a record are its closest peers; ops are accepted from this
/// many closest peers in the local routing table (slack for views that
/// differ while nodes come and go).
pub const AUTHOR_WINDOW: usize = 3 * crate::steward::STEWARDS;
/// A piece the record no longer assigns here is kept this long, in case the
/// reassignment is undone by a concurrent repair, then collected.
pub const ORPHAN_GRACE_SECS: u64 = 3600;

/// What the service answers from.
#[derive(Clone)]
pub struct Ctx {
    /// Pieces.
    pub store: Arc<PieceStore>,
    /// Repair records this node stewards.
    pub records: Arc<RecordStore>,
    /// Account indexes this node keeps a replica of.
    pub indexes: Arc<IndexStore>,
    /// Buffers for piece bodies.
    pub bodies: BufPool,
    /// The node's identity key, for audit answers.
    pub signer: Arc<SecretKey>,
    /// What this node's steward sees, for `Standing` queries.
    pub steward: crate::steward::SharedView,
    /// Holders caught failing audits, where fellow stewards' `Evidence` goes.
    pub suspects: crate::steward::SharedSuspects,
}

/// Serves inbound requests until the channel closes; pieces are read into
/// buffers from `ctx.bodies`, which get them back once the answer is sent.
pub async fn run(ctx: Ctx, net: NetHandle, mut inbound: mpsc::Receiver<Inbound>) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    while let Some(Inbound { request, reply }) = inbound.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let ctx = ctx.clone();
        let net = net.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let announce = match &request.header {
                RequestHeader::PutRecord { id, .. } => Some(*id),
                _ => None,
            };
            let authors = match &request.header {
                RequestHeader::PutRepair { id }
                | RequestHeader::SyncRepair { id }
                | RequestHeader::Evidence { id, .. } => allowed_authors(&net, id).await,
                _ => HashSet::new(),
            };
            let peer = reply.peer;
            let response =
                tokio::task::spawn_blocking(move || handle(&ctx, peer, request, &authors))
                    .await
                    .unwrap_or_else(|e| {
                        Response::error(ErrorCode::Internal, format!("request handler failed: {e}"))
                    });
            if let (Some(id), ResponseHeader::Stored) = (announce, &response.header) {
                net.provide(id.as_bytes()).await;
            }
            net.respond(reply, response).await;
        });
    }
}

/// The keys that may author ops of record `id`: this node and the peers
/// closest to the record in its routing table.
pub async fn allowed_authors(net: &NetHandle, id: &RecordId) -> HashSet<PublicKey> {
    let mut peers = net.closest_local(&id.0, AUTHOR_WINDOW).await;
    peers.push(net.local_peer_id());
    peers
        .iter()
        .filter_map(|p| PublicKey::from_peer_bytes(&p.to_bytes()))
        .collect()
}

/// Answers one request from the stores; `authors` may write to the record
/// a `PutRepair` or `SyncRepair` carries.
pub fn handle(ctx: &Ctx, peer: PeerId, request: Request, authors: &HashSet<PublicKey>) -> Response {
    let (store, bodies, signer) = (&*ctx.store, &ctx.bodies, &*ctx.signer);
    let owner = peer.to_bytes();
    match request.header {
        RequestHeader::Store {
            id,
            hash,
            expires_at,
        } => store_put(
            store,
            id,
            PieceKind::Data,
            &request.body,
            hash,
            &owner,
            expires_at,
        ),
        // A record is kept as a manifest piece under an id derived from its
        // own, and checked against its id (which is its BLAKE3).
        RequestHeader::PutRecord { id, expires_at } => store_put(
            store,
            id.piece_id(),
            PieceKind::Manifest,
            &request.body,
            *id.as_bytes(),
            &owner,
            expires_at,
        ),
        RequestHeader::Fetch { id } => store_get(store, &id, bodies),
        RequestHeader::GetRecord { id } => store_get(store, &id.piece_id(), bodies),
        RequestHeader::Has { ids } => {
            let has = ids
                .iter()
                .map(|id| store.has(id).unwrap_or(false))
                .collect();
            Response::header(ResponseHeader::Has(has))
        }
        RequestHeader::Delete { id } => match store.delete(&id, &owner) {
            Ok(deleted) => Response::header(ResponseHeader::Deleted(deleted)),
            Err(e) => store_error(e),
        },
        RequestHeader::Status => {
            let u = store.usage();
            Response::header(ResponseHeader::Status {
                used: u.used_bytes,
                capacity: u.capacity,
                pieces: u.pieces,
            })
        }
        RequestHeader::PutRepair { id } => {
            let authority = |k: &PublicKey| authors.contains(k);
            let merged = Record::decode(&request.body, Some(id), &authority)
                .map_err(RecordStoreError::from)
                .and_then(|r| ctx.records.merge(&r, &authority));
            match merged {
                Ok(_) => Response::header(ResponseHeader::Stored),
                Err(RecordStoreError::Full { .. }) => {
                    Response::error(ErrorCode::Full, "this node's repair record budget is full")
                }
                Err(RecordStoreError::Record(e)) => {
                    Response::error(ErrorCode::Refused, e.to_string())
                }
                Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
            }
        }
        RequestHeader::Standing { peer } => {
            let Ok(peer) = PeerId::from_bytes(&peer) else {
                return Response::error(ErrorCode::Refused, "not a peer id");
            };
            let name = peer.to_string();
            let view = ctx
                .steward
                .lock()
                .ok()
                .and_then(|v| v.holders.iter().find(|h| h.peer_id == name).cloned());
            match view.map(|v| serde_json::to_vec(&v)) {
                Some(Ok(json)) => Response {
                    header: ResponseHeader::Data,
                    body: json.into(),
                },
                _ => Response::error(ErrorCode::NotFound, "this node has not audited that peer"),
            }
        }
        RequestHeader::GetRepair { id } => match ctx.records.get_encoded(&id) {
            Ok(Some(bytes)) => Response {
                header: ResponseHeader::Data,
                body: bytes.into(),
            },
            Ok(None) => Response::error(ErrorCode::NotFound, format!("no repair record {id} here")),
            Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
        },
        RequestHeader::SyncRepair { id } => {
            let authority = |k: &PublicKey| authors.contains(k);
            match Record::decode(&request.body, Some(id), &authority) {
                Ok(record) => sync_pieces(store, &record, &signer.public().peer_bytes()),
                Err(e) => Response::error(ErrorCode::Refused, e.to_string()),
            }
        }
        RequestHeader::Evidence { id, segment, index } => {
            take_evidence(ctx, &owner, id, (segment, index), &request.body, authors)
        }
        RequestHeader::PutIndex { id } => match ctx.indexes.merge_encoded(id, &request.body) {
            Ok(_) => Response::header(ResponseHeader::Stored),
            Err(IndexStoreError::Full { .. }) => {
                Response::error(ErrorCode::Full, "this node's account index budget is full")
            }
            Err(IndexStoreError::Index(e)) => Response::error(ErrorCode::Refused, e.to_string()),
            Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
        },
        RequestHeader::RepairDigests { entries } => {
            let mut compared = Vec::with_capacity(entries.len());
            for (id, digest) in entries {
                compared.push(match ctx.records.get_encoded(&id) {
                    Ok(Some(bytes)) if *blake3::hash(&bytes).as_bytes() == digest => {
                        Comparison::Same
                    }
                    Ok(Some(_)) => Comparison::Differs,
                    Ok(None) => Comparison::Missing,
                    Err(e) => return Response::error(ErrorCode::Internal, e.to_string()),
                });
            }
            Response::header(ResponseHeader::Compared(compared))
        }
        RequestHeader::GetIndex { id, have } => match ctx.indexes.get_encoded(&id) {
            Ok(Some(bytes)) if have == Some(cairn_core::index::digest(&bytes)) => {
                Response::header(ResponseHeader::Unchanged)
            }
            Ok(Some(bytes)) => Response {
                header: ResponseHeader::Data,
                body: bytes.into(),
            },
            Ok(None) => Response::error(ErrorCode::NotFound, format!("no account index {id} here")),
            Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
        },
        // The driver routes the compute lane to the compute service; a
        // compute header here came in on the wrong lane.
        RequestHeader::Advert
        | RequestHeader::RunUnit { .. }
        | RequestHeader::CancelUnit { .. }
        | RequestHeader::UnitReport { .. } => Response::error(
            ErrorCode::Refused,
            "compute requests go on /cairn/compute/1",
        ),
        // A lost or damaged piece is answered with an error, not a signed
        // answer: the steward records it as missing.
        RequestHeader::Audit { id, nonce } => {
            let challenge = Challenge { piece: id, nonce };
            match store.audit(&challenge) {
                Ok(proof) => Response::header(ResponseHeader::Audited(AuditAnswer::sign(
                    signer, challenge, proof,
                ))),
                Err(e) => store_error(e),
            }
        }
    }
}

/// Takes a fellow steward's evidence that a holder failed an audit of a
/// piece of record `id`: only from a peer that may write to the record,
/// about a piece of it, checked by [`cairn_core::suspicion::check_shared`].
fn take_evidence(
    ctx: &Ctx,
    sender: &[u8],
    id: RecordId,
    (segment, index): (u32, u16),
    body: &[u8],
    authors: &HashSet<PublicKey>,
) -> Response {
    let refused = |m: String| Response::error(ErrorCode::Refused, m);
    let Some(sender) = PublicKey::from_peer_bytes(sender) else {
        return refused("the sender has no Ed25519 identity".into());
    };
    if !authors.contains(&sender) {
        return refused(format!(
            "only a steward of record {id} may send evidence about it"
        ));
    }
    let record = match ctx.records.get(&id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Response::error(ErrorCode::NotFound, format!("no repair record {id} here"));
        }
        Err(e) => return Response::error(ErrorCode::Internal, e.to_string()),
    };
    let evidence = match AuditEvidence::from_bytes(body) {
        Ok(e) => e,
        Err(e) => return refused(e.to_string()),
    };
    let now = now_secs();
    let checked = cairn_core::suspicion::check_shared(
        &evidence,
        &sender,
        record.genesis(),
        segment,
        index,
        now,
    );
    if let Err(e) = checked {
        return refused(e.to_string());
    }
    tracing::info!(holder = ?evidence.holder, "a fellow steward caught a holder failing an audit");
    if let Ok(mut suspects) = ctx.suspects.lock() {
        suspects.report(evidence.holder, sender, evidence.at, now);
    }
    Response::header(ResponseHeader::Stored)
}

/// Makes this holder's pieces of `record` match it (see the module docs).
fn sync_pieces(store: &PieceStore, record: &Record, me: &[u8]) -> Response {
    let g = record.genesis();
    let now = now_secs();
    let slots: Vec<(u32, u16)> = (0..g.segments.len() as u32)
        .flat_map(|s| (0..g.coded).map(move |i| (s, i)))
        .collect();
    let ids: Vec<PieceId> = slots.iter().map(|&(s, i)| g.piece_id(s, i)).collect();
    // One read for which pieces are here, one write for all expiry changes.
    let held = match store.has_many(&ids) {
        Ok(h) => h,
        Err(e) => return store_error(e),
    };
    let (mut renewed, mut dropped) = (0u32, 0u32);
    let mut changes = Vec::new();
    for ((&(segment, index), id), here) in slots.iter().zip(ids).zip(held) {
        if !here {
            continue;
        }
        if record.is_deleted() {
            match store.remove(&id) {
                Ok(gone) => dropped += u32::from(gone),
                Err(e) => return store_error(e),
            }
        } else if record.holder(segment, index) == Some(me) {
            changes.push((id, Expiry::Set(record.expires_at())));
            renewed += 1;
        } else {
            changes.push((id, Expiry::Shorten(now + ORPHAN_GRACE_SECS)));
            dropped += 1;
        }
    }
    if let Err(e) = store.update_expiries(&changes) {
        return store_error(e);
    }
    Response::header(ResponseHeader::Synced { renewed, dropped })
}

fn store_put(
    store: &PieceStore,
    id: PieceId,
    kind: PieceKind,
    data: &[u8],
    hash: [u8; 32],
    owner: &[u8],
    expires_at: u64,
) -> Response {
    let piece = NewPiece {
        id,
        kind,
        data,
        expected_hash: Some(hash),
        owner,
        expires_at,
    };
    match store.put(piece, now_secs()) {
        Ok(cairn_store::PutOutcome::Stored) => Response::header(ResponseHeader::Stored),
        // The same bytes again (a repair re-uploading, a retried put): keep
        // the longer lease, or the piece could be collected under its new one.
        Ok(cairn_store::PutOutcome::AlreadyStored) => {
            let extend = match store.meta(&id) {
                Ok(Some(meta)) => {
                    meta.expires_at != 0 && (expires_at == 0 || expires_at > meta.expires_at)
                }
                _ => false,
            };
            if extend && let Err(e) = store.set_expiry(&id, expires_at) {
                return store_error(e);
            }
            Response::header(ResponseHeader::Stored)
        }
        Err(e) => store_error(e),
    }
}

fn store_get(store: &PieceStore, id: &PieceId, bodies: &BufPool) -> Response {
    match store.get_with(id, bodies) {
        Ok(body) => Response {
            header: ResponseHeader::Data,
            body: bodies.share(body),
        },
        Err(e) => store_error(e),
    }
}

fn store_error(e: StoreError) -> Response {
    let code = match &e {
        StoreError::Full { .. } => ErrorCode::Full,
        StoreError::NotFound(_) => ErrorCode::NotFound,
        StoreError::Corrupted { .. } | StoreError::Missing { .. } => ErrorCode::Corrupted,
        StoreError::HashMismatch { .. }
        | StoreError::Conflict { .. }
        | StoreError::NotOwner { .. }
        | StoreError::TooLarge { .. } => ErrorCode::Refused,
        _ => ErrorCode::Internal,
    };
    if code == ErrorCode::Internal || code == ErrorCode::Corrupted {
        tracing::warn!("piece request failed: {e}");
    }
    Response::error(code, e.to_string())
}
