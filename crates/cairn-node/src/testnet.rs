//! In-process multi-node tests over libp2p's memory transport: the real
//! swarm driver, piece service, store and client, without sockets or
//! processes. Fast, and complementary to the loopback end-to-end tests in
//! the `cairn` crate.

use std::sync::Arc;
use std::time::Duration;

use cairn_core::ReadCap;
use cairn_net::libp2p::Multiaddr;
use cairn_net::libp2p::multiaddr::Protocol;
use cairn_net::{NetConfig, TransportKind, build_swarm};
use cairn_store::PieceStore;
use tokio::sync::watch;

use crate::client::{Client, ClientError, PutOptions};
use crate::net::NetHandle;

struct TestNode {
    client: Client,
    net: NetHandle,
    store: Arc<PieceStore>,
    indexes: Arc<crate::indexes::IndexStore>,
    replicas: crate::replicas::IndexReplicas,
    /// The node's signing key (its libp2p identity).
    signer: Arc<cairn_core::keys::SecretKey>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// How a test node answers piece requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Claims to store everything, keeps nothing, serves garbage of the right length, and
    /// answers audits with signed garbage.
    Liar,
}

async fn start_node(port: u64, bootstrap: Vec<Multiaddr>, capacity: u64) -> TestNode {
    start_node_as(port, bootstrap, capacity, Behaviour::Honest).await
}

async fn start_node_as(
    port: u64,
    bootstrap: Vec<Multiaddr>,
    capacity: u64,
    behaviour: Behaviour,
) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let key = cairn_net::libp2p::identity::Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let signer = Arc::new(crate::identity::signing_key(&key).unwrap());
    let store = Arc::new(PieceStore::open(&dir.path().join("store"), capacity).unwrap());
    let catalog = Arc::new(crate::catalog::Catalog::open(dir.path()).unwrap());
    let cfg = NetConfig {
        mdns: false,
        ..NetConfig::default()
    };
    let mut swarm = build_swarm(key, &cfg, TransportKind::Memory).unwrap();
    let addr: Multiaddr = format!("/memory/{port}").parse().unwrap();
    swarm.listen_on(addr.clone()).unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let (net, streams, _task) = crate::net::spawn(swarm, bootstrap, stop_rx);
    let inbound = streams.pieces;
    let records = Arc::new(crate::records::RecordStore::open(dir.path(), 64 << 20).unwrap());
    let indexes = Arc::new(crate::indexes::IndexStore::open(dir.path(), 64 << 20).unwrap());
    match behaviour {
        Behaviour::Honest => {
            let ctx = crate::service::Ctx {
                store: store.clone(),
                records: records.clone(),
                indexes: indexes.clone(),
                bodies: cfg.bodies.clone(),
                signer: signer.clone(),
                steward: Default::default(),
                suspects: Default::default(),
            };
            tokio::spawn(crate::service::run(ctx, net.clone(), inbound));
        }
        Behaviour::Liar => {
            tokio::spawn(lie(net.clone(), inbound, signer.clone()));
        }
    }
    let client = Client::new(net.clone(), store.clone(), records, signer.clone(), catalog);
    let _ = peer;
    let replicas = crate::replicas::IndexReplicas::new(net.clone(), indexes.clone());
    TestNode {
        client,
        net,
        store,
        indexes,
        replicas,
        signer,
        stop,
        _dir: dir,
    }
}

