//! The piece service: answers other nodes' piece and record requests from the local store.
//!
//! Requests come from the swarm driver's bounded inbound channel; at most
//! [`MAX_CONCURRENT`] are served at once, each on the blocking pool because
//! the store does synchronous file and database I/O. Audits are answered
//! from the store's proof, signed with the node's identity key.

use std::sync::Arc;

use cairn_core::PieceId;
use cairn_core::audit::{AuditAnswer, Challenge};
use cairn_core::buf::Buffers;
use cairn_core::keys::SecretKey;
use cairn_net::BufPool;
use cairn_net::libp2p::PeerId;
use cairn_net::{ErrorCode, Request, RequestHeader, Response, ResponseHeader};
use cairn_store::{NewPiece, PieceKind, PieceStore, StoreError};
use tokio::sync::{Semaphore, mpsc};

use crate::net::{Inbound, NetHandle};
use crate::now_secs;

/// Most requests served at once.
pub const MAX_CONCURRENT: usize = 16;

/// Serves inbound requests until the channel closes; pieces are read into
/// buffers from `bodies`, which get them back once the answer is sent.
/// Audit answers are signed with `signer`, the node's identity key.
pub async fn run(
    store: Arc<PieceStore>,
    net: NetHandle,
    mut inbound: mpsc::Receiver<Inbound>,
    bodies: BufPool,
    signer: Arc<SecretKey>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    while let Some(Inbound { request, reply }) = inbound.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let store = store.clone();
        let net = net.clone();
        let bodies = bodies.clone();
        let signer = signer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let announce = match &request.header {
                RequestHeader::PutRecord { id, .. } => Some(*id),
                _ => None,
            };
            let peer = reply.peer;
            let response = tokio::task::spawn_blocking({
                let store = store.clone();
                move || handle(&store, peer, request, &bodies, &signer)
            })
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

/// Answers one request from the store. Pure apart from the store.
pub fn handle(
    store: &PieceStore,
    peer: PeerId,
    request: Request,
    bodies: &BufPool,
    signer: &SecretKey,
) -> Response {
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
        Ok(_) => Response::header(ResponseHeader::Stored),
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
