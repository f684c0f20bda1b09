"""Writes the site's reference pages from the code itself at build time (mkdocs-gen-files),
so they cannot drift: every CLI command and option from the argparse parser, the config
keys with their defaults and comments from the dataclasses and the model registry, the
JSON shapes from the --json options' help and the web server's docstring, one API page per
module (mkdocstrings), and the committed benchmark figures the explanation pages show."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import io
import re
import sys
import tempfile
import tokenize
from pathlib import Path

import mkdocs_gen_files
import nbformat

from mnistlab import cli
from mnistlab.config import DataConfig, TrainConfig
from mnistlab.models._registry import _REGISTRY

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import executed  # noqa: E402
import layout  # noqa: E402

API_MODULES = {
    "Training and runs": [
        "mnistlab.train",
        "mnistlab.train.run",
        "mnistlab.train.steps",
        "mnistlab.train.track",
        "mnistlab.train.live",
        "mnistlab.runs",
        "mnistlab.config",
        "mnistlab.models._registry",
    ],
    "Data": ["mnistlab.data", "mnistlab.data.sources", "mnistlab.data.batches", "mnistlab.data.augment"],
    "Reading images": [
        "mnistlab.reading",
        "mnistlab.reading.images",
        "mnistlab.reading.reader",
        "mnistlab.reading.photos",
    ],
    "Models": [
        "mnistlab.models.classifiers",
        "mnistlab.models.autoencoders",
        "mnistlab.models.coupled",
        "mnistlab.models.layers",
    ],
    "Inference, explanation, export": [
        "mnistlab.infer",
        "mnistlab.summaries",
        "mnistlab.attribution",
        "mnistlab.attribution.maps",
        "mnistlab.attribution.faithfulness",
        "mnistlab.calibrate",
        "mnistlab.export",
    ],
    "Figures": ["mnistlab.viz"],
    "Studies": [
        "mnistlab.studies.report",
        "mnistlab.studies.experiments",
        "mnistlab.studies.experiments.dream",
        "mnistlab.studies.experiments.unbiased",
        "mnistlab.studies.experiments.reencode",
        "mnistlab.studies.sweep",
        "mnistlab.studies.bench",
        "mnistlab.studies.baseline",
    ],
    "Scale": ["mnistlab.distributed"],
    "Web page": ["mnistlab.web.app", "mnistlab.web.training"],
}


def subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def cli_page() -> str:
    parser = cli.build_parser()
    parser.prog = "mnistlab"
    out = [
        "# Command line",
        "",
        "Generated from the argparse parser of `mnistlab` at build time: what `--help` prints.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    for name, text, sub in subcommands(parser):
        sub.prog = f"mnistlab {name}"
        out += [f"## `mnistlab {name}`", "", text or "", "", "```text", sub.format_help().rstrip(), "```", ""]
        for inner, inner_text, leaf in subcommands(sub):
            leaf.prog = f"mnistlab {name} {inner}"
            out += [
                f"### `mnistlab {name} {inner}`",
                "",
                inner_text or "",
                "",
                "```text",
                leaf.format_help().rstrip(),
                "```",
                "",
            ]
    return "\n".join(out)


def field_comments(cls) -> dict[str, str]:
    """The comment at the end of each field's line in the dataclass's source."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments, line_field = {}, {}
    for n, line in enumerate(src.splitlines(), 1):
        m = re.match(r"\s+(\w+)\s*:", line)
        if m:
            line_field[n] = m.group(1)
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT and tok.start[0] in line_field:
            comments[line_field[tok.start[0]]] = tok.string.lstrip("# ").strip()
    return comments


