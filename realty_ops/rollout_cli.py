"""``realty rollout status|promote|rollback|pause|resume``: a person's hand on the rollout of
the price model (each move one audited rollout event, as the controller's)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from realty.settings import get_settings

app = typer.Typer(help="The price model's rollout: shadow, canary steps, promotion, rollback.")
console = Console()

Reason = Annotated[str, typer.Option("--reason", "-r", help="Recorded with the move")]


def _client():
    from mlflow import MlflowClient

    return MlflowClient(get_settings().mlflow_url)


@app.command()
def status(events: Annotated[int, typer.Option(help="How many recent moves to list")] = 10) -> None:
    """Production, challenger, stage and share, and the recent moves."""
    from realty.model import rollout

    settings, client = get_settings(), _client()
    name = settings.price_model_name
    recovered = rollout.recover(settings, client, name)
    if recovered is not None:
        console.print(f"completed move {recovered}, which a crash had interrupted")
    console.print(f"{name}: {rollout.read_state(client, name).describe()}")
    table = Table("#", "applied", "action", "actor", "after", "reason")
    for event in rollout.events(settings, name, events):
        applied = event["applied_at"].strftime("%Y-%m-%d %H:%M:%S") if event["applied_at"] else "-"
        after = rollout.RolloutState(**event["after"]).describe()
        table.add_row(str(event["event_id"]), applied, event["action"], event["actor"], after,
                      event["reason"])  # fmt: skip
    console.print(table)


def _move(action: str, reason: str) -> None:
    from realty.model import rollout

    settings = get_settings()
    name = settings.price_model_name
    try:
        event = rollout.move(
            settings, _client(), name, rollout.MANUAL_MOVES[action], action, "cli", reason
        )
    except rollout.RolloutError as error:
        console.print(f"[bold red]error:[/] {name}: {error}")
        raise typer.Exit(1) from error
    console.print(f"{name}: {event.after.describe()}")


@app.command()
def promote(reason: Reason = "promoted by hand") -> None:
    """The challenger becomes production now (the former production: previous)."""
    _move("promote", reason)


@app.command()
def rollback(reason: Reason = "rolled back by hand") -> None:
    """The challenger leaves the rollout; with no challenger, production goes back to previous
    (run again to undo that)."""
    _move("rollback", reason)


@app.command()
def pause(reason: Reason = "paused by hand") -> None:
    """The controller stops stepping (guardrail rollbacks still happen)."""
    _move("pause", reason)


@app.command()
def resume(reason: Reason = "resumed by hand") -> None:
    _move("resume", reason)
