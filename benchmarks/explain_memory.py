"""Memory of `explain --eval deletion` at large N (issue 32): an attribution pass holds at most
``attribution.maps.MAX_PASS`` images, so the peak follows the pass, not the N asked for.

    python benchmarks/explain_memory.py --model cnn-robust --n 10000 --methods smoothgrad,ig

Each (method, N) runs in its own child process (peak RSS is a process's own): the model is
built untrained (memory depends on its shapes, not its weights), the images are the sample's
digits repeated to N, and the figure printed is the child's peak RSS above what importing
torch and mnistlab took, with the seconds it ran.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
import mnistlab
from mnistlab.attribution.faithfulness import deletion
from mnistlab.config import DataConfig
from mnistlab.data.sources import dataset_for
from mnistlab.models import create_model
model_name, method, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
model = create_model(model_name).eval()
ds = dataset_for(DataConfig(dataset="mnist-sample"), notice=lambda m: None)
pool = torch.cat([ds.train.images, ds.test.images])
x = pool[torch.arange(n) % len(pool), None].float() / 255
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
r = deletion(model, x, method)
print(json.dumps({"peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
                  "base_mb": base / 1024, "seconds": time.perf_counter() - t0, "digits": len(r.deletion)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn-robust")
    ap.add_argument("--n", default="10000", help="digits, comma-separated for several")
    ap.add_argument("--methods", default="smoothgrad,ig")
    args = ap.parse_args()
    print("| model | method | N | peak RSS above imports (MB) | imports (MB) | seconds |")
    print("|---|---|---:|---:|---:|---:|")
    for method in args.methods.split(","):
        for n in args.n.split(","):
            out = subprocess.run([sys.executable, "-c", CHILD, args.model, method, n], capture_output=True, text=True)
            if out.returncode:
                print(f"| {args.model} | {method} | {n} | failed: {out.stderr.strip().splitlines()[-1]} | | |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"| {args.model} | {method} | {int(n):,} | {r['peak_mb']:,.0f} | {r['base_mb']:,.0f} "
                f"| {r['seconds']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
