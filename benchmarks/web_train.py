"""How soon the page's Train panel shows learning (issue 33's target: the first update within
2 s of pressing Train, cnn-fast on the sample, 2 cores).

    python benchmarks/web_train.py --repeats 3

A real server (uvicorn, in this process's thread) and a client speaking HTTP to it: POST
/api/train, then the server-sent events read as they come. Printed per try: seconds from the
POST to the first `step` event (a point of the curve), to the first `view` (filters and the
16 digits' readings), to the end of the epoch, and the held-out accuracy the run reached.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from mnistlab.runtime import hardware


def serve(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def one_try(url: str, model: str) -> dict:
    body = json.dumps({"model": model, "epochs": 1}).encode()
    t0 = time.perf_counter()
    req = urllib.request.Request(url + "/api/train", data=body, headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
    seen: dict = {}
    with urllib.request.urlopen(url + "/api/train/events", timeout=600) as stream:
        kind = None
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
                seen.setdefault(kind, time.perf_counter() - t0)
            elif line.startswith("data: ") and kind in ("done", "error", "stopped"):
                seen["result"] = json.loads(line[6:])
            if kind == "end":
                break
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn-fast")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from mnistlab.cli import main as cli
    from mnistlab.web.app import create_app

    root = Path(tempfile.mkdtemp())
    small = ["--dataset", "mnist-sample", "--epochs", "1", "--set", "limit_batches=5", "--figures", "none"]
    assert cli(["train", "cnn", *small, "--no-progress", "--run-dir", str(root / "seed")]) == 0
    server, url = serve(create_app([root / "seed"], runs_root=root / "runs"))
    print(f"machine: {hardware()['line']}; {args.model}, one epoch of the sample, from pressing Train", file=sys.stderr)
    print("| try | first step (s) | first view (s) | epoch done (s) | held-out accuracy |")
    print("|---:|---:|---:|---:|---:|")
    firsts = []
    for k in range(1, args.repeats + 1):
        s = one_try(url, args.model)
        acc = s.get("result", {}).get("summary", {}).get("test_acc")
        firsts.append(s["step"])
        print(f"| {k} | {s['step']:.2f} | {s['view']:.2f} | {s['done']:.2f} | {acc:.2%} |", flush=True)
    print(f"\nfirst update: median {statistics.median(firsts):.2f} s, worst {max(firsts):.2f} s (target: 2 s)")
    server.should_exit = True


if __name__ == "__main__":
    main()
