"""The seed task as an Inspect AI task, for ``bench_whole_process.py`` (run with ``inspect eval``).

Equivalent to the seed config (``tests/fixtures/seed_config.py``) and to ``bench_vs_genai.genai_pieces``:

* dataset: the JSONL rows (``content`` as the sample input, ``ID`` as the sample id);
* solver: the target's system prompt, the user text ``Full Consult: {content}``, ``generate()`` with
  ``max_tokens=200`` (1 target call per sample);
* scorer: the two judge prompts (completeness, correctness: the seed's system prompts, the user text
  ``\\nFull Consult: {content}\\nSummary: {output}\\n``) sent to the judge model *concurrently*
  (``asyncio.gather``, as ours sends a sample's judge calls at once), each reply parsed with
  ``RATING:\\s*(\\d+)`` (2 judge calls per sample). A reply without a rating scores NaN (the mock judge
  always gives one).

    inspect eval bench/_inspect_task.py --model openai-api/mock/mock/faithful-summarizer \\
        -T data=ROWS.jsonl -T judge_model=openai-api/mock/mock/judge --max-connections 8 --display none

with ``MOCK_BASE_URL`` (the mock's ``http://127.0.0.1:PORT/v1``) and ``MOCK_API_KEY`` set: Inspect's
OpenAI-compatible provider (``openai-api/<service>/<model>``) reads ``<SERVICE>_BASE_URL`` and
``<SERVICE>_API_KEY`` and sends the model name without the service prefix (``mock/faithful-summarizer``).
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import FieldSpec, json_dataset
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, get_model
from inspect_ai.scorer import Score, Target, mean, scorer
from inspect_ai.solver import TaskState, generate, prompt_template, system_message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.seed_config import completeness_system_prompt, correctness_system_prompt  # noqa: E402

RATING = re.compile(r"RATING:\s*(\d+)")
TARGET_SYSTEM = "Given a full medical consultation, please provide a 50 word summary of the consultation."
JUDGES = {"completeness": completeness_system_prompt, "correctness": correctness_system_prompt}


@scorer(metrics={name: [mean()] for name in JUDGES})
def seed_judges(judge_model: str):  # type: ignore[no-untyped-def]
    async def score(state: TaskState, target: Target) -> Score:
        judge = get_model(judge_model)
        user = f"\nFull Consult: {state.input_text}\nSummary: {state.output.completion}\n"
        replies = await asyncio.gather(
            *(
                judge.generate([ChatMessageSystem(content=system), ChatMessageUser(content=user)])
                for system in JUDGES.values()
            )
        )
        values: dict[str, float] = {}
        for name, reply in zip(JUDGES, replies, strict=True):
            m = RATING.search(reply.completion or "")
            values[name] = float(m.group(1)) if m else math.nan
        return Score(value=values, explanation="\n---\n".join(r.completion for r in replies))

    return score


@task
def consult_summary(data: str, judge_model: str = "openai-api/mock/mock/judge") -> Task:
    return Task(
        dataset=json_dataset(data, FieldSpec(input="content", target="summary", id="ID")),
        solver=[
            system_message(TARGET_SYSTEM),
            prompt_template("Full Consult: {prompt}"),
            generate(max_tokens=200),
        ],
        scorer=seed_judges(judge_model),
    )
