import json
import subprocess
import sys

import yaml

from mlflow_nemo_judge import __version__
from mlflow_nemo_judge.cli import main
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer
from tests.fixtures.paths import shared_data
from tests.fixtures.seed_config import seed_config


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(obj, allow_unicode=True))
    return p


def test_version_and_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "mlflow_nemo_judge", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"mlflow-nemo-judge {__version__}"


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    text = capsys.readouterr().out
    for cmd in ("validate", "run", "resume", "compare", "demo"):
        assert cmd in text


def test_validate_ok_and_bad_input_exit_codes(tmp_path, capsys, monkeypatch):
    cfg = seed_config(files_url=str(shared_data()))
    good = _write(tmp_path, "good.yaml", cfg)
    assert main(["validate", str(good)]) == 0
    assert "no model was called" in capsys.readouterr().out
    cfg["tasks"]["consult_summary_eval"]["metrics"]["completeness"]["params"]["scores"]["completeness"][
        "parser"
    ]["pattern"] = "RATING: \\d+"
    bad = _write(tmp_path, "bad.yaml", cfg)
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "tasks.consult_summary_eval.metrics.completeness.params.scores.completeness.parser.pattern" in err


def test_run_without_tracking_prints_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NEMO_JUDGE_CACHE_DIR", str(tmp_path / "cache"))
    with MockLLMServer() as srv:
        url = f"{srv.base_url}/chat/completions"
        cfg = _write(
            tmp_path,
            "c.yaml",
            seed_config(files_url=str(shared_data()), judge_url=url, judge_model="mock/judge"),
        )
        tgt = _write(
            tmp_path,
            "t.yaml",
            {
                "type": "model",
                "model": {"api_endpoint": {"url": url, "model_id": "mock/faithful-summarizer"}},
            },
        )
        code = main(
            [
                "run",
                str(cfg),
                "--target",
                str(tgt),
                "--limit",
                "4",
                "--no-tracking",
                "--output",
                "json",
                "--no-progress",
            ]
        )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    scores = payload["runs"][0]["results"]["tasks"]["consult_summary_eval"]["metrics"]
    assert scores["completeness"]["scores"]["completeness"]["stats"]["count"] == 4


def test_run_with_unreachable_endpoint_fails_with_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NEMO_JUDGE_CACHE_DIR", str(tmp_path / "cache"))
    with MockLLMServer() as srv:
        url = f"{srv.base_url}/chat/completions"
        cfg = _write(
            tmp_path,
            "c.yaml",
            seed_config(files_url=str(shared_data()), judge_url=url, judge_model="mock/judge"),
        )
        tgt = _write(
            tmp_path,
            "t.yaml",
            {"type": "model", "model": {"api_endpoint": {"url": url, "model_id": "mock/does-not-exist"}}},
        )
        code = main(["run", str(cfg), "--target", str(tgt), "--limit", "2", "--no-tracking", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "404" in err and url in err
