//! The piece service: answers other nodes' piece requests from the local store.
//!
//! Requests come from the swarm driver's bounded inbound channel; at most
//! [`MAX_CONCURRENT`] are served at once, each on the blocking pool because
//! the store does synchronous file and database I/O.

use std::sync::Arc;

use cairn_net::libp2p::PeerId;
use cairn_net::{BlobKind, ErrorCode, Request, RequestHeader, Response, ResponseHeader};
use cairn_store::{NewPiece, PieceKind, PieceStore, StoreError};
use tokio::sync::{Semaphore, mpsc};

use crate::net::{Inbound, NetHandle};
use crate::now_secs;

/// Most requests served at once.
pub const MAX_CONCURRENT: usize = 16;

/// Serves inbound requests until the channel closes.
pub async fn run(store: Arc<PieceStore>, net: NetHandle, mut inbound: mpsc::Receiver<Inbound>) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    while let Some(Inbound {
        peer,
        request,
        channel,
    }) = inbound.recv().await
    {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let store = store.clone();
        let net = net.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let announce = match &request.header {
                RequestHeader::Store {
                    id,
                    kind: BlobKind::Manifest,
                    ..
                } => Some(*id),
                _ => None,
            };
            let response = tokio::task::spawn_blocking({
                let store = store.clone();
                move || handle(&store, peer, request)
            })
            .await
            .unwrap_or_else(|e| {
                Response::error(ErrorCode::Internal, format!("request handler failed: {e}"))
            });
            if let (Some(id), ResponseHeader::Stored) = (announce, &response.header) {
                net.provide(id.as_bytes()).await;
            }
            net.respond(peer, channel, response).await;
        });
    }
}

/// Answers one request from the store. Pure apart from the store.
pub fn handle(store: &PieceStore, peer: PeerId, request: Request) -> Response {
    let owner = peer.to_bytes();
    match request.header {
        RequestHeader::Store {
            id,
            kind,
            hash,
            expires_at,
        } => {
            let kind = match kind {
                BlobKind::Piece => PieceKind::Data,
                BlobKind::Manifest => PieceKind::Manifest,
            };
            let piece = NewPiece {
                id,
                kind,
                data: &request.body,
                expected_hash: Some(hash),
                owner: &owner,
                expires_at,
            };
            match store.put(piece, now_secs()) {
                Ok(_) => Response::header(ResponseHeader::Stored),
                Err(e) => store_error(e),
            }
        }
        RequestHeader::Fetch { id } => match store.get(&id) {
            Ok(body) => Response {
                header: ResponseHeader::Data,
                body: body.into(),
            },
            Err(e) => store_error(e),
        },
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
