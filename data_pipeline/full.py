"""pipeline=full: every stage from crawl to token shards, as dependent steps, resumable as a whole.

    python -m data_pipeline pipeline=full output.dir=OUT executor.tasks=4     # the sample kit
    python -m data_pipeline pipeline=full executor=slurm executor.partition=cpu output.dir=/scratch/OUT

The steps, in order (``OUT`` = output.dir):

    per source S, per input i   stage=filter  -> OUT/sources/S/filter[_i]/   extraction + the source's filter preset
    per source S                stage=dedup   -> OUT/sources/S/dedup/        over all of S's inputs (dedup: true)
    classifier                  score train   -> OUT/classifier/quality.*    reference vs crawl sources' documents
    per source S (pareto, top) stage=score   -> OUT/sources/S/score/        the sources that mix with select=pareto|top
    tokenizer                   BPE           -> OUT/tokenizer/bpe.*         on a sample of every source, in
                                                                             proportion to its mix share
    mix                         stage=mix     -> OUT/mix/                    mix.* shares over the sources' last outputs
    tokenize                    stage=tokenize-> OUT/tokens/                 .bin/.idx per split and source, blend.json
    card                        data card     -> OUT/data_card.md, .json, data_card/*.png

Each stage is the same stage a single-stage command runs (its own manifest, books, completions and resume
fingerprint); the classifier and the tokenizer record what they were made from in ``state.json`` next to them.
Rerunning the command skips what is done; a step whose config or input changed is refused, naming its folder.

The BPE comes before the mix, not after it, because the mix counts tokens exactly with it; its sample is drawn
from each source in proportion to the source's share (uniform across that source's shards), which is the
mixture's make-up without its repetitions.

Executors: local and MPI run the steps one after the other in this process. On Slurm, every step after the first
stage runs in a small launcher job chained ``afterok`` on the job before: a launcher runs the work steps itself
and submits the next stage's job arrays, then the launcher that follows them. The submitting command waits for
the chain (``executor.wait=true``) or returns.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from data_pipeline.config import ConfigError, InputConfig, PipelineConfig, StageConfig, load_filters

CONFIG_FILE = "pipeline.json"
JOBS_FILE = "logs/full/jobs.jsonl"


@dataclass
class Step:
    name: str
    dir: str
    stage: Callable[[], StageConfig] | None = None  # a stage: its config, built when it is about to run
    work: Callable[[], None] | None = None  # in-process work (classifier, tokenizer, card)


def resolve_path(path: str) -> str:
    """A sample name (optionally followed by /sub/path) becomes its fetched folder or file; paths become absolute."""
    from data_pipeline.samples import REGISTRY, fetch

    head, _, rest = path.partition("/")
    if head in REGISTRY and not os.path.exists(path):
        base = fetch([head])[head]
        return str(base / rest) if rest else str(base)
    return path if "://" in path else os.path.abspath(path)


def _stage_config(cfg: StageConfig, stage: str, out: str, paths: list[str], fmt: str = "jsonl",
                  glob: str | None = None, text_key: str = "text", filters: list | None = None) -> StageConfig:
    sub = copy.deepcopy(cfg)
    sub.stage = stage
    sub.pipeline = PipelineConfig()
    sub.filters = filters or []
    sub.input = InputConfig(paths=list(paths), format=fmt, glob=glob, text_key=text_key,
                            max_record_bytes=cfg.input.max_record_bytes)
    sub.output = dataclasses.replace(cfg.output, dir=out)
    sub.executor = dataclasses.replace(cfg.executor, wait=cfg.executor.wait if cfg.executor.kind != "slurm" else False,
                                       job_name=f"{cfg.executor.job_name}_{os.path.basename(os.path.dirname(out))}"
                                       f"_{os.path.basename(out)}")
    sub.mix = dataclasses.replace(cfg.mix, sources={})
    return sub


class Plan:
    """The steps of one pipeline=full config and where each writes."""

    def __init__(self, cfg: StageConfig):
        self.cfg = cfg
        self.out = os.path.abspath(cfg.output.dir)
        p = cfg.pipeline
        self.classifier_model = p.classifier.model or f"{self.out}/classifier/quality.model"
        self.tokenizer_model = p.tokenizer.model or f"{self.out}/tokenizer/bpe.model"
        self.scored = [n for n, s in cfg.mix.sources.items() if s.select in ("pareto", "top")]
        self.steps: list[Step] = []
        self.stage_dirs: dict[str, list[tuple[str, str]]] = {}  # source -> [(stage name, dir)]
        for name, src in p.sources.items():
            dirs = self.stage_dirs.setdefault(name, [])
            for i, inp in enumerate(src.inputs):
                label = "filter" if len(src.inputs) == 1 else f"filter_{i}"
                d = f"{self.out}/sources/{name}/{label}"
                dirs.append((label, d))
                self.steps.append(Step(f"{name}/{label}", d, stage=self._filter(inp, src.filters, d)))
            if src.dedup:
                d = f"{self.out}/sources/{name}/dedup"
                self.steps.append(Step(f"{name}/dedup", d, stage=self._after(name, "dedup", d)))
                dirs.append(("dedup", d))
        if self.scored and not p.classifier.model:
            self.steps.append(Step("classifier", f"{self.out}/classifier", work=self.train_classifier))
        for name in self.scored:
            d = f"{self.out}/sources/{name}/score"
            self.steps.append(Step(f"{name}/score", d, stage=self._after(name, "score", d)))
            self.stage_dirs[name].append(("score", d))
        if not p.tokenizer.model:
            self.steps.append(Step("tokenizer", f"{self.out}/tokenizer", work=self.train_tokenizer))
        self.steps.append(Step("mix", f"{self.out}/mix", stage=self._mix))
        self.steps.append(Step("tokenize", f"{self.out}/tokens", stage=self._tokenize))
        self.steps.append(Step("card", self.out, work=self.write_card))

    # -- where each source's documents are after its last step so far
    def documents(self, source: str, before: str | None = None) -> list[str]:
        """The documents/ folders a source's next step reads: its dedup's or score's, else every filter's."""
        dirs = self.stage_dirs[source]
        if before is not None:
            dirs = dirs[:[label for label, _ in dirs].index(before)]
        last = [d for label, d in dirs if not label.startswith("filter")]
        return [f"{last[-1]}/documents"] if last else [f"{d}/documents" for _, d in dirs]

    def _filter(self, inp, preset: str, out: str) -> Callable[[], StageConfig]:
        def make() -> StageConfig:
            paths = [resolve_path(p) for p in inp.paths]
            return _stage_config(self.cfg, "filter", out, paths, inp.format, inp.glob, inp.text_key,
                                 load_filters(preset)).validate()
        return make

    def _after(self, source: str, stage: str, out: str) -> Callable[[], StageConfig]:
        def make() -> StageConfig:
            sub = _stage_config(self.cfg, stage, out, self.documents(source, before=stage))
            if stage == "score":
                sub.score = dataclasses.replace(self.cfg.score, model=self.classifier_model)
            return sub.validate()
        return make

    def _mix(self) -> StageConfig:
        sub = _stage_config(self.cfg, "mix", f"{self.out}/mix", [])
        sub.input.paths = []
        sub.mix = copy.deepcopy(self.cfg.mix)
        sub.mix.tokenizer = self.tokenizer_model
        for name, src in sub.mix.sources.items():
            src.paths = self.documents(name)
        return sub.validate()

    def _tokenize(self) -> StageConfig:
        mixed = f"{self.out}/mix"
        paths = [f"{mixed}/documents"] + ([f"{mixed}/valid"] if os.path.isdir(f"{mixed}/valid") else [])
        sub = _stage_config(self.cfg, "tokenize", f"{self.out}/tokens", paths)
        sub.tokenize = dataclasses.replace(self.cfg.tokenize, tokenizer=self.tokenizer_model)
        return sub.validate()

    # -- in-process work
    def train_classifier(self) -> None:
        from data_pipeline.score.config import DocumentSet, ScoreTrainConfig
        from data_pipeline.score.train import train_classifier

        p = self.cfg.pipeline
        sides = {q: [d for n, s in p.sources.items() if s.quality == q
                     for d in (self.documents(n, before="score") if n in self.scored else self.documents(n))]
                 for q in ("reference", "crawl")}
        prefix = self.classifier_model[:-len(".model")]
        tcfg = ScoreTrainConfig(positives=DocumentSet(paths=sides["reference"], chunk_words=p.classifier.chunk_words),
                                negatives=DocumentSet(paths=sides["crawl"]))
        tcfg.output.prefix = prefix
        tcfg.validate()
        if _work_done(os.path.dirname(prefix), {"config": asdict(tcfg), "inputs": _listing(sides["reference"] +
                                                                                        sides["crawl"])},
                      [self.classifier_model, prefix + ".report.json"]):
            return
        report = train_classifier(tcfg)
        _work_finished(os.path.dirname(prefix))
        r = report.get("heldout", {})
        print(f"[full] classifier {self.classifier_model}: held-out ROC-AUC {r.get('roc_auc', float('nan')):.3f}",
              flush=True)

    def tokenizer_train_config(self):
        """pipeline.tokenizer as the tokenizer's own TokenizerTrainConfig (the fields they share, by name)."""
        from data_pipeline.tokenizer.train import TokenizerTrainConfig

        t = self.cfg.pipeline.tokenizer
        return TokenizerTrainConfig(**{f.name: getattr(t, f.name) for f in dataclasses.fields(TokenizerTrainConfig)
                                       if hasattr(t, f.name)})

    def tokenizer_sample_budget(self) -> dict[str, int]:
        shares = {n: s.share for n, s in self.cfg.mix.sources.items()}
        total = sum(shares.values())
        sample_bytes = self.tokenizer_train_config().resolved_sample_bytes()
        return {n: int(round(sample_bytes * v / total)) for n, v in shares.items()} if sample_bytes else \
            {n: 0 for n in shares}

    def train_tokenizer(self) -> None:
        from data_pipeline.tokenizer.documents import ReadStats, iter_records
        from data_pipeline.tokenizer.train import draw_sample, train_tokenizer

        t = self.cfg.pipeline.tokenizer
        budget = self.tokenizer_sample_budget()
        folder = os.path.dirname(self.tokenizer_model)
        inputs = {n: self.documents(n) for n in budget}
        state = {"settings": asdict(t), "budget": budget, "inputs": {n: _listing(d) for n, d in inputs.items()}}
        prefix = self.tokenizer_model[:-len(".model")]
        if _work_done(folder, state, [self.tokenizer_model, prefix + ".tokenizer.json"]):
            return
        texts, sample = [], {}
        for name, dirs in inputs.items():
            stats = ReadStats()
            docs = draw_sample(iter_records(dirs, stats=stats), budget[name], t.seed)
            sample[name] = {"documents": len(docs), "of_documents": stats.documents,
                            "bytes": sum(len(d.encode("utf-8")) for d in docs), "budget_bytes": budget[name]}
            texts.extend(docs)
        config = dataclasses.replace(self.tokenizer_train_config(), sample_bytes=0)  # the sample is drawn above
        try:
            train_tokenizer(texts, t.vocab_size, prefix, config, files=False)
        except ValueError as exc:  # its keys are train.X there, pipeline.tokenizer.X here
            message = re.sub(r"\btrain\.(?=[a-z_]+)", "pipeline.tokenizer.", str(exc))
            if "pipeline.tokenizer." not in message:
                message += " (pipeline.tokenizer.vocab_size, pipeline.tokenizer.character_coverage)"
            raise ConfigError(f"pipeline.tokenizer: {message}") from None
        with open(f"{folder}/sample.json", "w") as f:
            json.dump(sample, f, indent=2)
        _work_finished(folder)
        print(f"[full] tokenizer {self.tokenizer_model}: vocab {t.vocab_size}, sample "
              + ", ".join(f"{n} {s['bytes']:,} B ({s['documents']} docs)" for n, s in sample.items()), flush=True)

    def write_card(self) -> None:
        from data_pipeline.card import write_data_card

        write_data_card(self)


