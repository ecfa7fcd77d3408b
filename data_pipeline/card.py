"""The data card of a pipeline=full run: ``data_card.json``, ``data_card.md`` and ``data_card/*.png``.

Everything in it is read from what the steps wrote (each stage's manifest.json, the classifier's report, the
tokenizer's .json and sample.json, the mix's and tokenize's manifests, blend.json); nothing is recounted.
Per source: documents and characters in and out of every stage with the removal reasons, the dedup rate, the
score histogram, the mixture row (target and realised tokens, epochs) and the tokens in each split.
"""

from __future__ import annotations

import json
import os


def _read(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _stage_row(label: str, directory: str) -> dict:
    m = _read(f"{directory}/manifest.json")
    if m is None:
        raise FileNotFoundError(f"{directory}/manifest.json is missing: the {label} stage did not finish")
    removed = {step: reasons for step, reasons in m["removed"].items() if sum(reasons.values())}
    return {"step": label, "dir": directory, "documents_in": m["documents_in"], "kept": m["kept"]["documents"],
            "kept_chars": m["kept"]["chars"], "removed_total": m["removed_total"], "errors_total": m["errors_total"],
            "removed": removed, "errors": m["errors"], "balanced": m["balanced"],
            **{k: m[k] for k in ("dedup", "score") if k in m}}


def build_card(plan) -> dict:
    out = plan.out
    mix = _read(f"{out}/mix/manifest.json")
    tokens = _read(f"{out}/tokens/manifest.json")
    if mix is None or tokens is None:
        raise FileNotFoundError(f"{out}/mix or {out}/tokens has no manifest.json: the mix or tokenize step did not "
                                "finish; rerun the same command")
    sources = {}
    for name, dirs in plan.stage_dirs.items():
        rows = [_stage_row(label, d) for label, d in dirs]
        filters = [r for r in rows if r["step"].startswith("filter")]
        entry = {"inputs": [{"paths": i.paths, "format": str(i.format)} for i in plan.cfg.pipeline.sources[name].inputs],
                 "filters": plan.cfg.pipeline.sources[name].filters,
                 "quality": str(plan.cfg.pipeline.sources[name].quality),
                 "read": sum(r["documents_in"] for r in filters),
                 "after_filter": sum(r["kept"] for r in filters), "stages": rows}
        dedup = next((r for r in rows if r["step"] == "dedup"), None)
        if dedup is not None:
            entry["dedup_rate"] = round(dedup["removed_total"] / dedup["documents_in"], 4) if dedup["documents_in"] else 0
        entry["mix"] = mix["mix"]["sources"][name]
        entry["tokens"] = {split: n for key, n in tokens["tokenize"]["tokens"].items()
                           for split, src in [key.split(".", 1)] if src == name}
        sources[name] = entry
    tok_json = _read(plan.tokenizer_model[:-len(".model")] + ".json") or {}
    tokenizer = {"model": plan.tokenizer_model, "sha256": tok_json.get("sha256"),
                 "vocab_size": tok_json.get("vocab_size"), "training_bytes": tok_json.get("training_bytes"),
                 "sample": _read(os.path.dirname(plan.tokenizer_model) + "/sample.json"),
                 "chars_per_token": {n: round(s["characters_written"] / s["realised_tokens"], 4)
                                     for n, s in mix["mix"]["sources"].items() if s["realised_tokens"]}}
    card = {"output_dir": out, "config": f"{out}/pipeline.json", "sources": sources, "tokenizer": tokenizer,
            "mixture": mix["mix"], "token_shares": tokens["tokenize"]["token_shares"],
            "blend": f"{out}/tokens/blend.json",
            "trainer_overrides": [f"data.blend={out}/tokens/blend.json", f"data.tokenizer_model={plan.tokenizer_model}"]}
    report = _read(plan.classifier_model[:-len(".model")] + ".report.json") if plan.scored else None
    if report is not None:
        card["classifier"] = {"model": plan.classifier_model, "sha256": report["model"]["sha256"],
                              **{k: report[k] for k in ("train", "heldout") if k in report},
                              "sources": [{k: s[k] for k in ("path", "side", "documents", "trained_on", "held_out",
                                                             "held_out_mean_score")} for s in report["sources"]]}
    return card


def _plots(card: dict, folder: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    os.makedirs(folder, exist_ok=True)
    written = []
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    names = list(card["sources"])
    stages = ["read", "after filter", "after dedup", "after score", "mixed (copies)"]
    for i, name in enumerate(names):
        s = card["sources"][name]
        steps = {r["step"]: r for r in s["stages"]}
        values = [s["read"], s["after_filter"], steps.get("dedup", {}).get("kept", s["after_filter"]),
                  steps.get("score", steps.get("dedup", {})).get("kept", s["after_filter"]),
                  s["mix"]["documents_written"]]
        width = 0.8 / len(names)
        ax.bar([j + i * width for j in range(len(stages))], values, width, label=name)
    ax.set_xticks([j + 0.4 - 0.4 / len(names) for j in range(len(stages))], stages)
    ax.set_yscale("log")
    ax.set_ylabel("documents")
    ax.set_title("Documents per source after each stage")
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{folder}/documents_per_stage.png", dpi=110)
    written.append("documents_per_stage.png")
    scored = {n: r["score"] for n, s in card["sources"].items() for r in s["stages"] if "score" in r}
    if scored:
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        for name, score in scored.items():
            total = sum(score["histogram"]) or 1
            ax.step([i / 10 for i in range(11)], [h / total for h in score["histogram"]] + [0], where="post",
                    label=f"{name} ({score['documents_scored']} documents, mean {score['mean_score']:.2f})")
        ax.set_xlabel("quality score (P(reference))")
        ax.set_ylabel("share of documents")
        ax.set_title("Quality scores")
        ax.legend()
        fig.tight_layout()
        fig.savefig(f"{folder}/score_histograms.png", dpi=110)
        written.append("score_histograms.png")
    return written


def _markdown(card: dict) -> str:
    lines = [f"# Data card: {card['output_dir']}", "",
             f"Made by `python -m data_pipeline pipeline=full` (config: `{card['config']}`). Train on it with "
             f"`python -m pretrain {' '.join(card['trainer_overrides'])}`.", "", "## Sources", "",
             "| source | inputs | filters | read | after filter | dedup removed | mixed copies | train tokens | "
             "valid tokens |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in card["sources"].items():
        inputs = "; ".join(f"{i['format']}: {', '.join(i['paths'])}" for i in s["inputs"])
        lines.append(f"| {name} | {inputs} | {s['filters']} | {s['read']:,} | {s['after_filter']:,} | "
                     f"{s.get('dedup_rate', 0):.1%} | {s['mix']['documents_written']:,} | "
                     f"{s['tokens'].get('train', 0):,} | {s['tokens'].get('valid', 0):,} |")
    lines += ["", "![documents per stage](data_card/documents_per_stage.png)", "", "## Stages and removal reasons", ""]
    for name, s in card["sources"].items():
        lines += [f"### {name}", "", "| step | in | kept | removed | errors | reasons |", "|---|---|---|---|---|---|"]
        for r in s["stages"]:
            reasons = "; ".join(f"{step}: " + ", ".join(f"{k} {v:,}" for k, v in rs.items() if v)
                                for step, rs in {**r["removed"], **{f"error/{k}": v for k, v in r["errors"].items()}}
                                .items() if sum(rs.values()))
            lines.append(f"| {r['step']} | {r['documents_in']:,} | {r['kept']:,} | {r['removed_total']:,} | "
                         f"{r['errors_total']:,} | {reasons or '-'} |")
        lines.append("")
    m = card["mixture"]
    lines += ["## Mixture", "", f"Total: {m['total_tokens']:,.0f} tokens targeted, {m['realised_tokens']:,} realised.",
              "", "| source | target share | realised share | target tokens | realised tokens | epochs | max epochs | "
              "available tokens |", "|---|---|---|---|---|---|---|---|"]
    for name, s in m["sources"].items():
        lines.append(f"| {name} | {s['target_share']:.4f} | {s['realised_share']:.4f} | {s['target_tokens']:,} | "
                     f"{s['realised_tokens']:,} | {s['epochs']:.3f} | {s['max_epochs']:g} | {s['available_tokens']:,} |")
    notes = [s["note"] for s in m["sources"].values() if s.get("note")]
    lines += ["", *(f"Note: {n}." for n in notes)] if notes else []
    t = card["tokenizer"]
    lines += ["", "## Tokenizer", "", f"`{t['model']}`: vocabulary {t['vocab_size']}, sha256 `{t['sha256']}`, trained "
              f"on {t['training_bytes'] or 0:,} bytes.", ""]
    if t.get("sample"):
        lines += ["| source | sampled documents | of | sampled bytes | budget bytes | characters per token (mixed) |",
                  "|---|---|---|---|---|---|"]
        for name, s in t["sample"].items():
            lines.append(f"| {name} | {s['documents']:,} | {s['of_documents']:,} | {s['bytes']:,} | "
                         f"{s['budget_bytes']:,} | {t['chars_per_token'].get(name, float('nan')):.3f} |")
    if "classifier" in card:
        c = card["classifier"]
        lines += ["", "## Quality classifier", "", f"`{c['model']}` (sha256 `{c['sha256'][:16]}`): held-out accuracy "
                  f"{c.get('heldout', {}).get('accuracy', float('nan')):.3f}, ROC-AUC "
                  f"{c.get('heldout', {}).get('roc_auc', float('nan')):.3f}.", "",
                  "| documents | side | trained on | held out | held-out mean score |", "|---|---|---|---|---|"]
        for s in c["sources"]:
            mean = s["held_out_mean_score"]
            lines.append(f"| {s['path']} | {s['side']} | {s['trained_on']:,} | {s['held_out']:,} | "
                         f"{'-' if mean is None else f'{mean:.3f}'} |")
        lines += ["", "![score histograms](data_card/score_histograms.png)"]
    return "\n".join(lines) + "\n"


def write_data_card(plan) -> dict:
    card = build_card(plan)
    card["plots"] = [f"data_card/{p}" for p in _plots(card, f"{plan.out}/data_card")]
    for name, text in (("data_card.md", _markdown(card)), ("data_card.json", json.dumps(card, indent=2) + "\n")):
        with open(f"{plan.out}/{name}.tmp", "w") as f:
            f.write(text)
        os.replace(f"{plan.out}/{name}.tmp", f"{plan.out}/{name}")
    print(f"[full] data card: {plan.out}/data_card.md", flush=True)
    return card
