//! Starting devnets and single nodes, running CLI commands, cleaning up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

#[derive(Clone, Debug, Deserialize)]
pub struct NodeEntry {
    pub peer_id: String,
    pub pid: u32,
    pub api: String,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub listen: Vec<String>,
}

/// The S3 gateway a devnet started (`cairn devnet --gateway`).
#[derive(Clone, Debug, Deserialize)]
pub struct GatewayInfo {
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub dir: PathBuf,
}

#[derive(Debug, Deserialize)]
struct DevnetFile {
    nodes: Vec<NodeEntry>,
    #[serde(default)]
    gateway: Option<GatewayInfo>,
}

/// A `cairn devnet` process and its nodes; stopped on drop, even on panic.
pub struct Devnet {
    pub dir: tempfile::TempDir,
    child: Child,
    pub nodes: Vec<NodeEntry>,
    pub gateway: Option<GatewayInfo>,
}

pub fn kill(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

impl Devnet {
    pub fn start(nodes: usize, storage: &str) -> Self {
        Self::start_with(nodes, storage, &[])
    }

    /// A devnet with extra `cairn devnet` flags (e.g. steward timings).
    pub fn start_with(nodes: usize, storage: &str, extra: &[&str]) -> Self {
        Self::start_env(nodes, storage, extra, &[])
    }

    /// As [`Devnet::start_with`], with environment variables for the devnet
    /// and every process it starts.
    pub fn start_env(nodes: usize, storage: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("devnet.log")).unwrap();
        let child = Command::new(CAIRN)
            .args([
                "devnet",
                "--nodes",
                &nodes.to_string(),
                "--storage",
                storage,
                "--dir",
            ])
            .arg(dir.path())
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut net = Devnet {
            dir,
            child,
            nodes: Vec::new(),
            gateway: None,
        };
        let path = net.dir.path().join("devnet.json");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                let f: DevnetFile = serde_json::from_slice(&bytes).unwrap();
                net.nodes = f.nodes;
                net.gateway = f.gateway;
                break;
            }
            if let Some(status) = net.child.try_wait().unwrap() {
                panic!("devnet exited early ({status}): {}", net.log());
            }
            assert!(
                Instant::now() < deadline,
                "devnet did not start: {}",
                net.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(net.nodes.len(), nodes);
        net
    }

    /// The devnet's log, then each node's last steward lines (for failures).
    pub fn log(&self) -> String {
        let mut out =
            std::fs::read_to_string(self.dir.path().join("devnet.log")).unwrap_or_default();
        for (i, n) in self.nodes.iter().enumerate() {
            let log = std::fs::read_to_string(n.data_dir.join("node.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains("steward")).collect();
            out.push_str(&format!("--- node {i} steward log (last 15 lines)\n"));
            for l in lines.iter().skip(lines.len().saturating_sub(15)) {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    pub fn api(&self, i: usize) -> &str {
        &self.nodes[i].api
    }

    /// Kills node `i` outright, as if its machine died.
    pub fn kill_node(&self, i: usize) {
        let pid = self.nodes[i].pid;
        kill(pid, rustix::process::Signal::KILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // A killed multi-threaded process shows as a zombie as soon as its
        // main thread is gone, while other threads may still be exiting and
        // holding its files, the data dir lock among them. A restart on the
        // same dir needs that lock, so wait for it too.
        let lock = self.nodes[i].data_dir.join("LOCK");
        while !lock_is_free(&lock) {
            assert!(
                Instant::now() < deadline,
                "node {i} still holds {} 10 s after SIGKILL",
                lock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether no process holds the lock file `path` (or it does not exist).
fn lock_is_free(path: &Path) -> bool {
    match std::fs::File::open(path) {
        Ok(f) => f.try_lock().is_ok(),
        Err(_) => true,
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        kill(self.child.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for n in &self.nodes {
            if alive(n.pid) {
                kill(n.pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// A single `cairn node run` process with its own settings.
pub struct Node {
    child: Child,
    pub info: NodeEntry,
}

impl Node {
    pub fn start(dir: &Path, storage: &str, bootstrap: Option<&str>) -> Self {
        Self::start_on(dir, storage, bootstrap, "/ip4/127.0.0.1/tcp/0")
    }

    /// A node with extra `cairn node run` flags (e.g. a compute offer).
    pub fn start_with(dir: &Path, storage: &str, bootstrap: Option<&str>, extra: &[&str]) -> Self {
        Self::start_full(dir, storage, bootstrap, "/ip4/127.0.0.1/tcp/0", extra)
    }

    /// A node listening on `listen` only (e.g. a QUIC address).
    pub fn start_on(dir: &Path, storage: &str, bootstrap: Option<&str>, listen: &str) -> Self {
        Self::start_full(dir, storage, bootstrap, listen, &[])
    }

    fn start_full(
        dir: &Path,
        storage: &str,
        bootstrap: Option<&str>,
        listen: &str,
        extra: &[&str],
    ) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let mut cmd = Command::new(CAIRN);
        cmd.args([
            "node",
            "run",
            "--listen",
            listen,
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
            "--storage",
            storage,
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let info = loop {
            if let Ok(bytes) = std::fs::read(dir.join("node.json")) {
                break serde_json::from_slice::<NodeEntry>(&bytes).unwrap();
            }
            if let Some(s) = child.try_wait().unwrap() {
                panic!(
                    "node exited ({s}): {}",
                    std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "node did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Node { child, info }
    }
}

impl Node {
    /// SIGKILLs the node and waits until it is gone and its data dir lock
    /// is free (so it can be started again on the same dir).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let lock = self.info.data_dir.join("LOCK");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lock_is_free(&lock) {
            assert!(
                Instant::now() < deadline,
                "{} is still locked",
                lock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cairn ARGS` against `api`.
pub fn cairn(api: &str, args: &[&str]) -> Output {
    Command::new(CAIRN)
        .args(args)
        .env("CAIRN_API", api)
        .env("CAIRN_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `cairn ARGS` with `input` on stdin.
pub fn cairn_stdin(api: &str, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(CAIRN)
        .args(args)
        .env("CAIRN_API", api)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "cairn failed: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// Puts a file and returns its capability.
pub fn put(api: &str, path: &Path, extra: &[&str]) -> String {
    let mut args = vec!["put", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = ok(cairn(api, &args));
    let cap = out.trim().to_string();
    assert!(cap.starts_with("cairn:"), "not a capability: {out}");
    assert_eq!(
        out.lines().count(),
        1,
        "put prints only the capability on stdout"
    );
    cap
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// GETs `url` and parses its JSON.
pub fn get_json(url: &str) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().json().await.unwrap() })
}

pub fn steward_json(api: &str) -> serde_json::Value {
    serde_json::from_str(&ok(cairn(api, &["node", "score", "--json"]))).unwrap()
}

pub fn stat_json(api: &str, cap: &str) -> serde_json::Value {
    serde_json::from_str(&ok(cairn(api, &["stat", cap, "--json"]))).unwrap()
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Flips one byte in every piece file of a node's store.
pub fn corrupt_store(data_dir: &std::path::Path) -> usize {
    let mut n = 0;
    for f in files_under(&data_dir.join("store").join("pieces")) {
        let mut b = std::fs::read(&f).unwrap();
        if b.is_empty() {
            continue;
        }
        let i = b.len() / 2;
        b[i] ^= 0xff;
        std::fs::write(&f, b).unwrap();
        n += 1;
    }
    n
}
