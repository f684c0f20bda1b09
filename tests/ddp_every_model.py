"""Run by test_distributed under torchrun: every registered model trains a few batches in
one 2-process job (one process group for all, so the test pays the start-up once)."""

import json
import sys
from pathlib import Path

from mnistlab import distributed
from mnistlab.config import build_config
from mnistlab.models import list_models
from mnistlab.train.run import train_run

out = Path(sys.argv[1])
flags = {"dataset": "mnist-sample", "epochs": 1, "limit_batches": 4, "device": "cpu"}  # gloo, even beside a GPU
models = [m for m in list_models("*") if m != "encoder-classifier"] + ["encoder-classifier"]
for model in models:
    sets = [f"model.encoder={out / 'ae-convbn'}", "finetune_epochs=1"] if model == "encoder-classifier" else []
    run = train_run(build_config(model, flags=flags, sets=sets), out / model, progress=False, figures=False)
    distributed.barrier()  # the encoder classifier reads ae-convbn's folder: rank 0 must have written it
    if distributed.current().main:
        print(json.dumps({"model": model, "summary": run.summary}), flush=True)
distributed.teardown()
