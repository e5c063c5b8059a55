"""The FAKE NeMo service's own scorer: computes a ``custom`` job independently of this package's engine.

So that "a nemo run equals a local run" compares two implementations, this module imports nothing
from the package outside ``testing/fake_nemo``: it reads the rows itself (``scorer_data``), renders the Jinja templates
with jinja2's sandbox, calls the target and judge endpoints with httpx, parses judge replies, scores
the simple metrics (``scorer_metrics``) and aggregates with NeMo's rules (``scorer_aggregate``). What
it implements is NeMo's documented behaviour (reference §5, §8, §9), not the package's extensions.

A row whose target call fails is kept with NaN scores; a job in which no target call succeeded fails,
so a run that measured nothing cannot look like one that did.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from mlflow_nemo_judge.testing.fake_nemo import scorer_metrics as sm
from mlflow_nemo_judge.testing.fake_nemo.scorer_aggregate import Corpus, Values, group_tree, task_tree
from mlflow_nemo_judge.testing.fake_nemo.scorer_data import normalize_keys, read_rows

__all__ = ["Cancelled", "JobOutcome", "normalize_keys", "read_rows", "render", "score_job"]

NAN = sm.NAN
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
# Message text stays text even when it looks like JSON; other leaves that render to a JSON array or
# object are parsed (NeMo splices "{{ item.messages | tojson }}" and "{{ item.tools | tojson }}").
_TEXT_KEYS = frozenset({"content", "role", "prompt", "text", "name"})
_INFERENCE = ("max_tokens", "temperature", "top_p", "stop")


class Cancelled(Exception):
    """The job was cancelled between two rows."""


@dataclass
class JobOutcome:
    tasks: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- templates


def render(obj: Any, ctx: Mapping[str, Any], key: str | None = None) -> Any:
    """Render every string leaf; a non-text leaf rendering to a JSON array/object becomes that value."""
    if isinstance(obj, str):
        text = _ENV.from_string(obj).render(ctx) if ("{{" in obj or "{%" in obj) else obj
        stripped = text.strip()
        if key not in _TEXT_KEYS and stripped[:1] in ("[", "{") and text != obj:
            try:
                return json.loads(stripped)
            except ValueError:
                return text
        return text
    if isinstance(obj, Mapping):
        return {k: render(v, ctx, str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [render(v, ctx, key) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------- calls


def _url(url: str) -> str:
    """The request URL: a base ``/v1`` gets ``/chat/completions`` (NeMo accepted both forms)."""
    url = url.rstrip("/")
    return url if url.endswith("/completions") else url + "/chat/completions"


def _post(
    http: httpx.Client, endpoint: Mapping[str, Any], body: dict[str, Any], retries: int, timeout: float
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {endpoint['api_key']}"} if endpoint.get("api_key") else {}
    last = "no attempt"
    for attempt in range(max(0, retries) + 1):
        try:
            r = http.post(_url(str(endpoint["url"])), json=body, headers=headers, timeout=timeout)
            if r.status_code < 400:
                doc: dict[str, Any] = r.json()
                return doc
            last = f"HTTP {r.status_code}: {r.text[:200]}"
            if r.status_code not in (408, 409, 429) and r.status_code < 500:
                break  # a client error does not get better by asking again
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(min(1.0, 0.05 * 2**attempt))
    raise RuntimeError(f"request to {endpoint.get('url')} failed: {last}")


def _text(response: Mapping[str, Any]) -> str | None:
    choices = response.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], Mapping) else {}
    message = first.get("message")
    if isinstance(message, Mapping):
        return message.get("content")
    return first.get("text")


# ---------------------------------------------------------------------------------------- a job


@dataclass
class _Task:
    name: str
    spec: dict[str, Any]
    rows: list[dict[str, Any]]


class _Scorer:
    def __init__(
        self,
        config: Mapping[str, Any],
        target: Mapping[str, Any],
        log: Callable[[str, str], None],
        cancelled: Callable[[], bool],
    ) -> None:
        self.config, self.target, self.log, self.cancelled = config, target, log, cancelled
        params = config.get("params") or {}
        self.params = params
        retries = params.get("max_retries")
        self.retries = int(retries) if retries is not None else 3
        self.timeout = float(params.get("request_timeout") or 60)
        self.http = httpx.Client(trust_env=False)
        self.target_ok = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def sample(self, task: _Task, row: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``(sample, requests)`` for one row: the target's answer, or the row's own for ``data`` tasks."""
        if task.spec.get("type") in ("chat-completion", "completion") and self.target.get("type") == "model":
            model = self.target.get("model")
            if not isinstance(model, Mapping):
                raise RuntimeError(f"target model {model!r}: only inline api_endpoint models are computed")
            endpoint = model["api_endpoint"]
            item = normalize_keys(row)
            body = render((task.spec.get("params") or {}).get("template") or {}, {**item, "item": item})
            for k in _INFERENCE:
                if self.params.get(k) is not None:
                    body.setdefault(k, self.params[k])
            body = {"model": endpoint["model_id"], **body}
            response = _post(self.http, endpoint, body, self.retries, self.timeout)
            with self._lock:
                self.target_ok += 1
            return {"output_text": _text(response), "response": response}, [
                {"request": body, "response": response}
            ]
        # data tasks and cached outputs: the row carries the response (or its text) itself
        given = row.get("response")
        if isinstance(given, Mapping):
            return {"output_text": _text(given), "response": dict(given)}, []
        text = row.get("output_text", given if isinstance(given, str) else None)
        return ({"output_text": text} if text is not None else {}), []

    def judge(self, params: Mapping[str, Any], ctx: Mapping[str, Any]) -> dict[str, float]:
        scores = params.get("scores") or {}
        model = params.get("model") or {}
        prompt = model.get("prompt") or {}
        inference = dict(prompt.get("inference_params") or {})
        retries = int(inference.pop("max_retries", self.retries))
        timeout = float(inference.pop("request_timeout", None) or self.timeout)
        body = render(params.get("template") or {}, ctx)
        if prompt.get("system_prompt") and isinstance(body.get("messages"), list):
            body["messages"] = [{"role": "system", "content": prompt["system_prompt"]}, *body["messages"]]
        for k, v in inference.items():
            body.setdefault(k, v)
        endpoint = model["api_endpoint"]
        response = _post(self.http, endpoint, {"model": endpoint["model_id"], **body}, retries, timeout)
        answer = sm.strip_reasoning(_text(response) or "", prompt.get("reasoning_params"))
        if answer is None:
            return dict.fromkeys(scores, NAN)
        return {name: sm.judge_score(answer, spec) for name, spec in scores.items()}

    def metric(
        self, mtype: str, params: Mapping[str, Any], ctx: Mapping[str, Any], sample: Mapping[str, Any]
    ) -> tuple[dict[str, float], tuple[str, list[str]] | None]:
        """One metric's scores for one row, and its corpus-BLEU pair."""
        if mtype == "llm-judge":
            return self.judge(params, ctx), None
        if mtype == "string-check":
            left, op, right = render(params["check"], ctx)
            return {"string-check": sm.string_check(left, op, right)}, None
        if mtype == "number-check":
            return {"number-check": sm.number_check(render(params["check"], ctx))}, None
        if mtype == "tool-calling":
            message = ((sample.get("response") or {}).get("choices") or [{}])[0].get("message") or {}
            truth = render(params.get("tool_calls_ground_truth"), ctx)
            return sm.tool_calling(message.get("tool_calls"), truth), None
        candidate = render(params["candidate"], ctx) if "candidate" in params else sample.get("output_text")
        if mtype == "bleu":
            refs = [str(r) for r in render(params.get("references") or [], ctx)]
            if candidate is None:
                return {"sentence": NAN}, None
            return {"sentence": sm.bleu_sentence(str(candidate), refs)}, (str(candidate), refs)
        reference = str(render(params.get("reference", ""), ctx))
        names = {"em": ["em"], "f1": ["f1"], "rouge": list(sm.ROUGE_SCORES.values())}[mtype]
        if candidate is None:
            return dict.fromkeys(names, NAN), None
        if mtype == "rouge":
            return sm.rouge(str(candidate), reference), None
        fn = sm.exact_match if mtype == "em" else sm.f1
        return {mtype: fn(str(candidate), reference)}, None

    def row(self, task: _Task, index: int) -> tuple[dict[str, Any], dict[str, tuple[str, list[str]]]]:
        if self.cancelled():
            raise Cancelled
        row = task.rows[index]
        try:
            sample, requests = self.sample(task, row)
        except Exception as exc:  # the target failed for this row: its metrics are NaN, the job goes on
            self.log("ERROR", f"Sample {index} of task {task.name}: {exc}")
            sample, requests = {}, []
        item = normalize_keys(row)
        ctx = {**item, "item": item, "sample": sample}
        metrics: dict[str, Any] = {}
        corpus: dict[str, tuple[str, list[str]]] = {}
        for mname, m in (task.spec.get("metrics") or {}).items():
            mtype, params = str(m.get("type")), m.get("params") or {}
            try:
                scores, pair = self.metric(mtype, params, ctx, sample)
            except Exception as exc:  # a template or judge failure is this row's NaN, as NeMo counts it
                self.log("ERROR", f"Metric {mname} on sample {index}: {type(exc).__name__}: {exc}")
                scores, pair = dict.fromkeys(_score_names(mtype, params), NAN), None
            if pair is not None:
                corpus[mname] = pair
            metrics[mname] = {"scores": {s: {"value": v, "stats": None} for s, v in scores.items()}}
            for s, v in scores.items():
                self.log("INFO", f"Computed metric {index} {mname}: score={s} value={v}")
        return {"item": row, "sample": sample, "metrics": metrics, "requests": requests}, corpus


