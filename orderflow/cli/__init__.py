"""The `orderflow` command line: one module per command group, joined here."""

from __future__ import annotations

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


def main() -> None:
    """Entry point of the `orderflow` console script."""
    app()
