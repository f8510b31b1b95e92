#!/usr/bin/env python3
"""Runs `cairn sim` over churn levels and expansions; prints DURABILITY.md's table.

Usage: scripts/durability.py [path/to/cairn] [--nodes 10000] [--days 365] [--jobs 2]
"""
import argparse
import concurrent.futures
import json
import subprocess
import time

CHURN = {
    "low": ["--departures-per-month", "0.01", "--offline-sessions-per-day", "0.2",
            "--offline-hours", "1", "--subnet-losses-per-year", "6",
            "--zone-outages-per-year", "2", "--dropper-share", "0.005"],
    "realistic": [],  # the simulator's defaults
    "high (10 %/month)": ["--departures-per-month", "0.10", "--offline-sessions-per-day", "0.5",
                          "--offline-hours", "3", "--subnet-losses-per-year", "24",
                          "--zone-outages-per-year", "6", "--dropper-share", "0.02"],
}
CODES = [(18, 24), (16, 24), (12, 24)]


def run(cairn, nodes, days, churn, k, n):
    args = [cairn, "sim", "--json", "--nodes", str(nodes), "--objects", str(nodes),
            "--days", str(days), "--seed", "7", "--k", str(k), "--n", str(n)] + CHURN[churn]
    t = time.time()
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return churn, k, n, json.loads(out), time.time() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cairn", nargs="?", default="target/release/cairn")
    p.add_argument("--nodes", type=int, default=10000)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    jobs = [(c, k, n) for c in CHURN for (k, n) in CODES]
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as ex:
        results = list(ex.map(lambda j: run(a.cairn, a.nodes, a.days, *j), jobs))
    print("| churn | k/n | expansion | objects lost | segments ever below k | durability (nines, model) "
          "| repair traffic (%/month) | repairs | repair wait p99 (min) | piece loss (%/month) "
          "| droppers caught | honest disqualified | run time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for churn, k, n, r, secs in results:
        print(f"| {churn} | {k}/{n} | {r['expansion']:.2f}x | {r['objects_lost']} | {r['segments_below_k']} "
              f"| {r['durability_nines']:.1f} | {r['repair_traffic_pct_per_month']:.1f} | {r['repairs']} "
              f"| {r['repair_wait_hours']['p99'] * 60:.1f} | {r['piece_loss_per_month'] * 100:.2f} "
              f"| {r['droppers_disqualified']}/{r['droppers']} | {r['honest_disqualified']} | {secs:.0f} |")


if __name__ == "__main__":
    main()
