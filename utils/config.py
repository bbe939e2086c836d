"""A script's hyperparameter block as its command line: one flag per field of a Config dataclass.

Each field's help is the comment on its line in the block, so every value is described once; a named
preset is a dict of values that replaces some of the block's; flags replace both. unet_circles.py and
deep_image_prior.py build their command lines from this.
"""

import argparse
import inspect
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Literal, get_args, get_origin


class ConfigError(ValueError):
    """A bad command line or run folder; the message is one sentence naming the problem and the fix."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, as for every other user error, and exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def field_help(config_class):
    """Each field's comment in the class's source: `name: type = value  # comment` (a trailing noqa left out)."""
    source = inspect.getsource(config_class)
    return dict(re.findall(r"^\s+(\w+): .*?  # (.*?)(?:  # noqa.*)?$", source, flags=re.MULTILINE))


def add_config_flags(parser, config_class, shown, label, special=None, names=None):
    """--field-name for every field, help from its comment and the value `shown` (the preset `label`'s) has.

    special: field name -> (argparse keyword arguments, how --help shows the value) for fields that a
    plain type cannot parse. names: field name -> its flags, the first the one --help shows (e.g. a name
    the other scripts share, then the field's own as an alias).
    """
    helps = field_help(config_class)
    for f in fields(config_class):
        value = getattr(shown, f.name)
        kwargs, value = (special or {}).get(f.name, ({}, value))
        if not kwargs:
            if f.type is bool:
                kwargs = dict(action=argparse.BooleanOptionalAction)
            elif get_origin(f.type) is Literal:
                kwargs = dict(choices=get_args(f.type))
            elif get_origin(f.type) is tuple:
                kwargs = dict(nargs="+", type=get_args(f.type)[0])
            else:
                kwargs = dict(type=f.type)
        value = " ".join(map(str, value)) if isinstance(value, tuple) else value
        help_text = f"{helps[f.name]} [{label}: {value}]".replace("%", "%%")
        flags = (names or {}).get(f.name, ("--" + f.name.replace("_", "-"),))
        parser.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, help=help_text, **kwargs)


def named_preset(argv, presets):
    """The --preset of a command line before it is parsed in full, so that --help can show its values."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--preset", default="paper")
    preset = early.parse_known_args(argv)[0].preset
    return preset if preset in presets else "paper"


def given_values(args, config_class):
    """The fields given on the command line, lists as tuples."""
    given = {f.name: getattr(args, f.name) for f in fields(config_class) if hasattr(args, f.name)}
    return {name: tuple(value) if isinstance(value, list) else value for name, value in given.items()}


def check_limits(limits):
    """limits: (holds, the sentence if it does not); the first that does not hold is a ConfigError."""
    for holds, sentence in limits:
        if not holds:
            raise ConfigError(sentence)


def check_writable(folder, flag):
    """The output folder can be made and written: its nearest existing ancestor is a writable folder."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"output folder {folder} cannot be made because {existing} is a file; choose another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder {folder} cannot be written ({existing} is not writable); "
                          f"choose another {flag}")
