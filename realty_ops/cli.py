"""``realty``: one command line for the whole platform."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from realty.settings import Settings, get_settings
from realty_ops import rollout_cli

app = typer.Typer(help="realty: continuous training for house-price models.", no_args_is_help=True)
app.add_typer(rollout_cli.app, name="rollout")
console = Console()


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    for noisy in ("httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(1)


def _print_urls(urls: dict[str, str]) -> None:
    for name, url in urls.items():
        console.print(f"  {name:<18} {url}")


def _already_stopping(signum: int, frame: object) -> None:
    """A second Ctrl-C or SIGTERM must not cut the stop short (that orphaned children)."""
    console.print("already stopping the stack; every service is stopped before the exit")


def _stop_on_signal(signum: int, frame: object) -> None:
    """The first Ctrl-C or SIGTERM (`realty down`) stops the stack; later ones are ignored."""
    signal.signal(signal.SIGINT, _already_stopping)
    signal.signal(signal.SIGTERM, _already_stopping)
    raise KeyboardInterrupt


def _run_stack(settings: Settings, run: Callable) -> None:
    """Start the stack, call ``run(stack)`` until it returns, Ctrl-C or `realty down`, then
    stop every service: whatever happens, nothing is left running."""
    from realty_ops.stack import Stack, StackError, state_file

    settings.home.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings, state_path=state_file(settings))
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        with console.status("starting the stack") as status:
            stack.start(
                on_ready=lambda s: status.update(f"{s.name} is up; starting the next service")
            )
        run(stack)
    except KeyboardInterrupt:
        console.print("stopping the stack ...")
    except StackError as error:
        raise _fail(str(error)) from None
    finally:
        signal.signal(signal.SIGINT, _already_stopping)
        signal.signal(signal.SIGTERM, _already_stopping)
        stack.stop()


def supervise(stack) -> None:
    """Restart what exits, until Ctrl-C or `realty down`."""
    while True:
        stack.supervise()
        time.sleep(1.0)


@app.command()
def up() -> None:
    """Start the embedded stack (PostgreSQL, MLflow, simulator, Dagster) until Ctrl-C."""

    def run(stack) -> None:
        console.print("[bold green]realty is up[/]  (Ctrl-C or `realty down` stops it)")
        _print_urls(stack.urls)
        supervise(stack)

    _run_stack(get_settings(), run)


@app.command()
def down() -> None:
    """Stop the stack started by `realty up` or `realty demo`, even if that process died."""
    from realty_ops.stack import (
        STOP_TIMEOUT_S,
        process_alive,
        read_state,
        state_file,
        stop_recorded,
    )

    path = state_file(get_settings())
    state = read_state(path)
    if state is None:
        console.print("no stack is running")
        return
    with console.status("stopping the stack"):
        if process_alive(state["pid"], state["create_time"]):
            os.kill(state["pid"], signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S * (len(state["services"]) + 1)
            while process_alive(state["pid"], state["create_time"]):
                if time.monotonic() > deadline:
                    break  # it hangs: stop its services ourselves
                time.sleep(0.2)
        # What a dead (or hung) supervisor left running, from its state file.
        leftover = stop_recorded(state)
        path.unlink(missing_ok=True)
    if leftover:
        console.print(f"stopped what the stack left running: {', '.join(leftover)}")
    console.print("stopped")


@app.command()
def demo() -> None:
    """Start the stack, ingest every batch of the source through Dagster, print the story."""
    from realty_ops import demo as demo_module

    os.environ.setdefault("REALTY_SENSOR_INTERVAL_S", "2")
    get_settings.cache_clear()
    settings = get_settings()
    exit_after = os.environ.get("DEMO_EXIT") == "1"
    outcome: dict[str, bool] = {}

    def run(stack) -> None:
        outcome["ok"] = demo_module.run(settings, stack, console)
        if not exit_after:
            console.print("the stack keeps running; Ctrl-C stops it")
            supervise(stack)

    _run_stack(settings, run)
    if exit_after and not outcome.get("ok"):
        raise typer.Exit(1)


@app.command()
def source(
    csv: Annotated[Path | None, typer.Option(help="Serve this CSV in slices")] = None,
    rows: Annotated[int | None, typer.Option(help="Rows per generated batch")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
) -> None:
    """Run the data-API simulator alone."""
    from source.app import serve

    overrides = {"source_csv": csv, "source_rows_per_batch": rows, "source_port": port}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    serve(settings)


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    workers: Annotated[int | None, typer.Option(help="uvicorn worker processes")] = None,
) -> None:
    """Run the serving API (price, vision, digits) alone: uvicorn on REALTY_HOST."""
    import uvicorn

    settings = get_settings()
    workers = workers or settings.serving_workers
    if workers > 1:
        _share_metrics_between_workers(settings.home / "metrics")
    uvicorn.run(
        "serving.main:create_app",
        factory=True,
        host=settings.host,
        port=port or settings.serving_port,
        workers=workers,
        log_level="info",
        access_log=False,  # every request is counted in /metrics and logged in inference_log
    )


def _share_metrics_between_workers(directory: Path) -> None:
    """Prometheus multiprocess mode (serving/metrics.py): the workers inherit the variable. The
    directory starts empty, since counters left by an earlier server would add to this one's."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    from serving.metrics import MULTIPROC_DIR_ENV

    os.environ[MULTIPROC_DIR_ENV] = str(directory)


