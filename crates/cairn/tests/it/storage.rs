//! Files go in, nodes die or lie, files come out byte for byte.

use std::collections::HashSet;

use crate::harness::*;

#[test]
fn files_survive_lost_and_corrupt_pieces_until_the_code_runs_out() {
    let net = Devnet::start(12, "1GiB");
    let work = tempfile::tempdir().unwrap();
    // Files of 0 B, 1 B, 20 MiB (one default segment), and an exact multiple
    // of a 1 MiB segment size (three full segments).
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("empty", Vec::new(), vec![]),
        ("one", vec![42], vec![]),
        ("twenty", data(20 << 20, 1), vec![]),
        ("multiple", data(3 << 20, 2), vec!["--segment-size", "1MiB"]),
    ];
    let mut caps = Vec::new();
    for (name, bytes, extra) in &cases {
        let path = work.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        caps.push(put(net.api(0), &path, extra));
    }

    // stat --json: the documented shape, every piece on a distinct online node.
    let s = stat_json(net.api(0), &caps[3]);
    assert_eq!(s["size"], 3 << 20);
    assert_eq!(
        (s["k"].as_u64(), s["n"].as_u64()),
        (Some(8), Some(12)),
        "12 nodes scale to k=8, n=12"
    );
    assert_eq!(s["segments"].as_array().unwrap().len(), 3);
    for seg in s["segments"].as_array().unwrap() {
        let pieces = seg["pieces"].as_array().unwrap();
        assert_eq!(pieces.len(), 12);
        let holders: HashSet<&str> = pieces
            .iter()
            .map(|p| p["peer_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            holders.len(),
            12,
            "never two pieces of a segment on one node"
        );
        assert!(
            pieces
                .iter()
                .all(|p| p["online"] == true && p["index"].is_u64())
        );
    }

    let check_all = |via: usize, what: &str| {
        for ((name, bytes, _), cap) in cases.iter().zip(&caps) {
            let out = work.path().join(format!("{name}.out"));
            let o = cairn(net.api(via), &["get", cap, "-o", out.to_str().unwrap()]);
            assert!(
                o.status.success(),
                "{what}: get {name} failed: {}",
                stderr(&o)
            );
            assert!(
                std::fs::read(&out).unwrap() == *bytes,
                "{what}: {name} differs"
            );
            std::fs::remove_file(&out).unwrap();
        }
    };
    check_all(11, "healthy network, read through another node");

    // stdin in, stdout out.
    let piped = data(100_000, 3);
    let o = cairn_stdin(net.api(0), &["put", "-"], &piped);
    assert!(o.status.success(), "{}", stderr(&o));
    let cap = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let o = cairn(net.api(5), &["get", &cap, "-o", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == piped);

    // A node whose every piece file is corrupted on disk: its pieces are
    // detected as bad and replaced by others.
    assert!(corrupt_store(&net.nodes[5].data_dir) > 0);
    check_all(11, "one node's pieces corrupted");

    // Kill three more holders: with node 5's pieces corrupt, exactly k=8 good
    // pieces of every segment remain, so every corrupt piece must be caught.
    for i in [1, 2, 3] {
        net.kill_node(i);
    }
    let s = stat_json(net.api(11), &caps[2]);
    let healthy = s["segments"][0]["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["online"] == true)
        .count();
    assert_eq!(healthy, 9, "stat shows the three killed holders offline");
    check_all(11, "n-k pieces of every segment lost or corrupt");

    // One more loss than the code tolerates: a clear error, non-zero exit,
    // and nothing written at the output path.
    net.kill_node(4);
    let out = work.path().join("too-few.out");
    let o = cairn(net.api(11), &["get", &caps[2], "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("segment 0 cannot be rebuilt") && err.contains("are needed"),
        "unclear error: {err}"
    );
    assert!(
        err.contains("7 pieces were reachable but 8 are needed"),
        "counts: {err}"
    );
    assert!(!out.exists(), "a failed get leaves no output file");
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".cairn-get-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn a_full_node_refuses_and_the_piece_goes_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let first = Node::start(&dir.path().join("n0"), "1GiB", None);
    let boot = first.info.listen[0].clone();
    let mut nodes = vec![first];
    for i in 1..5 {
        nodes.push(Node::start(
            &dir.path().join(format!("n{i}")),
            "1GiB",
            Some(&boot),
        ));
    }
    let tiny = Node::start(&dir.path().join("tiny"), "64KiB", Some(&boot));
    let tiny_id = tiny.info.peer_id.clone();
    nodes.push(tiny);
    // Let the DHT settle so the uploader sees all six nodes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s: serde_json::Value =
            serde_json::from_str(&ok(cairn(&nodes[0].info.api, &["status", "--json"]))).unwrap();
        if s["known_peers"].as_u64().unwrap() >= 5 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let file = dir.path().join("f");
    let bytes = data(2 << 20, 9);
    std::fs::write(&file, &bytes).unwrap();
    // k=2, n=4 on six nodes: two spare pieces absorb the full node's refusal.
    let cap = put(&nodes[0].info.api, &file, &["--k", "2", "--n", "4"]);
    let s = stat_json(&nodes[0].info.api, &cap);
    let holders: Vec<&str> = s["segments"][0]["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer_id"].as_str().unwrap())
        .collect();
    assert_eq!(holders.len(), 4);
    assert!(
        !holders.contains(&tiny_id.as_str()),
        "the full node holds no piece"
    );
    let out = dir.path().join("out");
    ok(cairn(
        &nodes[2].info.api,
        &["get", &cap, "-o", out.to_str().unwrap()],
    ));
    assert!(std::fs::read(&out).unwrap() == bytes);

    // With no spare node left, the put fails and says why: nodes report
    // their free space, so the full one is not even asked.
    let o = cairn(
        &nodes[0].info.api,
        &["put", file.to_str().unwrap(), "--k", "5", "--n", "6"],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("needs 6 nodes with room") && err.contains("only 5 have it"),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "no capability for a failed put");
}

#[test]
fn nodes_that_speak_only_quic_store_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let quic = "/ip4/127.0.0.1/udp/0/quic-v1";
    let first = Node::start_on(&dir.path().join("q0"), "1GiB", None, quic);
    let boot = first.info.listen[0].clone();
    assert!(boot.contains("/quic-v1/"), "{boot}");
    let mut nodes = vec![first];
    for i in 1..4 {
        nodes.push(Node::start_on(
            &dir.path().join(format!("q{i}")),
            "1GiB",
            Some(&boot),
            quic,
        ));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s: serde_json::Value =
            serde_json::from_str(&ok(cairn(&nodes[0].info.api, &["status", "--json"]))).unwrap();
        if s["known_peers"].as_u64().unwrap() >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "QUIC nodes did not meet: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let file = dir.path().join("f");
    let bytes = data(5 << 20, 3);
    std::fs::write(&file, &bytes).unwrap();
    let cap = put(&nodes[0].info.api, &file, &["--k", "2", "--n", "4"]);
    let s = stat_json(&nodes[3].info.api, &cap);
    let holders: std::collections::HashSet<&str> = s["segments"][0]["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        holders.len(),
        4,
        "four nodes hold a piece each over QUIC: {s}"
    );
    let out = dir.path().join("out");
    ok(cairn(
        &nodes[3].info.api,
        &["get", &cap, "-o", out.to_str().unwrap()],
    ));
    assert!(std::fs::read(&out).unwrap() == bytes);
}

/// A holder that stops answering (its process is frozen, as an overloaded
/// or half-dead machine is) does not hold up a get: once half a segment's
/// pieces are in and the rest take as long again, the fetch asks more
/// holders (here about a second for the whole get). Without that hedge the
/// fetch waits until the frozen holder's connection is given up as dead
/// (about 20 s here) or its 120 s piece timeout: the limit below is twice
/// what a loaded CI machine needs, and half the failure detector's time.
#[test]
fn a_get_asks_more_holders_when_one_stalls() {
    let net = Devnet::start(6, "1GiB");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("f");
    let bytes = data(3 << 20, 11);
    std::fs::write(&file, &bytes).unwrap();
    let cap = put(
        net.api(0),
        &file,
        &["--k", "4", "--n", "6", "--segment-size", "1MiB"],
    );
    let s = stat_json(net.api(0), &cap);
    // The holder of segment 0's first data piece, which a fetch asks first.
    let first = s["segments"][0]["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["index"] == 0)
        .unwrap()["peer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = net.nodes.iter().position(|n| n.peer_id == first).unwrap();
    // Read through a node other than the frozen one.
    let reader = if victim == 0 { 1 } else { 0 };
    kill(net.nodes[victim].pid, rustix::process::Signal::STOP);
    let out = work.path().join("out");
    let (tx, rx) = std::sync::mpsc::channel();
    let api = net.api(reader).to_string();
    let (cap2, out2) = (cap.clone(), out.clone());
    std::thread::spawn(move || {
        let _ = tx.send(cairn(&api, &["get", &cap2, "-o", out2.to_str().unwrap()]));
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(10));
    kill(net.nodes[victim].pid, rustix::process::Signal::CONT);
    let got = got.expect("the get waited on the frozen holder instead of asking another");
    ok(got);
    assert!(std::fs::read(&out).unwrap() == bytes, "exact bytes back");
}
