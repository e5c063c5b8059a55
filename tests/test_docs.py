"""The README's commands work as written.

Blocks preceded by ``<!-- runnable -->`` are extracted and run (bash blocks through bash, python blocks
through this interpreter) in a scratch folder with its own MLflow store and response cache, against the
loopback mock models. ``.venv/bin/`` in a command means "this environment's bin"; the two set-up commands
themselves are run verbatim by ``.ci/run`` on a fresh machine, which this test checks too.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_nemo_judge.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BLOCK = re.compile(r"<!-- runnable -->\s*\n```(bash|python)\n(.*?)```", re.S)
FENCE = re.compile(r"```bash\n(.*?)```", re.S)


def runnable_blocks():
    return [(lang, code) for lang, code in BLOCK.findall(README)]


def setup_commands():
    """The first two bash blocks of the README: install + main job, then tests."""
    blocks = FENCE.findall(README)
    return blocks[0].strip(), blocks[1].strip()


def test_readme_setup_commands_are_what_ci_runs():
    install, tests = setup_commands()
    assert "mlflow-nemo-judge demo" in install and "pip install" in install
    assert "pytest" in tests
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert install in ci, "the README's install + main-job command must run verbatim in .ci/run"
    assert ci[-1] == tests, "the last line of .ci/run must be the README's test command"


def test_there_are_runnable_blocks():
    langs = [lang for lang, _ in runnable_blocks()]
    assert "bash" in langs and "python" in langs


@pytest.mark.parametrize("index", range(len(BLOCK.findall(README))))
def test_readme_block_runs(index, tmp_path):
    lang, code = runnable_blocks()[index]
    bindir = str(Path(sys.executable).parent)
    code = code.replace(".venv/bin/", bindir + "/")
    for name in ("examples",):
        shutil.copytree(REPO / name, tmp_path / name, symlinks=False)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "NEMO_JUDGE_CACHE_DIR": str(tmp_path / "cache"),
        "PATH": bindir + os.pathsep + os.environ["PATH"],
    }
    env.pop("OPENAI_API_KEY", None)
    env.pop("NVIDIA_API_KEY", None)
    cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (
        f"block {index} failed:\n{code}\n--- stdout\n{out.stdout[-2000:]}\n--- stderr\n{out.stderr[-3000:]}"
    )


def test_cli_reference_matches_help():
    """Every command and option the README's CLI reference names exists in the parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    section = README.split("## CLI reference", 1)[1].split("\n## ", 1)[0]
    for cmd, opts in re.findall(r"^\| `(\w+)` \| (.*?) \|", section, re.M):
        assert cmd in sub.choices, cmd
        known = {s for a in sub.choices[cmd]._actions for s in a.option_strings}
        for opt in re.findall(r"`(--[\w-]+)", opts):
            assert opt in known, f"{cmd} {opt}"


def test_readme_lists_every_environment_knob_with_its_default():
    from mlflow_nemo_judge.settings import SETTINGS

    table = README.split("<!-- settings-table -->", 1)[1].split("\n\n", 1)[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([A-Z_]+)` \| ([^|]+) \|", table, re.M)}
    assert set(rows) == {s.name for s in SETTINGS}
    for s in SETTINGS:
        if s.default is not None:
            assert f"`{s.default}`" in rows[s.name], s.name
