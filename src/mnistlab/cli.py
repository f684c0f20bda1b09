"""The ``mnistlab`` command: parses arguments and calls the library, nothing more.

mnistlab train cnn --dataset mnist-sample --epochs 3
mnistlab predict 17 my_digit.png --json
mnistlab layers 17 --save layers.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import MnistlabError
from .names import AUTO, EXPLAIN_METHODS, FILE_KEYS, REPORT_JOBS, SEED_MAX


def _data_flags(args) -> dict:
    """--dataset, --data-dir and the four file paths, as config keys."""
    return {"dataset": args.dataset, "data_dir": args.data_dir, **{k: getattr(args, k) for k in FILE_KEYS}}


def _load_data(args, name=None):
    from .data.sources import load_dataset

    files = {k: getattr(args, k) for k in FILE_KEYS}
    return load_dataset(name or args.dataset, args.data_dir, notice=_notice, files=files)


def _err(msg: str) -> None:
    print(f"mnistlab: error: {_clean(msg)}", file=sys.stderr)


def _notice(msg: str) -> None:
    print(f"mnistlab: {_clean(msg)}", file=sys.stderr)


def _say(text: str) -> None:
    """Lines of a command's output: what came from the user (file names) or disk is in them, so
    control characters are shown escaped, never acted on by the terminal."""
    from .checks import safe_text

    print("\n".join(safe_text(line) for line in text.split("\n")))


MAX_LINE = 600  # an error or notice line; its values are cut shorter where they are made (checks.brief)


def _clean(msg: str) -> str:
    from .checks import brief

    return brief(msg, MAX_LINE)


# ---------------------------------------------------------------- train


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _train_flags(args) -> dict:
    flags = {
        **_data_flags(args),
        "epochs": args.epochs,
        "seed": args.seed,
        "device": args.device,
        "track": ",".join(args.track) if args.track else None,
    }
    if args.dry_run:
        flags.update(epochs=1, limit_batches=2)
    if args.encoder:
        flags["model.encoder"] = args.encoder
    return flags


def cmd_train(args) -> int:
    from . import distributed
    from .config import build_config
    from .runs import latest_run
    from .train.run import resume_run, reuse_run, train_run

    if distributed.launched():  # a rank: it ends with its launcher, even a killed one
        distributed.die_with_parent()
        distributed.quiet_runtime()
    if args.resume:
        _resume_alone(args)
    if args.nproc is not None:
        most, what = distributed.process_limit(args.device or "auto")
        if not 1 <= args.nproc <= most:
            raise MnistlabError(
                f"--nproc {args.nproc}: must be in 1..{most} ({what}; more machines join with torchrun)"
            )
        if args.reuse or args.interactive:
            raise MnistlabError("--nproc trains; it does not go with --reuse or --interactive")
        if args.nproc > 1 and not distributed.launched():
            if not args.resume:  # a bad config fails here, once, not in every process
                build_config(args.model, file=args.config, flags=_train_flags(args), sets=args.set)
            return distributed.launch(args.nproc, _without_nproc(args.argv))
    if args.resume:
        run = resume_run(
            args.resume,
            model=args.model,
            progress=False if args.no_progress else None,
            notice=_notice,
            figures=args.figures != "none",
        )
    elif args.reuse:
        path = args.run_dir or latest_run(model=args.model, dataset=args.dataset)
        run = reuse_run(path, notice=_notice)
        if run.config.model_name != args.model:
            raise MnistlabError(f"{path} holds a {run.config.model_name!r} run, not {args.model!r}")
        _say(f"reused {run.path}")
    else:
        cfg = build_config(
            args.model, file=args.config, flags=_train_flags(args), sets=args.set, validate=not args.interactive
        )
        if args.interactive:
            from .interactive import ask_config

            cfg = ask_config(cfg, sys.stdin, sys.stdout, sys.stdin.isatty())
        run = train_run(
            cfg,
            args.run_dir,
            progress=False if args.no_progress else None,
            notice=_notice,
            figures=args.figures != "none",
        )
    if distributed.current().main:
        _print_summary(run)
    return 0


def _resume_alone(args) -> None:
    """--resume goes on with the run as it was configured: a flag that would change it is refused
    (named), never silently dropped."""
    given = {
        "--epochs": args.epochs is not None,
        "--set": bool(args.set),
        "--config": bool(args.config),
        "--seed": args.seed is not None,
        "--device": bool(args.device),
        "--dataset": args.dataset is not None,
        "--data-dir": bool(args.data_dir),
        **{f"--{k.replace('_', '-')}": bool(getattr(args, k)) for k in FILE_KEYS},
        "--run-dir": bool(args.run_dir),
        "--reuse": args.reuse,
        "--interactive": args.interactive,
        "--dry-run": args.dry_run,
        "--encoder": bool(args.encoder),
        "--track": bool(args.track),
    }
    if named := [flag for flag, on in given.items() if on]:
        raise MnistlabError(
            f"--resume goes on with the run as it was configured; {', '.join(named)} cannot apply to it "
            "(start a new run to change settings)"
        )


def _print_summary(run) -> None:
    s = run.summary
    ds = run.config.data.dataset
    held = f"{s['n_test']:,} held-out test images" if isinstance(s.get("n_test"), int) else "test split"
    if "test_acc" in s:
        print(
            f"{run.config.model_name} on {ds}: test accuracy {s['test_acc']:.2%} ({held}), "
            f"test loss {s['test_loss']:.4f}"
        )
    if isinstance(s.get("test_mse"), (int, float)):  # one wording everywhere (runs, the page, the docs)
        per_image = s.get("test_mse_sum_per_image")
        image = f", {per_image:.1f} per image" if isinstance(per_image, (int, float)) else ""
        _say(
            f"{run.config.model_name} on {ds}: reconstruction error (mse) {s['test_mse']:.4f} per pixel{image} "
            f"on {held} (lower is better)"
        )
    shown = ("test_acc", "test_loss", "test_mse", "test_mse_sum_per_image")
    for k in sorted(k for k in s if k.startswith("test_") and k not in shown):
        _say(f"{run.config.model_name} on {ds}: {k} {s[k]:.5f}")
    if "train_time_s" in s:
        epochs = f"{s['epochs']} epoch{'' if s['epochs'] == 1 else 's'}"
        _say(f"trained {epochs} in {s['train_time_s']:.1f} s on {s['device']}")
    _say(f"run folder: {run.path}")
    figs = sorted(p.name for p in run.figures.glob("*.png"))
    if figs:
        _say(f"figures: {', '.join(figs)} in {run.figures}")


def cmd_sweep(args) -> int:
    from .studies.sweep.results import show_sweep
    from .studies.sweep.worker import run_sweep

    if args.show:
        out, table = show_sweep(args.storage, args.study, args.out)
        print(table.strip())
        print(f"\ntable.md, table.csv and pictures in {out}")
        return 0
    if not args.model:
        raise MnistlabError("sweep needs a MODEL (or --show to print a stored study's table)")
    _single_process("sweeps (use --workers K, or the same command on other machines)")
    flags = {**_data_flags(args), "epochs": args.epochs, "seed": args.seed, "device": args.device}
    out, rows = run_sweep(
        args.model,
        args.grid,
        search=args.search,
        trials=args.trials,
        sampler=args.sampler,
        prune=args.prune,
        timeout=args.timeout,
        storage=args.storage,
        study=args.study,
        workers=args.workers,
        flags=flags,
        sets=args.set,
        out_dir=args.out,
        heartbeat=args.heartbeat,
        progress=False if args.no_progress else None,
        notice=_notice,
        figures=args.figures != "none",
    )
    print((out / "table.md").read_text().strip())
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "pruned", "failed", "cut off", "running")}
    said = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "ok")
    figs = ", ".join(p.name for p in sorted(out.glob("*.png")))
    print(
        f"\n{counts['ok']} of {len(rows)} trials trained{f' ({said})' if said else ''}; "
        f"table.md, table.csv, sweep.json{', ' + figs if figs else ''} in {out}"
    )
    info = json.loads((out / "sweep.json").read_text())
    if info.get("best_run"):
        values = " ".join(f"{k}={v}" for k, v in info["best_params"].items())
        print(
            f"best: trial {info['best_trial_number']} ({values}), {info['metric']} {info['best_value']:.4g}: "
            f"{info['best_run']}"
        )
    return 1 if rows and counts["ok"] == 0 and counts["pruned"] == 0 else 0


def _single_process(what: str) -> None:
    from . import distributed

    if distributed.launched():
        raise MnistlabError(f"{what} run in one process; start it without torchrun (only `train` runs distributed)")


def cmd_experiment(args) -> int:
    from .studies.experiments import build_experiment_config, run_experiment

    _single_process("experiments")

    flags = {**_data_flags(args), "seed": args.seed, "device": args.device}
    cfg = build_experiment_config(args.name, file=args.config, sets=args.set, flags=flags)
    log = (lambda m: None) if args.quiet else _notice
    path, metrics = run_experiment(
        args.name,
        cfg,
        run_dir=args.run_dir,
        reuse=args.reuse,
        progress=False if args.no_progress else None,
        log=log,
        notice=_notice,
    )
    from .studies.experiments import summary_lines

    for line in summary_lines(args.name, metrics):
        print(line)
    _say(f"run folder: {path}")
    figs = sorted(p.name for p in (path / "figures").glob("*.png"))
    _say(f"figures: {', '.join(figs)} in {path / 'figures'}")
    return 0


def cmd_bench(args) -> int:
    from .studies.bench import run_bench, to_markdown

    if not 1 <= args.seeds <= 100:
        raise MnistlabError(f"--seeds {args.seeds}: must be in 1..100")

    res = run_bench(
        quick=args.quick,
        device=args.device,
        seeds=args.seeds,
        out=Path(args.out),
        log=(lambda m: None) if args.quiet else _notice,
    )
    print(to_markdown(res))
    _say(f"written: {Path(args.out) / 'bench.md'}, {Path(args.out) / 'bench.json'}")
    return 0


def cmd_report(args) -> int:
    from .studies.report import parse_seeds, run_report

    _single_process("the report")
    report = run_report(
        parse_seeds(args.seeds), args.only, args.out, progress=False if args.no_progress else None, notice=_notice
    )
    out = Path(args.out)
    print((out / "report.md").read_text().strip())
    missed = [k for k, f in report["figures"].items() if f["met"] is False]
    print(
        f"\nreport.md, report.json and a picture per job in {out}"
        + (f"; bars not met: {', '.join(missed)}" if missed else "")
    )
    return 0


def cmd_serve(args) -> int:
    import importlib.util

    # its modules are imported where they are used: asked for here, before any work
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise MnistlabError(
            f"the web page needs the 'web' extra ({missing[0]} is missing): pip install 'mnistlab[web]'"
        )
    from .web.transport import serve

    serve([Path(r) for r in args.run] or None, host=args.host, port=args.port, head_timeout=args.head_timeout)
    return 0


# ---------------------------------------------------------------- show / predict / layers


def _show_data(args):
    """The data `show` reads: as asked, else the data `predict` would read (the default
    classifier run's), so `show 17` and `predict 17` are one digit; else MNIST or the sample."""
    if args.dataset or args.data_dir or any(getattr(args, k) for k in FILE_KEYS):
        return _load_data(args, args.dataset or AUTO)
    from .data.sources import dataset_for
    from .reading.reader import default_classifier
    from .runs import load_run

    try:
        run = load_run(default_classifier())
    except MnistlabError:
        return _load_data(args, AUTO)
    return dataset_for(run.config.data, notice=_notice)


def cmd_show(args) -> int:
    from .data.splits import pick_digit
    from .viz import digit_figure, show_or_save

    d = pick_digit(_show_data(args), args.train, args.id)
    _say(f"{d.name}: label {d.label or 'unknown'}")
    suffix = "-annotated" if args.annotate else ""
    saved = show_or_save(
        digit_figure(d.image, f"{d.name}: {d.label}", args.annotate),
        args.save,
        f"digit-{d.dataset}-{d.split}-{d.index}{suffix}.png",
    )
    if saved:
        _say(f"saved {saved}")
    return 0


def _classifier_run(run_arg):
    from .reading.reader import default_classifier
    from .runs import load_run

    run = load_run(run_arg or default_classifier())
    if run.task != "classify":
        raise MnistlabError(f"{run.path} holds a {run.config.model_name!r} model, not a classifier")
    return run


def _dataset_for_run(run, args):
    from .data.sources import FROM_FILES, dataset_for

    if any(getattr(args, k) for k in FILE_KEYS):  # the user's files are named as theirs, not the run's dataset
        return _load_data(args, args.dataset or FROM_FILES)
    if args.dataset or args.data_dir:
        return _load_data(args, args.dataset or run.config.data.dataset)
    return dataset_for(run.config.data, notice=_notice)


def _classes(run, ds=None) -> tuple[str, ...]:
    """The names of the run's model's outputs (its own, or its dataset's)."""
    from .data.sources import dataset_classes

    return run.model.classes(ds.classes if ds else dataset_classes(run.config.data.dataset))


def _failed(item, e: Exception, as_json: bool) -> int:
    """One input of a batch failed: its error line (and JSON object); the batch goes on."""
    if as_json:
        print(json.dumps({"input": item, "error": str(e)}))
    _err(str(e))
    return 1


def _numbered(save: str | None, n: int, count: int, suffix: str = "") -> str | None:
    """--save FILE for the n-th of `count` inputs: FILE itself for one, FILE-n.png for several."""
    if not save:
        return None
    from ._io import check_target

    path = check_target(save)  # a folder, device or run file named by --save is refused as named, not beside it
    stem = f"{path.stem}{suffix}" + (f"-{n}" if count > 1 else "")
    return str(path.with_name(stem + (path.suffix or ".png")))


def _digit_input(run, args, item, ds):
    """One input of predict or explain, read as predict reads it: an image file through the one
    preprocessing path, else a dataset id (random when None). Returns (28x28 image, name, class
    probabilities, true label or None, JSON record, preprocessing stages or None, dataset)."""
    import numpy as np

    from .data.splits import pick_digit
    from .reading.images import is_image_path, load_grey
    from .reading.reader import probabilities, read_photo

    if item is not None and is_image_path(item):
        photo = read_photo(run.model, load_grey(item), item)  # the page's rule too (web.handlers.predict)
        reading, number = photo.digit, photo.number
        record = {"input": item, "box": reading.box}
        if number is not None:
            record.update(number=number.number, pick=photo.pick, note=photo.note())
        return reading.image, item, np.asarray(reading.probabilities), None, record, photo.prep, ds
    ds = ds or _dataset_for_run(run, args)
    d = pick_digit(ds, args.train, None if item is None else int(item))
    record = {"input": d.name, "id": d.index, "split": d.split, "label": d.label}
    return d.image, d.name, probabilities(run.model, d.image[None])[0], d.label, record, None, ds


def cmd_predict(args) -> int:
    import torch

    from .reading.reader import LOW_CONFIDENCE

    run = _classifier_run(args.run)
    inputs = args.inputs or [None]
    ds = None
    failures = 0
    for n, item in enumerate(inputs):
        try:
            img, name, probs, label, record, prep, ds = _digit_input(run, args, item, ds)
        except MnistlabError as e:
            failures += _failed(item, e, args.json)
            continue
        classes = _classes(run, ds)
        top = int(probs.argmax())
        unsure = bool(probs[top] < LOW_CONFIDENCE)
        if args.json:
            print(
                json.dumps(
                    {
                        **record,
                        "run": str(run.path),
                        "digit": top,
                        "class": classes[top],
                        "confidence": round(float(probs[top]), 6),
                        "low_confidence": unsure,
                        "probabilities": [round(float(p), 6) for p in probs],
                    }
                )
            )
        else:
            truth = ""
            if label is not None:  # the class the label stands for among the model's (loop-parity: a loop)
                means = classes[int(run.model.target(torch.tensor([ds.classes.index(label)]))[0])]
                verdict = "(correct)" if means == classes[top] else "(wrong)"
                truth = f", true {label}{f' ({means})' if means != label else ''} {verdict}"
            note = f"; unsure: below {LOW_CONFIDENCE:.0%}, it may be no digit or a hard one" if unsure else ""
            where = f" ({record['note']})" if record.get("note") else ""
            _say(f"{name}: predicted {classes[top]} ({probs[top]:.1%}){where}{truth}{note}")
        pictures = []  # (figure, --save path, default name)
        if args.display or (args.save and not args.steps):  # --save alone saves the prediction picture
            from .viz import prediction_figure

            pictures.append(
                (
                    prediction_figure(img, probs, classes, f"{name}\npredicted {classes[top]}"),
                    _numbered(args.save, n, len(inputs)),
                    f"prediction-{n}.png",
                )
            )
        if args.steps and prep is not None:
            from .reading.images import stage_images
            from .viz import steps_figure

            pictures.append(
                (
                    steps_figure(stage_images(prep), f"{name}: predicted {classes[top]} ({probs[top]:.0%})"),
                    _numbered(args.save, n, len(inputs), "-steps" if args.display else ""),
                    f"steps-{n}.png",
                )
            )
        for fig, save, default in pictures:
            from .viz import show_or_save

            saved = show_or_save(fig, save, default)
            if saved and not args.json:
                _say(f"saved {saved}")
    return 1 if failures else 0


def cmd_explain(args) -> int:
    import numpy as np
    import torch

    from .attribution.maps import explain

    run = _classifier_run(args.run)
    if args.eval:
        return _explain_eval(run, args)
    inputs = args.inputs or [None]
    ds, failures = None, 0
    for n, item in enumerate(inputs):
        try:
            img, name, probs, *_, ds = _digit_input(run, args, item, ds)
            x = torch.from_numpy(np.ascontiguousarray(img)).float().div(255)[None, None]
            target = int(probs.argmax()) if args.target is None else args.target
            amap = explain(run.model, x, args.method, target=target, contrast=args.contrast)[0].numpy()
        except MnistlabError as e:
            failures += _failed(item, e, args.json)
            continue
        classes = _classes(run, ds)
        what = f"{args.method}: why {classes[target]}" + (
            f", not {classes[args.contrast]}" if args.contrast is not None else ""
        )
        if args.json:
            print(
                json.dumps(
                    {
                        "input": name,
                        "digit": int(probs.argmax()),
                        "target": target,
                        **({"contrast": args.contrast} if args.contrast is not None else {}),
                        "method": args.method,
                        "attribution": np.round(amap, 6).tolist(),
                    }
                )
            )
        else:
            _say(f"{name}: read as {classes[int(probs.argmax())]} ({probs.max():.1%}); {what}")
        if args.save or not args.json:
            from .viz import explanation_figure, show_or_save

            fig = explanation_figure(img, amap, probs, classes, f"{name}", what)
            saved = show_or_save(fig, _numbered(args.save, n, len(inputs)), f"explain-{n}.png")
            if saved and not args.json:
                _say(f"saved {saved}")
    return 1 if failures else 0


def _explain_eval(run, args) -> int:
    """`explain --eval deletion|randomization`: the faithfulness of a method on the first N
    held-out digits of the run's dataset."""
    from .attribution.faithfulness import MAX_DIGITS, deletion, randomization
    from .checks import check_count

    if args.inputs or args.target is not None or args.contrast is not None:
        raise MnistlabError(
            "--eval measures the first --n held-out digits for their predicted classes: "
            "give no inputs, --target or --contrast with it"
        )
    check_count(args.n, "--n", MAX_DIGITS)
    ds = _dataset_for_run(run, args)
    split = ds.train if args.train else ds.test
    x = split.images[: args.n, None].float().div(255)
    which = f"{args.method} on {len(x)} {'training' if args.train else 'held-out'} digits"
    if args.eval == "deletion":
        result = deletion(run.model, x, args.method, seed=args.seed)
        line = (
            f"{which}: deletion beats a random "
            f"ink-first order on {result.beats_random:.1%} (area {result.deletion.mean():.3f} vs "
            f"{result.deletion_random.mean():.3f}), insertion on {result.insertion_beats_random:.1%} (area "
            f"{result.insertion.mean():.3f} vs {result.insertion_random.mean():.3f})"
        )
    else:
        result = randomization(run.model, x, args.method, seed=args.seed)
        line = (
            f"{which}: median Spearman over "
            f"ink pixels, trained vs re-initialised weights: {result.median:.3f} (|map|: {result.abs_median:.3f})"
            + (
                "; integrated gradients multiply by the input, so the digit's shape survives the scrambling"
                if args.method == "ig"
                else ""
            )
        )
    record = {"run": str(run.path), **result.to_dict()}
    print(json.dumps(record) if args.json else line)
    if args.save:
        from .viz import faithfulness_figure, show_or_save

        saved = show_or_save(faithfulness_figure(result), args.save, "faithfulness.png")
        if saved and not args.json:
            _say(f"saved {saved}")
    return 0


def cmd_read(args) -> int:
    from .reading.images import boxes_image, load_grey
    from .reading.reader import LOW_CONFIDENCE, read_number

    run = _classifier_run(args.run)
    failures = 0
    for n, path in enumerate(args.images):
        try:
            grey = load_grey(path)
            reading = read_number(run.model, grey, path)
        except MnistlabError as e:
            failures += _failed(path, e, args.json)
            continue
        if args.json:
            print(json.dumps({"input": path, **reading.to_dict()}))
        else:
            per = ", ".join(f"{d.digit} {d.confidence:.0%}" + ("?" if d.low_confidence else "") for d in reading.digits)
            note = f"  unsure: a digit read below {LOW_CONFIDENCE:.0%} is marked ?" if reading.low_confidence else ""
            _say(f"{path}: {reading.number}  ({per}){note}")
        if args.save:
            from .viz import save_picture

            rgb = boxes_image(
                grey,
                [d.box for d in reading.digits],
                [f"{d.digit} {d.confidence:.0%}" for d in reading.digits],
                [d.low_confidence for d in reading.digits],
            )
            saved = save_picture(rgb, _numbered(args.save, n, len(args.images)))
            if not args.json:
                _say(f"saved {saved}")
    return 1 if failures else 0


def cmd_layers(args) -> int:
    from .data.splits import pick_digit
    from .infer import activations
    from .reading.images import is_image_path, load_image
    from .viz import layers_figure, show_or_save

    run = _classifier_run(args.run)
    ds = None
    if args.input is not None and is_image_path(args.input):
        img, title = load_image(args.input), args.input
    else:
        ds = _dataset_for_run(run, args)
        d = pick_digit(ds, args.train, None if args.input is None else int(args.input))
        img, title = d.image, f"{d.name} (label {d.label or 'unknown'})"
    acts = activations(run.model, img)
    classes = _classes(run, ds)
    _say(f"{title}: predicted {classes[int(acts[-1][1].argmax())]}")
    saved = show_or_save(layers_figure(acts, classes, f"{run.config.model_name}: {title}"), args.save, "layers.png")
    if saved:
        _say(f"saved {saved}")
    return 0


# ---------------------------------------------------------------- listings


def cmd_summary(args) -> int:
    """A registered model's preset, or a run's trained model: layers, shapes, parameters."""
    from .summaries import summary

    target = args.target
    if os.path.isdir(target) or os.sep in target or os.path.lexists(target):
        from .runs import load_run

        model = load_run(target).model
    else:
        from .config import build_config
        from .models import create_model

        cfg = build_config(target, sets=args.set, validate=False)
        from .checks import check_ranges

        check_ranges(cfg.model, "model")
        model = create_model(target, cfg.model)
    s = summary(model)
    if args.json:
        print(json.dumps(s.to_dict()))
    else:
        _say(str(s))
    return 0


def cmd_models(args) -> int:
    from .models import create_model, get_spec, list_models

    rows = []
    for name in list_models(args.pattern):
        spec = get_spec(name)
        try:
            params = f"{create_model(name).num_parameters():,}"
        except MnistlabError:  # needs arguments (e.g. the encoder classifier's --encoder)
            params = "-"
        rows.append((name, spec.task, params, spec.description))
    _table(("model", "task", "params", "description"), rows)
    return 0


def _key_figure(r: dict) -> str:
    s = r["summary"]
    from .checks import as_number

    num = lambda v: as_number(v) is not None  # noqa: E731  (files may lie)
    if r["kind"] == "sweep":
        acc, mse = s.get("best_test_acc"), s.get("best_test_mse")
        best = f"best acc {acc:.2%}" if num(acc) else f"best mse {mse:.4f}" if num(mse) else ""
        return f"{_cell(s.get('finished', 0))}/{_cell(s.get('trials', 0))} trials" + (
            f", {best} ({_cell(s.get('best_trial'))})" if best else ""
        )
    if "headline" in s:
        return _cell(s["headline"])
    if num(s.get("test_acc")):
        return f"acc {s['test_acc']:.2%}"
    if num(s.get("test_mse")):
        return f"mse {s['test_mse']:.4f}"
    return "-"


def cmd_export(args) -> int:
    from .export import export_run

    record = export_run(args.run, args.format, args.out, opset=args.opset)
    if args.json:
        print(json.dumps(record))
    else:
        print(
            f"exported {record['path']} ({record['format']}, opset {record['opset']}, {record['bytes']:,} bytes); "
            f"onnxruntime equals torch within {record['max_abs_diff']:.1e} on {record['checked_on']} held-out "
            f"digits (allowed {record['tolerance']:g}); recorded in exports.json"
        )
    return 0


def cmd_runs(args) -> int:
    from .runs import list_runs

    runs = list_runs(args.root)
    if args.json:
        for r in runs:
            print(json.dumps({**r, "path": str(r["path"])}, default=str))
        return 0
    if not runs:
        _say(f"no runs under {args.root or 'runs'}/")
        return 0
    rows = []
    for r in runs:
        s = r["summary"]
        what = _cell(r.get("experiment") or r["model"])
        name = str(r["path"]) if r["kind"] not in ("trial", "part") else f"  {r['path'].parent.name}/{r['path'].name}"
        rows.append(
            (
                name,
                r["kind"],
                what,
                _cell(r["dataset"]),
                _key_figure(r),
                _cell(s.get("epochs")),
                f"{s['train_time_s']:.1f}s" if isinstance(s.get("train_time_s"), (int, float)) else "-",
                "" if r["complete"] else "incomplete",
            )
        )
    _table(("run", "kind", "model", "dataset", "key figure", "epochs", "time", ""), rows)
    return 0


def _cell(value) -> str:
    """A table cell from a file that may have been edited: a name or a number, else '?' (never
    the rendering of a 100,000-item list); '-' when there is none."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return str(value)
    return "?"


def _table(header, rows) -> None:
    from .checks import brief

    # cells come from folder names and files on disk: escaped and bounded, so a newline cannot
    # forge a row and an escape sequence cannot act on the terminal
    rows = [tuple(brief(str(x), 100) for x in row) for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .names import DATASET_NAMES, EXPERIMENT_NAMES

    datasets = [*DATASET_NAMES, AUTO]
    p = argparse.ArgumentParser(prog="mnistlab", description="Learn what neural networks do with handwritten digits.")
    p.add_argument("--version", action="version", version=f"mnistlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_args(sp, default=AUTO):
        sp.add_argument(
            "--dataset",
            choices=datasets,
            default=default,
            help=f"dataset name; 'auto' is MNIST when available, else the bundled sample (default: {default})",
        )
        sp.add_argument("--data-dir", help="folder with the dataset's files (IDX raw/gz, CSV or Keras NPZ)")
        files = sp.add_argument_group("data files by path (any names; IDX raw/gz, CSV with the label first, NPZ/NPY)")
        files.add_argument("--train-images", metavar="FILE", help="training images")
        files.add_argument(
            "--train-labels",
            metavar="FILE",
            help="training labels (optional for autoencoders; CSV and NPZ carry their own)",
        )
        files.add_argument(
            "--test-images",
            metavar="FILE",
            help="test images (default: a seeded 10%% of the training images, with a notice)",
        )
        files.add_argument("--test-labels", metavar="FILE", help="test labels")

    def training_args(sp, set_help="override one config key, e.g. --set lr=0.01 --set model.dropout=0.3"):
        sp.add_argument("--seed", type=int, help="random seed (default: 0)")
        sp.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
        sp.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")

    t = sub.add_parser("train", help="train a model and record a run folder")
    t.add_argument("model", help="a registered model (see `mnistlab models`)")
    data_args(t, default=None)
    t.add_argument("--epochs", type=int, help="epochs (default: the model's preset)")
    training_args(t)
    t.add_argument("--config", help="TOML or YAML file with [model], [train], [data] sections")
    t.add_argument("--run-dir", help="run folder to write (default: runs/MODEL-DATASET-TIME)")
    t.add_argument(
        "--reuse",
        action="store_true",
        help="load the saved model of --run-dir (or the newest run of MODEL) instead of training",
    )
    t.add_argument(
        "--track",
        action="append",
        choices=["tensorboard", "mlflow"],
        help="also log params, per-epoch metrics and figures to TensorBoard (RUN/tensorboard) or "
        "MLflow ($MLFLOW_TRACKING_URI, default sqlite in the runs folder); repeatable; "
        "needs the 'track' extra",
    )
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="go on with a run stopped mid-way, from its last checkpoint (weights, optimiser, "
        "schedule, random state, epoch): it ends as if never stopped",
    )
    t.add_argument("--encoder", metavar="RUN_DIR", help="encoder-classifier: run folder of a trained autoencoder")
    t.add_argument(
        "--interactive", action="store_true", help="ask for each hyperparameter (answers may come from a file on stdin)"
    )
    t.add_argument("--dry-run", action="store_true", help="one epoch of two batches: a quick smoke run")
    t.add_argument(
        "--figures",
        choices=["end", "none"],
        default="end",
        help="end: draw the run's figures once summary.json is written (default); none: no figures",
    )
    t.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train on N processes of this machine with DistributedDataParallel (gloo on the CPU, one GPU "
        "each with NCCL), started through torchrun's launcher; for several machines run "
        "`torchrun ... -m mnistlab train ...` on each",
    )
    t.set_defaults(func=cmd_train)

    sw = sub.add_parser(
        "sweep",
        help="an Optuna study: a grid or a search, on one or several processes or machines",
        description="Train each trial of an Optuna study into its own run folder and compare them. "
        "The same command with the same --storage and --study on several machines joins "
        "one study; re-running a stopped sweep goes on with it.",
    )
    sw.add_argument("model", nargs="?", help="a registered model")
    sw.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="values to try for one key, every combination once (split on '|' when given, for list values)",
    )
    sw.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="KEY=LOW:HIGH[:log]|KEY=A|B",
        help="a range (int when both bounds are) or choices for the sampler to search; needs --trials",
    )
    sw.add_argument("--trials", type=int, help="trials the study should hold (a grid: its size)")
    sw.add_argument("--sampler", choices=["tpe", "random", "grid"], help="default: grid for --grid only, else tpe")
    sw.add_argument("--timeout", type=float, metavar="SECONDS", help="start no new trial after this long")
    sw.add_argument(
        "--prune",
        nargs="?",
        const="median",
        choices=["median", "hyperband"],
        help="stop poor trials early from their per-epoch validation metric (default pruner: median)",
    )
    sw.add_argument(
        "--storage",
        metavar="URL",
        help="SQLAlchemy URL of the study, e.g. postgresql+psycopg://user:pw@host/db "
        "(default: sqlite study.db in the sweep folder)",
    )
    sw.add_argument("--study", metavar="NAME", help="study name (default: MODEL-HASH of the sweep's settings)")
    sw.add_argument("--workers", type=int, default=1, metavar="K", help="worker processes on this machine (default 1)")
    sw.add_argument(
        "--heartbeat",
        type=int,
        default=10,
        metavar="S",
        help="seconds between a worker's heartbeats; a trial that misses three is marked failed and its "
        "point redone (default 10)",
    )
    sw.add_argument(
        "--figures", choices=["end", "none"], default="end", help="each trial's figures: end (default) or none"
    )
    sw.add_argument("--show", action="store_true", help="print a stored study's table (--storage/--study or --out)")
    data_args(sw, default=None)
    sw.add_argument("--epochs", type=int, help="epochs for every run (default: the model's preset)")
    training_args(sw, "a fixed override for every run")
    sw.add_argument("--out", help="sweep folder (default: runs/sweep-STUDY)")
    sw.set_defaults(func=cmd_sweep)

    ex = sub.add_parser("experiment", help="run an experiment: " + ", ".join(EXPERIMENT_NAMES))
    ex.add_argument("name", choices=list(EXPERIMENT_NAMES))
    data_args(ex, default=None)
    training_args(ex, "override one setting")
    ex.add_argument("--config", help="TOML or YAML file (keys at the top level or under [experiment])")
    ex.add_argument("--run-dir", help="folder to write (default: runs/experiment-NAME-TIME)")
    ex.add_argument(
        "--reuse",
        action="store_true",
        help="load the saved models and results of --run-dir (or the newest run) instead of training",
    )
    ex.add_argument("--quiet", action="store_true", help="no progress notes")
    ex.set_defaults(func=cmd_experiment)

    b = sub.add_parser("bench", help="speed benchmarks, each against a baseline measured in the same run")
    b.add_argument("--quick", action="store_true", help="a smoke run: the sample only, few batches, one seed")
    b.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    b.add_argument("--seeds", type=int, default=3, help="seeds for time to accuracy (default: 3)")
    b.add_argument("--out", default="bench", help="folder for bench.md and bench.json (default: bench/)")
    b.add_argument("--quiet", action="store_true", help="no progress notes")
    b.set_defaults(func=cmd_bench)

    rp = sub.add_parser("report", help="every headline figure over seeds (mean, sd, worst, bar), resumable")
    rp.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,1,2 (default 0-4)")
    rp.add_argument("--only", nargs="+", metavar="JOB", help=f"only these jobs: {', '.join(REPORT_JOBS)}")
    rp.add_argument("--out", default="report", help="folder for report.md, report.json, pictures (default report/)")
    rp.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    rp.set_defaults(func=cmd_report)

    sv = sub.add_parser("serve", help="a local web page: draw a digit and watch the networks respond")
    sv.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="R",
        help="run folder to serve (repeatable; default: the newest classifier and autoencoder runs)",
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=_bounded(0, 65_535), default=8000, help="port (default: 8000)")
    sv.add_argument(
        "--head-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a connection has to send a request's head before it is closed, 1-300 "
        "(default: 10; slow clients holding connections open are cut off)",
    )
    sv.set_defaults(func=cmd_serve)

    s = sub.add_parser("show", help="show one digit (random when no ID)")
    s.add_argument("id", nargs="?", type=_bounded(0, 10**9), help="index in the split (default: random)")
    s.add_argument("--train", action="store_true", help="use the training split (default: test)")
    s.add_argument("--save", metavar="FILE", help="write a PNG instead of opening a window")
    s.add_argument("--annotate", action="store_true", help="write each pixel's 8-bit grey value on it")
    data_args(s, default=None)
    s.set_defaults(func=cmd_show)

    pr = sub.add_parser("predict", help="predict dataset digits by id, or your own PNG/JPEG files")
    pr.add_argument(
        "inputs", nargs="*", metavar="ID|IMAGE", help="dataset ids and/or image files (default: one random id)"
    )
    pr.add_argument("--train", action="store_true", help="ids index the training split (default: test)")
    pr.add_argument(
        "--run", help="run folder of a classifier (default: the newest cnn-robust run, else the newest classifier)"
    )
    pr.add_argument("--display", action="store_true", help="show each digit with its probabilities")
    pr.add_argument(
        "--steps",
        action="store_true",
        help="draw each preprocessing stage of an image (input, flattened paper, ink mask, chosen component, 28x28)",
    )
    pr.add_argument(
        "--save",
        metavar="FILE",
        help="write the prediction picture (or, with --steps, the steps) to FILE (FILE-N.png for several inputs)",
    )
    pr.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per input: {"input", "run", "digit", "class", "confidence", '
        '"low_confidence", "probabilities": [10]} with "id", "split", "label" for a dataset id or '
        '"box": [x, y, w, h] for an image file; {"input", "error"} for one that failed',
    )
    data_args(pr, default=None)
    pr.set_defaults(func=cmd_predict)

    rd = sub.add_parser("read", help="read written numbers (a year, a house number, a row of digits) in images")
    rd.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG/... files")
    rd.add_argument(
        "--run", help="run folder of a classifier (default: the newest cnn-robust run, else the newest classifier)"
    )
    rd.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per input: {"input", "number", "digits": [{"digit", "confidence", '
        '"box": [x, y, w, h], "low_confidence"}], "low_confidence"} or {"input", "error"}',
    )
    rd.add_argument("--save", metavar="FILE", help="draw the boxes and readings on the image (FILE-N.png for several)")
    rd.set_defaults(func=cmd_read)

    xp = sub.add_parser(
        "explain",
        help="which pixels made the prediction: attribution maps (saliency, "
        "smoothgrad, ig, occlusion, gradcam, hirescam); needs the 'explain' extra",
    )
    xp.add_argument(
        "inputs", nargs="*", metavar="ID|IMAGE", help="dataset ids and/or image files (default: one random id)"
    )
    xp.add_argument(
        "--run", help="run folder of a classifier (default: the newest cnn-robust run, else the newest classifier)"
    )
    xp.add_argument(
        "--method",
        choices=EXPLAIN_METHODS,
        default="ig",
        help="attribution method (default: ig, integrated gradients from a black image)",
    )
    xp.add_argument(
        "--target", type=_bounded(0, 9_999), metavar="K", help="explain class K (default: the predicted class)"
    )
    xp.add_argument(
        "--contrast",
        type=_bounded(0, 9_999),
        metavar="K",
        help="explain the target's logit minus class K's: why the target and not K",
    )
    xp.add_argument(
        "--eval",
        choices=["deletion", "randomization"],
        help="measure the method's faithfulness on the first --n held-out digits instead: deletion "
        "(and insertion) of ink against random ink-first orders, or the randomisation check "
        "(re-initialised weights, Spearman over ink pixels)",
    )
    xp.add_argument("--n", type=int, default=200, help="digits for --eval (default: 200)")
    xp.add_argument(
        "--seed", type=_bounded(0, SEED_MAX), default=0, help="seed of --eval's random orders and weights (default: 0)"
    )
    xp.add_argument("--train", action="store_true", help="ids index the training split (default: test)")
    xp.add_argument("--save", metavar="FILE", help="write the picture to FILE (FILE-N.png for several inputs)")
    xp.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per input: {"input", "digit", "target", "method", "attribution": 28x28}',
    )
    data_args(xp, default=None)
    xp.set_defaults(func=cmd_explain)

    la = sub.add_parser("layers", help="draw every layer's output for one digit")
    la.add_argument("input", nargs="?", metavar="ID|IMAGE", help="dataset id or image file (default: random id)")
    la.add_argument("--train", action="store_true", help="the id indexes the training split")
    la.add_argument("--run", help="run folder of a classifier (default: the newest under runs/)")
    la.add_argument("--save", metavar="FILE", help="write the PNG here (default: layers.png when no window)")
    data_args(la, default=None)
    la.set_defaults(func=cmd_layers)

    sm = sub.add_parser(
        "summary",
        help="a model's layers, output shapes, parameters and multiply-adds (as Keras' model.summary())",
    )
    sm.add_argument("target", help="a registered model (its preset) or a run folder (its trained model)")
    sm.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a model setting, e.g. model.channels=16,32"
    )
    sm.add_argument("--json", action="store_true", help="the summary as one JSON object")
    sm.set_defaults(func=cmd_summary)

    m = sub.add_parser("models", help="list the registered models")
    m.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'ae-*'")
    m.set_defaults(func=cmd_models)

    ex = sub.add_parser(
        "export",
        help="write a run's model as an ONNX file, checked by onnxruntime against torch; needs the 'export' extra",
    )
    ex.add_argument("run", metavar="RUN", help="run folder of a classifier or autoencoder")
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="file format (default: onnx)")
    ex.add_argument("--out", metavar="FILE", help="where to write it (default: RUN/model.onnx)")
    ex.add_argument(
        "--opset", type=int, default=18, choices=range(18, 24), metavar="18..23", help="ONNX opset (default: 18)"
    )
    ex.add_argument("--json", action="store_true", help="print the export's record (as exports.json keeps it)")
    ex.set_defaults(func=cmd_export)

    r = sub.add_parser("runs", help="list run folders with their key metrics")
    r.add_argument("--root", type=Path, help="folder holding runs (default: runs/ or $MNISTLAB_RUNS)")
    r.add_argument(
        "--json", action="store_true", help="one object per run: path, kind, model, dataset, complete, summary"
    )
    r.set_defaults(func=cmd_runs)
    return p


def _bounded(least: int, most: int):
    """An argparse type: a whole number in least..most (a 30-digit number is refused here, not
    as an overflow deep in torch)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"a whole number expected, got {_short(text)}") from None
        if not least <= value <= most:
            raise argparse.ArgumentTypeError(f"must be in {least:,}..{most:,}, got {_short(text)}")
        return value

    return parse


