"""The pipeline's reliability stages (the config's ``mlflow_nemo_judge:`` block), kept out of
``pipeline.py`` so the flow stays readable there: the reliability report of one target's full result,
and the position-swapped pairwise stage over several targets' outputs.

Both are computed from whole results, the same way for a new, a resumed and a ``--retry-errors`` run;
the heavy statistics behind them are imported only when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.config import EvalConfig
from mlflow_nemo_judge.engine import RunOptions
from mlflow_nemo_judge.errors import ConfigError
from mlflow_nemo_judge.plan import DEFAULT_PARALLELISM
from mlflow_nemo_judge.results import EvalResult

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.pairwise_report import PairwiseReport
    from mlflow_nemo_judge.reliability.report import ReliabilityReport


def reliability_of(config: EvalConfig, result: EvalResult) -> ReliabilityReport | None:
    """The reliability report of one target's full result (None when the config asks for nothing to
    measure). The same call for a new run, a resumed one and ``--retry-errors``: always the whole
    result, never only the samples this process judged."""
    ext = config.extension()
    if ext is None or ext.reliability is None:
        # Nothing declared (``--judge-repeats`` is written into the block, see ``with_judge_repeats``):
        # a plain run, whose samples need not be read again.
        return None
    from mlflow_nemo_judge.reliability.analysis import analyze

    return analyze(config, result)


def pairwise_block(config: EvalConfig) -> dict[str, Any]:
    """The config's ``mlflow_nemo_judge.pairwise`` block (task -> its pairwise judge); empty without."""
    from mlflow_nemo_judge.config.extension import pairwise_tasks

    return dict(pairwise_tasks(config))


def check_pairwise(config: EvalConfig, n_targets: int) -> None:
    """Pairwise judging compares targets: with one target it is bad input, refused before any run."""
    if n_targets < 2 and pairwise_block(config):
        raise ConfigError("mlflow_nemo_judge.pairwise", "pairwise judging needs two or more targets")


async def run_pairwise(
    config: EvalConfig,
    results: Sequence[EvalResult],
    labels: Sequence[str],
    options: RunOptions,
    parallelism: int | None,
) -> PairwiseReport | None:
    """The position-swapped pairwise stage over the targets' outputs, with the run's options (cache,
    parallelism, backoff, an injected HTTP client); None without a ``pairwise`` block."""
    if len(results) < 2 or not pairwise_block(config):
        return None
    from mlflow_nemo_judge.reliability.pairwise import judge_pairwise

    return await judge_pairwise(
        config,
        results,
        labels,
        http_client=options.http_client,
        use_cache=options.cache,
        cache_dir=options.cache_dir,
        parallelism=parallelism or options.parallelism or DEFAULT_PARALLELISM,
        backoff_base=options.backoff_base,
        backoff_max=options.backoff_max,
    )
