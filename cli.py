#!/usr/bin/env python3
"""eca-deploy: ECA-Net classifiers from PyTorch checkpoints to ONNX, INT8/FP16 and TensorRT engines.

Commands are imported only when run, so `--help` works without torch, TensorRT or CUDA bindings loaded.
"""
import importlib
import os
import sys

import click

# command name -> (module, attribute, one-line help). The help is here so `cli.py --help` imports nothing.
COMMANDS = {
    "models": ("commands.models", "models_command", "List the model zoo with #Param and GFLOPs (binary units: 2^20 parameters, 2^30 MACs)."),
    "export": ("commands.export", "export_command", "Export a zoo model to a checked, simplified ONNX model."),
    "calibrate": ("commands.calibrate", "calibrate_command",
                  "INT8 Q/DQ models, TensorRT calibration cache and FP16 model from calibration images."),
    "compare-layers": ("commands.compare_layers", "compare_layers_command",
                       "Per-layer SQNR of a Q/DQ or FP16 model against its FP32 model, worst layer first."),
    "build": ("commands.build", "build_command", "Build a TensorRT engine and its sidecar from an ONNX model, here."),
    "bundle": ("commands.bundle", "bundle_command", "Pack ONNX models, caches, labels and deploy/ for a Jetson."),
    "attention": ("commands.attention", "attention_command",
                  "Per-class ECA/SE channel weights of every block, and their parity in a deployed model."),
    "benchmark-engine": ("commands.benchmark_engine", "benchmark_engine_command",
                         "Parity and speed of ONNX models and TensorRT engines against PyTorch."),
    "pipeline": ("commands.pipeline", "pipeline_command",
                 "Export, FP16, INT8, engines, benchmark and report in one run; unchanged steps are skipped."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        from deploy.cliutil import report_error
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001  (report_error re-raises real bugs)
            code = report_error(exc)
            if code is None:
                raise
            ctx.exit(code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="eca-deploy")
def cli():
    """Deploy ECA-Net classifiers: export -> calibrate -> build -> benchmark-engine."""


def main():
    from deploy.interrupts import INTERRUPTED_EXIT, finishing, install_interrupt_handler, say_interrupted, was_interrupted
    install_interrupt_handler()
    try:
        try:
            # `python cli.py ...` and the installed `eca-deploy` console script show their own name in usage lines.
            # Not standalone: click would print "Aborted!" and exit 1 for a Ctrl-C outside a command.
            result = cli(prog_name=os.path.basename(sys.argv[0]) or "cli.py", standalone_mode=False)
            code = result if isinstance(result, int) and not isinstance(result, bool) else 0
        finally:
            finishing()  # from here to the end of the interpreter's shutdown a signal exits 130 at once
    except click.UsageError as exc:  # one line, like every other user error; --help says the rest
        command = exc.ctx.command_path if exc.ctx is not None else "cli.py"
        click.echo("error: {} (see {} --help)".format(exc.format_message(), command), err=True)
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        code = INTERRUPTED_EXIT
        say_interrupted()
    if was_interrupted() and code != INTERRUPTED_EXIT:  # a library swallowed the KeyboardInterrupt
        say_interrupted()
        code = INTERRUPTED_EXIT
    return code


if __name__ == "__main__":
    sys.exit(main())
