"""Bad input is rejected up front: one ``error:`` line naming the file, config path or row, exit 2, no
traceback, no model call, no MLflow store touched — for ``validate`` and for ``run`` alike."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_nemo_judge.cli import main
from mlflow_nemo_judge.scoring.parsing import REGEX_TIMEOUT_S, parse_score
from mlflow_nemo_judge.scoring.templating import render_string
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer
from tests.fixtures.paths import SEED_DATA
from tests.fixtures.seed_config import seed_config

T = "tasks.consult_summary_eval"
M = f"{T}.metrics.completeness"
SECRET = "fake-secret-5f1c9e"  # made up for these tests; must never appear in an error line


@pytest.fixture(scope="module")
def server() -> Iterator[MockLLMServer]:
    with MockLLMServer() as srv:
        yield srv


class Case:
    """Files for one bad input: the config and target written as dicts (then mutated), or raw files."""

    def __init__(self, tmp: Path, srv: MockLLMServer) -> None:
        self.tmp = tmp
        self.data = tmp / "data.jsonl"
        self.data.write_bytes(SEED_DATA.read_bytes())
        self.config: Any = seed_config(
            judge_url=f"{srv.base_url}/chat/completions", judge_model="mock/judge", files_url=str(self.data)
        )
        self.target: Any = {
            "type": "model",
            "model": {
                "api_endpoint": {
                    "url": f"{srv.base_url}/chat/completions",
                    "model_id": "mock/faithful-summarizer",
                }
            },
        }
        self.config_path: Path | None = None  # set to write the config file oneself
        self.target_path: Path | None = None

    @property
    def task(self) -> Any:
        return self.config["tasks"]["consult_summary_eval"]

    @property
    def judge(self) -> Any:
        return self.task["metrics"]["completeness"]["params"]

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in SEED_DATA.read_text().splitlines()]

    def write_rows(self, lines: list[str], name: str = "data.jsonl") -> Path:
        self.data = self.tmp / name
        # surrogateescape: a test line may hold raw invalid UTF-8 bytes ("\udcff" is byte 0xff)
        self.data.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
        self.task["dataset"]["files_url"] = str(self.data)
        return self.data

    def set_line(self, lineno: int, text: str) -> None:
        lines = SEED_DATA.read_text().splitlines()
        lines[lineno - 1] = text
        self.write_rows(lines)

    def files(self) -> tuple[Path, Path]:
        cfg = self.config_path or self.tmp / "config.yaml"
        if self.config_path is None:
            cfg.write_text(yaml.safe_dump(self.config, allow_unicode=True))
        tgt = self.target_path or self.tmp / "target.yaml"
        if self.target_path is None:
            tgt.write_text(yaml.safe_dump(self.target))
        return cfg, tgt


def _raw_config(text: str | bytes, name: str = "config.yaml") -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        c.config_path = c.tmp / name
        if isinstance(text, bytes):
            c.config_path.write_bytes(text)
        else:
            c.config_path.write_text(text)

    return mutate


def _seed_yaml(c: Case) -> str:
    return yaml.safe_dump(c.config)


def _deep_row(c: Case) -> None:
    rows = c.rows()
    rows[3]["meta"] = json.loads("[" * 500 + "]" * 500)
    c.write_rows([json.dumps(r) for r in rows])


def _missing_in_row_17(c: Case) -> None:
    rows = c.rows()
    del rows[16]["content"]
    c.write_rows([json.dumps(r) for r in rows])


def _csv_broken_quote(c: Case) -> None:
    lines = ["ID,content"] + [f'D{i:03},"consult {i}"' for i in range(1, 6)] + ['D006,"unclosed quote']
    lines += [f"D{i:03},consult {i}" for i in range(7, 10)]
    c.write_rows(lines, "data.csv")


def _csv_short_row(c: Case) -> None:
    c.write_rows(["ID,content", "D001,ok", "D002", "D003,ok"], "data.csv")


def _json_array_non_object(c: Case) -> None:
    c.data = c.tmp / "data.json"
    c.data.write_text(json.dumps([{"content": "a"}, {"content": "b"}, "oops"], indent=1))
    c.task["dataset"]["files_url"] = str(c.data)


def _fifo_dataset(c: Case) -> None:
    fifo = c.tmp / "fifo.jsonl"
    os.mkfifo(fifo)
    c.task["dataset"]["files_url"] = str(fifo)


def _fifo_config(c: Case) -> None:
    c.config_path = c.tmp / "fifo.yaml"
    os.mkfifo(c.config_path)


def _cached_outputs_missing(c: Case) -> None:
    rows = c.rows()
    for i, r in enumerate(rows):
        if i != 11:
            r["output"] = "a summary"
    c.write_rows([json.dumps(r) for r in rows])
    c.target = {"type": "cached_outputs", "cached_outputs": {"files_url": str(c.data)}}


def _alias_bomb(c: Case) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    _raw_config(_seed_yaml(c) + "\n".join(lines) + "\n")(c)


def _set(path: str, value: Any) -> Callable[[Case], None]:
    """Set a key inside the config (``cfg.`` prefix) or the target (``tgt.``), creating mappings."""

    def mutate(c: Case) -> None:
        root, *keys = path.split(".")
        obj = c.config if root == "cfg" else c.target
        for k in keys[:-1]:
            obj = obj.setdefault(k, {}) if not k.isdigit() else obj[int(k)]
        obj[keys[-1]] = value

    return mutate


JUDGE_EP = "cfg.tasks.consult_summary_eval.metrics.completeness.params.model.api_endpoint"
TARGET_EP = "tgt.model.api_endpoint"
USER_MSG = "cfg.tasks.consult_summary_eval.params.template.messages.1.content"

# (id, mutation, fragments the one error line must contain)
CASES: list[tuple[str, Callable[[Case], None], list[str]]] = [
    (
        "bad-json-line-9",
        lambda c: c.set_line(9, '{"ID": "D009", "content": '),
        ["data.jsonl:9", "invalid JSON"],
    ),
    ("non-object-row", lambda c: c.set_line(5, "[1, 2]"), ["data.jsonl:5", "expected a JSON object"]),
    ("string-row", lambda c: c.set_line(6, '"just text"'), ["data.jsonl:6"]),
    ("csv-broken-quote", _csv_broken_quote, ["data.csv", "invalid CSV"]),
    ("csv-short-row", _csv_short_row, ["data.csv:3", "fields"]),
    ("json-array-non-object", _json_array_non_object, ["data.json", "element 2"]),
    ("missing-var-row-17", _missing_in_row_17, ["data.jsonl:17 (row 17)", f"{T}.params.template", "content"]),
    ("invalid-utf8-row", lambda c: c.set_line(3, '{"content": "\udcff"}'), ["data.jsonl:3", "UTF-8"]),
    ("deep-row", _deep_row, ["data.jsonl:4", "nested deeper"]),
    (
        "huge-int-row",
        lambda c: c.set_line(7, '{"content": "x", "n": ' + "9" * 5000 + "}"),
        ["data.jsonl:7", "digits"],
    ),
    ("empty-dataset", lambda c: c.write_rows([""]), [f"{T}.dataset", "empty"]),
    (
        "missing-dataset",
        _set("cfg.tasks.consult_summary_eval.dataset.files_url", "/nonexistent/x.jsonl"),
        ["not found"],
    ),
    ("fifo-dataset", _fifo_dataset, ["fifo.jsonl", "not a regular file"]),
    ("device-dataset", _set("cfg.tasks.consult_summary_eval.dataset.files_url", "/dev/zero"), ["/dev/zero"]),
    ("cached-output-missing-row-12", _cached_outputs_missing, ["data.jsonl:12 (row 12)", "output field"]),
    (
        "invalid-utf8-config",
        _raw_config(b"type: custom\nname: \xff\xfe\n"),
        ["config.yaml", "UTF-8", "byte offset"],
    ),
    ("directory-config", lambda c: setattr(c, "config_path", c.tmp), ["is a directory"]),
    ("fifo-config", _fifo_config, ["fifo.yaml", "not a regular file"]),
    (
        "device-config",
        lambda c: setattr(c, "config_path", Path("/dev/null")),
        ["/dev/null", "not a regular file"],
    ),
    ("config-too-large", _raw_config("# " + "x" * (11 * 1024 * 1024) + "\n"), ["10 MiB"]),
    ("yaml-syntax", _raw_config("type: custom\ntasks: [unclosed\n"), ["config.yaml", "line"]),
    ("config-not-mapping", _raw_config("- 1\n- 2\n"), ["must be a mapping"]),
    ("huge-int-config", lambda c: _raw_config(_seed_yaml(c) + "x: " + "7" * 5000 + "\n")(c), ["digits"]),
    (
        "deep-config",
        lambda c: _raw_config(_seed_yaml(c) + "x: " + "[" * 300 + "]" * 300 + "\n")(c),
        ["nested deeper"],
    ),
    ("recursive-alias", lambda c: _raw_config(_seed_yaml(c) + "x: &r [*r]\n")(c), ["nested deeper"]),
    ("yaml-alias-bomb", _alias_bomb, ["alias"]),
    (
        "duplicate-yaml-key",
        lambda c: _raw_config(_seed_yaml(c) + "name: again\n")(c),
        ["duplicate key 'name'"],
    ),
    (
        "duplicate-json-key",
        lambda c: _raw_config(json.dumps(c.config, indent=1)[:-1] + ',\n "type": "custom"}', "c.json")(c),
        ["duplicate key 'type'", "line"],
    ),
    ("temperature-nan", _set("cfg.params.temperature", float("nan")), ["params.temperature", "finite"]),
    (
        "judge-temperature-inf",
        _set(JUDGE_EP.replace("api_endpoint", "prompt.inference_params.temperature"), float("inf")),
        ["temperature", "finite"],
    ),
    (
        "port-99999",
        _set(f"{TARGET_EP}.url", "http://127.0.0.1:99999/v1/chat/completions"),
        ["target.model.api_endpoint.url", "port"],
    ),
    ("not-a-url", _set(f"{TARGET_EP}.url", "not a url"), ["target.model.api_endpoint.url"]),
    ("ftp-url", _set(f"{JUDGE_EP}.url", "ftp://x"), [f"{M}.params.model.api_endpoint.url", "http"]),
    (
        "missing-scheme",
        _set(f"{TARGET_EP}.url", "127.0.0.1:8000/v1/chat/completions"),
        ["target.model.api_endpoint.url"],
    ),
    ("no-host", _set(f"{TARGET_EP}.url", "http:///v1"), ["host"]),
    ("empty-model-id", _set(f"{TARGET_EP}.model_id", "  "), ["target.model.api_endpoint.model_id"]),
    (
        "header-crlf",
        _set(f"{TARGET_EP}.headers", {"X-Route": f"{SECRET}\r\nX-Injected: 1"}),
        ["headers", "X-Route"],
    ),
    ("header-name", _set(f"{JUDGE_EP}.headers", {"Bad Name": SECRET}), ["headers", "Bad Name"]),
    (
        "api-key-newline",
        _set(f"{JUDGE_EP}.api_key", f"{SECRET}\n"),
        [f"{M}.params.model.api_endpoint.api_key"],
    ),
    (
        "userinfo-and-key",
        lambda c: (
            _set(f"{TARGET_EP}.url", f"http://user:{SECRET}@127.0.0.1:9/v1")(c),
            _set(f"{TARGET_EP}.api_key", SECRET + "k")(c),
        ),
        ["target.model.api_endpoint", "one Authorization header"],
    ),
    ("url-credentials-bad-port", _set(f"{TARGET_EP}.url", f"http://user:{SECRET}@host:99999/v1"), ["port"]),
    (
        "score-name-600",
        lambda c: c.judge["scores"].__setitem__("s" * 600, c.judge["scores"].pop("completeness")),
        ["MLflow metric key", "250"],
    ),
    ("template-power", _set(USER_MSG, "{{ 99999999 ** 99999999 }}"), [f"{T}.params.template", "row 1"]),
    ("template-repeat", _set(USER_MSG, "{{ 'a' * 10**9 }}"), [f"{T}.params.template", "row 1"]),
    (
        "bad-regex",
        _set(
            "cfg.tasks.consult_summary_eval.metrics.completeness.params.scores.completeness.parser.pattern",
            "(a",
        ),
        ["parser.pattern"],
    ),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(("mutate", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_called_nothing_tracked(
    tmp_path: Path,
    server: MockLLMServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    mutate: Callable[[Case], None],
    fragments: list[str],
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # MLflow's default ./mlruns would land here
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("NEMO_JUDGE_CACHE_DIR", str(tmp_path / "cache"))
    case = Case(tmp_path, server)
    mutate(case)
    cfg, tgt = case.files()
    argv = [command, str(cfg), "--target", str(tgt)]
    if command == "run":
        argv += ["--tracking-uri", f"sqlite:///{db}"]
    calls = server.request_count
    started = time.monotonic()
    rc = main(argv)
    err = capsys.readouterr().err
    assert time.monotonic() - started < 10
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert SECRET not in err
    assert server.request_count == calls
    assert not db.exists(), "the tracking store was touched"
    assert not list(work.iterdir()), "something was written (./mlruns?)"


def test_rows_beyond_the_limit_are_not_read(
    tmp_path: Path, server: MockLLMServer, capsys: pytest.CaptureFixture[str]
) -> None:
    case = Case(tmp_path, server)
    case.set_line(28, "{broken")  # the config's dataset limit is 25
    cfg, tgt = case.files()
    assert main(["validate", str(cfg), "--target", str(tgt)]) == 0
    assert "25 row(s) checked" in capsys.readouterr().out


@pytest.mark.timeout(5)
def test_catastrophic_score_regex_times_out_as_nan() -> None:
    started = time.monotonic()
    parsed = parse_score("a" * 20_000 + "!", {"type": "regex", "pattern": r"(a+)+$"}, "int")
    assert time.monotonic() - started < REGEX_TIMEOUT_S + 1.0
    assert not parsed.ok and parsed.error is not None and "timed out" in parsed.error


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "template",
    ["{{ 99999999 ** 99999999 }}", "{{ 'a' * 10**9 }}", "{{ [0] * 10**9 }}", "{{ '%0999999999d' % 1 }}"],
)
def test_template_arithmetic_is_bounded(template: str) -> None:
    from mlflow_nemo_judge.errors import TemplateError

    with pytest.raises(TemplateError, match="refused"):
        render_string(template, {}, "p")


def test_bounded_arithmetic_still_computes() -> None:
    assert (
        render_string("{{ 2 ** 10 }} {{ 'ab' * 3 }} {{ 7 % 3 }} {{ '%5.1f' % 2.25 }}", {}, "p")
        == "1024 ababab 1   2.2"
    )
