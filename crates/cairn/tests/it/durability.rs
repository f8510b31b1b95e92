//! The network keeps files alive by itself: stewards notice lost holders,
//! rebuild their pieces elsewhere and record it, with the owner gone.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Peer id → devnet index.
fn index_of(net: &Devnet) -> HashMap<String, usize> {
    net.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.peer_id.clone(), i))
        .collect()
}

/// Every segment's pieces as (index, holder peer id, online).
fn pieces(stat: &serde_json::Value) -> Vec<Vec<(u64, String, bool)>> {
    stat["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|seg| {
            seg["pieces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["index"].as_u64().unwrap(),
                        p["peer_id"].as_str().unwrap().to_string(),
                        p["online"].as_bool().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

/// Waits until every segment has `want` pieces, all online, on distinct
/// nodes, none of them in `dead`.
fn wait_for_health(
    net: &Devnet,
    api: &str,
    cap: &str,
    want: usize,
    dead: &HashSet<String>,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stat = stat_json(api, cap);
        let healthy = pieces(&stat).iter().all(|seg| {
            let live: Vec<&(u64, String, bool)> = seg
                .iter()
                .filter(|(_, h, online)| *online && !dead.contains(h))
                .collect();
            let holders: HashSet<&String> = live.iter().map(|(_, h, _)| h).collect();
            // With fewer live nodes than n, the pieces that cannot be
            // placed stay recorded on their dead holders.
            holders.len() == want && live.len() == want && (want < 8 || seg.len() == want)
        });
        if healthy {
            return stat;
        }
        assert!(
            Instant::now() < deadline,
            "no repair back to {want} healthy pieces per segment; last stat: {stat:#}\n{}",
            net.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn stewards_repair_lost_holders_until_the_original_ones_are_gone() {
    // Fast stewards: a pass a second, a holder is lost after 3 s away, and
    // every missing piece is rebuilt at once.
    let net = Devnet::start_with(
        12,
        "1GiB",
        &[
            "--steward-interval",
            "1s",
            "--grace",
            "3s",
            "--repair",
            "eager",
        ],
    );
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("file");
    let bytes = data(3 << 19, 7); // 1.5 MiB: two segments of 1 MiB
    std::fs::write(&path, &bytes).unwrap();
    let cap = put(
        net.api(0),
        &path,
        &["--k", "4", "--n", "8", "--segment-size", "1MiB"],
    );
    let index = index_of(&net);
    // Node 11 is the reader; keep it and the uploader (node 0) alive until the end.
    let reader = 11;
    let stat = wait_for_health(&net, net.api(reader), &cap, 8, &HashSet::new());
    assert_eq!((stat["k"].as_u64(), stat["n"].as_u64()), (Some(4), Some(8)));
    let original: Vec<String> = {
        let mut all: Vec<String> = pieces(&stat)
            .iter()
            .flatten()
            .map(|(_, h, _)| h.clone())
            .collect();
        all.sort();
        all.dedup();
        all
    };
    let victims: Vec<usize> = original
        .iter()
        .map(|h| index[h])
        .filter(|&i| i != 0 && i != reader)
        .collect();
    assert!(
        victims.len() > 4,
        "more than n-k original holders to kill: {victims:?}"
    );
    let mut dead = HashSet::new();
    // Kill original holders one at a time, each time waiting until the
    // stewards have rebuilt every piece on live nodes.
    for (round, &v) in victims.iter().take(5).enumerate() {
        net.kill_node(v);
        dead.insert(net.nodes[v].peer_id.clone());
        let alive = 12 - dead.len();
        let want = 8.min(alive);
        let stat = wait_for_health(&net, net.api(reader), &cap, want, &dead);
        // Repairs reuse the lost indices: each index is listed once.
        for seg in pieces(&stat) {
            let idx: HashSet<u64> = seg.iter().map(|(i, _, _)| *i).collect();
            assert_eq!(idx.len(), seg.len(), "round {round}: duplicate indices");
        }
    }
    // More than n − k of the original holders are gone; stop the owner too.
    net.kill_node(0);
    dead.insert(net.nodes[0].peer_id.clone());
    let out = work.path().join("back");
    ok(cairn(
        net.api(reader),
        &["get", &cap, "-o", out.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    // The surviving stewards report repairs (those killed took their
    // counts with them) and audits of the holders.
    let views: Vec<serde_json::Value> = (1..12)
        .filter(|i| !dead.contains(&net.nodes[*i].peer_id))
        .map(|i| steward_json(net.api(i)))
        .collect();
    let repairs: u64 = views.iter().map(|v| v["repairs"].as_u64().unwrap()).sum();
    let audits: u64 = views.iter().map(|v| v["audits"].as_u64().unwrap()).sum();
    assert!(
        repairs > 0 && audits > 0,
        "{repairs} repairs, {audits} audits"
    );
}
