//! Account indexes end to end: real node processes over loopback, written
//! and read through the control API the S3 gateway will use.

use cairn_core::index::{Account, Index};
use cairn_core::keys::SecretKey;

use crate::harness::*;

async fn post(http: &reqwest::Client, api: &str, index: &Index) -> (u16, serde_json::Value) {
    let res = http
        .post(format!("{api}/v1/index/{}", index.id()))
        .body(index.encode())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn get(http: &reqwest::Client, api: &str, index: &Index) -> Option<Index> {
    let res = http
        .get(format!("{api}/v1/index/{}", index.id()))
        .send()
        .await
        .unwrap();
    match res.status().as_u16() {
        404 => None,
        200 => {
            let bytes = res.bytes().await.unwrap();
            Some(Index::decode(&bytes, Some(index.id())).unwrap())
        }
        s => panic!("GET index: {s} {}", res.text().await.unwrap_or_default()),
    }
}

#[test]
fn an_index_outlives_its_writer_and_concurrent_puts_agree_everywhere() {
    let net = Devnet::start(6, "1GiB");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let account = Account::new(SecretKey::from_bytes([42; 32]));
        let mut buckets = Index::new(account.index_name(b"buckets"));
        assert_eq!(get(&http, net.api(0), &buckets).await, None);
        buckets
            .put(&account, b"photos", b"created 2026-11-25", 1_000)
            .unwrap();

        // Written through node 0: a quorum of the five closest nodes took it.
        let (status, written) = post(&http, net.api(0), &buckets).await;
        assert_eq!(status, 200, "{written}");
        assert_eq!(written["peers"], 5, "{written}");
        assert!(written["acks"].as_u64().unwrap() >= 3, "{written}");

        // Node 0 dies; node 3 still reads the index from the other replicas.
        net.kill_node(0);
        let read = get(&http, net.api(3), &buckets)
            .await
            .expect("the index survives its writer");
        assert_eq!(read, buckets);
        assert_eq!(
            read.get(account.key(), b"photos").unwrap(),
            Some(b"created 2026-11-25".to_vec())
        );

        // Two gateways with the same account PUT one key at the same clock,
        // through two nodes at once.
        let clock = read.next_clock(2_000);
        let mut g1 = read.clone();
        let mut g2 = read.clone();
        g1.put(&account, b"videos", b"from gateway 1", clock)
            .unwrap();
        g2.put(&account, b"videos", b"from gateway 2", clock)
            .unwrap();
        let ((s1, w1), (s2, w2)) =
            tokio::join!(post(&http, net.api(1), &g1), post(&http, net.api(2), &g2));
        assert_eq!((s1, s2), (200, 200), "{w1} {w2}");
        let mut expected = g1.clone();
        expected.merge(&g2).unwrap();
        let winner = expected.get(account.key(), b"videos").unwrap().unwrap();
        for i in 1..6 {
            let seen = get(&http, net.api(i), &buckets).await.unwrap();
            assert_eq!(seen, expected, "node {i} sees another index");
            assert_eq!(seen.get(account.key(), b"videos").unwrap().unwrap(), winner);
        }

        // A gateway may send just its new op: a delete, as a one-op index.
        let mut delta = Index::new(*expected.name());
        delta
            .delete(&account, b"photos", expected.next_clock(3_000))
            .unwrap();
        let (status, written) = post(&http, net.api(4), &delta).await;
        assert_eq!(status, 200, "{written}");
        let seen = get(&http, net.api(5), &buckets).await.unwrap();
        let keys: Vec<Vec<u8>> = seen
            .entries(account.key())
            .unwrap()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [b"videos".to_vec()]);

        // A body that is not that index is refused before anything is sent.
        let other = Index::new(account.index_name(b"bucket/photos"));
        let res = http
            .post(format!("{}/v1/index/{}", net.api(1), other.id()))
            .body(expected.encode())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 400);
        let err: serde_json::Value = res.json().await.unwrap();
        assert!(
            err["error"].as_str().unwrap().contains("not the requested"),
            "{err}"
        );
        assert_eq!(get(&http, net.api(1), &other).await, None);
    });
}
