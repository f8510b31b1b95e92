//! The network keeps files alive by itself: stewards notice lost holders,
//! rebuild their pieces elsewhere and record it, with the owner gone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

/// `(segment, index)` → holder peer id.
fn layout(stat: &serde_json::Value) -> BTreeMap<(u32, u16), String> {
    pieces(stat)
        .into_iter()
        .enumerate()
        .flat_map(|(s, seg)| {
            seg.into_iter()
                .map(move |(i, h, _)| ((s as u32, i as u16), h))
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
            "--audit-interval",
            "1s",
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
    let initial = layout(&stat);
    let mut before = initial.clone();
    let mut observed = Vec::new();
    let mut placed = Vec::new();
    // Kill original holders one at a time, each time waiting until the
    // stewards have rebuilt every piece on live nodes.
    // Repairs counted by stewards before they are killed: the steward that
    // rebuilt a round's pieces may be among the next victims.
    let mut repairs_of_the_dead = 0;
    for (round, &v) in victims.iter().take(5).enumerate() {
        repairs_of_the_dead += steward_json(net.api(v))["repairs"].as_u64().unwrap();
        net.kill_node(v);
        dead.insert(net.nodes[v].peer_id.clone());
        let alive = 12 - dead.len();
        let want = 8.min(alive);
        let stat = wait_for_health(&net, net.api(reader), &cap, want, &dead);
        let after = layout(&stat);
        let lost: BTreeSet<(u32, u16)> = before
            .iter()
            .filter(|(_, h)| **h == net.nodes[v].peer_id)
            .map(|(slot, _)| *slot)
            .collect();
        let rebuilt: BTreeSet<(u32, u16)> = after
            .iter()
            .filter(|(slot, h)| before.get(slot) != Some(h))
            .map(|(slot, _)| *slot)
            .collect();
        placed.push(
            rebuilt
                .iter()
                .map(|slot| (*slot, index[&after[slot]] as u32))
                .collect::<BTreeMap<_, _>>(),
        );
        observed.push(cairn_sim::Round { lost, rebuilt });
        before = after;
        // Repairs reuse the lost indices: each index is listed once.
        for seg in pieces(&stat) {
            let idx: HashSet<u64> = seg.iter().map(|(i, _, _)| *i).collect();
            assert_eq!(idx.len(), seg.len(), "round {round}: duplicate indices");
        }
    }
    // The simulator, given the same placement, the same kills and where the
    // network put each rebuilt piece (that depends on its DHT view), decides
    // to rebuild exactly the pieces the network rebuilt, round by round.
    let script = cairn_sim::Script {
        nodes: 12,
        k: 4,
        n: 8,
        coded: 12,
        holders: (0..2u32)
            .map(|s| {
                initial
                    .iter()
                    .filter(|((seg, _), _)| *seg == s)
                    .map(|((_, i), h)| (*i, index[h] as u32))
                    .collect()
            })
            .collect(),
        kills: victims.iter().take(5).map(|&v| v as u32).collect(),
        policy: cairn_core::repair::RepairPolicy {
            threshold: cairn_core::repair::Threshold::Eager,
        },
        placed,
    };
    assert_eq!(cairn_sim::replay(&script).unwrap(), observed);
    // More than n − k of the original holders are gone; stop the owner too.
    repairs_of_the_dead += steward_json(net.api(0))["repairs"].as_u64().unwrap();
    net.kill_node(0);
    dead.insert(net.nodes[0].peer_id.clone());
    // stat reads the record from the stewards: it works with the owner gone
    // and shows the repaired layout.
    let stat = stat_json(net.api(reader), &cap);
    assert_eq!(layout(&stat), before);
    assert!(stat["lease_expires_at"].as_u64().is_some());
    let out = work.path().join("back");
    ok(cairn(
        net.api(reader),
        &["get", &cap, "-o", out.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    // The stewards report repairs (the survivors now, the killed ones as
    // they last said) and audits of the holders.
    let views: Vec<serde_json::Value> = (1..12)
        .filter(|i| !dead.contains(&net.nodes[*i].peer_id))
        .map(|i| steward_json(net.api(i)))
        .collect();
    let repairs: u64 = views
        .iter()
        .map(|v| v["repairs"].as_u64().unwrap())
        .sum::<u64>()
        + repairs_of_the_dead;
    let audits: u64 = views.iter().map(|v| v["audits"].as_u64().unwrap()).sum();
    assert!(
        repairs > 0 && audits > 0,
        "{repairs} repairs, {audits} audits"
    );
}

#[test]
fn audits_catch_a_holder_that_deletes_or_corrupts_its_pieces() {
    // A long grace: the bad holders stay online, so only audits can tell.
    let net = Devnet::start_with(
        10,
        "1GiB",
        &[
            "--steward-interval",
            "1s",
            "--grace",
            "10m",
            "--audit-interval",
            "1s",
            "--repair",
            "eager",
        ],
    );
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("file");
    let bytes = data(600 << 10, 9);
    std::fs::write(&path, &bytes).unwrap();
    let cap = put(net.api(0), &path, &["--k", "4", "--n", "8"]);
    let index = index_of(&net);
    let reader = 9;
    let stat = wait_for_health(&net, net.api(reader), &cap, 8, &HashSet::new());
    let holders: Vec<usize> = pieces(&stat)[0]
        .iter()
        .map(|(_, h, _)| index[h])
        .filter(|&i| i != 0 && i != reader)
        .collect();
    let (deleter, corrupter) = (holders[0], holders[1]);
    eprintln!("deleter: node {deleter}, corrupter: node {corrupter}");
    // One deletes its piece files behind its index's back; the other flips
    // a byte in every 16 KiB of them, so whatever group is audited fails.
    for f in files_under(&net.nodes[deleter].data_dir.join("store").join("pieces")) {
        std::fs::remove_file(f).unwrap();
    }
    for f in files_under(&net.nodes[corrupter].data_dir.join("store").join("pieces")) {
        let mut b = std::fs::read(&f).unwrap();
        for i in (0..b.len()).step_by(16 << 10) {
            b[i] ^= 0xff;
        }
        std::fs::write(&f, b).unwrap();
    }
    let bad: HashSet<String> = [deleter, corrupter]
        .iter()
        .map(|&i| net.nodes[i].peer_id.clone())
        .collect();
    // The pieces they failed are rebuilt elsewhere: stat no longer lists
    // them as their holders, and every segment is back to 8 healthy pieces.
    // (A steward that did not audit them itself may still give one of them
    // a new piece; it is checked on arrival like any other.)
    let failed: Vec<((u32, u16), String)> = layout(&stat)
        .into_iter()
        .filter(|(_, h)| bad.contains(h))
        .collect();
    assert_eq!(failed.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = stat_json(net.api(reader), &cap);
        let l = layout(&now);
        let moved = failed.iter().all(|(slot, h)| l.get(slot) != Some(h));
        let full = pieces(&now).iter().all(|seg| {
            let live: HashSet<&String> = seg
                .iter()
                .filter(|(_, _, online)| *online)
                .map(|(_, h, _)| h)
                .collect();
            live.len() == 8 && seg.len() == 8
        });
        if moved && full {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not repaired: {now:#}\n{}",
            net.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Some steward saw the failed audits: scores down, penalties explained.
    let mut caught = HashSet::new();
    for i in 0..10 {
        for h in steward_json(net.api(i))["holders"].as_array().unwrap() {
            let peer = h["peer_id"].as_str().unwrap();
            if bad.contains(peer) && h["score"].as_f64().unwrap() < 1.0 {
                assert!(!h["penalties"].as_array().unwrap().is_empty(), "{h}");
                caught.insert(peer.to_string());
            }
            if !bad.contains(peer) {
                assert_eq!(
                    h["score"].as_f64(),
                    Some(1.0),
                    "an honest holder lost score: {h}"
                );
            }
        }
    }
    assert_eq!(caught, bad, "both bad holders show a lowered audit score");
    // The steward that caught one told the record's other stewards: some
    // steward lists each bad holder as a suspect on another's evidence,
    // and none lists an honest one.
    let mut told = HashSet::new();
    for i in 0..10 {
        let me = &net.nodes[i].peer_id;
        for s in steward_json(net.api(i))["suspects"].as_array().unwrap() {
            let peer = s["peer_id"].as_str().unwrap();
            assert!(bad.contains(peer), "an honest holder is suspected: {s}");
            let by = s["reported_by"].as_array().unwrap();
            if by.iter().any(|b| b.as_str() != Some(me)) {
                told.insert(peer.to_string());
            }
        }
    }
    assert_eq!(told, bad, "stewards share the evidence of failed audits");
    // A steward remembers what it saw across a restart (steward.redb): kill
    // one that caught a bad holder and start it again on its data dir.
    // (Audits come at random times and the first failure gets the piece
    // repaired away, so not every steward has caught both; a bad node may
    // be the one that caught the other.)
    let witness = (0..10)
        .find(|&i| {
            steward_json(net.api(i))["holders"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| {
                    bad.contains(h["peer_id"].as_str().unwrap())
                        && h["score"].as_f64().unwrap() < 1.0
                })
        })
        .expect("some steward caught a bad holder");
    let before: Vec<serde_json::Value> = steward_json(net.api(witness))["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            bad.contains(h["peer_id"].as_str().unwrap()) && h["score"].as_f64().unwrap() < 1.0
        })
        .cloned()
        .collect();
    net.kill_node(witness);
    let witness_dir = net.nodes[witness].data_dir.clone();
    std::fs::remove_file(witness_dir.join("node.json")).unwrap();
    let boot = (0..10).find(|&i| i != witness).unwrap();
    let restarted = Node::start(&witness_dir, "1GiB", Some(&net.nodes[boot].listen[0]));
    // The witness has a new API address now.
    let api_of = |i: usize| {
        if i == witness {
            restarted.info.api.clone()
        } else {
            net.api(i).to_string()
        }
    };
    assert_eq!(restarted.info.peer_id, net.nodes[witness].peer_id);
    let after = steward_json(&restarted.info.api);
    for h in &before {
        let kept = after["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["peer_id"] == h["peer_id"])
            .unwrap_or_else(|| panic!("{} forgotten after a restart: {after:#}", h["peer_id"]));
        // Its penalties are still there (it may have been audited again
        // since, so the score may have moved up a little, not back to 1).
        assert!(kept["score"].as_f64().unwrap() < 1.0, "{kept}");
        let penalties = kept["penalties"].as_array().unwrap();
        for p in h["penalties"].as_array().unwrap() {
            assert!(penalties.contains(p), "{p} forgotten: {kept}");
        }
    }
    assert!(
        after["evidence"].as_array().is_some_and(|e| !e.is_empty()),
        "signed evidence kept: {after:#}"
    );
    // And each bad node itself can see why: its stewards' penalties.
    for &i in &[deleter, corrupter] {
        let standing = steward_json(&api_of(i))["standing"]
            .as_array()
            .unwrap()
            .clone();
        assert!(
            standing.iter().any(|v| v["score"].as_f64().unwrap() < 1.0
                && !v["penalties"].as_array().unwrap().is_empty()),
            "node {i} does not see its penalties: {standing:?}"
        );
    }
    let honest = steward_json(&api_of(holders[2]))["standing"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!honest.is_empty(), "an honest holder is audited");
    assert!(
        honest.iter().all(|v| v["score"].as_f64() == Some(1.0)),
        "{honest:?}"
    );
    let out = work.path().join("back");
    ok(cairn(
        &api_of(reader),
        &["get", &cap, "-o", out.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
}

#[test]
fn a_steward_pass_asks_each_holder_and_fellow_once_and_reuses_the_stewards_it_found() {
    // Six nodes, a pass a second, eight one-segment files: every node
    // holds pieces of most records and stewards several of them.
    let net = Devnet::start_with(6, "1GiB", &["--steward-interval", "1s"]);
    let work = tempfile::tempdir().unwrap();
    for i in 0..8u8 {
        let path = work.path().join(format!("file{i}"));
        std::fs::write(&path, data(64 << 10, 40 + i as u64)).unwrap();
        put(net.api(0), &path, &[]);
    }
    let counters = |i: usize| {
        let v = steward_json(net.api(i));
        let g = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v:#}"));
        (
            g("passes"),
            g("lookups"),
            g("probes"),
            g("records"),
            g("digests"),
        )
    };
    // Let every steward find its records' stewards once.
    std::thread::sleep(Duration::from_secs(4));
    let before: Vec<_> = (0..6).map(counters).collect();
    std::thread::sleep(Duration::from_secs(8));
    let mut tended = 0;
    for (i, &(passes0, lookups0, probes0, _, digests0)) in before.iter().enumerate() {
        let (passes, lookups, probes, records, digests) = counters(i);
        let passes = passes - passes0;
        assert!(passes >= 4, "node {i}: {passes} passes in 8 s");
        // One `Has` per holder (the five others) per pass, however many
        // records it holds pieces of; one per record per holder would be
        // `records` times that.
        // (+1: a pass running when `before` was read)
        assert!(
            probes - probes0 <= (passes + 1) * 5,
            "node {i}: {} probes in {passes} passes over {records} records",
            probes - probes0
        );
        // Anti-entropy: one request per fellow steward (at most the five
        // others) per pass, not one per record per fellow.
        assert!(
            digests - digests0 <= (passes + 1) * 5,
            "node {i}: {} digest requests in {passes} passes over {records} records",
            digests - digests0
        );
        // Nobody joined or left: the steward sets found before still stand,
        // so records are not walked again (a walk per record per pass would
        // be `records * passes`; a slow answer may cost one).
        assert!(
            lookups - lookups0 <= records * passes / 4,
            "node {i}: {} DHT walks in {passes} passes over {records} records",
            lookups - lookups0
        );
        tended += records * passes;
    }
    assert!(tended > 0, "nobody stewarded anything");
}

#[test]
fn renew_extends_the_lease_and_rm_deletes_everywhere() {
    let net = Devnet::start_with(6, "1GiB", &["--steward-interval", "1s"]);
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("file");
    std::fs::write(&path, data(300 << 10, 3)).unwrap();
    let cap = put(net.api(0), &path, &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // A new file holds a 90-day lease; any node sees it through the record.
    let lease = |i: usize| {
        stat_json(net.api(i), &cap)["lease_expires_at"]
            .as_u64()
            .unwrap()
    };
    let day = 86_400;
    assert!((now + 89 * day..now + 91 * day).contains(&lease(3)));
    // Only the owner's node may renew.
    let refused = cairn(net.api(2), &["renew", &cap, "--lease", "200d"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("owner"), "{}", stderr(&refused));
    ok(cairn(net.api(0), &["renew", &cap, "--lease", "200d"]));
    assert!((now + 199 * day..now + 201 * day).contains(&lease(4)));
    // rm: the owner's signed delete reaches holders, which drop every piece.
    let stored = |net: &Devnet| -> usize {
        net.nodes
            .iter()
            .map(|n| files_under(&n.data_dir.join("store").join("pieces")).len())
            .sum()
    };
    assert!(stored(&net) > 0);
    ok(cairn(net.api(0), &["rm", &cap]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(&net) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} piece files left",
            stored(&net)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = work.path().join("gone");
    let get = cairn(net.api(3), &["get", &cap, "-o", out.to_str().unwrap()]);
    assert!(!get.status.success());
    assert!(!out.exists());
    let ls = ok(cairn(net.api(0), &["ls"]));
    assert!(!ls.contains(&cap), "{ls}");
}

#[test]
fn no_two_pieces_of_a_segment_share_a_declared_zone() {
    // 12 nodes in 5 zones: node i is in zone i mod 5.
    let net = Devnet::start_with(12, "1GiB", &["--zones", "5"]);
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("file");
    std::fs::write(&path, data(2 << 20, 4)).unwrap();
    let cap = put(net.api(3), &path, &["--segment-size", "1MiB"]);
    let index = index_of(&net);
    let stat = stat_json(net.api(0), &cap);
    // Five zones can hold five pieces of a segment, so k and n scale to them.
    assert_eq!(stat["n"].as_u64(), Some(5), "{stat:#}");
    for seg in pieces(&stat) {
        let zones: HashSet<usize> = seg.iter().map(|(_, h, _)| index[h] % 5).collect();
        assert_eq!(zones.len(), seg.len(), "two pieces in one zone: {seg:?}");
    }
}