def _listing(dirs: list[str]) -> list:
    rows = []
    for d in dirs:
        for path in sorted(Path(d).rglob("*")) if os.path.isdir(d) else []:
            if path.is_file():
                rows.append([str(path.relative_to(os.path.dirname(d.rstrip("/")))), path.stat().st_size])
    return rows


def _digest(state: dict) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _work_done(folder: str, state: dict, outputs: list[str]) -> bool:
    """True when the work was done from the same state; refuses (ConfigError) work done from another one."""
    path = f"{folder}/state.json"
    digest = _digest(state)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old["digest"] != digest and old.get("done"):
            raise ConfigError(f"{folder} was made from other settings or inputs ({path} has what it was made "
                              f"from). Delete {folder} to make it again, or use a new output.dir.")
        if old["digest"] == digest and old.get("done") and all(os.path.exists(o) for o in outputs):
            print(f"[full] {folder}: done ({path})", flush=True)
            return True
    os.makedirs(folder, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"digest": digest, "done": False, "state": state}, f, indent=1, default=str)
    os.replace(path + ".tmp", path)
    return False


def _work_finished(folder: str) -> None:
    path = f"{folder}/state.json"
    with open(path) as f:
        data = json.load(f)
    data["done"] = True
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


# -- running


def save_config(cfg: StageConfig) -> None:
    os.makedirs(cfg.output.dir, exist_ok=True)
    path = f"{cfg.output.dir}/{CONFIG_FILE}"
    with open(path + ".tmp", "w") as f:
        json.dump({"cwd": os.getcwd(), "config": asdict(cfg)}, f, indent=2, default=str)
    os.replace(path + ".tmp", path)


