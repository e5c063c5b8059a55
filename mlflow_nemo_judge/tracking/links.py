"""Where to look at a result in MLflow: the UI address of an experiment or run on a tracking server, or
the ``mlflow ui`` command that opens a local store (no mlflow import)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlflow_nemo_judge.config.secrets import redact_url


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def mlflow_exe() -> str:
    """The ``mlflow`` command of this environment (a newcomer's venv may not be on PATH)."""
    exe = Path(sys.executable).parent / "mlflow"
    return str(exe) if exe.exists() else "mlflow"


def view_hint(tracking_uri: str, experiment_id: str | None, run_id: str | None = None) -> str:
    """One line saying where the result is shown: the run (else experiment) page on a tracking server,
    or for a local store the command that serves it and the page to open there. The URI is redacted
    (a userinfo or query credential never reaches the terminal)."""
    if is_server(tracking_uri):
        return f"View in MLflow: {page_url(tracking_uri, experiment_id, run_id)}"
    cmd = f"{mlflow_exe()} ui --backend-store-uri {shlex.quote(tracking_uri)}"
    page = page_url("http://127.0.0.1:5000", experiment_id, run_id)
    return f"View in MLflow: run `{cmd}` and open {page}"


def page_url(base: str, experiment_id: str | None, run_id: str | None = None) -> str:
    """The UI's page of a run (``#/experiments/<id>/runs/<run>``) or experiment under ``base``."""
    # A page address for a browser: without userinfo (the browser asks for it) and without the query,
    # so no credential is printed; anything unparseable is shown redacted instead.
    try:
        parts = urlsplit(base)
        host = parts.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
        url = urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")
    except ValueError:
        url = redact_url(base).split("?", 1)[0].rstrip("/")
    if experiment_id is None:
        return url
    url += f"/#/experiments/{experiment_id}"
    return url + (f"/runs/{run_id}" if run_id else "")