def fields_table(obj_or_cls, section: str) -> list[str]:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    notes = field_comments(cls)
    from mnistlab.checks import field_range

    rows = ["| key | default | range | note |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if isinstance(obj_or_cls, type):
            value = (
                f.default
                if f.default is not dataclasses.MISSING
                else (f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
            )
        else:
            value = getattr(obj_or_cls, f.name)
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        note = notes.get(f.name, "").replace("|", "\\|")
        r = field_range(f)
        if r is None:
            span = ""
        elif all(isinstance(v, int) for v in r[:2]):
            span = f"{r[0]:,}..{r[1]:,}"
        else:
            span = f"{r[0]:g}..{r[1]:g}"
        rows.append(f"| `{section}.{f.name}` | `{shown}` | {span} | {note} |")
    return rows


def config_page() -> str:
    out = [
        "# Config keys",
        "",
        "Generated from the config dataclasses and the model registry at build time. A key is set",
        "in a TOML/YAML file's `[model]`, `[train]` or `[data]` section or by `--set KEY=VALUE`",
        "(`section.key`, or the bare key when only one section has it).",
        "",
        "## `train`",
        "",
        *fields_table(TrainConfig, "train"),
        "",
        "## `data`",
        "",
        *fields_table(DataConfig, "data"),
        "",
        "## `model`, per registered model",
        "",
        "Each model's preset; `train` overrides it brings are listed under it.",
        "",
    ]
    for name in sorted(_REGISTRY):
        spec = _REGISTRY[name]
        out += [f"### `{name}`", "", f"{spec.description} ({spec.task}; family `{spec.family.__name__}`)", ""]
        if dataclasses.is_dataclass(spec.config):
            out += fields_table(spec.config, "model")
        if spec.train:
            out += ["", "Training preset: " + ", ".join(f"`train.{k}={v}`" for k, v in spec.train.items())]
        out.append("")
    return "\n".join(out)


def json_page() -> str:
    from mnistlab.web import app as server

    out = [
        "# JSON shapes",
        "",
        "Generated at build time from the `--json` options' help and the web server's docstring.",
        "",
        "## Commands with `--json`",
        "",
    ]
    parser = cli.build_parser()
    for name, _, sub in subcommands(parser):
        for action in sub._actions:
            if "--json" in action.option_strings:
                out += [f"### `mnistlab {name} --json`", "", action.help.replace("%%", "%"), ""]
    doc = inspect.getdoc(server) or ""
    api = doc[doc.index("JSON API") :] if "JSON API" in doc else doc
    out += ["## The web page's API", "", "```text", api.split("\n\nHardening")[0].rstrip(), "```", ""]
    return "\n".join(out)


def api_pages() -> list[tuple[str, str]]:
    pages = []
    index = [
        "# Library API",
        "",
        "Generated from the docstrings by mkdocstrings. `import mnistlab` gives the names most",
        "scripts need (`load_dataset`, `build_config`, `train_run`, `load_run`, `create_model`,",
        "`list_models`, `fit`, `evaluate`, `predict`, `explain`); the modules hold the rest.",
        "",
    ]
    for group, modules in API_MODULES.items():
        index += [f"## {group}", ""]
        for mod in modules:
            slug = mod.removeprefix("mnistlab.")
            first = (importlib.import_module(mod).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            first = first.split(". ")[0].rstrip(".") + "."  # one line: the first sentence
            index.append(f"- [`{mod}`]({slug}.md): {first}")
            pages.append(
                (f"reference/api/{slug}.md", f"# `{mod}`\n\n::: {mod}\n    options:\n      show_root_heading: false\n")
            )
        index.append("")
    pages.append(("reference/api/index.md", "\n".join(index)))
    return pages


def main() -> None:
    with mkdocs_gen_files.open("reference/cli.md", "w") as f:
        f.write(cli_page())
    with mkdocs_gen_files.open("reference/config.md", "w") as f:
        f.write(config_page())
    with mkdocs_gen_files.open("reference/json.md", "w") as f:
        f.write(json_page())
    for path, text in api_pages():
        with mkdocs_gen_files.open(path, "w") as f:
            f.write(text)
    # the tutorials with their outputs: as `make test` executed them, or executed here
    for source in sorted((ROOT / "docs" / "tutorials").glob("*.py")):
        nb = executed.kept(source)
        if nb is None:
            with tempfile.TemporaryDirectory() as tmp:
                nb = executed.execute(source, Path(tmp))
        with mkdocs_gen_files.open(f"tutorials/{source.stem}.ipynb", "w") as f:
            nbformat.write(nb, f)
    # the import graph of the package as it is now (development.md)
    with tempfile.TemporaryDirectory() as tmp:
        png = layout.draw(Path(tmp) / "imports.png")
        with mkdocs_gen_files.open("figures/imports.png", "wb") as f:
            f.write(png.read_bytes())
    # the committed figures of benchmarks/, shown by the explanation pages
    for folder in ("report-cpu-2core", "explain", "explain/report", "photos"):
        for png in sorted((ROOT / "benchmarks" / folder).glob("*.png")):
            with mkdocs_gen_files.open(f"figures/{folder}/{png.name}", "wb") as f:
                f.write(png.read_bytes())


main()
