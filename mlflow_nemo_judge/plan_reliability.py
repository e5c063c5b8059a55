"""Each ``llm-judge`` metric's reliability plan: how many judgments a sample gets, by whom, and how they
become the headline score; built by ``plan.build_plan`` and kept on ``MetricPlan.reliability``.

The settings come from the config's ``mlflow_nemo_judge.reliability`` block (validated at load by
``config.extension``, resolved by ``config.reliability_settings``) and ``--judge-repeats``; here they get
what a *local* run needs on top: every panel member's :class:`~mlflow_nemo_judge.plan_metrics.JudgeSpec`,
built by the very code that builds the metric's own judge (endpoint checks, API key from the environment,
the same errors, at the panel member's path).

Every ``llm-judge`` metric gets a plan, also without the block (one judge, one repeat), so consumers
read judge labels and measurement levels from one place; :attr:`ReliabilityPlan.multi` says whether the
metric is judged more than once per sample (only then do records carry ``judgments``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlflow_nemo_judge.config import EvalConfig, JudgeMetric
from mlflow_nemo_judge.config.extension import MAX_REPEATS, Level, Reducer
from mlflow_nemo_judge.config.reliability_settings import MetricSettings, metric_settings
from mlflow_nemo_judge.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.plan import TaskPlan
    from mlflow_nemo_judge.plan_metrics import JudgeSpec

__all__ = ["ReliabilityPlan", "attach_reliability", "check_judge_repeats", "with_judge_repeats"]


@dataclass
class ReliabilityPlan:
    """One metric's judgments per sample: every ``(judge, repeat)`` of ``judges`` × ``range(repeats)``."""

    settings: MetricSettings
    judges: list[tuple[str, JudgeSpec]]  # (label, spec); the first is the primary judge

    @property
    def repeats(self) -> int:
        return self.settings.repeats

    @property
    def reducer(self) -> Reducer:
        return self.settings.reducer

    @property
    def temperature(self) -> float | None:
        """Sent as the judges' ``temperature`` when set (else each judge's own applies)."""
        return self.settings.temperature

    @property
    def levels(self) -> dict[str, Level]:
        """Score → measurement level (declared, or by score type: bool nominal, int ordinal, else interval)."""
        return self.settings.levels

    @property
    def human_labels(self) -> dict[str, str]:
        """Score → the dataset column holding its human label (only the declared scores)."""
        return self.settings.human_labels

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.judges]

    @property
    def panel(self) -> bool:
        return len(self.judges) > 1

    @property
    def judgments(self) -> int:
        return self.repeats * len(self.judges)

    @property
    def multi(self) -> bool:
        """More than one judgment per sample: the headline is reduced and every judgment kept."""
        return self.judgments > 1

    def seed_for(self, repeat: int) -> int | None:
        """The ``seed`` repeat ``repeat`` (0-based) sends: ``seed + repeat``, or None (none sent)."""
        base = self.settings.seed
        return None if base is None else base + repeat


def check_judge_repeats(value: int | None) -> None:
    """``--judge-repeats`` must be an integer in 1-100 (``ConfigError`` at ``--judge-repeats``)."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_REPEATS:
        raise ConfigError("--judge-repeats", f"must be an integer between 1 and {MAX_REPEATS}, got {value!r}")


def with_judge_repeats(config: EvalConfig, repeats: int | None) -> EvalConfig:
    """``config`` with ``--judge-repeats`` written into its ``mlflow_nemo_judge.reliability`` block (the
    block's and every metric's ``repeats``), or ``config`` itself when ``repeats`` is None.

    The flag becomes part of the config rather than a run option so that everything keyed on the config
    follows it: the run identity (a run with 3 repeats never reuses a finished run with 1), the logged
    ``config.json``, a resume (which re-reads the config from the run) and the reliability report.
    """
    check_judge_repeats(repeats)
    if repeats is None:
        return config
    from mlflow_nemo_judge.config import load_config

    data = config.to_dict()
    block = data.get("mlflow_nemo_judge")
    block = dict(block) if isinstance(block, dict) else {}
    rel = block.get("reliability")
    rel = dict(rel) if isinstance(rel, dict) else {}
    rel["repeats"] = repeats
    metrics = rel.get("metrics")
    if isinstance(metrics, dict):
        rel["metrics"] = {
            k: ({**m, "repeats": repeats} if isinstance(m, dict) and "repeats" in m else m)
            for k, m in metrics.items()
        }
    block["reliability"] = rel
    data["mlflow_nemo_judge"] = block
    out = load_config(data)
    out._source = config._source  # relative dataset paths still resolve against the config's folder
    return out


def attach_reliability(
    config: EvalConfig,
    tasks: list[TaskPlan],
    *,
    judge_repeats: int | None = None,
    resolve_secrets: bool = True,
) -> None:
    """Set ``reliability`` on every ``llm-judge`` metric plan of ``tasks``; ``ConfigError`` on a panel
    member the local backend cannot call (a model reference, no endpoint, an unset ``api_key_env``)."""
    # the one JudgeSpec builder: same checks, same errors
    from mlflow_nemo_judge.plan_metrics import judge_spec

    check_judge_repeats(judge_repeats)
    settings = metric_settings(config, judge_repeats)
    for tp in tasks:
        for mp in tp.metrics:
            s = settings.get((tp.name, mp.name))
            if s is None or mp.judge is None or not isinstance(mp.config, JudgeMetric):
                continue
            if s.panel is None:
                judges = [(s.judges[0], mp.judge)]
            else:
                judges = [
                    (
                        label,
                        judge_spec(
                            mp.path, mp.config.params, resolve_secrets, member, f"{s.path}.panel[{i}]"
                        ),
                    )
                    for i, (label, member) in enumerate(zip(s.judges, s.panel, strict=True))
                ]
            mp.reliability = ReliabilityPlan(settings=s, judges=judges)
