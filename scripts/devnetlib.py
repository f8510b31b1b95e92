"""What the benchmark scripts share: starting and stopping a `cairn devnet`
and finding its processes."""
import json
import os
import shutil
import signal
import subprocess
import time


def processes(marker, *words):
    """Pids of processes whose command line contains every one of `words`
    and `marker` (a directory only that devnet uses)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        text = b" ".join(cmd).decode(errors="replace")
        if marker in text and all(w in text for w in words):
            out.append(int(d))
    return out


def start(cairn, net_dir, args, log):
    """Starts `cairn devnet --dir net_dir ARGS` (stderr to `log`) and waits
    for its devnet.json; returns the process and what the file says."""
    shutil.rmtree(net_dir, ignore_errors=True)
    devnet = subprocess.Popen([cairn, "devnet", "--dir", net_dir, *args],
                              stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    info_path = os.path.join(net_dir, "devnet.json")
    deadline = time.time() + 120
    while not os.path.exists(info_path):
        if devnet.poll() is not None or time.time() > deadline:
            stop(devnet)
            raise SystemExit(f"devnet did not start; see {log.name}")
        time.sleep(0.2)
    time.sleep(1)
    return devnet, json.load(open(info_path))


def stop(devnet):
    """Stops a devnet started by `start` and all its nodes."""
    try:
        os.killpg(devnet.pid, signal.SIGTERM)
        devnet.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(devnet.pid, signal.SIGKILL)
