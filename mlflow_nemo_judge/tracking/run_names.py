"""The names runs get in MLflow's lists: ``<model without vendor> · <data>`` for a target's run,
``a vs b · <data>`` for a parent. Run lists truncate names from the right, so what tells the runs of
one experiment apart (the model) comes first; the config's name is in the tags and description."""

from __future__ import annotations

from collections.abc import Sequence

from mlflow_nemo_judge.backends.base import Prepared
from mlflow_nemo_judge.tracking import names as nm
from mlflow_nemo_judge.tracking.health import MAX_RUN_NAME


def subject(prepared: Sequence[Prepared]) -> str:
    """What the runs evaluate on, for their names: the dataset name(s), else the config's name."""
    names = list(dict.fromkeys(d.name for p in prepared for d in p.datasets if d.files_url))
    if names and len(names) <= 2:
        return " + ".join(names)
    return prepared[0].config.display_name if prepared else ""


def run_name_for(model: str, p: Prepared) -> str:
    """``<model without vendor> · <data>``: short enough for MLflow's run lists, which truncate from the
    right, and led by what tells the runs of one experiment apart (see ``names.short_model``)."""
    return nm.run_name(nm.short_model(model), subject([p]), MAX_RUN_NAME)


def child_names(names: Sequence[str], prepared: Sequence[Prepared]) -> list[str]:
    """Children named by their short model, or by the full name where two short ones would collide."""
    short = [nm.short_model(n) for n in names]
    models = [sh if short.count(sh) == 1 else n for sh, n in zip(short, names, strict=True)]
    return [nm.run_name(m, subject([p]), MAX_RUN_NAME) for m, p in zip(models, prepared, strict=True)]


def parent_name(names: Sequence[str], prepared: Sequence[Prepared]) -> str:
    """``a vs b · <data>`` for two targets, ``N models · <data>`` for more."""
    short = [nm.short_model(n) for n in names]
    what = " vs ".join(short) if len(short) == 2 else f"{len(short)} models"
    return nm.run_name(what, subject(prepared), MAX_RUN_NAME)
