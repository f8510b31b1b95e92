//! The command line: bad input gets a clear sentence and a non-zero exit; the demo works.

use std::time::{Duration, Instant};

use crate::harness::*;

const DEAD_API: &str = "http://127.0.0.1:9";

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.bin");
    let o = cairn(DEAD_API, &["put", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot read") && stderr(&o).contains("nope.bin"),
        "{}",
        stderr(&o)
    );

    // A file that opens but fails to read (as root, permissions cannot make
    // one unreadable; /proc/self/mem fails with EIO at offset 0).
    let node = Node::start(&dir.path().join("n0"), "1GiB", None);
    let o = cairn(&node.info.api, &["put", "/proc/self/mem"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot read /proc/self/mem")
            && stderr(&o).contains("nothing was stored"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    let files: serde_json::Value =
        serde_json::from_str(&ok(cairn(&node.info.api, &["ls", "--json"]))).unwrap();
    assert_eq!(
        files.as_array().unwrap().len(),
        0,
        "a failed put lists nothing"
    );

    let o = cairn(DEAD_API, &["put", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));

    let o = cairn(DEAD_API, &["get", "cairn:garbage!", "-o", "x"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("malformed capability"),
        "{}",
        stderr(&o)
    );
    let o = cairn(DEAD_API, &["stat", "http://example.com"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("must start with \"cairn:\""),
        "{}",
        stderr(&o)
    );

    // A real capability with one character changed fails its checksum.
    let cap = "cairn:AQFMeLA1mwqnk_1vt8gfqP3nLp06z71gyg-JDjVOdW7fr39yw6I-tEKL6L2MaQo12RX1cGRpctoqROKrieWJWgMK2aEz9g";
    let o = cairn(
        DEAD_API,
        &["get", &cap.replace("AQFMe", "AQFMf"), "-o", "x"],
    );
    assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));

    let file = dir.path().join("f");
    std::fs::write(&file, b"hello").unwrap();
    for args in [
        vec!["put", file.to_str().unwrap()],
        vec!["status"],
        vec!["get", cap, "-o", "x"],
    ] {
        let o = cairn(DEAD_API, &args);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("cannot reach a Cairn node at http://127.0.0.1:9"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let o = cairn("not-a-url", &["status"]);
    assert!(
        !o.status.success() && stderr(&o).contains("is not a URL"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unknown_files_and_bad_parameters_on_a_live_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n0"), "1GiB", None);
    let api = &node.info.api;
    // A well-formed capability for a file that was never stored.
    let cap = "cairn:AQFMeLA1mwqnk_1vt8gfqP3nLp06z71gyg-JDjVOdW7fr39yw6I-tEKL6L2MaQo12RX1cGRpctoqROKrieWJWgMK2aEz9g";
    let out = dir.path().join("out");
    let o = cairn(api, &["get", cap, "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("manifest was not found"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());

    let file = dir.path().join("f");
    std::fs::write(&file, b"hello").unwrap();
    let o = cairn(
        api,
        &["put", file.to_str().unwrap(), "--k", "3", "--n", "6"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("only 1 are reachable"),
        "{}",
        stderr(&o)
    );

    // One node alone still stores and serves (k = n = 1), and lists it.
    let cap = put(api, &file, &[]);
    ok(cairn(api, &["get", &cap, "-o", out.to_str().unwrap()]));
    assert_eq!(std::fs::read(&out).unwrap(), b"hello");
    // A directory is refused before anything is fetched.
    let o = cairn(api, &["get", &cap, "-o", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
    // A pipe (like /dev/null, a device) is written in place: renaming a
    // finished download onto it would replace it with a regular file.
    let fifo = dir.path().join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    ok(cairn(api, &["get", &cap, "-o", fifo.to_str().unwrap()]));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(reader.join().unwrap(), b"hello");
    let ls = ok(cairn(api, &["ls"]));
    assert!(ls.contains("f\t") && ls.contains(&cap), "{ls}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(cairn(api, &["status", "--json"]))).unwrap();
    assert_eq!(status["pieces"], 2, "one piece and one manifest");
    assert_eq!(status["capacity_bytes"], 1u64 << 30);
}

#[test]
fn devnet_demo_loses_nodes_and_gets_the_file_back() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(CAIRN)
        .args([
            "devnet",
            "--nodes",
            "12",
            "--demo",
            "--demo-size",
            "5MiB",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("kill 4 holder nodes") && err.contains("RESULT: identical"),
        "{err}"
    );
    let cap = String::from_utf8(o.stdout).unwrap();
    assert!(cap.trim().starts_with("cairn:"));
    let devnet: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("devnet.json")).unwrap()).unwrap();
    let nodes = devnet["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 12);
    for n in nodes {
        assert!(
            n["peer_id"].is_string()
                && n["pid"].is_u64()
                && n["api"].as_str().unwrap().starts_with("http://")
        );
        assert!(
            !alive(n["pid"].as_u64().unwrap() as u32),
            "the devnet stops its nodes"
        );
    }
}

/// Opens a put whose body never comes: it holds one of the node's transfer slots.
fn stalled_put(api: &str) -> std::net::TcpStream {
    use std::io::Write;
    let addr = api.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/put HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    s
}

#[test]
fn the_node_runs_a_bounded_number_of_transfers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n0"), "1GiB", None);
    let api = &node.info.api;
    let file = dir.path().join("f");
    std::fs::write(&file, b"hello").unwrap();
    // MAX_TRANSFERS (4) uploads that never finish.
    let mut stalled: Vec<_> = (0..4).map(|_| stalled_put(api)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fifth = std::process::Command::new(CAIRN)
        .args(["put", file.to_str().unwrap(), "--api", api])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        fifth.try_wait().unwrap().is_none(),
        "a fifth transfer ran while four were in progress"
    );
    // One stalled upload goes away: its slot frees and the fifth runs.
    drop(stalled.pop());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = fifth.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the fifth transfer never ran");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = fifth.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cairn:"));
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `cairn … | head`: the reader is gone before the first line is written.
    let run = |args: &[&str], api: &str| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(CAIRN)
            .args(args)
            .env("CAIRN_API", api)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    };
    // Text printed with println! …
    run(
        &["sim", "--nodes", "60", "--objects", "10", "--days", "2"],
        DEAD_API,
    );
    // … and a file streamed to stdout.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n0"), "1GiB", None);
    let file = dir.path().join("f");
    std::fs::write(&file, data(3 << 20, 4)).unwrap();
    let cap = put(&node.info.api, &file, &["--k", "1", "--n", "1"]);
    run(&["get", &cap, "-o", "-"], &node.info.api);
}

fn local_info(api: &str) -> serde_json::Value {
    get_json(&format!("{api}/v1/local"))
}

#[test]
fn regular_files_are_handed_to_the_node_and_others_are_streamed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n0"), "1GiB", None);
    let api = &node.info.api;
    let info = local_info(api);
    let socket = std::path::PathBuf::from(info["socket"].as_str().unwrap());
    assert!(socket.starts_with(&node.info.data_dir), "{info}");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is this user's only");
    assert_eq!(info["puts"], 0);

    let file = dir.path().join("f.bin");
    let bytes = data(3 << 20, 11);
    std::fs::write(&file, &bytes).unwrap();
    let read_back = |cap: &str, name: &str| {
        let out = dir.path().join(name);
        ok(cairn(api, &["get", cap, "-o", out.to_str().unwrap()]));
        assert!(std::fs::read(&out).unwrap() == bytes, "{name} differs");
    };
    // The CLI hands the open file over: the node counts a local put, and
    // writes a get into the temporary file the CLI hands it.
    let cap = put(api, &file, &[]);
    assert_eq!(local_info(api)["puts"], 1);
    read_back(&cap, "one");
    assert_eq!(local_info(api)["gets"], 1);
    // Stdout is written over HTTP.
    let o = cairn(api, &["get", &cap, "-o", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == bytes);
    assert_eq!(local_info(api)["gets"], 1);
    // A local get that fails leaves nothing behind.
    let missing = cairn_core::ReadCap {
        key: cairn_core::FileKey([7; 32]),
        manifest: cairn_core::ManifestId([9; 32]),
    }
    .to_string();
    let out = dir.path().join("missing");
    let o = cairn(api, &["get", &missing, "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(!stderr(&o).is_empty());
    assert_eq!(local_info(api)["gets"], 2);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cairn-get-") || n == "missing")
        .collect();
    assert!(left.is_empty(), "a failed get left {left:?}");

    // Told not to, it streams over HTTP, and so it does for stdin.
    let o = std::process::Command::new(CAIRN)
        .args(["put", file.to_str().unwrap()])
        .env("CAIRN_API", api)
        .env("CAIRN_NO_LOCAL_SOCKET", "1")
        .output()
        .unwrap();
    let cap = ok(o).trim().to_string();
    read_back(&cap, "two");
    let cap = ok(cairn_stdin(api, &["put", "-"], &bytes))
        .trim()
        .to_string();
    read_back(&cap, "three");
    assert_eq!(local_info(api)["puts"], 1, "HTTP puts are not local ones");
    let out = dir.path().join("by-http");
    let o = std::process::Command::new(CAIRN)
        .args(["get", &cap, "-o", out.to_str().unwrap()])
        .env("CAIRN_API", api)
        .env("CAIRN_NO_LOCAL_SOCKET", "1")
        .output()
        .unwrap();
    ok(o);
    assert!(std::fs::read(&out).unwrap() == bytes);
    assert_eq!(local_info(api)["gets"], 4, "HTTP gets are not local ones");

    // A node whose socket is gone still takes puts, over HTTP.
    std::fs::remove_file(&socket).unwrap();
    let cap = put(api, &file, &[]);
    read_back(&cap, "four");
    assert_eq!(local_info(api)["puts"], 1);
}

#[test]
fn a_local_put_whose_caller_hangs_up_is_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n0"), "8GiB", None);
    let api = &node.info.api;
    // Sparse: reads as zeros at once, takes no disk.
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let mut cli = std::process::Command::new(CAIRN)
        .args(["put", big.to_str().unwrap(), "--api", api])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while local_info(api)["active"] != 1 {
        assert!(Instant::now() < deadline, "the put never started");
        assert!(cli.try_wait().unwrap().is_none(), "the put ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    cli.kill().unwrap();
    cli.wait().unwrap();
    // The node notices the hang-up at once; the whole put would take far longer.
    let deadline = Instant::now() + Duration::from_secs(3);
    while local_info(api)["active"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the node kept reading for a caller that is gone"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let files: serde_json::Value =
        serde_json::from_str(&ok(cairn(api, &["ls", "--json"]))).unwrap();
    assert_eq!(files.as_array().unwrap().len(), 0, "{files}");
}