def _short(text: str) -> str:
    from .checks import brief

    return brief(repr(text), 40)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    code = _call(args)
    if (dist := sys.modules.get(f"{__package__}.distributed")) is not None and dist.joined():
        dist.leave_job(code)  # a rank of a distributed job: out now, nothing torn down (distributed.PEER_LOST)
    return code


def _call(args) -> int:
    """The command's exit code, its errors told as one line."""
    try:
        return args.func(args)
    except MnistlabError as e:
        dist = sys.modules.get(f"{__package__}.distributed")
        if dist is not None and dist.launched():  # one rank of a distributed job
            if not dist.report_failure(str(e)):
                _err(f"rank {os.environ.get('RANK', '?')}: {e}")
        else:
            _err(str(e))
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except OSError as e:  # the file system said no: a path we may not write, a name too long, a full disk
        from .checks import brief

        where = f"{brief(str(e.filename), 120)}: " if e.filename else ""
        _err(f"{where}{e.strerror or brief(str(e), 160)}")
        return 1
    except Exception as e:
        dist = sys.modules.get(f"{__package__}.distributed")
        if dist is not None and dist.joined():
            if dist.peer_lost(e):  # another rank went away; its own error (or the launcher) says why
                dist.leave_job(dist.PEER_LOST)
            import traceback

            traceback.print_exc()  # a bug: its traceback, then out without the teardown that can abort
            dist.leave_job(1)
        raise


if __name__ == "__main__":
    sys.exit(main())
