"""manifest.json: the stage's books. in = kept + removed + errors, checked; a mismatch fails the stage.

Built from datatrove's per-task stats (``logs[/<pipeline>]/stats/NNNNN.json``, one list entry per pipeline
step) and the typed step roles recorded in ``logs/stage.json``: each role accounts its own step's stats
(stages/base.py). Characters removed by each filter are the characters that entered it minus those it passed on.
"""

from __future__ import annotations

import json

from datatrove.io import get_datafolder

from data_pipeline.stages.base import (Books, DedupRole, ExtractorRole, FilterRole, MixRole, ReaderRole, Role,
                                       TokenizeRole, logs_dir)


class AccountingError(RuntimeError):
    pass


def build_manifest(output_dir: str) -> dict:
    out = output_dir.rstrip("/")
    with get_datafolder(out + "/logs").open("stage.json", "rt") as f:
        state = json.load(f)
    books, order, removed_chars = Books(), [], {}
    for pipeline in state["pipelines"]:
        logs = get_datafolder(logs_dir(out, pipeline))
        tasks, roles = pipeline["tasks"], [Role.from_json(r) for r in pipeline["roles"]]
        missing = [r for r in range(tasks) if not logs.exists(f"completions/{r:05d}")]
        if pipeline.get("optional") and len(missing) == tasks:
            continue  # skipped: an earlier pipeline made it unnecessary (its successors check that it was)
        if missing:
            raise AccountingError(f"pipeline {pipeline['name']}: {len(missing)} of {tasks} tasks are not done "
                                  f"(e.g. task {missing[0]}); rerun the same command to finish them")
        if not pipeline.get("books", True):
            target = Books()  # intermediate pipelines: only their stage-specific counters are kept
        else:
            target = books
        for rank in range(tasks):
            with logs.open(f"stats/{rank:05d}.json", "rt") as f:
                steps = json.load(f)
            if len(steps) != len(roles):
                raise AccountingError(f"{pipeline['name']} stats/{rank:05d}.json has {len(steps)} steps, "
                                      f"stage.json {len(roles)}")
            for role, step in zip(roles, steps):
                role.account(step.get("stats", {}) or {}, target)
        if target is not books:
            for key, value in target.extra.items():
                books.extra[key] += value
            continue
        previous = None
        for role in roles:
            if isinstance(role, (MixRole, TokenizeRole)):
                order.append(role.name)
            if isinstance(role, (FilterRole, DedupRole)):
                order.append(role.name)
                if previous is not None:
                    removed_chars[role.name] = int(books.chars_out[previous] - books.chars_out[role.name])
            if isinstance(role, (ReaderRole, ExtractorRole, FilterRole, DedupRole)):
                if not (isinstance(role, ReaderRole) and previous is not None):
                    previous = role.name
    order = ["reader", "extractor"] + order
    removed_total = sum(sum(r.values()) for r in books.removed.values())
    errors_total = sum(sum(e.values()) for e in books.errors.values())
    n_in, kept = int(books.documents_in), int(books.kept)
    manifest = {
        "stage": state["stage"],
        "output_dir": out,
        "tasks": state["tasks"],
        "documents_in": n_in,
        "bytes_in": int(books.bytes_in),
        "kept": {"documents": kept, "chars": int(books.kept_chars)},
        "removed": {step: {k: int(v) for k, v in sorted(books.removed[step].items())}
                    for step in order if step in books.removed},
        "removed_total": int(removed_total),
        "removed_chars_by_filter": removed_chars,
        "errors": {step: {k: int(v) for k, v in sorted(books.errors[step].items())}
                   for step in order if step in books.errors},
        "errors_total": int(errors_total),
        "balanced": n_in == kept + removed_total + errors_total,
    }
    from data_pipeline.stages import get_stage

    manifest |= get_stage(state["stage"]).manifest_extra(books, state)
    return manifest


def write_manifest(output_dir: str) -> dict:
    """Build, write atomically, and fail (AccountingError) if in != kept + removed + errors."""
    manifest = build_manifest(output_dir)
    folder = get_datafolder(output_dir)
    tmp = "manifest.json.tmp"
    with folder.open(tmp, "wt") as f:
        json.dump(manifest, f, indent=2)
    folder.mv(tmp, "manifest.json")
    if not manifest["balanced"]:
        raise AccountingError(
            f"{output_dir}: documents in ({manifest['documents_in']}) != kept ({manifest['kept']['documents']}) + "
            f"removed ({manifest['removed_total']}) + errors ({manifest['errors_total']}); a step lost or invented "
            "documents. See manifest.json and logs/stats/."
        )
    for section in ("dedup", "score", "mix", "tokenize"):
        if manifest.get(section) and not manifest[section].get("consistent", True):
            raise AccountingError(f"{output_dir}: {manifest[section]['consistency_problem']}")
    return manifest
