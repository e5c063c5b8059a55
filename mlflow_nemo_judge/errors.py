"""Every exception of the package, under one root.

Every error a user can cause or hit carries the place it comes from (a config path such as
``tasks.t.metrics.m.params.scores.s.parser.pattern``, a file and line, a URL, a job id) in its message,
so the CLI can print it on one line and exit with a meaningful code (``exit_code``)::

    NemoJudgeError (exit 1)
    ├── ConfigError (exit 2)            the config/target is invalid; ``path`` names the config path
    │   ├── TemplateError               a Jinja template does not compile or needs a missing variable
    │   └── SecretError                 an ``api_key_env`` variable is not set
    ├── DatasetError (exit 2)           a dataset is missing, empty or unreadable (file/URL and line)
    ├── MissingDependencyError (exit 2) an optional extra (bleu/rouge) is not installed
    ├── EndpointError                   a model endpoint failed after all retries (URL, status)
    │   └── EndpointUnhealthy           an endpoint keeps failing or refuses us: the run stops FAILED
    ├── EvaluationError                 an evaluation could not complete
    │   └── NemoJobError                a NeMo job failed or was cancelled (job id, record, logs)
    │       └── NemoJobTimeout          the job outlived the wait timeout (it can be attached to)
    ├── TrackingError                   MLflow tracking failed, or a run cannot be found/resumed
    │   ├── TrackingConfigError (exit 2) a malformed/unsupported tracking URI, an experiment or run name
    │   │                                 beyond MLflow's limits (rejected before anything is created)
    │   └── TrackingUnavailable         the tracking server cannot be reached (the run can be resumed)
    └── NemoServiceError                a NeMo microservice answered an error (URL, status, detail)

    ConfigWarning (a UserWarning)       a likely misspelled config key (kept and passed through), or a
                                        field the local backend ignores (tool-calling's judge model)
"""

from __future__ import annotations

from typing import Any


class NemoJudgeError(Exception):
    """Root of every error raised by mlflow-nemo-judge."""

    exit_code: int = 1


class ConfigError(NemoJudgeError):
    """The config or target is invalid; ``path`` is the dotted config path at fault."""

    exit_code = 2

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class DatasetError(NemoJudgeError):
    """A dataset is missing, empty or unreadable; the message names the file/URL and line."""

    exit_code = 2


class TemplateError(ConfigError):
    """A Jinja template does not compile or references a variable the data does not have."""


class MissingDependencyError(NemoJudgeError):
    """An optional dependency (for example for bleu/rouge) is not installed."""

    exit_code = 2


class SecretError(ConfigError):
    """An API key env var named by ``api_key_env`` is not set."""


class EndpointError(NemoJudgeError):
    """A model endpoint failed after all retries; the message names the URL and status."""

    def __init__(self, url: str, message: str, status: int | None = None) -> None:
        from mlflow_nemo_judge.config.secrets import redact_url  # lazy: secrets imports this module

        self.url = redact_url(url)  # a key in the URL's query must not reach a log line or a run
        self.status = status
        super().__init__(f"{self.url}: {message}")


class EndpointUnhealthy(EndpointError):
    """An endpoint keeps failing (or refuses us: 401/403/404): the run must stop FAILED, not be scored
    NaN call by call. The thresholds are in :mod:`mlflow_nemo_judge.http.health`."""


class EvaluationError(NemoJudgeError):
    """An evaluation could not complete (a backend failure, a failed remote job)."""


class NemoJobError(EvaluationError):
    """A NeMo job failed, was cancelled or did not finish in time.

    ``job`` is the (redacted) job record and ``logs`` the job's logs when they could be fetched, so the
    tracking layer can keep both as artifacts of the failed run.
    """

    def __init__(
        self, message: str, *, job_id: str, job: dict[str, Any] | None = None, logs: str | None = None
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.job = job
        self.logs = logs


class NemoJobTimeout(NemoJobError):
    """The job was still running when the timeout passed; it keeps running and can be attached to."""


class TrackingError(NemoJudgeError):
    """MLflow tracking failed or a run cannot be found/resumed."""


class TrackingConfigError(TrackingError):
    """The tracking URI, experiment name or run name is bad input; nothing was created in MLflow."""

    exit_code = 2


class TrackingUnavailable(TrackingError):
    """The tracking server or store cannot be reached; a run it left RUNNING can be resumed later."""


class NemoServiceError(NemoJudgeError):
    """A NeMo microservice answered with an error; carries URL, status and the service's detail."""

    def __init__(self, url: str, status: int | None, detail: str) -> None:
        from mlflow_nemo_judge.config.secrets import redact_url

        url = redact_url(url)
        self.url = url
        self.status = status
        self.detail = detail
        where = f"{url} (HTTP {status})" if status is not None else url
        super().__init__(f"{where}: {detail}")


class ConfigWarning(UserWarning):
    """A config key is probably misspelled (a near-miss of a known key; kept and passed through), or a
    field the local backend does not use (kept for NeMo, ignored locally)."""
