"""The notebook example, executed cell by cell in a real Jupyter kernel, then checked in MLflow.

A notebook cell runs inside the kernel's running event loop, where a naive ``asyncio.run`` fails; this
is the only test that exercises the public API from there. The kernel is this venv's Python (a
kernelspec written for the test), so a fresh clone needs no system Jupyter, and the notebook's runs land
in the test's throw-away sqlite store through ``MLFLOW_TRACKING_URI``, which the kernel inherits.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "notebook" / "doctor_consults.ipynb"
EXPERIMENT = "doctor-consults-notebook"  # the name the notebook logs to
TASK = "consult_summary_eval"
KEYS = [f"{TASK}/completeness/completeness", f"{TASK}/correctness/correctness"]
KERNEL = "mlflow-nemo-judge-test"


def _venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that launches ipykernel with the interpreter running the tests.

    Jupyter's directories are pointed into ``tmp_path`` too, so the test neither depends on nor writes
    to a user's Jupyter or IPython set-up (a user-level ``python3`` kernelspec may be another Python).
    """
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "mlflow-nemo-judge (test venv)",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    # The kernel imports the package from this checkout, the code the rest of the suite tests, even
    # where the venv has another copy installed.
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), path] if path else [str(REPO)]))
    return KERNEL


def _execute(tmp_path: Path, kernel_name: str) -> Any:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=180,  # per cell: a hung cell fails the test instead of hanging the suite
        startup_timeout=60,
        # The kernel's cwd: MLflow's artifact root (./mlruns) resolves here, inside tmp_path.
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    return nb


def test_committed_notebook_has_no_outputs() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    # The notebook calls the API from cells (inside the kernel's loop), not from a helper elsewhere.
    assert any("mlflow_nemo_judge.evaluate(" in c.source for c in code)
    assert any("await mlflow_nemo_judge.evaluate_async(" in c.source for c in code)
    assert any("MOCK" in c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.timeout(400)
def test_notebook_runs_in_a_kernel_and_logs_both_models(
    mlflow_uri: str, judge_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    nb = _execute(tmp_path, _venv_kernel(tmp_path, monkeypatch))

    # Every code cell ran, in order, and none raised (nbclient raises CellExecutionError otherwise).
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    printed = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert f"MLflow tracking URI: {mlflow_uri}" in printed
    assert "MOCK models served at http://127.0.0.1:" in printed
    # The awaited evaluate_async found the evaluation the sync cell had just logged.
    assert "reused: [True, True] same runs: True" in printed

    cl = MlflowClient(tracking_uri=mlflow_uri)
    exp = cl.get_experiment_by_name(EXPERIMENT)
    assert exp is not None, "the notebook logged nothing to the test's store"
    runs = cl.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("nemo_judge.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("nemo_judge.role") == "child"]
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    # MLflow records the entry point: this venv's ipykernel launcher, i.e. the runs came from the kernel.
    launcher = importlib.util.find_spec("ipykernel_launcher")
    assert launcher is not None and launcher.origin
    assert {r.data.tags.get("mlflow.source.name") for r in runs} == {launcher.origin}

    means: dict[str, dict[str, float]] = {}
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        metrics = run.data.metrics
        for key in KEYS:
            assert 1 <= metrics[key] <= 5
            assert metrics[f"{key}/count"] == 10 and metrics[f"{key}/nan_count"] == 0
            assert metrics[f"{key}/ci95_low"] <= metrics[key] <= metrics[f"{key}/ci95_high"]
        means[run.data.tags["nemo_judge.target"]] = {k: metrics[k] for k in KEYS}
    assert set(means) == {"mock/faithful-summarizer", "mock/poor-summarizer"}
    for key in KEYS:
        assert means["mock/faithful-summarizer"][key] > means["mock/poor-summarizer"][key]

    # The notebook's own views: the scores it displays are the numbers in MLflow, and the leaderboard
    # (rendered as an HTML table, as Jupyter shows a DataFrame) lists both models.
    shown = [c for c in code if "result.scores()" in c.source][0].outputs[0]["data"]["text/plain"]
    scores = ast.literal_eval(shown)
    assert set(scores) == {"faithful-summarizer", "poor-summarizer"}
    for name, values in scores.items():
        assert values == pytest.approx(means[f"mock/{name}"])
    board = [c for c in code if c.source.startswith("board = leaderboard(")][0].outputs[0]["data"]
    assert "text/html" in board
    for model in means:
        assert model in board["text/plain"]

    # The responses were cached in the test's cache directory, not the user's.
    assert judge_cache.is_dir() and any(judge_cache.rglob("*"))
