//! Real S3 clients against the gateway on a devnet: boto3 (every operation
//! and bad input, `tests/s3/boto3_suite.py`), Debian's aws CLI and rclone;
//! a second gateway over the same account, serving HTTPS; reads after
//! losing n − k nodes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// The repository root (for `tests/s3/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The devnet every test here runs: 12 nodes (so n = 12, k = 8: each node
/// holds one piece of each segment) and a gateway on node 0.
fn devnet() -> (Devnet, GatewayInfo) {
    // Small index shards, so the listing tests (1,050 keys) run over a
    // tree of split shards on the real network, not one index.
    let net = Devnet::start_env(
        12,
        "2GiB",
        &["--gateway"],
        &[("CAIRN_GATEWAY_SHARD_ENTRIES", "128")],
    );
    let gw = net
        .gateway
        .clone()
        .unwrap_or_else(|| panic!("devnet.json names no gateway: {}", net.log()));
    (net, gw)
}

/// A command with the gateway's endpoint and credentials in its environment.
fn with_creds(program: &str, gw: &GatewayInfo) -> Command {
    let mut c = Command::new(program);
    c.env("S3_ENDPOINT", &gw.endpoint)
        .env("AWS_ACCESS_KEY_ID", &gw.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &gw.secret_access_key)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        // rclone: a remote named `cairn`, configured from the environment
        // (a CA bundle for plain-HTTP loopback only confuses its AWS SDK).
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_CAIRN_TYPE", "s3")
        .env("RCLONE_CONFIG_CAIRN_PROVIDER", "Other")
        .env("RCLONE_CONFIG_CAIRN_ENDPOINT", &gw.endpoint)
        .env("RCLONE_CONFIG_CAIRN_ACCESS_KEY_ID", &gw.access_key_id)
        .env(
            "RCLONE_CONFIG_CAIRN_SECRET_ACCESS_KEY",
            &gw.secret_access_key,
        )
        .env("RCLONE_CONFIG_CAIRN_REGION", "us-east-1")
        .env("RCLONE_CONFIG_CAIRN_FORCE_PATH_STYLE", "true")
        .stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

fn must(c: Command, net: &Devnet) -> String {
    let what = format!("{c:?}");
    let out = run(c);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        net.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Debian's aws CLI (v2) when installed: a user-installed v1 may come first
/// on PATH.
fn aws_program() -> &'static str {
    if Path::new("/usr/bin/aws").exists() {
        "/usr/bin/aws"
    } else {
        "aws"
    }
}

fn aws(gw: &GatewayInfo, args: &[&str]) -> Command {
    let mut c = with_creds(aws_program(), gw);
    c.args(["--endpoint-url", &gw.endpoint]).args(args);
    c
}

fn rclone(gw: &GatewayInfo, args: &[&str]) -> Command {
    let mut c = with_creds("rclone", gw);
    c.args(args);
    c
}

#[test]
fn boto3_covers_every_operation_and_bad_input() {
    let (net, gw) = devnet();
    let mut c = with_creds("python3", &gw);
    c.arg(repo().join("tests/s3/boto3_suite.py"));
    let out = must(c, &net);
    assert!(out.contains("passed"), "{out}");
    for name in [
        "test_cors",
        "test_bucket_tagging",
        "test_lifecycle_configuration",
        "test_bucket_policy",
        "test_bucket_policy_conditions_and_not_elements",
        "test_website_hosting",
        "test_versioning",
    ] {
        assert!(
            out.contains(&format!("ok   {name} ")),
            "{name} did not run: {out}"
        );
    }
}

#[test]
fn aws_cli_and_rclone_store_list_copy_and_delete() {
    let (net, gw) = devnet();
    let work = tempfile::tempdir().unwrap();
    // aws s3: a 100 MiB file goes up as a multipart upload (8 MiB parts).
    let big = work.path().join("big.bin");
    std::fs::write(&big, data(100 << 20, 77)).unwrap();
    must(aws(&gw, &["s3", "mb", "s3://awsb"]), &net);
    must(
        aws(
            &gw,
            &["s3", "cp", big.to_str().unwrap(), "s3://awsb/dir/big.bin"],
        ),
        &net,
    );
    let head: serde_json::Value = serde_json::from_str(&must(
        aws(
            &gw,
            &[
                "s3api",
                "head-object",
                "--bucket",
                "awsb",
                "--key",
                "dir/big.bin",
            ],
        ),
        &net,
    ))
    .unwrap();
    assert_eq!(head["ContentLength"], 100 << 20);
    assert!(
        head["ETag"].as_str().unwrap().ends_with("-13\""),
        "a multipart ETag: {head}"
    );
    let back = work.path().join("back.bin");
    must(
        aws(
            &gw,
            &["s3", "cp", "s3://awsb/dir/big.bin", back.to_str().unwrap()],
        ),
        &net,
    );
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&big).unwrap());
    // Range read.
    let part = work.path().join("part.bin");
    must(
        aws(
            &gw,
            &[
                "s3api",
                "get-object",
                "--bucket",
                "awsb",
                "--key",
                "dir/big.bin",
                "--range",
                "bytes=8388600-8388700",
                part.to_str().unwrap(),
            ],
        ),
        &net,
    );
    assert_eq!(
        std::fs::read(&part).unwrap(),
        data(100 << 20, 77)[8_388_600..=8_388_700]
    );
    // Listing, copy, presigned GET, recursive delete.
    must(
        aws(
            &gw,
            &["s3", "cp", "s3://awsb/dir/big.bin", "s3://awsb/copy.bin"],
        ),
        &net,
    );
    let ls = must(aws(&gw, &["s3", "ls", "s3://awsb", "--recursive"]), &net);
    assert!(
        ls.contains("dir/big.bin") && ls.contains("copy.bin"),
        "{ls}"
    );
    let small = work.path().join("small.txt");
    std::fs::write(&small, b"presign me").unwrap();
    must(
        aws(
            &gw,
            &["s3", "cp", small.to_str().unwrap(), "s3://awsb/small.txt"],
        ),
        &net,
    );
    let url = must(
        aws(
            &gw,
            &[
                "s3",
                "presign",
                "s3://awsb/small.txt",
                "--expires-in",
                "300",
            ],
        ),
        &net,
    );
    let mut curl = Command::new("python3");
    curl.args([
        "-c",
        "import sys,urllib.request;sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())",
        url.trim(),
    ]);
    assert_eq!(must(curl, &net), "presign me");
    must(aws(&gw, &["s3", "rm", "s3://awsb", "--recursive"]), &net);
    let ls = must(aws(&gw, &["s3", "ls", "s3://awsb", "--recursive"]), &net);
    assert!(ls.trim().is_empty(), "{ls}");
    must(aws(&gw, &["s3", "rb", "s3://awsb"]), &net);
    // Wrong credentials are refused.
    let bad = GatewayInfo {
        secret_access_key: format!("{}x", &gw.secret_access_key[1..]),
        ..gw.clone()
    };
    let out = run(aws(&bad, &["s3", "ls"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SignatureDoesNotMatch") || err.contains("AccessDenied"),
        "{err}"
    );

    // rclone: a tree of files up, checked by hash, listed, deleted.
    let tree = work.path().join("tree");
    for (i, name) in ["a.txt", "sub/b.bin", "sub/deeper/c.bin", "empty"]
        .iter()
        .enumerate()
    {
        let p = tree.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let len = if *name == "empty" {
            0
        } else {
            70_000 * (i + 1)
        };
        std::fs::write(&p, data(len, i as u64)).unwrap();
    }
    must(rclone(&gw, &["mkdir", "cairn:rcl"]), &net);
    must(
        rclone(&gw, &["copy", tree.to_str().unwrap(), "cairn:rcl/tree"]),
        &net,
    );
    must(
        rclone(&gw, &["check", tree.to_str().unwrap(), "cairn:rcl/tree"]),
        &net,
    );
    let lsf = must(rclone(&gw, &["lsf", "-R", "cairn:rcl/tree"]), &net);
    for name in ["a.txt", "sub/b.bin", "sub/deeper/c.bin", "empty"] {
        assert!(lsf.lines().any(|l| l == name), "{name} not in {lsf}");
    }
    let cat = run(rclone(&gw, &["cat", "cairn:rcl/tree/sub/b.bin"]));
    assert!(cat.status.success() && cat.stdout == data(140_000, 1));
    must(rclone(&gw, &["purge", "cairn:rcl"]), &net);
    let out = run(rclone(&gw, &["lsf", "cairn:rcl"]));
    assert!(
        !out.status.success() || out.stdout.is_empty(),
        "purged bucket still lists: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Versioning through the aws CLI, old versions seen by rclone too.
    must(aws(&gw, &["s3", "mb", "s3://vers"]), &net);
    must(
        aws(
            &gw,
            &[
                "s3api",
                "put-bucket-versioning",
                "--bucket",
                "vers",
                "--versioning-configuration",
                "Status=Enabled",
            ],
        ),
        &net,
    );
    let doc = work.path().join("doc.txt");
    for text in ["first draft", "second draft"] {
        std::fs::write(&doc, text).unwrap();
        must(
            aws(
                &gw,
                &["s3", "cp", doc.to_str().unwrap(), "s3://vers/doc.txt"],
            ),
            &net,
        );
    }
    let listed: serde_json::Value = serde_json::from_str(&must(
        aws(&gw, &["s3api", "list-object-versions", "--bucket", "vers"]),
        &net,
    ))
    .unwrap();
    let versions = listed["Versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{listed}");
    assert_eq!(versions[0]["IsLatest"], true);
    let old = versions[1]["VersionId"].as_str().unwrap().to_string();
    let back = work.path().join("old.txt");
    must(
        aws(
            &gw,
            &[
                "s3api",
                "get-object",
                "--bucket",
                "vers",
                "--key",
                "doc.txt",
                "--version-id",
                &old,
                back.to_str().unwrap(),
            ],
        ),
        &net,
    );
    assert_eq!(std::fs::read(&back).unwrap(), b"first draft");
    let lsf = must(rclone(&gw, &["lsf", "--s3-versions", "cairn:vers"]), &net);
    assert_eq!(lsf.lines().count(), 2, "rclone lists both versions: {lsf}");
    for v in versions {
        let id = v["VersionId"].as_str().unwrap();
        must(
            aws(
                &gw,
                &[
                    "s3api",
                    "delete-object",
                    "--bucket",
                    "vers",
                    "--key",
                    "doc.txt",
                    "--version-id",
                    id,
                ],
            ),
            &net,
        );
    }
    must(aws(&gw, &["s3", "rb", "s3://vers"]), &net);
}

#[test]
fn a_second_gateway_over_the_same_account_and_reads_after_losing_n_minus_k_nodes() {
    let (net, gw) = devnet();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("f.bin");
    let bytes = data(3 << 20, 5);
    std::fs::write(&file, &bytes).unwrap();
    must(aws(&gw, &["s3", "mb", "s3://shared"]), &net);
    must(
        aws(
            &gw,
            &["s3", "cp", file.to_str().unwrap(), "s3://shared/f.bin"],
        ),
        &net,
    );
    // A second gateway, on another node, with the same account key, serving
    // HTTPS with a self-signed certificate its clients are told to trust.
    let dir2 = work.path().join("gw2");
    std::fs::create_dir_all(&dir2).unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let keys: serde_json::Value = serde_json::from_str(&must(
        {
            let mut c = Command::new(CAIRN);
            c.args(["gateway", "keys", "create", "--json", "--dir"])
                .arg(&dir2);
            c
        },
        &net,
    ))
    .unwrap();
    let log = std::fs::File::create(work.path().join("gw2.log")).unwrap();
    let mut child = Command::new(CAIRN)
        .args([
            "gateway",
            "s3",
            "--listen",
            "127.0.0.1:0",
            "--api",
            net.api(7),
        ])
        .arg("--dir")
        .arg(&dir2)
        .arg("--account-file")
        .arg(gw.dir.join("account.key"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let endpoint = loop {
        if let Ok(b) = std::fs::read(dir2.join("gateway.json")) {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            break v["endpoint"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "second gateway did not start: {}",
            std::fs::read_to_string(work.path().join("gw2.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let gw2 = GatewayInfo {
        endpoint,
        access_key_id: keys["access_key_id"].as_str().unwrap().to_string(),
        secret_access_key: keys["secret_access_key"].as_str().unwrap().to_string(),
        dir: dir2.clone(),
    };
    assert!(gw2.endpoint.starts_with("https://127.0.0.1:"), "{gw2:?}");
    // The aws CLI trusts the certificate through AWS_CA_BUNDLE.
    let aws2 = |args: &[&str]| {
        let mut c = aws(&gw2, args);
        c.env("AWS_CA_BUNDLE", &cert);
        c
    };
    let ls = must(aws2(&["s3", "ls"]), &net);
    assert!(ls.contains("shared"), "{ls}");
    // Without that trust the client refuses the connection: it is TLS.
    let untrusted = run(aws(&gw2, &["s3", "ls"]));
    assert!(!untrusted.status.success());
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("SSL"),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
    let back = work.path().join("back2.bin");
    must(
        aws2(&["s3", "cp", "s3://shared/f.bin", back.to_str().unwrap()]),
        &net,
    );
    assert!(std::fs::read(&back).unwrap() == bytes);
    // A policy that refuses reads not made over TLS: the plain-HTTP gateway
    // is refused, the HTTPS one (same account, same bucket) is not.
    let policy = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Deny",
        "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::shared/*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}"#;
    must(
        aws(
            &gw,
            &[
                "s3api",
                "put-bucket-policy",
                "--bucket",
                "shared",
                "--policy",
                policy,
            ],
        ),
        &net,
    );
    let refused = run(aws(
        &gw,
        &["s3", "cp", "s3://shared/f.bin", back.to_str().unwrap()],
    ));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The second gateway may serve its cached copy of the policy for 2 s.
    let tls_read = Instant::now() + Duration::from_secs(10);
    loop {
        let out = work.path().join("tls.bin");
        let got = run(aws2(&[
            "s3",
            "cp",
            "s3://shared/f.bin",
            out.to_str().unwrap(),
        ]));
        if got.status.success() {
            assert!(std::fs::read(&out).unwrap() == bytes);
            break;
        }
        assert!(
            Instant::now() < tls_read,
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    must(
        aws(
            &gw,
            &["s3api", "delete-bucket-policy", "--bucket", "shared"],
        ),
        &net,
    );
    // A customer key (SSE-C), over HTTPS: a 20 MiB file goes up as a
    // multipart upload sealed under it, and comes back only with it.
    let key_file = work.path().join("sse.key");
    std::fs::write(&key_file, [7u8; 32]).unwrap();
    let sse_key = format!("fileb://{}", key_file.display());
    let secret = work.path().join("secret.bin");
    let secret_bytes = data(20 << 20, 9);
    std::fs::write(&secret, &secret_bytes).unwrap();
    let sse = ["--sse-c", "AES256", "--sse-c-key", sse_key.as_str()];
    let mut up = vec![
        "s3",
        "cp",
        secret.to_str().unwrap(),
        "s3://shared/secret.bin",
    ];
    up.extend(sse);
    must(aws2(&up), &net);
    let back_secret = work.path().join("secret-back.bin");
    let mut down = vec![
        "s3",
        "cp",
        "s3://shared/secret.bin",
        back_secret.to_str().unwrap(),
    ];
    down.extend(sse);
    must(aws2(&down), &net);
    assert!(std::fs::read(&back_secret).unwrap() == secret_bytes);
    let keyless = run(aws2(&[
        "s3",
        "cp",
        "s3://shared/secret.bin",
        back_secret.to_str().unwrap(),
    ]));
    assert!(!keyless.status.success(), "read without the key");
    // Over plain HTTP the gateway refuses the key itself.
    let mut plain = vec![
        "s3",
        "cp",
        secret.to_str().unwrap(),
        "s3://shared/plain.bin",
    ];
    plain.extend(sse);
    let refused = run(aws(&gw, &plain));
    assert!(!refused.status.success());
    // SSE-KMS: a key made with the CLI lives in the network, so both
    // gateways use it. The aws CLI seals a 20 MiB multipart upload under
    // its ARN through the first (plain HTTP: KMS requests need SigV4, not
    // TLS), the second reads it back over HTTPS.
    let made: serde_json::Value = serde_json::from_str(&must(
        {
            let mut c = Command::new(CAIRN);
            c.args([
                "gateway",
                "kms",
                "create",
                "--description",
                "s3_clients",
                "--json",
                "--api",
                net.api(0),
                "--dir",
            ])
            .arg(&gw.dir);
            c
        },
        &net,
    ))
    .unwrap();
    let kms_id = made["id"].as_str().unwrap().to_string();
    let kms_arn = made["arn"].as_str().unwrap().to_string();
    assert!(kms_arn.ends_with(&format!(":key/{kms_id}")), "{made}");
    let up = [
        "s3",
        "cp",
        secret.to_str().unwrap(),
        "s3://shared/kms.bin",
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        kms_arn.as_str(),
    ];
    must(aws(&gw, &up), &net);
    let head: serde_json::Value = serde_json::from_str(&must(
        aws(
            &gw,
            &[
                "s3api",
                "head-object",
                "--bucket",
                "shared",
                "--key",
                "kms.bin",
            ],
        ),
        &net,
    ))
    .unwrap();
    assert_eq!(head["ServerSideEncryption"], "aws:kms", "{head}");
    assert_eq!(head["SSEKMSKeyId"], kms_arn.as_str(), "{head}");
    let kms_back = work.path().join("kms-back.bin");
    let down = [
        "s3",
        "cp",
        "s3://shared/kms.bin",
        kms_back.to_str().unwrap(),
    ];
    must(aws2(&down), &net);
    assert!(std::fs::read(&kms_back).unwrap() == secret_bytes);
    // boto3 through the second gateway (HTTPS), by the bare key id.
    let mut boto = with_creds("python3", &gw2);
    boto.env("AWS_CA_BUNDLE", &cert).args([
        "-c",
        r#"
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1")
kid = sys.argv[1]
body = bytes(range(256)) * 4000
r = s3.put_object(Bucket="shared", Key="boto-kms.bin", Body=body,
                  ServerSideEncryption="aws:kms", SSEKMSKeyId=kid)
assert r["ServerSideEncryption"] == "aws:kms" and r["SSEKMSKeyId"].endswith(":key/" + kid), r
g = s3.get_object(Bucket="shared", Key="boto-kms.bin")
assert g["Body"].read() == body and g["SSEKMSKeyId"].endswith(kid), g
part = s3.get_object(Bucket="shared", Key="boto-kms.bin", Range="bytes=70000-200000")
assert part["Body"].read() == body[70000:200001]
try:
    s3.put_object(Bucket="shared", Key="nokey.bin", Body=b"x",
                  ServerSideEncryption="aws:kms", SSEKMSKeyId="00000000-0000-4000-8000-000000000000")
    raise SystemExit("an unknown key was accepted")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "KMS.NotFoundException", e.response
print("boto3 kms ok")
"#,
        &kms_id,
    ]);
    assert!(must(boto, &net).contains("boto3 kms ok"));
    let boto_back = work.path().join("boto-kms.bin");
    must(
        aws(
            &gw,
            &[
                "s3",
                "cp",
                "s3://shared/boto-kms.bin",
                boto_back.to_str().unwrap(),
            ],
        ),
        &net,
    );
    let boto_body: Vec<u8> = (0..4000).flat_map(|_| 0..=255u8).collect();
    assert!(std::fs::read(&boto_back).unwrap() == boto_body);
    // Disabled with the CLI, the key is refused by the running gateways
    // (within their 2 s caches); enabled, it opens again.
    let kms_cli = |verb: &str| {
        let mut c = Command::new(CAIRN);
        c.args([
            "gateway",
            "kms",
            verb,
            kms_id.as_str(),
            "--api",
            net.api(0),
            "--dir",
        ])
        .arg(&gw.dir);
        c
    };
    must(kms_cli("disable"), &net);
    let refused_by = Instant::now() + Duration::from_secs(15);
    loop {
        let got = run(aws(&gw, &down));
        if !got.status.success() {
            let err = String::from_utf8_lossy(&got.stderr);
            assert!(err.contains("KMS.DisabledException"), "{err}");
            break;
        }
        assert!(Instant::now() < refused_by, "a disabled key still opens");
        std::thread::sleep(Duration::from_millis(500));
    }
    must(kms_cli("enable"), &net);
    let open_by = Instant::now() + Duration::from_secs(15);
    while !run(aws(&gw, &down)).status.success() {
        assert!(Instant::now() < open_by, "an enabled key does not open");
        std::thread::sleep(Duration::from_millis(500));
    }
    let list = must(
        {
            let mut c = Command::new(CAIRN);
            c.args(["gateway", "kms", "list", "--api", net.api(0), "--dir"])
                .arg(&gw.dir);
            c
        },
        &net,
    );
    assert!(list.contains(&kms_id) && list.contains("Enabled"), "{list}");

    // What the second one writes, the first one sees: within the 2 s a
    // gateway may serve its cached copy of a shard (its own settle reads
    // may have just refreshed that copy).
    must(
        aws2(&["s3", "cp", file.to_str().unwrap(), "s3://shared/from-2.bin"]),
        &net,
    );
    let seen_by = Instant::now() + Duration::from_secs(10);
    loop {
        let ls = must(aws(&gw, &["s3", "ls", "s3://shared"]), &net);
        if ls.contains("from-2.bin") {
            break;
        }
        assert!(Instant::now() < seen_by, "{ls}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Kill n − k = 4 nodes (not the gateways' nodes 0 and 7): every segment
    // keeps k = 8 of its 12 pieces, and GETs still return the exact bytes.
    for i in [2, 4, 9, 11] {
        net.kill_node(i);
    }
    for (g, name) in [(&gw, "f.bin"), (&gw2, "from-2.bin"), (&gw2, "f.bin")] {
        let out = work.path().join(format!("after-{name}"));
        let mut c = aws(
            g,
            &[
                "s3",
                "cp",
                &format!("s3://shared/{name}"),
                out.to_str().unwrap(),
            ],
        );
        c.env("AWS_CA_BUNDLE", &cert);
        must(c, &net);
        assert!(std::fs::read(&out).unwrap() == bytes, "{name}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