def load_config(out: str) -> StageConfig:
    import conf
    from omegaconf import OmegaConf

    with open(f"{out}/{CONFIG_FILE}") as f:
        saved = json.load(f)
    os.chdir(saved["cwd"])
    return conf.to_object(OmegaConf.create(saved["config"]), StageConfig, "data_pipeline").validate()


def run_full(cfg: StageConfig) -> None:
    """Run (or, on Slurm, submit) every step; what is done already is skipped."""
    plan = Plan(cfg)
    kind = cfg.executor.kind
    if kind == "mpi":
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if comm.Get_rank() == 0:
            save_config(cfg)
        comm.Barrier()
        for step in plan.steps:
            _run_step_mpi(step, comm)
        return
    save_config(cfg)
    if kind == "local":
        for step in plan.steps:
            run_step(step)
        return
    for name in ("data_card.json", "data_card.md"):  # the chain's end is the new card's appearance
        if os.path.exists(f"{plan.out}/{name}"):
            os.remove(f"{plan.out}/{name}")
    if os.path.exists(f"{plan.out}/{JOBS_FILE}"):
        os.replace(f"{plan.out}/{JOBS_FILE}", f"{plan.out}/{JOBS_FILE}.{int(time.time())}")
    advance(plan, 0)
    if cfg.executor.wait:
        wait_for_chain(plan)


