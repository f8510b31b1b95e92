#!/usr/bin/env python3
"""PUT and GET of one large object through Cairn's S3 gateway with rclone and
the aws CLI, next to direct `cairn put`/`get`, on a local devnet; prints a
Markdown table for BENCHMARKS.md (MiB/s, ratio to direct, gateway peak RSS).

With --tls it also starts a second gateway over HTTPS (a self-signed
certificate made with openssl, same account) and adds aws CLI rows over
HTTPS, plain and with a customer key (SSE-C: the gateway seals the data a
second time).

With --small N it instead PUTs N small objects into one bucket with boto3
(16 threads), lists them all back (1,000 a page), reads a sample, and prints
objects/s: a bucket past the ~19,000 objects one account index held before
buckets were sharded, through the real network.

Each GET runs --gets times (default 3) and the median is reported: the first
read after a PUT is the slowest (the reading node's buffers are not yet
allocated), and a single run on a 2-core VM varies by 20 %.

Usage: scripts/s3bench.py [path/to/cairn] [--size-mib 1024] [--nodes 12] [--dir DIR] [--small N] [--gets N] [--tls]
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time

import devnetlib

# Debian's aws CLI v2 when installed (a user-installed v1 may come first on PATH).
AWS = "/usr/bin/aws" if os.path.exists("/usr/bin/aws") else "aws"


def rss_peak_kib(pid):
    """VmHWM of a live process, in KiB (0 if gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def gateway_pids(marker):
    """Processes that run a gateway under `marker` (a dir)."""
    return devnetlib.processes(marker, "gateway", " s3")


def timed(cmd, env, **kw):
    t = time.time()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.time() - t


def tls_gateway(cairn, work, gw, api, log):
    """A second gateway on the same account serving HTTPS with a fresh
    self-signed certificate: (process, endpoint, keys, cert path)."""
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    gdir = os.path.join(work, "gw-tls")
    keys = json.loads(subprocess.run([cairn, "gateway", "keys", "create", "--json", "--dir", gdir],
                                     check=True, capture_output=True, text=True).stdout)
    proc = subprocess.Popen([cairn, "gateway", "s3", "--listen", "127.0.0.1:0", "--api", api,
                             "--dir", gdir, "--account-file", os.path.join(gw["dir"], "account.key"),
                             "--tls-cert", cert, "--tls-key", key],
                            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(gdir, "gateway.json")):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise SystemExit("the HTTPS gateway did not start")
        time.sleep(0.1)
    endpoint = json.load(open(os.path.join(gdir, "gateway.json")))["endpoint"]
    return proc, endpoint, keys, cert


def small_objects(gw, n, pids):
    """PUT n 1 KiB objects, list them all, GET a sample; prints a table."""
    import concurrent.futures
    import boto3
    from botocore.config import Config
    s3 = boto3.client("s3", endpoint_url=gw["endpoint"], aws_access_key_id=gw["access_key_id"],
                      aws_secret_access_key=gw["secret_access_key"], region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}, max_pool_connections=32,
                                    retries={"max_attempts": 3}))
    s3.create_bucket(Bucket="many")
    body = os.urandom(1024)
    keys = [f"photos/{i // 1000:03}/{i:06}.jpg" for i in range(n)]
    t = time.time()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="many", Key=k, Body=body), keys))
    put_s = time.time() - t
    t = time.time()
    listed, pages = 0, 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="many"):
        listed += len(page.get("Contents", []))
        pages += 1
    list_s = time.time() - t
    if listed != n:
        raise SystemExit(f"listed {listed} objects, not {n}")
    t = time.time()
    grouped = s3.list_objects_v2(Bucket="many", Prefix="photos/", Delimiter="/")
    group_s = time.time() - t
    want = (n + 999) // 1000
    if len(grouped.get("CommonPrefixes", [])) != min(want, 1000):
        raise SystemExit(f"{len(grouped.get('CommonPrefixes', []))} common prefixes, not {want}")
    sample = keys[:: max(1, n // 200)]
    t = time.time()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda k: s3.get_object(Bucket="many", Key=k)["Body"].read(), sample))
    get_s = time.time() - t
    if any(g != body for g in got):
        raise SystemExit("a small object came back different")
    peak = max((rss_peak_kib(p) for p in pids), default=0)
    print(f"S3 gateway, small objects: {n} objects of 1 KiB in one bucket, boto3 with 16 threads, "
          f"{platform.node()} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}:\n")
    print("| operation | figure |")
    print("|---|---|")
    print(f"| PUT | {n / put_s:.0f} objects/s ({put_s:.0f} s) |")
    print(f"| list all ({pages} pages of 1,000) | {listed / list_s:.0f} keys/s ({list_s / pages * 1000:.0f} ms a page) |")
    print(f"| list with delimiter ({want} common prefixes) | {group_s * 1000:.0f} ms |")
    print(f"| GET ({len(sample)} of them) | {len(sample) / get_s:.0f} objects/s |")
    print(f"\nGateway peak RSS: {peak / 1024:.0f} MiB" if peak else "\nGateway peak RSS: not found")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cairn", nargs="?", default="target/release/cairn")
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--nodes", type=int, default=12)
    p.add_argument("--dir", default=None)
    p.add_argument("--gets", type=int, default=3, help="GETs of each object; the median is reported")
    p.add_argument("--tls", action="store_true",
                   help="also: aws CLI over HTTPS, plain and with a customer key (SSE-C)")
    p.add_argument("--small", type=int, default=0,
                   help="instead: PUT and list this many small objects in one bucket")
    a = p.parse_args()
    cairn = os.path.abspath(a.cairn)
    work = a.dir or tempfile.mkdtemp(prefix="cairn-s3bench-")
    os.makedirs(work, exist_ok=True)
    net_dir = os.path.join(work, "net")
    log = open(os.path.join(work, "devnet.log"), "w")
    devnet, info = devnetlib.start(cairn, net_dir,
                                   ["--nodes", str(a.nodes), "--storage", "8GiB", "--gateway"], log)
    try:
        gw = info["gateway"]
        api = info["nodes"][0]["api"]
        if a.small:
            small_objects(gw, a.small, gateway_pids(net_dir) or gateway_pids(work))
            return
        size = a.size_mib << 20
        src = os.path.join(work, "object.bin")
        with open(src, "wb") as f:
            chunk = os.urandom(8 << 20)
            for _ in range(size // len(chunk)):
                f.write(chunk)
        env = dict(os.environ,
                   CAIRN_API=api,
                   AWS_ACCESS_KEY_ID=gw["access_key_id"],
                   AWS_SECRET_ACCESS_KEY=gw["secret_access_key"],
                   AWS_DEFAULT_REGION="us-east-1",
                   AWS_EC2_METADATA_DISABLED="true",
                   AWS_CONFIG_FILE="/dev/null",
                   AWS_SHARED_CREDENTIALS_FILE="/dev/null",
                   RCLONE_CONFIG="/dev/null",
                   RCLONE_CONFIG_CAIRN_TYPE="s3",
                   RCLONE_CONFIG_CAIRN_PROVIDER="Other",
                   RCLONE_CONFIG_CAIRN_ENDPOINT=gw["endpoint"],
                   RCLONE_CONFIG_CAIRN_ACCESS_KEY_ID=gw["access_key_id"],
                   RCLONE_CONFIG_CAIRN_SECRET_ACCESS_KEY=gw["secret_access_key"],
                   RCLONE_CONFIG_CAIRN_REGION="us-east-1",
                   RCLONE_CONFIG_CAIRN_FORCE_PATH_STYLE="true")
        # A CA bundle for plain-HTTP loopback only confuses rclone's AWS SDK.
        env.pop("AWS_CA_BUNDLE", None)
        out = os.path.join(work, "back.bin")
        rows = []
        # Direct, for the ratio.
        t = time.time()
        cap = subprocess.run([cairn, "put", src], env=env, check=True, capture_output=True,
                             text=True).stdout.strip().splitlines()[-1]
        direct_put = time.time() - t
        def median_get(cmd, e=env):
            times = []
            for _ in range(max(1, a.gets)):
                times.append(timed(cmd, e))
                if os.path.getsize(out) != size:
                    raise SystemExit(f"{cmd[0]}: got {os.path.getsize(out)} bytes back, not {size}")
                os.remove(out)
            return sorted(times)[len(times) // 2]

        direct_get = median_get([cairn, "get", cap, "-o", out])
        subprocess.run([AWS, "--endpoint-url", gw["endpoint"], "s3", "mb", "s3://bench"], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        pids = gateway_pids(net_dir) or gateway_pids(work)
        for tool, put_cmd, get_cmd in [
            ("rclone", ["rclone", "copyto", "--s3-upload-concurrency", "4", "--s3-chunk-size", "64M",
                        src, "cairn:bench/rclone.bin"],
             ["rclone", "copyto", "--multi-thread-streams", "0", "cairn:bench/rclone.bin", out]),
            ("aws CLI", [AWS, "--endpoint-url", gw["endpoint"], "s3", "cp", src, "s3://bench/aws.bin"],
             [AWS, "--endpoint-url", gw["endpoint"], "s3", "cp", "s3://bench/aws.bin", out]),
        ]:
            put_s = timed(put_cmd, env)
            get_s = median_get(get_cmd)
            rows.append((tool, put_s, get_s))
        # The aws CLI reads in 8 MiB ranges, ten at once: of rclone's object
        # (64 MiB parts) each range is part of a segment, which the node
        # fetches and decodes once for all of them (`cairn_node::decoded`).
        get_s = median_get([AWS, "--endpoint-url", gw["endpoint"], "s3", "cp",
                            "s3://bench/rclone.bin", out])
        rows.append(("aws CLI GET of rclone's object (64 MiB parts)", None, get_s))
        if a.tls:
            proc, endpoint, keys, cert = tls_gateway(cairn, work, gw, api, log)
            try:
                tenv = dict(env, AWS_ACCESS_KEY_ID=keys["access_key_id"],
                            AWS_SECRET_ACCESS_KEY=keys["secret_access_key"], AWS_CA_BUNDLE=cert)
                key_file = os.path.join(work, "sse.key")
                with open(key_file, "wb") as f:
                    f.write(os.urandom(32))
                sse = ["--sse-c", "AES256", "--sse-c-key", "fileb://" + key_file]
                for tool, extra in [("aws CLI, HTTPS", []), ("aws CLI, HTTPS, SSE-C", sse)]:
                    dest = "s3://bench/" + ("sse.bin" if extra else "tls.bin")
                    put_s = timed([AWS, "--endpoint-url", endpoint, "s3", "cp", src, dest, *extra], tenv)
                    get_s = median_get([AWS, "--endpoint-url", endpoint, "s3", "cp", dest, out, *extra],
                                       tenv)
                    rows.append((tool, put_s, get_s))
            finally:
                proc.kill()
                proc.wait()
        peak = max((rss_peak_kib(p) for p in pids), default=0)
        mib = size / (1 << 20)
        print(f"S3 gateway, {a.nodes}-node devnet, {a.size_mib} MiB object, GET the median of {a.gets}, "
              f"{platform.node()} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}:\n")
        print("| client | PUT (MiB/s) | GET (MiB/s) | PUT vs direct | GET vs direct |")
        print("|---|---|---|---|---|")
        print(f"| direct `cairn put`/`get` | {mib / direct_put:.0f} | {mib / direct_get:.0f} | 1.00 | 1.00 |")
        for tool, put_s, get_s in rows:
            put = f"{mib / put_s:.0f}" if put_s else "–"
            put_ratio = f"{direct_put / put_s:.2f}" if put_s else "–"
            print(f"| {tool} | {put} | {mib / get_s:.0f} | {put_ratio} | {direct_get / get_s:.2f} |")
        print(f"\nGateway peak RSS: {peak / 1024:.0f} MiB" if peak else "\nGateway peak RSS: not found")
    finally:
        devnetlib.stop(devnet)
        # A run leaves about 6 GiB (the object, its copy and the nodes' pieces).
        if a.dir is None:
            log.close()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
