"""Workload 2 — the same evaluation through ``mlflow_nemo_judge.evaluate`` and ``mlflow.genai.evaluate``.

Same rows (the shared doctor-consult file), both call the same mock target (deterministic, so both get
the same outputs), the same two judge prompts against the same mock judge, the same regex
(``RATING:\\s*(\\d+)``). MLflow tracking is on for both, each evaluation into a fresh local sqlite store
(copied from one pre-migrated database, so schema migration is charged to neither). The process is
warmed up once per tool first (imports, lazy modules). The order of the tools alternates per repeat.

``mlflow.genai.evaluate`` side: ``predict_fn`` POSTs the target request, two ``@scorer`` functions POST
the judge requests (one shared, thread-safe ``httpx.Client``) and return ``Feedback`` (value, or error
when the regex does not match; the judge text as rationale).

Settings (installed mlflow's harness: ``MLFLOW_GENAI_EVAL_MAX_WORKERS`` sizes both the predict and
the score thread pools; predict/score rate limits default to "auto" = 10 rps adaptive up to 20 and
2 × that for scorers; each item's scorers run in parallel, ``MLFLOW_GENAI_EVAL_MAX_SCORER_WORKERS``=10):

* ``default``: both at their defaults (ours: parallelism 8; theirs: no env vars).
* ``matched``: ``MLFLOW_GENAI_EVAL_MAX_WORKERS=8`` with both rate limiters off
  (``MLFLOW_GENAI_EVAL_PREDICT_RATE_LIMIT=0``, ``MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT=0``), versus ours at
  parallelism 8 (the same knob value) and at 24 (the same maximum of calls in flight: 8 predict threads
  + 8 score threads × 2 parallel scorers).

Ours is run with its default per-sample traces (``trace_samples`` 200) and with ``trace_samples=0``, and
with its default response cache on, into an empty cache directory per run (so it pays the cache writes
and never gets a hit).

    python bench/bench_vs_genai.py --latency 0.2 --samples 50
    python bench/bench_vs_genai.py --latency 0 --samples 50
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    JUDGE_MODEL,
    TARGET_MODEL,
    Mock,
    machine_facts,
    make_dataset,
    md_table,
    mock_target,
    save,
    seed_config,
    shared_rows,
    temp_dir,
)

RATING = re.compile(r"RATING:\s*(\d+)")
GENAI_ENV = (
    "MLFLOW_GENAI_EVAL_MAX_WORKERS",
    "MLFLOW_GENAI_EVAL_PREDICT_RATE_LIMIT",
    "MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT",
)


@contextlib.contextmanager
def env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in GENAI_ENV}
    for k in GENAI_ENV:
        os.environ.pop(k, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Stores:
    """A fresh sqlite tracking store per evaluation, copied from one migrated database."""

    def __init__(self, root: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.root = root
        self.n = 0
        tmpl = root / "template"
        tmpl.mkdir()
        MlflowClient(tracking_uri=f"sqlite:///{tmpl}/mlflow.db").search_experiments()
        self.template = tmpl / "mlflow.db"

    def fresh(self) -> tuple[str, Path]:
        self.n += 1
        d = self.root / f"store{self.n}"
        d.mkdir()
        shutil.copyfile(self.template, d / "mlflow.db")
        return f"sqlite:///{d}/mlflow.db", d


def genai_pieces(chat_url: str) -> tuple[Any, list[Any], Any]:
    import httpx
    from mlflow.entities import AssessmentSource, AssessmentSourceType, Feedback
    from mlflow.genai.scorers import scorer

    from tests.fixtures.seed_config import completeness_system_prompt, correctness_system_prompt

    http = httpx.Client(timeout=60.0, limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))
    source = AssessmentSource(source_type=AssessmentSourceType.LLM_JUDGE, source_id=JUDGE_MODEL)

    def predict_fn(content: str) -> str:
        body = {
            "model": TARGET_MODEL,
            "max_tokens": 200,
            "messages": [
                {
                    "role": "system",
                    "content": "Given a full medical consultation, please provide a 50 word summary "
                    "of the consultation.",
                },
                {"role": "user", "content": f"Full Consult: {content}"},
            ],
        }
        r = http.post(chat_url, json=body)
        r.raise_for_status()
        return str(r.json()["choices"][0]["message"]["content"])

    def judge(system: str, name: str, inputs: dict[str, Any], outputs: Any) -> Any:
        body = {
            "model": JUDGE_MODEL,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"\nFull Consult: {inputs['content']}\nSummary: {outputs}\n"},
            ],
        }
        r = http.post(chat_url, json=body)
        r.raise_for_status()
        raw = r.json()["choices"][0]["message"]["content"] or ""
        m = RATING.search(raw)
        if m is None:
            return Feedback(name=name, error="could not parse rating", rationale=raw, source=source)
        return Feedback(name=name, value=int(m.group(1)), rationale=raw, source=source)

    @scorer(name="completeness")
    def completeness(inputs: dict[str, Any], outputs: Any) -> Any:
        return judge(completeness_system_prompt, "completeness", inputs, outputs)

    @scorer(name="correctness")
    def correctness(inputs: dict[str, Any], outputs: Any) -> Any:
        return judge(correctness_system_prompt, "correctness", inputs, outputs)

    return predict_fn, [completeness, correctness], http


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="run only variants whose name contains one of these strings")
    a = ap.parse_args()
    facts = machine_facts()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")
    import mlflow

    from mlflow_nemo_judge.pipeline import evaluate

    rows = shared_rows()
    runs: list[dict[str, Any]] = []
    with temp_dir("bench-genai-") as d, Mock(latency=a.latency) as mock:
        os.chdir(d)
        data_path = make_dataset(a.samples, d) if a.samples > len(rows) else None
        src = (
            data_path
            or Path(__file__).resolve().parents[2]
            / "shared"
            / "data"
            / "doctor_consults_with_summaries.jsonl"
        )
        data_rows = [r for _, r in zip(range(a.samples), (rows * (a.samples // len(rows) + 1)), strict=False)]
        genai_data = [{"inputs": {"content": r["content"]}} for r in data_rows]
        target = mock_target(mock.chat_url)
        stores = Stores(d)
        predict_fn, scorers, http = genai_pieces(mock.chat_url)

        def ours(parallelism: int | None, trace_samples: int | None) -> dict[str, Any]:
            cfg = seed_config(mock.chat_url, src, limit=a.samples, parallelism=parallelism)
            uri, store = stores.fresh()
            mock.reset()
            t0 = time.perf_counter()
            # Our default has the response cache on: an empty cache dir per run charges its writes, never a hit.
            ev = evaluate(
                cfg,
                target,
                tracking_uri=uri,
                experiment="ours",
                cache=True,
                cache_dir=store / "cache",
                progress_bar=False,
                force=True,
                trace_samples=trace_samples,
            )
            wall = time.perf_counter() - t0
            res = ev.result
            means = {
                m: res.tasks["consult_summary_eval"][m][m].value for m in ("completeness", "correctness")
            }
            return {
                "wall_s": wall,
                "calls": mock.count(),
                "engine_wall_s": res.usage.wall_seconds,
                "means": means,
            }

        def theirs(settings: dict[str, str]) -> dict[str, Any]:
            uri, _ = stores.fresh()
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment("genai")
            mock.reset()
            with env(settings):
                t0 = time.perf_counter()
                res = mlflow.genai.evaluate(data=genai_data, predict_fn=predict_fn, scorers=scorers)
                wall = time.perf_counter() - t0
            means = {m: res.metrics.get(f"{m}/mean") for m in ("completeness", "correctness")}
            return {"wall_s": wall, "calls": mock.count(), "means": means}

        matched = {
            "MLFLOW_GENAI_EVAL_MAX_WORKERS": "8",
            "MLFLOW_GENAI_EVAL_PREDICT_RATE_LIMIT": "0",
            "MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT": "0",
        }
        variants: list[tuple[str, Any]] = [
            ("genai default", lambda: theirs({})),
            ("genai matched (workers 8, rate limits off)", lambda: theirs(matched)),
            ("ours default (parallelism 8)", lambda: ours(None, None)),
            ("ours default, trace_samples=0", lambda: ours(None, 0)),
            ("ours parallelism 24", lambda: ours(24, None)),
            ("ours parallelism 24, trace_samples=0", lambda: ours(24, 0)),
        ]
        if a.only:
            variants = [v for v in variants if any(o in v[0] for o in a.only)]
        print("warm-up", flush=True)
        ours(None, None)
        theirs({})
        for rep in range(a.repeats):
            order = variants if rep % 2 == 0 else list(reversed(variants))
            for name, fn in order:
                r = fn()
                r.update({"variant": name, "repeat": rep, "loadavg_1m": os.getloadavg()[0]})
                runs.append(r)
                print(
                    f"  {name} rep={rep}: {r['wall_s']:.2f}s, {r['calls']} calls, means {r['means']}",
                    flush=True,
                )
        http.close()

    med = {name: statistics.median(r["wall_s"] for r in runs if r["variant"] == name) for name, _ in variants}
    every = {name: [round(r["wall_s"], 2) for r in runs if r["variant"] == name] for name, _ in variants}
    calls = {name: sorted({r["calls"] for r in runs if r["variant"] == name}) for name, _ in variants}
    comparisons = [
        ("both default", "ours default (parallelism 8)", "genai default"),
        ("both default, ours without traces", "ours default, trace_samples=0", "genai default"),
        (
            "matched: same knob value 8",
            "ours default (parallelism 8)",
            "genai matched (workers 8, rate limits off)",
        ),
        (
            "matched: same knob, ours without traces",
            "ours default, trace_samples=0",
            "genai matched (workers 8, rate limits off)",
        ),
        (
            "matched: same max calls in flight (24)",
            "ours parallelism 24",
            "genai matched (workers 8, rate limits off)",
        ),
        (
            "matched: same max calls in flight, ours without traces",
            "ours parallelism 24, trace_samples=0",
            "genai matched (workers 8, rate limits off)",
        ),
    ]
    table = [
        [label, f"{med[o]:.2f}", f"{med[t]:.2f}", f"{med[o] / med[t]:.3f}", f"{med[t] / med[o]:.2f}x"]
        for label, o, t in comparisons
        if o in med and t in med
    ]
    out = {
        "facts": facts,
        "command": "python bench/bench_vs_genai.py " + " ".join(sys.argv[1:]),
        "latency_s": a.latency,
        "samples": a.samples,
        "runs": runs,
        "median_wall_s": med,
        "calls": calls,
        "comparisons": table,
    }
    suffix = "_only" if a.only else ""
    path = save(f"vs_genai_lat{a.latency:g}_n{a.samples}{suffix}", out)
    print(f"\nfacts: {facts}\nsaved {path}\n")
    print(
        md_table(
            ["variant", "median wall (s)", "each run (s)", "endpoint calls"],
            [
                [n, f"{med[n]:.2f}", ", ".join(map(str, every[n])), ", ".join(map(str, calls[n]))]
                for n, _ in variants
            ],
        )
    )
    print()
    print(md_table(["comparison", "ours (s)", "genai (s)", "ours/theirs", "speed-up"], table))
    per = {n: med[n] / a.samples * 1000 for n, _ in variants}
    print("\nper-sample wall (ms): " + ", ".join(f"{n}: {v:.1f}" for n, v in per.items()))


if __name__ == "__main__":
    main()
