#!/usr/bin/env python3
"""What an idle network costs: start a devnet, store N small files, leave it
alone, and measure the CPU every node uses with no client activity (steward
passes: liveness probes, audits, anti-entropy; the DHT's upkeep). Prints a
Markdown row for BENCHMARKS.md, with the stewards' own counters (passes, DHT
walks, holder probes, anti-entropy requests) so a regression shows where it comes from.

Usage: scripts/idlebench.py [path/to/cairn] [--nodes 12] [--files 150]
       [--steward-interval 5s] [--seconds 30] [--dir DIR]
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import urllib.request

import devnetlib

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    """User plus system CPU of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def steward(api):
    with urllib.request.urlopen(f"{api}/v1/steward", timeout=30) as r:
        return json.load(r)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cairn", nargs="?", default="target/release/cairn")
    p.add_argument("--nodes", type=int, default=12)
    p.add_argument("--files", type=int, default=150)
    p.add_argument("--steward-interval", default="5s")
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--dir")
    a = p.parse_args()
    cairn = os.path.abspath(a.cairn)
    work = a.dir or tempfile.mkdtemp(prefix="cairn-idlebench-")
    os.makedirs(work, exist_ok=True)
    net_dir = os.path.join(work, "net")
    log = open(os.path.join(work, "devnet.log"), "w")
    devnet, info = devnetlib.start(cairn, net_dir, ["--nodes", str(a.nodes),
                                                    "--steward-interval", a.steward_interval], log)
    try:
        apis = [n["api"] for n in info["nodes"]]
        env = dict(os.environ, CAIRN_API=apis[0])
        src = os.path.join(work, "file.bin")
        for i in range(a.files):
            # 1 MiB each, all different: one record and one segment per file.
            with open(src, "wb") as f:
                f.write(os.urandom(1 << 20))
            subprocess.run([cairn, "put", src], env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        # Let every steward find its records' stewards and settle.
        time.sleep(20)
        pids = devnetlib.processes(net_dir, " node run")
        before = {p: cpu_ticks(p) for p in pids}
        counters0 = [steward(api) for api in apis]
        time.sleep(a.seconds)
        used = [(cpu_ticks(p) - before[p]) / TICKS / a.seconds * 100 for p in pids]
        counters1 = [steward(api) for api in apis]
        delta = lambda k: sum(c1[k] - c0[k] for c0, c1 in zip(counters0, counters1))
        records = sum(c["records"] for c in counters1)
        print(f"Idle devnet, {a.nodes} nodes, {a.files} files of 1 MiB, steward passes every "
              f"{a.steward_interval}, {platform.node()} ({os.cpu_count()} cores), "
              f"{time.strftime('%Y-%m-%d')}, {a.seconds} s:\n")
        print("| all nodes (% of one core) | per node, mean (max) | steward passes | "
              "DHT walks | holder probes | anti-entropy requests | records stewarded |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {sum(used):.0f} | {sum(used) / len(used):.1f} ({max(used):.1f}) | "
              f"{delta('passes')} | {delta('lookups')} | {delta('probes')} | "
              f"{delta('digests')} | {records} |")
    finally:
        devnetlib.stop(devnet)
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
