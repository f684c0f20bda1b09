"""One home for every name: the torch-free lists the command line offers (``mnistlab.names``)
are the keys of the tables that hold the things, and the parser offers exactly those."""

from __future__ import annotations

import argparse

from mnistlab import names
from mnistlab.attribution.maps import METHODS
from mnistlab.cli import build_parser
from mnistlab.data.sources import DATASETS
from mnistlab.studies.experiments import EXPERIMENTS
from mnistlab.studies.report import jobs


def test_each_name_list_is_its_table_s_keys():
    assert names.DATASET_NAMES == tuple(DATASETS)
    assert names.EXPERIMENT_NAMES == tuple(EXPERIMENTS)
    assert names.EXPLAIN_METHODS == tuple(METHODS)
    assert names.REPORT_JOBS == tuple(jobs())


def _choices(parser: argparse.ArgumentParser, command: str, dest: str):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return next(a for a in sub._actions if a.dest == dest).choices


def test_the_parser_offers_the_tables_names():
    parser = build_parser()
    assert tuple(_choices(parser, "explain", "method")) == tuple(METHODS)
    assert tuple(_choices(parser, "experiment", "name")) == tuple(EXPERIMENTS)
    assert set(_choices(parser, "train", "dataset")) == {*DATASETS, names.AUTO}
    report_help = next(
        a
        for a in next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        .choices["report"]
        ._actions
        if a.dest == "only"
    ).help
    assert all(j in report_help for j in jobs())


def test_every_file_flag_is_a_data_key():
    parser = build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    dests = {a.dest for a in train._actions}
    assert set(names.FILE_KEYS) <= dests
