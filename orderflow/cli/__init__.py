"""The `orderflow` command line: one module per command group, joined here."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import NoReturn

import typer

from orderflow.cli import (
    amazon,
    attention,
    codec,
    db,
    demo,
    dev,
    doctor,
    inbox,
    orders,
    replay,
    returns,
    sandbox,
    setup,
    worker,
    xref,
)

app = typer.Typer(
    name="orderflow",
    help="Durable order-to-cash and return-to-refund sagas on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold credentials
)
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(orders.app, name="orders")
app.add_typer(returns.app, name="returns")
app.add_typer(db.app, name="db")
app.add_typer(inbox.app, name="inbox")
app.add_typer(xref.app, name="xref")
app.add_typer(amazon.app, name="amazon")
app.add_typer(attention.app, name="attention")
app.command("worker")(worker.worker)
app.command("dev")(dev.dev)
app.command("demo")(demo.demo)
app.command("codec-server")(codec.codec_server)
app.command("codec-key")(codec.codec_key)
app.command("replay")(replay.replay)
app.command("doctor")(doctor.doctor)
app.command("setup")(setup.setup)


def main(prog_name: str | None = None) -> NoReturn:
    """Entry point of the `orderflow` console script: run the command, then exit with its code as it is.

    Temporal's client threads can call into Python while the interpreter finalizes, which aborts
    the process (SIGABRT, exit 134; temporalio/sdk-python#300) after a command that used a client,
    now and then. An operator's script reads the exit code, so once the command has finished, what
    the interpreter's teardown would have done is done here (spans exported, streams flushed) and
    the process leaves with the command's own code.
    """
    try:
        app(prog_name=prog_name)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    from orderflow.telemetry import shutdown_tracing

    shutdown_tracing()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