def run_step(step: Step) -> str | None:
    from data_pipeline.executors import run_stage
    from data_pipeline.stages.base import finished_with

    if step.work is not None:
        print(f"[full] {step.name} -> {step.dir}", flush=True)
        step.work()
        return None
    sub = step.stage()
    if finished_with(sub):
        print(f"[full] {step.name}: done ({step.dir}/manifest.json)", flush=True)
        return None
    print(f"[full] {step.name} -> {step.dir}", flush=True)
    try:
        return run_stage(sub)
    except ConfigError as exc:
        if "holds a stage started with" not in str(exc):
            raise
        raise ConfigError(f"{exc} With pipeline=full: delete {step.dir} to redo the {step.name} step with these "
                          "settings; the finished steps before it are kept.") from None


def _run_step_mpi(step: Step, comm) -> None:
    from data_pipeline.executors import run_stage

    if step.stage is not None:
        from data_pipeline.stages.base import finished_with

        sub = step.stage()
        if not finished_with(sub):  # every rank sees the same files
            run_stage(sub)
        return
    error = None
    if comm.Get_rank() == 0:
        try:
            print(f"[full] {step.name} -> {step.dir}", flush=True)
            step.work()
        except Exception as exc:  # noqa: BLE001 - every rank stops with the same message
            error = f"{type(exc).__name__}: {exc}"
    error = comm.bcast(error, root=0)
    if error:
        raise RuntimeError(f"{step.name}: {error}")


def advance(plan: Plan, start: int) -> None:
    """Slurm: run the steps from ``start`` until one submits job arrays, then submit the launcher of the next step
    chained afterok on them. Work steps and finished stages are run (skipped) here: in a launcher job, or in the
    submitting command for the steps before the first stage that still has work."""
    for i in range(start, len(plan.steps)):
        job = run_step(plan.steps[i])
        if job is not None:
            if i + 1 < len(plan.steps):
                submit_launcher(plan, i + 1, job)
            else:
                _record(plan, {"step": i, "name": plan.steps[i].name, "job": job, "after": None})
            return