@app.command()
def ui(port: Annotated[int | None, typer.Option(help="Port to listen on")] = None) -> None:
    """Run the web app (Gradio) alone; it calls the serving API and MLflow of the settings."""
    from ui.app import launch

    settings = get_settings()
    if port is not None:
        settings = settings.model_copy(update={"ui_port": port})
    launch(settings)


@app.command()
def migrate() -> None:
    """Create the platform's databases on REALTY_PG_URL if missing and apply their DDL (what
    `realty up` does at start; compose and Kubernetes run it before the services)."""
    from realty.store.db import ensure_databases

    created = ensure_databases(get_settings())
    console.print(f"databases ready (created: {', '.join(created) or 'none'})")


dagster_app = typer.Typer(
    help="Dagster's roles, one a container of the `code` image (`realty up` starts them itself).",
    no_args_is_help=True,
)
app.add_typer(dagster_app, name="dagster")


def _dagster_env(settings: Settings) -> dict[str, str]:
    """The environment, with the two variables Dagster needs derived as `realty up` derives them
    where it does not set them (an image does). Not realty_ops.stack's service_env: importing the
    stack (pandas) would cost each role seconds of CPU before it even starts."""
    derived = {
        "DAGSTER_HOME": str(settings.dagster_home),
        "REALTY_DAGSTER_PG_URL": settings.database_url("dagster"),
    }
    return {**derived, **os.environ}


def _exec(argv: list[str], env: dict[str, str]) -> None:
    """Become the role's process, so that a container's stop signal reaches Dagster itself."""
    os.execve(argv[0], argv, env)


@dagster_app.command("code-server")
def dagster_code_server() -> None:
    """The code location as a gRPC server on REALTY_HOST:REALTY_DAGSTER_CODE_PORT."""
    from realty_ops.dagster_roles import code_server_command

    settings = get_settings()
    _exec(code_server_command(settings), _dagster_env(settings))


@dagster_app.command("webserver")
def dagster_webserver() -> None:
    """The Dagster UI on REALTY_HOST:REALTY_DAGSTER_PORT, for the workspace in DAGSTER_HOME."""
    from realty_ops.dagster_roles import webserver_command

    settings = get_settings()
    env = _dagster_env(settings)
    _exec(webserver_command(settings, Path(env["DAGSTER_HOME"])), env)


@dagster_app.command("daemon")
def dagster_daemon() -> None:
    """Sensors, schedules and the run queue, for the workspace in DAGSTER_HOME."""
    from realty_ops.dagster_roles import daemon_command

    env = _dagster_env(get_settings())
    _exec(daemon_command(Path(env["DAGSTER_HOME"])), env)


@app.command()
def status() -> None:
    """Which services are up, where their UIs are, what has been ingested, what the source lost."""
    from realty_ops.status import ingestion_summary, service_statuses

    settings = get_settings()
    table = Table("service", "state", "restarts", "url")
    for row in service_statuses(settings):
        state = "[green]up[/]" if row.up else "[red]down[/]"
        if row.supervisor_state not in (None, "running"):
            state += f" ({row.supervisor_state})"
        restarts = "-" if row.restarts is None else str(row.restarts)
        table.add_row(row.name, state, restarts, row.url)
    console.print(table)
    console.print(ingestion_summary(settings))


@app.command()
def reproduce(
    version: Annotated[str, typer.Argument(help="A version of the price model, e.g. 3")],
) -> None:
    """Clean a price model version's batches again from RAW and check the snapshot hash it
    records (exit 1 and what differs when it is not reproduced)."""
    from mlflow.exceptions import MlflowException

    from realty.model.reproduce import reproduce as reproduce_version

    settings = get_settings()
    try:
        result = reproduce_version(settings, version)
    except (MlflowException, KeyError) as error:
        raise _fail(f"{settings.price_model_name} v{version}: {error}") from error
    for line in result.differences:
        console.print(f"  {line}", markup=False)
    if result.differences:
        raise _fail(f"{settings.price_model_name} v{version} is not reproduced from RAW")
    snapshot = result.reproduced
    console.print(
        f"{settings.price_model_name} v{version} reproduced: {snapshot['rows']} listings of "
        f"{len(snapshot['batch_keys'])} batches, snapshot {snapshot['content_sha256']}"
    )
