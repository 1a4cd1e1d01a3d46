"""``add_config_arguments``: DeepSpeed's command-line arguments (imports no torch).

DeepSpeed facts (deepspeed/__init__.py ``_add_core_arguments``): an argument group "DeepSpeed" with
``--deepspeed`` (a flag for the user's code, no effect on the engine), ``--deepspeed_config`` (the JSON
config path), and the deprecated ``--deepscale`` / ``--deepscale_config``.
"""
from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add DeepSpeed's arguments to ``parser`` (changed in place) and return it.

    ``initialize(args=...)`` reads ``args.deepspeed_config`` (or the deprecated ``args.deepscale_config``)."""
    if not isinstance(parser, argparse.ArgumentParser):
        raise TypeError(f"add_config_arguments takes an argparse.ArgumentParser, got a {type(parser).__name__}")
    group = parser.add_argument_group("DeepSpeed", "DeepSpeed configurations")
    group.add_argument("--deepspeed", default=False, action="store_true",
                       help="Enable DeepSpeed (helper flag for user code, no impact on the engine)")
    group.add_argument("--deepspeed_config", default=None, type=str, help="DeepSpeed json configuration file.")
    group.add_argument("--deepscale", default=False, action="store_true",
                       help="Deprecated enable DeepSpeed (helper flag for user code, no impact on the engine)")
    group.add_argument("--deepscale_config", default=None, type=str,
                       help="Deprecated DeepSpeed json configuration file.")
    return parser
