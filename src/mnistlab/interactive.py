"""``train --interactive``: ask for each hyperparameter, its default shown.

Answers may come from a terminal (an invalid answer is asked again) or from a file on
standard input (``< answers.txt``, one answer a line, blank for the default), where an
invalid answer fails with its line number.
"""

from __future__ import annotations

import dataclasses
from typing import IO

from .checks import brief
from .config import RunConfig, apply_overrides
from .errors import ConfigError

# The training keys worth asking about; every field of the model's config is asked too.
TRAIN_KEYS = ("epochs", "batch_size", "lr")
HIDDEN_MODEL_KEYS = ("encoder_model", "encoder_args")  # filled by the program, not the user


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


MAX_ANSWER = 1000  # characters of one answer line


def questions(cfg: RunConfig) -> list[tuple[str, str]]:
    model = [("model", f.name) for f in dataclasses.fields(cfg.model) if f.name not in HIDDEN_MODEL_KEYS]
    return model + [("train", k) for k in TRAIN_KEYS]


def ask_config(cfg: RunConfig, stdin: IO[str], stdout: IO[str], from_terminal: bool) -> RunConfig:
    """Return `cfg` with the user's answers applied (and validated)."""
    lineno = 0
    for section, key in questions(cfg):
        while True:
            current = getattr(cfg.sections()[section], key)
            stdout.write(f"{section}.{key} [{_show(current)}]: ")
            stdout.flush()
            line = stdin.readline(MAX_ANSWER + 1)  # bounded: /dev/zero on stdin is one endless line
            lineno += 1
            if line == "":
                raise ConfigError(f"answers ended at line {lineno}, before {section}.{key}")
            if len(line) > MAX_ANSWER:
                raise ConfigError(f"answers line {lineno}: longer than {MAX_ANSWER:,} characters; no setting is")
            answer = line.strip()
            if not from_terminal:
                stdout.write(brief(answer, 120) + "\n")
            if not answer:
                break
            try:
                obj = apply_overrides(cfg.sections()[section], {key: answer}, section)
                _validate_key(obj, f"{section}.{key}")
            except ConfigError as e:
                if not from_terminal:
                    raise ConfigError(f"answers line {lineno}: {e}") from None
                stdout.write(f"  {e}; try again\n")
                continue
            secs = cfg.sections()
            secs[section] = obj
            cfg = RunConfig(cfg.model_name, secs["model"], secs["train"], secs["data"])
            break
    cfg.validate()
    return cfg


def _validate_key(obj, name: str) -> None:
    """Validate the section, but only complain about the key just answered: others may
    still be waiting for their answer (the whole config is validated at the end)."""
    try:
        if hasattr(obj, "validate"):
            obj.validate()
    except ConfigError as e:
        if e.subject == name:
            raise
