//! The S3 gateway smoke test: a devnet with `--gateway`, driven by the
//! real aws CLI (the broad client suites live elsewhere).

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::*;

struct S3 {
    endpoint: String,
    key: String,
    secret: String,
}

fn aws_bin() -> &'static str {
    // Debian's awscli v2; a pyenv v1 may come first on PATH.
    if Path::new("/usr/bin/aws").exists() {
        "/usr/bin/aws"
    } else {
        "aws"
    }
}

impl S3 {
    fn run_with(&self, secret: &str, args: &[&str]) -> Output {
        Command::new(aws_bin())
            .args(["--endpoint-url", &self.endpoint, "s3api"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run_with(&self.secret, args);
        assert!(
            out.status.success(),
            "aws s3api {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }
}

#[test]
fn aws_cli_puts_gets_lists_and_deletes_through_the_gateway() {
    let net = Devnet::start_with(5, "1GiB", &["--gateway"]);
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.dir.path().join("devnet.json")).unwrap())
            .unwrap();
    let g = &file["gateway"];
    let s3 = S3 {
        endpoint: g["endpoint"].as_str().unwrap().to_string(),
        key: g["access_key_id"].as_str().unwrap().to_string(),
        secret: g["secret_access_key"].as_str().unwrap().to_string(),
    };
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in.bin");
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&input, &data).unwrap();

    s3.ok(&["create-bucket", "--bucket", "smoke"]);
    let put = s3.ok(&[
        "put-object",
        "--bucket",
        "smoke",
        "--key",
        "dir/hello.bin",
        "--body",
        input.to_str().unwrap(),
        "--content-type",
        "application/x-test",
    ]);
    let etag = put["ETag"].as_str().unwrap().trim_matches('"').to_string();
    assert_eq!(etag.len(), 32, "a single PUT's ETag is its MD5: {put}");

    let output = work.path().join("out.bin");
    let got = s3.ok(&[
        "get-object",
        "--bucket",
        "smoke",
        "--key",
        "dir/hello.bin",
        output.to_str().unwrap(),
    ]);
    assert_eq!(got["ContentType"], "application/x-test");
    assert!(
        std::fs::read(&output).unwrap() == data,
        "the object came back different"
    );

    let ranged = work.path().join("range.bin");
    s3.ok(&[
        "get-object",
        "--bucket",
        "smoke",
        "--key",
        "dir/hello.bin",
        "--range",
        "bytes=-1000",
        ranged.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&ranged).unwrap() == data[data.len() - 1000..]);

    let list = s3.ok(&["list-objects-v2", "--bucket", "smoke", "--no-paginate"]);
    assert_eq!(list["KeyCount"], 1, "{list}");
    assert_eq!(list["Contents"][0]["Key"], "dir/hello.bin");
    assert_eq!(list["Contents"][0]["Size"], data.len());
    let grouped = s3.ok(&[
        "list-objects-v2",
        "--bucket",
        "smoke",
        "--delimiter",
        "/",
        "--no-paginate",
    ]);
    assert_eq!(grouped["CommonPrefixes"][0]["Prefix"], "dir/", "{grouped}");

    // A wrong secret and an unknown key are refused.
    let bad = s3.run_with(
        "wrong-secret-wrong-secret-wrong-secret00",
        &["list-buckets"],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("SignatureDoesNotMatch"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    s3.ok(&[
        "delete-object",
        "--bucket",
        "smoke",
        "--key",
        "dir/hello.bin",
    ]);
    let list = s3.ok(&["list-objects-v2", "--bucket", "smoke", "--no-paginate"]);
    assert_eq!(list["KeyCount"], 0, "{list}");
    let missing = s3.run_with(
        &s3.secret,
        &["head-object", "--bucket", "smoke", "--key", "dir/hello.bin"],
    );
    assert!(!missing.status.success());
    s3.ok(&["delete-bucket", "--bucket", "smoke"]);
    let buckets = s3.ok(&["list-buckets"]);
    assert_eq!(
        buckets["Buckets"].as_array().map_or(0, Vec::len),
        0,
        "{buckets}"
    );
}
