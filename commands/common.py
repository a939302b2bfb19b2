"""Output helpers shared by the commands: JSON to stdout, human text, one-line notes to stderr."""
import sys

import click


def emit_json(payload) -> None:
    from deploy.schema import dumps_strict  # strict JSON: NaN and infinities become null, with a note
    click.echo(dumps_strict(payload, note, indent=2, sort_keys=True, default=str))


def note(message: str) -> None:
    """A one-line remark for the user (random weights, fallbacks); stderr keeps --json output clean."""
    from deploy.names import terminal_text
    click.echo("note: " + terminal_text(message), err=True)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(func)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def at_most(maximum: int):
    """A click callback for a size-like option: the bound declared in deploy.validate, checked as options are
    parsed, so a refusal is one line (exit 2) before any heavy import. click's IntRange keeps the minimum."""
    def callback(ctx, param, value):
        from deploy.validate import check_bound
        return check_bound(max(param.opts, key=len), value, maximum, minimum=-(2 ** 63))
    return callback


def thread_count(ctx, param, value):
    """A click callback for --threads / --workers: at most deploy.validate.THREADS_PER_CORE per core."""
    from deploy.validate import check_threads
    return check_threads(max(param.opts, key=len), value, minimum=-(2 ** 63))