async fn lie(
    net: NetHandle,
    mut inbound: tokio::sync::mpsc::Receiver<crate::net::Inbound>,
    signer: Arc<cairn_core::keys::SecretKey>,
) {
    use cairn_net::{RequestHeader, Response, ResponseHeader};
    let mut sizes = std::collections::HashMap::new();
    while let Some(req) = inbound.recv().await {
        let response = match req.request.header {
            RequestHeader::Store { id, .. } => {
                sizes.insert(id, req.request.body.len());
                Response::header(ResponseHeader::Stored)
            }
            RequestHeader::PutRecord { id, .. } => {
                sizes.insert(id.piece_id(), req.request.body.len());
                Response::header(ResponseHeader::Stored)
            }
            RequestHeader::Fetch { id } => Response {
                header: ResponseHeader::Data,
                body: vec![0x5a; sizes.get(&id).copied().unwrap_or(16)].into(),
            },
            RequestHeader::GetRecord { id } => Response {
                header: ResponseHeader::Data,
                body: vec![0x5a; sizes.get(&id.piece_id()).copied().unwrap_or(16)].into(),
            },
            RequestHeader::Has { ids } => {
                Response::header(ResponseHeader::Has(vec![true; ids.len()]))
            }
            RequestHeader::Audit { id, nonce } => {
                let challenge = cairn_core::audit::Challenge { piece: id, nonce };
                let garbage = vec![0x5a; cairn_core::audit::GROUP_BYTES as usize];
                Response::header(ResponseHeader::Audited(
                    cairn_core::audit::AuditAnswer::sign(&signer, challenge, garbage),
                ))
            }
            _ => Response::error(cairn_net::ErrorCode::Refused, "no"),
        };
        net.respond(req.reply, response).await;
    }
}

/// Starts `n` nodes bootstrapped to the first; waits until all know each other.
async fn testnet(n: usize, base: u64) -> Vec<TestNode> {
    testnet_with(n, base, &[]).await
}

