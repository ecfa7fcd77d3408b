"""The table the fits read: one row per run (N, D, C, final loss, IsoFLOP budget), and what was excluded.

Rows come from a ladder directory (tools/scaling/ladder.py) or from a CSV of published runs, read with its
columns as they are (Chinchilla: Model Size, Training FLOP, loss; Porian et al.: params, tokens, flops, loss).
Nothing is dropped silently: every excluded row is listed with its reason.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Accepted column names, first match wins.
N_COLUMNS = ("params", "Model Size", "N", "num_params")
N_NON_EMB_COLUMNS = ("params_non_embedding", "num_params_non_embedding")
D_COLUMNS = ("tokens", "Training Tokens", "D")
C_COLUMNS = ("flops", "Training FLOP", "C", "compute")
LOSS_COLUMNS = ("loss", "final_loss", "val_loss")


@dataclass
class Points:
    name: list[str]
    n_total: np.ndarray
    n_non_embedding: np.ndarray  # NaN where unknown (CSV without the column)
    tokens: np.ndarray
    flops: np.ndarray
    loss: np.ndarray
    budget: np.ndarray  # nominal IsoFLOP budget of each run
    excluded: list[dict] = field(default_factory=list)  # {"name", "reason"}
    loss_kind: str = "final"

    def __len__(self) -> int:
        return len(self.name)

    def n(self, which: str) -> np.ndarray:
        if which == "non_embedding":
            if np.isnan(self.n_non_embedding).any():
                raise ValueError("fit.params=non_embedding: the data has no non-embedding parameter counts. "
                                 "Fix: use fit.params=total, or add a params_non_embedding column")
            return self.n_non_embedding
        return self.n_total

    def take(self, keep: np.ndarray) -> "Points":
        idx = np.flatnonzero(keep)
        return Points([self.name[i] for i in idx], self.n_total[idx], self.n_non_embedding[idx],
                      self.tokens[idx], self.flops[idx], self.loss[idx], self.budget[idx], list(self.excluded),
                      self.loss_kind)

    def drop(self, keep: np.ndarray, reason_of) -> "Points":
        out = self.take(keep)
        out.excluded += [{"name": self.name[i], "reason": reason_of(i)} for i in np.flatnonzero(~keep)]
        return out


def _column(header: list[str], names: tuple[str, ...]) -> str | None:
    for n in names:
        if n in header:
            return n
    return None


def group_budgets(flops: np.ndarray, rtol: float) -> np.ndarray:
    """Nominal budget per run: runs whose FLOPs lie within rtol of a group's smallest member share it."""
    order = np.argsort(flops)
    budget = np.empty_like(flops)
    start = None
    members: list[int] = []
    for i in order:
        if start is None or flops[i] > start * (1 + rtol):
            if members:
                budget[members] = float(np.exp(np.mean(np.log(flops[members]))))
            start, members = flops[i], []
        members.append(i)
    if members:
        budget[members] = float(np.exp(np.mean(np.log(flops[members]))))
    return budget


def read_csv(path: Path, rtol: float = 0.05, group_by: str | None = None) -> dict[str, Points]:
    """Rows of a CSV as Points (one Points per value of `group_by`, or {"all": ...})."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    cn, cd, cc, cl = (_column(header, c) for c in (N_COLUMNS, D_COLUMNS, C_COLUMNS, LOSS_COLUMNS))
    missing = []
    if cn is None:
        missing.append(f"parameters ({' or '.join(N_COLUMNS)})")
    if cl is None:
        missing.append(f"loss ({' or '.join(LOSS_COLUMNS)})")
    if cd is None and cc is None:
        missing.append(f"tokens ({' or '.join(D_COLUMNS)}) or FLOPs ({' or '.join(C_COLUMNS)})")
    if missing:
        raise ValueError(f"{path}: missing columns: {'; '.join(missing)}. Found columns: {header}. Fix: rename "
                         "the columns, or add them (tokens = FLOPs / (6 x params))")
    if group_by is not None and group_by not in header:
        raise ValueError(f"fit.group_by={group_by!r}: no such column in {path} (columns: {header})")
    cne = _column(header, N_NON_EMB_COLUMNS)
    groups: dict[str, list[tuple]] = {}
    bad: dict[str, list[dict]] = {}
    for i, row in enumerate(rows):
        key = row[group_by] if group_by else "all"
        name = f"row{i + 2}"  # the CSV line number
        try:
            n = float(row[cn])
            loss = float(row[cl])
            d = float(row[cd]) if cd else float("nan")
            c = float(row[cc]) if cc else float("nan")
            ne = float(row[cne]) if cne else float("nan")
        except (TypeError, ValueError):
            cols = [c for c in (cn, cd, cc, cl, cne) if c]
            empty = [c for c in cols if not str(row.get(c) or "").strip()]
            why = f"empty {', '.join(empty)}" if empty else f"unreadable number in {', '.join(cols)}"
            bad.setdefault(key, []).append({"name": name, "reason": why})
            continue
        if cd is None:
            d = c / (6 * n) if n > 0 else float("nan")
        if cc is None:
            c = 6 * n * d
        if not all(math.isfinite(x) and x > 0 for x in (n, d, c, loss)):
            bad.setdefault(key, []).append({"name": name, "reason": f"non-finite or non-positive value (N={n}, "
                                            f"D={d}, C={c}, loss={loss})"})
            continue
        groups.setdefault(key, []).append((name, n, ne, d, c, loss))
    out = {}
    for key in sorted(set(groups) | set(bad)):
        rs = groups.get(key, [])
        names = [r[0] for r in rs]
        arr = np.array([r[1:] for r in rs], float).reshape(-1, 5)
        pts = Points(names, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4],
                     group_budgets(arr[:, 3], rtol) if len(rs) else arr[:, 3], bad.get(key, []))
        out[key] = drop_duplicates(pts)
    return out


def drop_duplicates(p: Points) -> Points:
    """The same (N, D) twice is one run counted twice: keep the first, exclude the others with the reason."""
    seen: dict[tuple, str] = {}
    keep = np.ones(len(p), bool)
    first = {}
    for i in range(len(p)):
        key = (float(f"{p.n_total[i]:.6g}"), float(f"{p.tokens[i]:.6g}"))
        if key in seen:
            keep[i] = False
            first[i] = seen[key]
        else:
            seen[key] = p.name[i]
    return p.drop(keep, lambda i: f"duplicate run: same N and D as {first[i]}")


def exclude_highest(p: Points, k: int) -> Points:
    """Drop the k highest-loss runs (Besiroglu et al.'s protocol drops 5 from the Chinchilla data)."""
    if k <= 0:
        return p
    if k >= len(p):
        raise ValueError(f"exclude_highest_loss={k} would drop all {len(p)} runs. Fix: use a smaller number")
    order = np.argsort(-p.loss, kind="stable")
    keep = np.ones(len(p), bool)
    keep[order[:k]] = False
    return p.drop(keep, lambda i: f"among the {k} highest losses (exclude_highest_loss={k})")
