"""A FAKE NeMo-compatible service on loopback: a test double, not NVIDIA NeMo.

It lets the test suite and the offline demo exercise the ``nemo`` backend end to end with no deployment
and no internet. One port serves what a real install spreads over three services (NeMo reference §1):

* Evaluator: ``/v1/evaluation/jobs`` (create, get, list, status, results, download-results ZIP, logs,
  cancel, delete), ``/v1/evaluation/configs`` and ``/v1/evaluation/targets`` CRUD, ``/v1/evaluation/results``,
  ``POST /v1/evaluation/live`` (``live``) and the v2 job API ``/v2/evaluation/jobs`` (``v2``);
* Entity Store: ``/v1/namespaces``, ``/v1/datasets``;
* Data Store: ``/v1/datastore/namespaces`` (form data) and, at ``{base}/v1/hf``, the subset of the Hugging
  Face Hub HTTP API that ``HfApi.create_repo``/``upload_file``/``create_commit`` (regular, non-LFS files),
  ``list_repo_files``, ``repo_info`` and ``hf_hub_download`` use.

Jobs are computed for real against whatever endpoints the config names (normally the loopback mock
models) by the fake's own scorer (``scorer``, ``scorer_metrics``, ``scorer_aggregate``), which imports
none of this package's engine, plan, scoring or backends: see ``jobs``. Responses follow the documented shapes
(``eval-<base58>`` ids, ``"******"`` for keys in read-backs, the page envelope, ``{"detail": ...}``
errors). Every response carries ``Server: fake-nemo``; ``/`` and ``/health`` and the startup log line say
that this is a test double.

Modules: ``server`` (HTTP, lifecycle, routing), ``entity_store``, ``hf_hub`` (Data Store and its Hub API),
``evaluator`` (job, config, target and result endpoints), ``jobs`` (running a job), ``scorer*``
(computing it), ``entities``
(NeMo's entity envelopes) and ``wire`` (shared request/reply shapes).
"""

from __future__ import annotations

from mlflow_nemo_judge.testing.fake_nemo.jobs import FakeJob
from mlflow_nemo_judge.testing.fake_nemo.server import STARTUP_LINE, TERMINAL_STATUSES, FakeNemoService

__all__ = ["STARTUP_LINE", "TERMINAL_STATUSES", "FakeJob", "FakeNemoService"]
