"""Every example runs as written against the loopback mock models (URLs rewritten to the mock's port)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.engine import run_local
from mlflow_nemo_judge.plan import build_plan
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MOCK_BASE = "http://127.0.0.1:8765/v1"


def _repoint(obj, base):
    """Replace the example's fixed mock port by the test server's, in every endpoint of a config/target."""
    if isinstance(obj, dict):
        return {k: _repoint(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_repoint(v, base) for v in obj]
    if isinstance(obj, str):
        return obj.replace(MOCK_BASE, base)
    return obj


def _load(config_path, target_path, base):
    cfg = load_config(config_path)
    tgt = load_target(target_path)
    cfg2 = load_config(_repoint(cfg.to_dict(), base))
    tgt2 = load_target(_repoint(tgt.to_dict(), base))
    cfg2._source, tgt2._source = cfg._source, tgt._source  # keep relative dataset paths working
    return cfg2, tgt2


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_JUDGE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize(
    "config",
    ["doctor_consults/config.yaml", "judge_existing_outputs/config.yaml", "mixed_metrics/config.yaml"],
)
def test_real_endpoint_configs_validate_without_keys(config, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    target = {
        "doctor_consults/config.yaml": "doctor_consults/targets/llama-3.1-70b.yaml",
        "judge_existing_outputs/config.yaml": "judge_existing_outputs/target.yaml",
        "mixed_metrics/config.yaml": "mixed_metrics/targets/mock-echo.yaml",
    }[config]
    plan = build_plan(load_config(EXAMPLES / config), load_target(EXAMPLES / target), resolve_secrets=False)
    assert plan.tasks


def test_doctor_consults_mock_ranks_faithful_above_poor():
    with MockLLMServer() as srv:
        means = {}
        for t in ("mock-faithful.yaml", "mock-poor.yaml"):
            cfg, tgt = _load(
                EXAMPLES / "doctor_consults/config.mock.yaml",
                EXAMPLES / "doctor_consults/targets" / t,
                srv.base_url,
            )
            res = run_local(cfg, tgt, progress_bar=False, limit=8)
            means[t] = res.tasks["consult_summary_eval"]["completeness"]["completeness"].value
    assert means["mock-faithful.yaml"] > means["mock-poor.yaml"] + 1.5


def test_judge_existing_outputs_flags_the_poor_reference_summaries():
    with MockLLMServer() as srv:
        cfg, tgt = _load(
            EXAMPLES / "judge_existing_outputs/config.mock.yaml",
            EXAMPLES / "judge_existing_outputs/target.yaml",
            srv.base_url,
        )
        res = run_local(cfg, tgt, progress_bar=False)
        assert not any(r.path.endswith("/chat/completions") and r.model != "mock/judge" for r in srv.requests)
    samples = list(res.iter_samples())
    assert len(samples) == 30
    poor = {"D004", "D011", "D019", "D027"}
    for metric in ("completeness", "correctness"):
        bad = [s.metrics[metric].scores[metric] for s in samples if s.item_id in poor]
        good = [s.metrics[metric].scores[metric] for s in samples if s.item_id not in poor]
        assert max(bad) < sum(good) / len(good)


def test_mixed_metrics_example_reports_every_metric():
    with MockLLMServer() as srv:
        cfg, tgt = _load(
            EXAMPLES / "mixed_metrics/config.mock.yaml",
            EXAMPLES / "mixed_metrics/targets/mock-echo.yaml",
            srv.base_url,
        )
        res = run_local(cfg, tgt, progress_bar=False)
    (task,) = res.tasks.values()
    types = {m.type for t in cfg.tasks.values() for m in t.metrics.values()}
    assert {"llm-judge", "string-check", "bleu"} <= types
    for metric, scores in task.items():
        for name, score in scores.items():
            if name != "corpus":
                assert score.stats is not None and score.stats.count + score.stats.nan_count == 12, (
                    metric,
                    name,
                )


def test_compare_and_register_script_runs_as_written(tmp_path):
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "NEMO_JUDGE_CACHE_DIR": str(tmp_path / "cache"),
    }
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "compare_and_register/run.py"), "--experiment", "ex"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MOCK" in out.stdout and "parent run:" in out.stdout, out.stdout
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    versions = client.search_model_versions("name='consult-summarizer'")
    assert len(versions) == 2
    champion = client.get_model_version_by_alias("consult-summarizer", "champion")
    faithful_run = [
        line.split("run ")[1].split()[0]
        for line in out.stdout.splitlines()
        if line.startswith("mock/faithful-summarizer") and " run " in line
    ][:1]
    assert faithful_run, out.stdout
    faithful_run = faithful_run[0]
    assert champion.run_id == faithful_run


def test_promote_model_walkthrough_runs_as_written(tmp_path):
    # The example README's commands, verbatim: first champion, a GO that moves the alias, a NO-GO.
    import re
    import shutil

    readme = (EXAMPLES / "promote_model/README.md").read_text()
    (script,) = re.findall(r"```bash\n(.*?)```", readme, re.S)
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "NEMO_JUDGE_CACHE_DIR": str(tmp_path / "cache"),
        "PATH": bindir + os.pathsep + os.environ["PATH"],
    }
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    verdicts = re.findall(r"\b(GO|NO-GO|INCONCLUSIVE)\b", out.stdout)
    assert "exit 1" in out.stdout and "NO-GO" in verdicts, out.stdout
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias("consult-summarizer", "champion")
    assert client.get_run(champion.run_id).data.tags["nemo_judge.target"] == "mock/faithful-summarizer"


def test_judge_reliability_walkthrough_runs_as_written(tmp_path):
    # The example README's commands, verbatim: repeats + a panel + synthetic human labels, then a
    # position-swapped pairwise comparison; the figures are read back from MLflow.
    import re
    import shutil

    readme = (EXAMPLES / "judge_reliability/README.md").read_text()
    (script,) = re.findall(r"```bash\n(.*?)```", readme, re.S)
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "NEMO_JUDGE_CACHE_DIR": str(tmp_path / "cache"),
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
    }
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    s = "consult_summary_eval/completeness/completeness"
    assert "judge reliability" in out.stdout and "position inconsistency" in out.stdout, out.stdout
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    (exp,) = [e for e in client.search_experiments() if e.name == "judge-reliability"]
    (run,) = client.search_runs([exp.experiment_id])
    m = run.data.metrics
    noisy = m[f"reliability/{s}/judge/mock_judge-noisy/flip_rate"]
    assert m[f"reliability/{s}/judge/mock_judge/flip_rate"] == 0 < noisy
    assert m[f"reliability/{s}/judge/mock_judge-lenient/mean"] > m[f"reliability/{s}/judge/mock_judge/mean"]
    assert m[f"reliability/{s}/human/n"] == 30 and 0 < m[f"reliability/{s}/alpha"] < 1
    (pw_exp,) = [e for e in client.search_experiments() if e.name == "judge-pairwise"]
    rank_key = "pairwise/consult_summary_eval/rank/faithful-summarizer"
    parents = [r for r in client.search_runs([pw_exp.experiment_id]) if rank_key in r.data.metrics]
    assert len(parents) == 1
    pair = "pairwise/consult_summary_eval/faithful-summarizer_vs_poor-summarizer"
    assert 0 < parents[0].data.metrics[f"{pair}/position_inconsistency"] < 0.6  # the planted position bias
