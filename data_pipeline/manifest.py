"""manifest.json: the stage's books. in = kept + removed + errors, checked; a mismatch fails the stage.

Built from datatrove's per-task stats (``logs/stats/NNNNN.json``, one list entry per pipeline step) and the
step roles recorded in ``logs/stage.json``:

* reader: ``in`` / ``in_bytes`` (every record met), ``removed:<reason>``, ``error:<reason>`` (ours);
* extractor (datatrove's): ``dropped`` (nothing left after extraction) is removed, ``timeout`` /
  ``broken_process`` / ``clean_error`` are errors;
* filter (datatrove's BaseFilter): ``dropped`` and ``dropped_<reason>``;
* writer: ``total`` documents kept, ``doc_len`` their characters.

Characters removed by each filter are the characters that entered it minus those it passed on.
"""

from __future__ import annotations

import json
from collections import defaultdict

from datatrove.io import get_datafolder

from data_pipeline.sources.accounting import ERROR, IN, IN_BYTES, REMOVED

EXTRACTOR_ERRORS = {"timeout": "extraction_timeout", "broken_process": "extractor_crashed",
                    "clean_error": "extraction_failed"}


class AccountingError(RuntimeError):
    pass


def _total(value) -> float:
    if isinstance(value, dict):
        return value.get("total", 0)
    return value or 0


def build_manifest(output_dir: str) -> dict:
    out = output_dir.rstrip("/")
    logs = get_datafolder(out + "/logs")
    with logs.open("stage.json", "rt") as f:
        state = json.load(f)
    tasks, roles = state["tasks"], state["roles"]
    missing = [r for r in range(tasks) if not logs.exists(f"completions/{r:05d}")]
    if missing:
        raise AccountingError(f"{len(missing)} of {tasks} tasks are not done (e.g. task {missing[0]}); "
                              "rerun the same command to finish them")
    counts = defaultdict(float)
    removed = defaultdict(lambda: defaultdict(int))
    errors = defaultdict(lambda: defaultdict(int))
    chars_in_step = defaultdict(float)
    for rank in range(tasks):
        with logs.open(f"stats/{rank:05d}.json", "rt") as f:
            steps = json.load(f)
        if len(steps) != len(roles):
            raise AccountingError(f"stats/{rank:05d}.json has {len(steps)} steps, stage.json {len(roles)}")
        for role, step in zip(roles, steps):
            stats = step.get("stats", {}) or {}
            if role == "reader":
                counts["in"] += _total(stats.get(IN))
                counts["bytes_in"] += _total(stats.get(IN_BYTES))
                for key, value in stats.items():
                    if key.startswith(REMOVED):
                        removed["reader"][key[len(REMOVED):]] += _total(value)
                    elif key.startswith(ERROR):
                        errors["reader"][key[len(ERROR):]] += _total(value)
            elif role == "extractor":
                if _total(stats.get("dropped")):
                    removed["extractor"]["no_text_after_extraction"] += _total(stats.get("dropped"))
                for key, reason in EXTRACTOR_ERRORS.items():
                    if _total(stats.get(key)):
                        errors["extractor"][reason] += _total(stats.get(key))
            elif role.startswith("filter:"):
                name = role[len("filter:"):]
                dropped = _total(stats.get("dropped"))
                with_reason = 0
                for key, value in stats.items():
                    if key.startswith("dropped_"):
                        removed[name][key[len("dropped_"):]] += _total(value)
                        with_reason += _total(value)
                if dropped - with_reason:
                    removed[name]["unspecified"] += dropped - with_reason
                removed.setdefault(name, defaultdict(int))
            elif role == "writer":
                counts["kept"] += _total(stats.get("total"))
                counts["kept_chars"] += _total(stats.get("doc_len"))
            chars_in_step[role] += _total(stats.get("doc_len"))
    # characters each filter removed: what entered it (the previous step's output) minus what it passed on
    removed_chars, previous = {}, None
    for role in roles:
        if role.startswith("filter:") and previous is not None:
            removed_chars[role[len("filter:"):]] = int(chars_in_step[previous] - chars_in_step[role])
        if role in ("extractor",) or role.startswith("filter:") or (role == "reader" and previous is None):
            previous = role
    order = ["reader", "extractor"] + [r[len("filter:"):] for r in roles if r.startswith("filter:")]
    removed_total = sum(sum(r.values()) for r in removed.values())
    errors_total = sum(sum(e.values()) for e in errors.values())
    n_in, kept = int(counts["in"]), int(counts["kept"])
    manifest = {
        "stage": state["stage"],
        "output_dir": out,
        "tasks": tasks,
        "documents_in": n_in,
        "bytes_in": int(counts["bytes_in"]),
        "kept": {"documents": kept, "chars": int(counts["kept_chars"])},
        "removed": {step: {k: int(v) for k, v in sorted(removed[step].items())} for step in order if step in removed},
        "removed_total": int(removed_total),
        "removed_chars_by_filter": removed_chars,
        "errors": {step: {k: int(v) for k, v in sorted(errors[step].items())} for step in order if step in errors},
        "errors_total": int(errors_total),
        "balanced": n_in == kept + removed_total + errors_total,
    }
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
    return manifest