def _score_names(mtype: str, params: Mapping[str, Any]) -> list[str]:
    """The scores a metric reports (NeMo's names, reference §7.2), for a row that could not be scored."""
    fixed = {
        "string-check": ["string-check"],
        "number-check": ["number-check"],
        "tool-calling": list(sm.TOOL_SCORES),
        "bleu": ["sentence"],
        "em": ["em"],
        "f1": ["f1"],
        "rouge": list(sm.ROUGE_SCORES.values()),
    }
    return fixed.get(mtype) or [str(s) for s in params.get("scores") or {}]


def _tasks(config: Mapping[str, Any], target: Mapping[str, Any], load: Callable[[Any], Any]) -> list[_Task]:
    limit_samples = (config.get("params") or {}).get("limit_samples")
    out = []
    for name, spec in (config.get("tasks") or {}).items():
        ds = spec.get("dataset")
        if ds is not None:
            rows = read_rows(load(ds))
        elif target.get("type") == "rows":
            rows = read_rows(list(target.get("rows") or []))
        elif target.get(str(target.get("type"))) is not None:  # dataset / cached_outputs targets
            rows = read_rows(load(target[str(target["type"])]))
        else:
            raise RuntimeError(f"task {name!r} has no dataset and the target gives no rows")
        limits = [
            int(x) for x in ((ds or {}).get("limit") if isinstance(ds, Mapping) else None, limit_samples) if x
        ]
        out.append(_Task(str(name), dict(spec), rows[: min(limits)] if limits else rows))
    return out