/// Like [`testnet`], with nodes at the given positions lying.
async fn testnet_with(n: usize, base: u64, liars: &[usize]) -> Vec<TestNode> {
    let first = start_node(base, vec![], 1 << 30).await;
    let boot: Multiaddr = format!("/memory/{base}")
        .parse::<Multiaddr>()
        .unwrap()
        .with(Protocol::P2p(first.net.local_peer_id()));
    let mut nodes = vec![first];
    for i in 1..n {
        let b = if liars.contains(&i) {
            Behaviour::Liar
        } else {
            Behaviour::Honest
        };
        nodes.push(start_node_as(base + i as u64, vec![boot.clone()], 1 << 30, b).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for node in &nodes {
        while node.net.info().await.unwrap().routing.len() < n - 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "testnet did not converge"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    nodes
}

async fn get_all(client: &Client, cap: &ReadCap) -> Result<Vec<u8>, ClientError> {
    let (header, mut rx) = client.get(cap.clone()).await?;
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        out.extend_from_slice(&chunk?);
    }
    assert_eq!(out.len() as u64, header.size, "stream ended early");
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_and_survive_losses_in_process() {
    let nodes = testnet(6, 1_000_000 + u64::from(std::process::id()) * 100).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let opts = PutOptions {
        k: Some(3),
        n: Some(5),
        segment_size: 64 * 1024,
        name: Some("x".into()),
        ..PutOptions::default()
    };
    let out = nodes[0].client.put(&data[..], opts).await.unwrap();
    assert_eq!((out.k, out.n, out.segments, out.size), (3, 5, 5, 300_000));
    let cap: ReadCap = out.cap.parse().unwrap();
    assert_eq!(get_all(&nodes[5].client, &cap).await.unwrap(), data);
    // Ranges: inside one segment, across segments, to the end, past the
    // end, empty; only the segments a range touches are sent.
    let seg = 64 * 1024u64;
    for (start, end, segments) in [
        (10, 20, 1),
        (seg - 5, 2 * seg + 7, 3),
        (299_990, 300_000, 1),
        (299_990, 400_000, 1),
        (0, 300_000, 5),
        (4 * seg, 4 * seg, 0),
        (400_000, 500_000, 0),
    ] {
        let (h, mut rx) = nodes[5]
            .client
            .get_range(cap.clone(), Some((start, end)))
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = rx.recv().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        let (s, e) = (start.min(300_000) as usize, end.min(300_000) as usize);
        assert_eq!(got, data[s..e.max(s)], "range {start}..{end}");
        assert_eq!(
            (h.start, h.length, h.segments),
            (s as u64, (e.max(s) - s) as u64, segments)
        );
    }

    // Stop two nodes that hold pieces but are not the reader.
    let report = nodes[5].client.stat(&cap).await.unwrap();
    assert!(report.segments.iter().all(|s| s.healthy == 5));
    for i in [1, 2] {
        nodes[i].stop.send(true).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut lost_somewhere = false;
    let report = nodes[5].client.stat(&cap).await.unwrap();
    for s in &report.segments {
        assert!(s.healthy >= 3, "{s:?}");
        lost_somewhere |= s.healthy < 5;
    }
    assert!(lost_somewhere, "stopped nodes show as offline");
    assert_eq!(get_all(&nodes[5].client, &cap).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_holders_are_caught_by_the_hash_check() {
    // Two of six nodes lie; with k=3, n=5 every segment keeps at least three honest pieces.
    let nodes = testnet_with(6, 2_000_000 + u64::from(std::process::id()) * 100, &[2, 4]).await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let opts = PutOptions {
        k: Some(3),
        n: Some(5),
        segment_size: 64 * 1024,
        name: None,
        ..PutOptions::default()
    };
    let out = nodes[0].client.put(&data[..], opts).await.unwrap();
    let cap: ReadCap = out.cap.parse().unwrap();
    let liars: Vec<Vec<u8>> = [2, 4]
        .iter()
        .map(|&i| nodes[i].net.local_peer_id().to_bytes())
        .collect();
    let m = nodes[5].client.manifest(&cap).await.unwrap();
    let lied = m
        .segments
        .iter()
        .flat_map(|s| &s.pieces)
        .filter(|p| liars.contains(&p.holder))
        .count();
    assert!(lied > 0, "the liars were given pieces");
    // Every garbage piece is rejected and replaced; the bytes come back exact.
    assert_eq!(get_all(&nodes[5].client, &cap).await.unwrap(), data);
}

/// Sends `Audit` for `challenge` to `holder` from `steward`.
async fn audit(
    steward: &TestNode,
    holder: &TestNode,
    challenge: &cairn_core::audit::Challenge,
) -> cairn_net::ResponseHeader {
    let request = cairn_net::Request {
        header: cairn_net::RequestHeader::Audit {
            id: challenge.piece,
            nonce: challenge.nonce,
        },
        body: bytes::Bytes::new(),
    };
    steward
        .net
        .request(holder.net.local_peer_id(), request, Duration::from_secs(10))
        .await
        .unwrap()
        .header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audits_over_the_wire_prove_holding_and_catch_loss() {
    use cairn_core::PieceId;
    use cairn_core::audit::{self, AuditEvidence, Challenge, GROUP_BYTES};
    use cairn_core::keys::{PublicKey, SecretKey};
    use cairn_net::{ErrorCode, Request, RequestHeader, ResponseHeader};

    // Node 0 audits, node 1 holds honestly, node 2 lies.
    let nodes = testnet_with(3, 3_000_000 + u64::from(std::process::id()) * 100, &[2]).await;
    let (steward, holder, liar) = (&nodes[0], &nodes[1], &nodes[2]);
    let steward_key = SecretKey::generate();
    let holder_key = PublicKey::from_peer_bytes(&holder.net.local_peer_id().to_bytes()).unwrap();
    let liar_key = PublicKey::from_peer_bytes(&liar.net.local_peer_id().to_bytes()).unwrap();

    let size = 5 * GROUP_BYTES + 321;
    let piece: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let root = *blake3::hash(&piece).as_bytes();
    let id = PieceId([0x42; 32]);
    for node in [holder, liar] {
        let store = Request {
            header: RequestHeader::Store {
                id,
                hash: root,
                expires_at: 0,
            },
            body: piece.clone().into(),
        };
        let res = steward
            .net
            .request(node.net.local_peer_id(), store, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(res.header, ResponseHeader::Stored);
    }
    let for_group = |g: u64| {
        (0u64..)
            .map(|n| {
                let mut nonce = [0u8; 32];
                nonce[..8].copy_from_slice(&n.to_le_bytes());
                Challenge { piece: id, nonce }
            })
            .find(|c| c.group(size) == g)
            .unwrap()
    };

    // Every group of the honest holder's copy proves, signed by the holder's peer key.
    for g in 0..audit::group_count(size) {
        let c = for_group(g);
        let ResponseHeader::Audited(answer) = audit(steward, holder, &c).await else {
            panic!("group {g}: no answer");
        };
        assert_eq!(answer.verify(&root, size, &c, &holder_key), Ok(()));
    }

    // The liar signs a wrong proof: that is evidence anyone with the root can check.
    let c = Challenge::random(id);
    let ResponseHeader::Audited(lie) = audit(steward, liar, &c).await else {
        panic!("the liar answers audits");
    };
    assert!(lie.verify(&root, size, &c, &liar_key).is_err());
    let evidence =
        AuditEvidence::wrong_proof(&steward_key, root, size, lie, 1_700_000_000).unwrap();
    assert_eq!(evidence.holder, liar_key);
    let wire = evidence.to_bytes().unwrap();
    assert_eq!(AuditEvidence::from_bytes(&wire).unwrap().verify(), Ok(()));

    // One damaged byte in group 2 of the holder's file: audits of group 2 fail, the rest pass.
    let path = holder.store.piece_path(&id);
    let mut on_disk = std::fs::read(&path).unwrap();
    on_disk[(2 * GROUP_BYTES + 7) as usize] ^= 0x01;
    std::fs::write(&path, &on_disk).unwrap();
    let c = for_group(2);
    match audit(steward, holder, &c).await {
        ResponseHeader::Error { code, message } => {
            assert_eq!(code, ErrorCode::Corrupted, "{message}");
            let ev = AuditEvidence::missing(&steward_key, holder_key, c, root, size, 1_700_000_001);
            assert_eq!(ev.verify(), Ok(()));
        }
        other => panic!("expected a Corrupted error, got {other:?}"),
    }
    let c = for_group(4);
    let ResponseHeader::Audited(answer) = audit(steward, holder, &c).await else {
        panic!("undamaged groups still prove");
    };
    assert_eq!(answer.verify(&root, size, &c, &holder_key), Ok(()));

    // The file deleted: every audit fails.
    std::fs::remove_file(&path).unwrap();
    let c = for_group(4);
    assert!(matches!(
        audit(steward, holder, &c).await,
        ResponseHeader::Error {
            code: ErrorCode::Corrupted,
            ..
        }
    ));
    // And a piece never stored is not found.
    let c = Challenge::random(PieceId([0x43; 32]));
    assert!(matches!(
        audit(steward, holder, &c).await,
        ResponseHeader::Error {
            code: ErrorCode::NotFound,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_indexes_replicate_repair_on_read_and_agree_on_one_winner() {
    use cairn_core::index::{Account, Index};
    use cairn_core::keys::SecretKey;

    let nodes = testnet(6, 4_000_000 + u64::from(std::process::id()) * 100).await;
    let account = Account::new(SecretKey::from_bytes([7; 32]));
    let name = account.index_name(b"buckets");
    let id = name.id();
    let replica_of = |i: usize| nodes[i].indexes.get(&id).unwrap();

    // A write through node 0 reaches the five closest of six nodes.
    let mut first = Index::new(name);
    first.put(&account, b"photos", b"bucket meta", 1).unwrap();
    let written = nodes[0].replicas.put(&first).await.unwrap();
    assert_eq!((written.acks, written.peers), (5, 5));
    let set = nodes[0].replicas.replica_set(&id).await;
    assert_eq!(set.len(), 5);
    let holders = (0..6).filter(|&i| replica_of(i).is_some()).count();
    assert_eq!(holders, 5);

    let lone = (0..6)
        .find(|&i| set.contains(&nodes[i].net.local_peer_id()))
        .unwrap();
    let reader = (0..6).rev().find(|&i| i != lone).unwrap();
    // A second read of an index nobody changed moves no copy: every
    // replica answers that it has the reader's digest.
    let first_read = nodes[reader].replicas.get(&id).await.unwrap().unwrap();
    assert_eq!(*first_read.index, first);
    assert_eq!(first_read.digest, first.digest());
    let fetched = nodes[reader].replicas.fetched_bytes();
    assert!(fetched > 0, "the first read fetched copies");
    let again = nodes[reader].replicas.get(&id).await.unwrap().unwrap();
    assert_eq!((*again.index).clone(), first);
    assert_eq!(nodes[reader].replicas.fetched_bytes(), fetched);

    // A partial write (one replica only) is seen by a read, which repairs the rest.
    let mut partial = Index::new(name);
    partial.put(&account, b"videos", b"more meta", 2).unwrap();
    nodes[lone].indexes.merge(&partial).unwrap();
    let read = nodes[reader].replicas.get(&id).await.unwrap().unwrap();
    let read = (*read.index).clone();
    let keys: Vec<_> = read
        .entries(account.key())
        .unwrap()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, [b"photos".to_vec(), b"videos".to_vec()]);
    for (i, node) in nodes.iter().enumerate() {
        if set.contains(&node.net.local_peer_id()) {
            assert_eq!(
                replica_of(i).as_ref(),
                Some(&read),
                "replica {i} was not repaired"
            );
        }
    }
    // Only the replica that had the partial write sent its copy.
    let one_copy = partial.encoded_len().max(read.encoded_len()) as u64;
    let moved = nodes[reader].replicas.fetched_bytes() - fetched;
    assert!(moved > 0 && moved <= one_copy, "{moved} bytes moved");
    // A write through the reader's node joins its recent copy, so reading
    // the index back moves no copy either.
    let before = nodes[reader].replicas.fetched_bytes();
    let mut delta = Index::new(name);
    delta.put(&account, b"music", b"meta", 2).unwrap();
    nodes[reader].replicas.put(&delta).await.unwrap();
    let back = nodes[reader].replicas.get(&id).await.unwrap().unwrap();
    let mut read = read;
    read.merge(&delta).unwrap();
    assert_eq!(*back.index, read);
    assert_eq!(nodes[reader].replicas.fetched_bytes(), before);

    // Two gateways PUT one key at the same clock through two nodes at once:
    // every replica keeps the same single winner.
    let mut g1 = read.clone();
    let mut g2 = read.clone();
    g1.put(&account, b"photos", b"gateway 1", 3).unwrap();
    g2.put(&account, b"photos", b"gateway 2", 3).unwrap();
    let (w1, w2) = tokio::join!(nodes[1].replicas.put(&g1), nodes[2].replicas.put(&g2));
    assert!(w1.unwrap().acks >= 3 && w2.unwrap().acks >= 3);
    let mut expected = g1.clone();
    expected.merge(&g2).unwrap();
    let winner = expected.get(account.key(), b"photos").unwrap().unwrap();
    for i in 0..6 {
        if let Some(copy) = replica_of(i) {
            assert_eq!(copy, expected, "replica {i}");
            assert_eq!(copy.get(account.key(), b"photos").unwrap().unwrap(), winner);
        }
    }

    // The writer's node stops; another node still reads it.
    nodes[1].stop.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = nodes[4].replicas.get(&id).await.unwrap().unwrap();
    assert_eq!(*after.index, expected);
    let after = (*after.index).clone();

    // An index nobody wrote is not found; a forged one is refused by every replica.
    let other = Account::new(SecretKey::from_bytes([8; 32])).index_name(b"buckets");
    assert!(nodes[4].replicas.get(&other.id()).await.unwrap().is_none());
    let request = cairn_net::Request {
        header: cairn_net::RequestHeader::PutIndex { id: other.id() },
        body: after.encode().into(),
    };
    let res = nodes[0]
        .net
        .request(
            nodes[3].net.local_peer_id(),
            request,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            res.header,
            cairn_net::ResponseHeader::Error {
                code: cairn_net::ErrorCode::Refused,
                ..
            }
        ),
        "{:?}",
        res.header
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_owned_by_a_given_key_is_managed_through_any_node_with_it() {
    let nodes = testnet(5, 1_300_000 + u64::from(std::process::id()) * 100).await;
    let owner = Arc::new(cairn_core::keys::SecretKey::generate());
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let opts = PutOptions {
        k: Some(2),
        n: Some(4),
        owner: Some(owner.clone()),
        catalog: false,
        ..PutOptions::default()
    };
    let out = nodes[0].client.put(&data[..], opts).await.unwrap();
    let cap: ReadCap = out.cap.parse().unwrap();
    // Not on the putting node's own list (nor renewed by it).
    assert!(nodes[0].client.catalog().list().unwrap().is_empty());
    let record = nodes[3].client.record_of(&cap).await.unwrap();
    assert_eq!(record.genesis().owner, owner.public());
    // Without the key no node may manage it, not even the one that put it.
    assert!(matches!(
        nodes[0].client.renew(&cap, 1000, None).await,
        Err(ClientError::NotOwner)
    ));
    // With it, any node may.
    let until = nodes[2]
        .client
        .renew(&cap, 7 * 86_400, Some(&owner))
        .await
        .unwrap();
    assert!(until >= crate::now_secs() + 7 * 86_400 - 5);
    nodes[3].client.remove(&cap, Some(&owner)).await.unwrap();
    let record = nodes[1].client.record_of(&cap).await.unwrap();
    assert!(record.is_deleted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_reuse_a_manifest_read_lately_and_stat_does_not() {
    let nodes = testnet(5, 8_000_000 + u64::from(std::process::id()) * 100).await;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 11 % 251) as u8).collect();
    let opts = PutOptions {
        k: Some(2),
        n: Some(4),
        segment_size: 64 * 1024,
        ..PutOptions::default()
    };
    let out = nodes[0].client.put(&data[..], opts).await.unwrap();
    let cap: ReadCap = out.cap.parse().unwrap();
    let reader = &nodes[4].client;
    assert_eq!(get_all(reader, &cap).await.unwrap(), data);
    // Every copy of the manifest goes: a fresh lookup now fails, but
    // reads within the TTL go on with the copy read a moment ago.
    for node in &nodes {
        let _ = node.store.remove(&cap.manifest.piece_id());
    }
    assert!(matches!(
        reader.manifest(&cap).await,
        Err(ClientError::ManifestNotFound { .. })
    ));
    assert!(reader.stat(&cap).await.is_err(), "stat reads the network");
    let (_, mut rx) = reader
        .get_range(cap.clone(), Some((70_000, 70_100)))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = rx.recv().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, data[70_000..70_100]);
    // The kept copy still has to open with the capability's own key.
    let wrong = ReadCap {
        key: cairn_core::FileKey::random(),
        manifest: cap.manifest,
    };
    assert!(reader.get_range(wrong, None).await.is_err());
    // Another node never read it, and finds nothing.
    assert!(get_all(&nodes[3].client, &cap).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_ranges_of_one_segment_share_one_fetch_and_whole_segments_are_not_kept() {
    let nodes = testnet(5, 7_000_000 + u64::from(std::process::id()) * 100).await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let seg = 64 * 1024u64;
    let owner = Arc::new(cairn_core::keys::SecretKey::generate());
    let opts = PutOptions {
        k: Some(2),
        n: Some(4),
        segment_size: seg,
        owner: Some(owner.clone()),
        ..PutOptions::default()
    };
    let out = nodes[0].client.put(&data[..], opts).await.unwrap();
    let cap: ReadCap = out.cap.parse().unwrap();
    let reader = &nodes[4].client;
    let read = |start: u64, end: u64| {
        let cap = cap.clone();
        async move {
            let (_, mut rx) = reader.get_range(cap, Some((start, end))).await.unwrap();
            let mut got = Vec::new();
            while let Some(chunk) = rx.recv().await {
                got.extend_from_slice(&chunk.unwrap());
            }
            got
        }
    };
    // Eight 8 KiB ranges of segment 1 at once, as an S3 client reads: one
    // fetch and decode between them, exact bytes for each.
    let before = reader.segments_decoded();
    let ranges: Vec<(u64, u64)> = (0..8)
        .map(|i| (seg + i * 8192, seg + (i + 1) * 8192))
        .collect();
    let got = futures::future::join_all(ranges.iter().map(|&(s, e)| read(s, e))).await;
    for ((s, e), g) in ranges.iter().zip(&got) {
        assert_eq!(g[..], data[*s as usize..*e as usize], "range {s}..{e}");
    }
    assert_eq!(reader.segments_decoded() - before, 1, "one fetch shared");
    // Within the TTL a later range of it is served from memory too.
    assert_eq!(
        read(seg + 5, seg + 10).await,
        data[seg as usize + 5..seg as usize + 10]
    );
    assert_eq!(reader.segments_decoded() - before, 1);
    // Whole segments are not kept: reading segment 0 twice fetches twice,
    // and the short last segment read whole counts as whole.
    for _ in 0..2 {
        assert_eq!(read(0, seg).await, data[..seg as usize]);
        assert_eq!(read(3 * seg, 200_000).await, data[3 * seg as usize..]);
    }
    assert_eq!(reader.segments_decoded() - before, 5);
    // The owner's delete through this node forgets the kept segment.
    read(seg, seg + 1).await;
    assert_eq!(reader.decoded_len(), 1);
    reader.remove(&cap, Some(&owner)).await.unwrap();
    assert_eq!(reader.decoded_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_kept_record_is_stale_asks_again_and_finds_the_moved_pieces() {
    use cairn_core::record::Change;
    use cairn_net::{Request, RequestHeader, ResponseHeader};
    let nodes = testnet(6, 9_000_000 + u64::from(std::process::id()) * 100).await;
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 17 % 249) as u8).collect();
    let opts = PutOptions {
        k: Some(2),
        n: Some(4),
        segment_size: 64 * 1024,
        ..PutOptions::default()
    };
    let out = nodes[0].client.put(&data[..], opts).await.unwrap();
    let cap: ReadCap = out.cap.parse().unwrap();
    let reader = &nodes[5].client;
    // The reader keeps the manifest and the record it read.
    assert_eq!(get_all(reader, &cap).await.unwrap(), data);
    let m = reader.manifest(&cap).await.unwrap();
    let by_peer = |bytes: &[u8]| {
        nodes
            .iter()
            .position(|n| n.net.local_peer_id().to_bytes() == bytes)
            .unwrap()
    };
    let holders: Vec<(u16, usize)> = m.segments[0]
        .pieces
        .iter()
        .map(|p| (p.index, by_peer(&p.holder)))
        .collect();
    let spare: Vec<usize> = (0..6)
        .filter(|i| *i != 5 && holders.iter().all(|(_, h)| h != i))
        .collect();
    assert!(!spare.is_empty(), "a node holds no piece: {holders:?}");
    // As a repair would: n - k + 1 pieces move to other nodes, and the
    // record says so. The kept copy now names too few holders.
    let rid = m.record.unwrap();
    let mut record = nodes[0].client.record(&rid).await.unwrap();
    let mut changes = vec![];
    for (n, &(index, from)) in holders.iter().take(3).enumerate() {
        let to = spare[n % spare.len()];
        let id = m.file_id.piece_id(0, u32::from(index));
        let bytes = nodes[from].store.get(&id).unwrap();
        nodes[to]
            .store
            .put(
                cairn_store::NewPiece {
                    id,
                    kind: cairn_store::PieceKind::Data,
                    data: &bytes,
                    expected_hash: None,
                    owner: &nodes[0].net.local_peer_id().to_bytes(),
                    expires_at: 0,
                },
                crate::now_secs(),
            )
            .unwrap();
        nodes[from].store.remove(&id).unwrap();
        changes.push(Change::Assign {
            segment: 0,
            index,
            holder: nodes[to].net.local_peer_id().to_bytes(),
        });
    }
    let me = nodes[0].signer.public();
    record
        .update(
            &nodes[0].signer,
            crate::now_secs(),
            changes,
            &|k: &cairn_core::keys::PublicKey| *k == me,
        )
        .unwrap();
    let body = bytes::Bytes::from(record.encode());
    for node in &nodes[1..] {
        let request = Request {
            header: RequestHeader::PutRepair { id: rid },
            body: body.clone(),
        };
        let r = nodes[0]
            .net
            .request(node.net.local_peer_id(), request, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(matches!(r.header, ResponseHeader::Stored), "{:?}", r.header);
    }
    // Within the TTL the reader starts from its kept copy, cannot rebuild
    // the segment from it, and asks again.
    assert_eq!(get_all(reader, &cap).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collected_index_spreads_and_a_replica_that_missed_it_brings_nothing_back() {
    use cairn_core::index::{Account, Index};
    use cairn_core::keys::SecretKey;

    let nodes = testnet(6, 4_100_000 + u64::from(std::process::id()) * 100).await;
    let account = Account::new(SecretKey::from_bytes([9; 32]));
    let name = account.index_name(b"objects/b");
    let id = name.id();
    let replica_of = |i: usize| nodes[i].indexes.get(&id).unwrap();

    let mut puts = Index::new(name);
    for i in 0..10u64 {
        puts.put(&account, format!("k{i}").as_bytes(), b"meta", 10 + i)
            .unwrap();
    }
    nodes[0].replicas.put(&puts).await.unwrap();
    let set = nodes[0].replicas.replica_set(&id).await;
    let in_set: Vec<usize> = (0..6)
        .filter(|&i| set.contains(&nodes[i].net.local_peer_id()))
        .collect();
    assert_eq!(in_set.len(), 5);
    // Deletes, then the owner's checkpoint, reach every replica but one.
    let mut collected = puts.clone();
    for i in 0..8u64 {
        collected
            .delete(&account, format!("k{i}").as_bytes(), 100 + i)
            .unwrap();
    }
    let collected = collected.collect(&account, 1_000, |_| true).unwrap();
    let lone = in_set[0];
    for &i in &in_set[1..] {
        nodes[i].indexes.merge(&collected).unwrap();
    }
    assert_eq!(replica_of(lone), Some(puts.clone()));
    // A read merges the stale copy in, which brings nothing back, and
    // repairs the replica that missed the collection.
    let reader = (0..6).find(|&i| i != lone).unwrap();
    let read = nodes[reader].replicas.get(&id).await.unwrap().unwrap();
    assert_eq!(*read.index, collected);
    assert_eq!((read.answered, read.asked), (5, 5));
    for &i in &in_set {
        let copy = replica_of(i).unwrap();
        assert_eq!(copy, collected, "replica {i}");
        assert_eq!(copy.tombstones(), 0);
    }
    // The pre-collection copy written again through any node changes nothing.
    nodes[lone].replicas.put(&puts).await.unwrap();
    for &i in &in_set {
        let copy = replica_of(i).unwrap();
        assert_eq!(copy, collected, "replica {i}");
        assert_eq!(copy.get(account.key(), b"k3").unwrap(), None);
        assert_eq!(
            copy.get(account.key(), b"k9").unwrap(),
            Some(b"meta".to_vec())
        );
    }
}
