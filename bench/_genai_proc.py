"""One ``mlflow.genai.evaluate`` of the seed task as its own process, for ``bench_whole_process.py``.

``predict_fn`` and the two ``@scorer`` functions are ``bench_vs_genai.genai_pieces`` (imported, not
copied). The harness's settings come from the environment the parent sets
(``MLFLOW_GENAI_EVAL_MAX_WORKERS``, ``MLFLOW_GENAI_EVAL_PREDICT_RATE_LIMIT``,
``MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT``). Prints one JSON line (run id, mean ratings) as its last line.

    python bench/_genai_proc.py --data ROWS.jsonl --samples 50 --chat-url URL \\
        --tracking-uri sqlite:///DIR/mlflow.db --experiment bench
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--samples", type=int, required=True)
    ap.add_argument("--chat-url", required=True)
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--experiment", default="bench")
    a = ap.parse_args()

    import mlflow
    from bench_vs_genai import genai_pieces

    with open(a.data, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()][: a.samples]
    data = [{"inputs": {"content": r["content"]}} for r in rows]
    mlflow.set_tracking_uri(a.tracking_uri)
    mlflow.set_experiment(a.experiment)
    predict_fn, scorers, http = genai_pieces(a.chat_url)
    try:
        res = mlflow.genai.evaluate(data=data, predict_fn=predict_fn, scorers=scorers)
    finally:
        http.close()
    means = {m: res.metrics.get(f"{m}/mean") for m in ("completeness", "correctness")}
    print(json.dumps({"run_id": res.run_id, "samples": len(data), "means": means}), flush=True)


if __name__ == "__main__":
    main()
