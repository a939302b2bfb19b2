"""Output helpers shared by the commands: JSON to stdout, human text, one-line notes to stderr."""
import json
import sys

import click


def emit_json(payload) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))


def note(message: str) -> None:
    """A one-line remark for the user (random weights, fallbacks); stderr keeps --json output clean."""
    click.echo("note: " + message, err=True)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(func)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
