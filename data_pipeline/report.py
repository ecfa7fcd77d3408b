"""`python -m data_pipeline report DIR`: the manifest as a table a person reads."""

from __future__ import annotations

import json
from pathlib import Path


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:6.2f}%" if total else "     -"


def format_report(manifest: dict) -> str:
    total = manifest["documents_in"]
    rows = [("documents in", total, ""), ("  kept", manifest["kept"]["documents"], "")]
    chars = manifest.get("removed_chars_by_filter", {})
    for kind in ("removed", "errors"):
        rows.append((f"  {kind}", manifest[f"{kind}_total"], ""))
        for step, reasons in manifest[kind].items():
            rows.append((f"    {step}", sum(reasons.values()),
                         f"{chars[step]:,} chars" if kind == "removed" and step in chars else ""))
            for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
                rows.append((f"      {reason}", n, ""))
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{manifest['stage']} stage: {manifest['output_dir']} ({manifest['tasks']} tasks)",
             f"{'':{width}}{'documents':>10} {'share':>8}  text removed"]
    lines += [f"{name:{width}}{n:>10} {_pct(n, total):>8}  {extra}".rstrip() for name, n, extra in rows]
    lines.append(f"bytes in: {manifest['bytes_in']:,}   kept text: {manifest['kept']['chars']:,} characters")
    check = "holds" if manifest["balanced"] else "DOES NOT HOLD"
    lines.append(f"in = kept + removed + errors: {total} = {manifest['kept']['documents']} + "
                 f"{manifest['removed_total']} + {manifest['errors_total']}  ({check})")
    if score := manifest.get("score"):
        lines.append(f"quality scores (metadata.{score['key']}, model {(score['model_sha256'] or '')[:16]}): "
                     f"{score['documents_scored']} documents, mean {score['mean_score']}, per tenth "
                     f"{' '.join(str(n) for n in score['histogram'])}")
    return "\n".join(lines)


def report(output_dir: str) -> str:
    path = Path(output_dir) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the stage has not finished (rerun it to resume), "
                                "or DIR is not a stage output directory")
    return format_report(json.loads(path.read_text()))
