"""One exception root for the package.

Every error a user can cause or hit carries the place it comes from (a config path such as
``tasks.t.metrics.m.params.scores.s.parser.pattern``, a file and line, a URL, a job id) in its message,
so the CLI can print it on one line and exit with a meaningful code.
"""

from __future__ import annotations


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


class EvaluationError(NemoJudgeError):
    """An evaluation could not complete (a backend failure, a failed remote job)."""


class TrackingError(NemoJudgeError):
    """MLflow tracking failed or a run cannot be found/resumed."""


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