def submit_launcher(plan: Plan, index: int, after: str) -> str:
    ex = plan.cfg.executor
    logs = f"{plan.out}/logs/full"
    os.makedirs(logs, exist_ok=True)
    sbatch = {"job-name": f"{ex.job_name}_full_{plan.steps[index].name.replace('/', '_')}", "partition": ex.partition,
              "time": ex.time, "cpus-per-task": ex.cpus_per_task, "output": f"{logs}/step_{index:02d}_%j.out",
              "dependency": f"afterok:{after}"}
    if ex.mem_per_cpu_gb > 0:
        sbatch["mem-per-cpu"] = f"{ex.mem_per_cpu_gb}G"
    if ex.qos:
        sbatch["qos"] = ex.qos
    sbatch |= {k: v for k, v in ex.sbatch_args.items()}
    venv = os.path.join(sys.prefix, "bin", "activate")
    script = "\n".join(["#!/bin/bash", *(f"#SBATCH --{k}={v}" for k, v in sbatch.items()),
                        f"source {shlex.quote(venv)}" if os.path.exists(venv) else "",
                        f"exec {shlex.quote(sys.executable)} -m data_pipeline advance {shlex.quote(plan.out)} {index}",
                        ""])
    with open(f"{logs}/step_{index:02d}.sbatch", "w") as f:
        f.write(script)
    done = subprocess.run(["sbatch", "--parsable", f"{logs}/step_{index:02d}.sbatch"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"sbatch of the launcher of step {plan.steps[index].name} failed: {done.stderr.strip()}. "
                           "Check executor.partition, executor.time and executor.mem_per_cpu_gb (0: request no "
                           "memory) against `sinfo -o '%P %l %m %c'`")
    job = done.stdout.strip().split(";")[0]
    _record(plan, {"step": index, "name": plan.steps[index].name, "job": job, "after": after})
    print(f"[full] submitted launcher job {job} for step {plan.steps[index].name} (afterok:{after})", flush=True)
    return job


def _record(plan: Plan, entry: dict) -> None:
    os.makedirs(os.path.dirname(f"{plan.out}/{JOBS_FILE}"), exist_ok=True)
    with open(f"{plan.out}/{JOBS_FILE}", "a") as f:
        f.write(json.dumps(entry) + "\n")


def _queue_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T %r"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def wait_for_chain(plan: Plan, poll_s: float = 2.0) -> None:
    """Follow the chain of launchers until the data card is written; stop with the failed step named."""
    card = f"{plan.out}/data_card.json"
    while True:
        if os.path.exists(card):
            print(f"[full] done: {plan.out}/data_card.md", flush=True)
            return
        with open(f"{plan.out}/{JOBS_FILE}") as f:
            last = json.loads(f.read().strip().splitlines()[-1])
        states = {j: _queue_state(j) for j in (last["job"], last["after"]) if j}
        if any("DependencyNeverSatisfied" in s for s in states.values()):
            for j in states:
                subprocess.run(["scancel", str(j)], capture_output=True)
            raise RuntimeError(f"the job arrays before step {last['name']} failed (see the logs/slurm_logs/ of the "
                               f"step before it under {plan.out}); its launcher was cancelled. Rerun the same command: "
                               "finished work is skipped.")
        if not states.get(last["job"]):
            time.sleep(poll_s)  # the launcher appends its successor before it ends
            with open(f"{plan.out}/{JOBS_FILE}") as f:
                again = json.loads(f.read().strip().splitlines()[-1])
            if again == last and not os.path.exists(card):
                log = f"{plan.out}/logs/full/step_{last['step']:02d}_{last['job']}.out"
                raise RuntimeError(f"step {last['name']} (job {last['job']}) ended without going on: see {log}. "
                                   "Rerun the same command: finished work is skipped.")
            continue
        time.sleep(poll_s)


def advance_main(out: str, index: int) -> None:
    """The launcher job's command: ``python -m data_pipeline advance OUT STEP``."""
    cfg = load_config(out)
    advance(Plan(cfg), index)
