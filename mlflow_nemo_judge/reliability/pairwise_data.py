"""The data side of pairwise judging: the targets' outputs aligned on disk, the running tallies, and
the Bradley–Terry ranking with bootstrap CIs (see :mod:`mlflow_nemo_judge.reliability.pairwise`)."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlflow_nemo_judge.reliability.pairwise_report import PairStats, TaskPairwise
from mlflow_nemo_judge.results import EvalResult

_MAX_REASONS = 20  # distinct unjudged reasons kept per pair; the rest are counted under "other"
_OUTCOME_SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


class OutputIndex:
    """The targets' non-empty outputs of the pairwise tasks, indexed on disk by (task, item id,
    occurrence); the row itself is kept once per item (from the first target that has it)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE outputs (task TEXT, target INT, item_id TEXT, occ INT, idx INT, output TEXT,"
            " PRIMARY KEY (task, target, item_id, occ));"
            "CREATE TABLE items (task TEXT, item_id TEXT, occ INT, item TEXT,"
            " PRIMARY KEY (task, item_id, occ));"
        )

    def load(self, results: Sequence[EvalResult], tasks: set[str]) -> None:
        for t, res in enumerate(results):
            seen: dict[tuple[str, str], int] = {}
            rows: list[tuple[Any, ...]] = []
            items: list[tuple[Any, ...]] = []
            for rec in res.iter_samples():
                if rec.task not in tasks:
                    continue
                k = (rec.task, rec.item_id)
                occ = seen[k] = seen.get(k, -1) + 1  # duplicate ids pair up in order
                text = rec.output_text
                if rec.target_error is not None or text is None or not text.strip():
                    continue
                rows.append((rec.task, t, rec.item_id, occ, rec.index, text))
                items.append((rec.task, rec.item_id, occ, json.dumps(rec.item, ensure_ascii=False)))
                if len(rows) >= 1000:
                    self._flush(rows, items)
            self._flush(rows, items)

    def _flush(self, rows: list[tuple[Any, ...]], items: list[tuple[Any, ...]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO outputs VALUES (?,?,?,?,?,?)", rows)
        self.db.executemany("INSERT OR IGNORE INTO items VALUES (?,?,?,?)", items)
        rows.clear()
        items.clear()

    _JOIN = (
        " FROM outputs a JOIN outputs b ON b.task = a.task AND b.item_id = a.item_id AND b.occ = a.occ"
        " AND b.target = ? WHERE a.task = ? AND a.target = ?"
    )

    def count(self, task: str, i: int, j: int) -> int:
        return int(self.db.execute("SELECT COUNT(*)" + self._JOIN, (j, task, i)).fetchone()[0])

    def pairs(self, task: str, i: int, j: int) -> Iterator[tuple[str, int, int, str, str, dict[str, Any]]]:
        """``(item_id, occ, index, output_i, output_j, row)`` in target i's item order."""
        sql = (
            "SELECT a.item_id, a.occ, a.idx, a.output, b.output, it.item"
            + self._JOIN.replace(
                " WHERE",
                " JOIN items it ON it.task = a.task AND it.item_id = a.item_id AND it.occ = a.occ WHERE",
            )
            + " ORDER BY a.idx, a.occ"
        )
        cur = self.db.execute(sql, (j, task, i))
        while batch := cur.fetchmany(256):
            for item_id, occ, idx, oa, ob, item in batch:
                yield str(item_id), int(occ), int(idx), str(oa), str(ob), json.loads(item)

    def close(self) -> None:
        self.db.close()


class Tally:
    """One task's running tallies: per pair the counts, per item the outcomes (for the bootstrap)."""

    def __init__(self, task: str, judge: str, labels: Sequence[str]) -> None:
        self.task, self.judge, self.labels = task, judge, list(labels)
        n = len(labels)
        self.pairs = {(i, j): PairStats(labels[i], labels[j]) for i in range(n) for j in range(i + 1, n)}
        self.item_ids: dict[tuple[str, int], int] = {}
        self.outcomes: list[tuple[int, int, int, float]] = []  # (item, i, j, score of i)

    def add(
        self, i: int, j: int, key: tuple[str, int], outcome: str | None, consistent: bool, reason: str | None
    ) -> None:
        p = self.pairs[(i, j)]
        if outcome is None:
            p.unjudged += 1
            why = (reason or "unknown")[:300]
            if why not in p.reasons and len(p.reasons) >= _MAX_REASONS:
                why = "other"
            p.reasons[why] = p.reasons.get(why, 0) + 1
            return
        if outcome == "win":
            p.wins += 1
        elif outcome == "loss":
            p.losses += 1
        else:
            p.ties += 1
        if not consistent:
            p.inconsistent += 1
        item = self.item_ids.setdefault(key, len(self.item_ids))
        self.outcomes.append((item, i, j, _OUTCOME_SCORE[outcome]))


def strengths(
    outcomes: Sequence[tuple[int, int, int, float]], n: int, *, reps: int, seed: int
) -> tuple[list[float | None], list[tuple[float, float] | None], list[int | None]]:
    """Bradley–Terry strength shares of ``n`` targets, their 95% bootstrap CIs and ranks (1 = best).

    ``outcomes``: ``(item, i, j, score of i)``. The CI is on the share scale, so each bootstrap
    replicate's shares are computed together (a share depends on every target's strength: the bounds of
    ``scoring.ranking.bradley_terry_ci``'s log-strength intervals cannot be mapped one by one). Items,
    not single comparisons, are resampled: all pairs judged on one item share its difficulty.
    """
    from mlflow_nemo_judge.scoring.ranking import bradley_terry, strength_shares

    if not outcomes:
        return [None] * n, [None] * n, [None] * n
    flat = [(i, j, s) for _, i, j, s in outcomes]
    shares = strength_shares(bradley_terry(flat, n))
    # Competition ranking ("1, 1, 3"): targets the data cannot tell apart share a rank.
    ranks: list[int | None] = [1 + sum(o > v + 1e-9 for o in shares) for v in shares]
    by_item: dict[int, list[tuple[int, int, float]]] = {}
    for item, i, j, s in outcomes:
        by_item.setdefault(item, []).append((i, j, s))
    items = list(by_item.values())
    rng = random.Random(seed)
    draws: list[list[float]] = [[] for _ in range(n)]
    for _ in range(reps):
        sample = [o for _ in items for o in items[rng.randrange(len(items))]]
        for t, v in enumerate(strength_shares(bradley_terry(sample, n))):
            draws[t].append(v)
    cis: list[tuple[float, float] | None] = []
    for d in draws:
        if not d:
            cis.append(None)
            continue
        d.sort()
        lo = d[max(0, math.floor(0.025 * (len(d) - 1)))]
        hi = d[min(len(d) - 1, math.ceil(0.975 * (len(d) - 1)))]
        cis.append((lo, hi))
    return list(shares), cis, ranks


def finish(tally: Tally, judgments: Path, reps: int, seed: int) -> TaskPairwise:
    """Win rates with CIs per pair; Bradley–Terry shares with bootstrap CIs and ranks."""
    from mlflow_nemo_judge.scoring.ranking import win_rate

    for p in tally.pairs.values():
        if p.judged:
            p.win_rate, p.ci95_low, p.ci95_high = win_rate(p.wins, p.ties, p.losses)
    shares, cis, ranks = strengths(tally.outcomes, len(tally.labels), reps=reps, seed=seed)
    return TaskPairwise(
        task=tally.task,
        judge=tally.judge,
        labels=tally.labels,
        pairs=list(tally.pairs.values()),
        strengths=shares,
        strength_ci=cis,
        ranks=ranks,
        judgments=judgments,
    )