def score_job(
    config: Mapping[str, Any],
    target: Mapping[str, Any],
    *,
    load: Callable[[Any], Any],
    on_sample: Callable[[dict[str, int], dict[str, int]], None],
    log: Callable[[str, str], None],
    cancelled: Callable[[], bool],
    minimal_stats: bool = False,
) -> JobOutcome:
    """Compute a ``custom`` job; ``load`` turns a dataset reference into something ``read_rows`` reads.

    ``on_sample(done, totals)`` is called after every row with the rows done per task, under a lock so
    a poller only ever sees progress move forward.
    """
    if config.get("type") != "custom":
        raise RuntimeError(f"config type {config.get('type')!r}: this fake computes only 'custom' jobs")
    tasks = _tasks(config, target, load)
    totals = {t.name: len(t.rows) for t in tasks}
    done = dict.fromkeys(totals, 0)
    lock = threading.Lock()
    scorer = _Scorer(config, target, log, cancelled)
    outcome = JobOutcome()
    per_task: dict[str, tuple[Values, Corpus]] = {}
    parallelism = max(1, int((config.get("params") or {}).get("parallelism") or 8))
    try:
        for task in tasks:
            log("INFO", f"Running task {task.name} on {len(task.rows)} samples")

            def one(i: int, task: _Task = task) -> tuple[dict[str, Any], dict[str, tuple[str, list[str]]]]:
                result = scorer.row(task, i)
                with lock:
                    done[task.name] += 1
                    on_sample(dict(done), totals)
                return result

            with ThreadPoolExecutor(max_workers=parallelism) as pool:
                results = list(pool.map(one, range(len(task.rows))))
            outcome.samples[task.name] = [r for r, _ in results]
            per_task[task.name] = _collect(results)
            outcome.tasks[task.name] = task_tree(*per_task[task.name], minimal_stats)
    finally:
        scorer.close()
    calls = sum(totals[t.name] for t in tasks if t.spec.get("type") in ("chat-completion", "completion"))
    if calls and scorer.target_ok == 0 and target.get("type") == "model":
        raise RuntimeError("no target call succeeded: the job measured nothing (see the log)")
    outcome.groups = group_tree(config.get("groups") or {}, per_task, minimal_stats)
    return outcome


def _collect(results: list[tuple[dict[str, Any], dict[str, tuple[str, list[str]]]]]) -> tuple[Values, Corpus]:
    """Per (metric, score) values in row order (NaN where a row lacks the score) and BLEU pairs."""
    keys: list[tuple[str, str]] = []
    for rec, _ in results:
        for m, out in rec["metrics"].items():
            keys += [(m, s) for s in out["scores"] if (m, s) not in keys]
    values: Values = {
        (m, s): [
            float(v)
            if isinstance(
                v := rec["metrics"].get(m, {}).get("scores", {}).get(s, {}).get("value"), (int, float)
            )
            and math.isfinite(v)
            else NAN
            for rec, _ in results
        ]
        for m, s in keys
    }
    corpus: Corpus = {}
    for _, pairs in results:
        for m, (cand, refs) in pairs.items():
            corpus.setdefault(m, ([], []))
            corpus[m][0].append(cand)
            corpus[m][1].append(refs)
    return values, corpus
