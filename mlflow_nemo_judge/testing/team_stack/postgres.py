"""A throw-away PostgreSQL server on 127.0.0.1: found binaries, a fresh cluster, run as ``nobody`` under root.

The machine's server binaries (``initdb`` on PATH or ``/usr/lib/postgresql/*/bin``) come first, else the
ones the ``pgserver`` wheel ships (a dev extra). PostgreSQL refuses to run as root, so as root it runs
as ``nobody`` from a data folder chowned to it. The password always holds ``@:/#%``, to prove every URI
built from it is quoted.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_nemo_judge.testing.team_stack.processes import (
    START_TIMEOUT,
    TeamStackError,
    free_port,
    log_tail,
    stop_group,
    wait_until,
)

__all__ = [
    "DB_NAME",
    "DB_USER",
    "PASSWORD_SPECIALS",
    "Postgres",
    "find_postgres_bin",
    "pgserver_bin",
    "postgres_bin_candidates",
    "start_postgres",
]

PASSWORD_SPECIALS = "@:/#%"  # every character that breaks a URI unless quoted
DB_USER = "mlflow"
DB_NAME = "mlflow"


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server: where it listens and how to log in."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    log: Path

    def uri(self, database: str = DB_NAME) -> str:
        """A SQLAlchemy URI; user and password URL-quoted, so ``@:/#%`` in them cannot break it.

        The driver is named: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, 2.0 to psycopg2.
        """
        user = urllib.parse.quote(self.user, safe="")
        password = urllib.parse.quote(self.password, safe="")
        return f"postgresql+psycopg2://{user}:{password}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = DB_NAME, timeout: int = 5) -> Any:
        """A psycopg2 connection (keyword arguments: libpq reads no SQLAlchemy driver suffix)."""
        import psycopg2

        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            connect_timeout=timeout,
        )


def _pg_version(bin_dir: Path) -> tuple[int, ...]:
    digits = bin_dir.parent.name
    return (int(digits),) if digits.isdigit() else (0,)


def pgserver_bin() -> Path | None:
    """The server binaries the ``pgserver`` wheel ships (the fallback where the machine has none)."""
    # find_spec locates the wheel without importing it (its import sets up platform dirs and locks)
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def postgres_bin_candidates() -> list[Path]:
    """Where PostgreSQL server binaries may be, in order: PATH, Debian's folders (newest first), pgserver."""
    found: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    system = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    found += sorted(system, key=_pg_version, reverse=True)
    wheel = pgserver_bin()
    if wheel is not None:
        found.append(wheel)
    return list(dict.fromkeys(found))  # PATH's initdb is usually a symlink into Debian's folder


def find_postgres_bin() -> Path:
    """The first folder holding runnable ``initdb`` and ``postgres``."""
    candidates = postgres_bin_candidates()
    for folder in candidates:
        if all(os.access(folder / exe, os.X_OK) for exe in ("initdb", "postgres")):
            return folder
    looked = ", ".join(str(c) for c in candidates) or "nowhere"
    raise TeamStackError(
        "PostgreSQL: no server binaries (initdb, postgres) on PATH, in /usr/lib/postgresql/*/bin or in the "
        f"pgserver package (pip install -e '.[dev]'); looked in: {looked}"
    )


def _unprivileged() -> dict[str, Any]:
    """Popen arguments that drop root to ``nobody`` (PostgreSQL refuses to run as root); else none."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


# The server needs no PATH of the caller's; a fixed locale keeps initdb's output and collation stable.
_PG_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "LANG": "C"}
# Durability is worthless for a throw-away test cluster; these settings halve its write cost.
_PG_TUNING = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def _initdb(
    bin_dir: Path, root: Path, password: str, log: Path, run_as: dict[str, Any], timeout: float
) -> Path:
    """A new cluster in ``root/data`` owned by ``run_as``'s user, superuser ``mlflow`` with ``password``."""
    data, pwfile = root / "data", root / "pwfile"
    pwfile.touch(mode=0o600)  # readable by its owner only, and deleted right after initdb
    pwfile.write_text(password + "\n")
    if run_as:
        for path in (root, pwfile):
            os.chown(path, run_as["user"], run_as["group"])
    cmd = [str(bin_dir / "initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}"]
    cmd += ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"]
    try:
        with open(log, "ab") as out:
            code = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=_PG_ENV, timeout=timeout, check=False, **run_as
            ).returncode
    except (OSError, subprocess.SubprocessError) as exc:
        raise TeamStackError(f"PostgreSQL: cannot run {cmd[0]}: {exc}") from None
    finally:
        pwfile.unlink(missing_ok=True)
    if code != 0:
        raise TeamStackError(f"PostgreSQL: initdb ({bin_dir}) failed; {log}:\n{log_tail(log, password)}")
    return data


@contextlib.contextmanager
def start_postgres(
    log_dir: Path, *, bin_dir: Path | None = None, timeout: float = START_TIMEOUT
) -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1 with database ``mlflow``, removed on exit."""
    bin_dir = bin_dir or find_postgres_bin()
    password = secrets.token_urlsafe(12) + PASSWORD_SPECIALS  # made up per run, never a real secret
    log = log_dir / "postgres.log"
    run_as = _unprivileged()
    # Not under pytest's tmp_path: that is 0700 root, which ``nobody`` could not enter.
    root = Path(tempfile.mkdtemp(prefix="nemo-judge-pg-"))
    try:
        data = _initdb(bin_dir, root, password, log, run_as, timeout)
        port = free_port()
        cmd = [str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port)]
        cmd += ["-k", str(root), *(arg for t in _PG_TUNING for arg in ("-c", t))]
        try:
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, env=_PG_ENV, start_new_session=True, **run_as
                )
        except OSError as exc:
            raise TeamStackError(f"PostgreSQL: cannot run {cmd[0]}: {exc}") from None
        try:
            server = Postgres("127.0.0.1", port, DB_USER, password, log)

            def ready() -> bool:
                server.connect("postgres", timeout=2).close()
                return True

            why = wait_until(ready, proc, timeout)
            if why is not None:
                raise TeamStackError(
                    f"PostgreSQL on 127.0.0.1:{port} {why}; {log}:\n{log_tail(log, password)}"
                )
            con = server.connect("postgres")
            try:
                con.autocommit = True  # CREATE DATABASE cannot run inside a transaction
                with con.cursor() as cur:
                    cur.execute(f"CREATE DATABASE {DB_NAME}")
            finally:
                con.close()
            yield server
        finally:
            stop_group(proc, signal.SIGINT)  # SIGINT is PostgreSQL's "fast" shutdown
    finally:
        shutil.rmtree(root, ignore_errors=True)
