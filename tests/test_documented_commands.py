"""Every command the README and the sbatch scripts' headers show composes into a valid config.

The commands are read from the documents themselves (fenced code in README.md, the `#   ...` example lines of
slurm/*.sbatch), so a renamed key, a moved preset or an example that contradicts a validation rule fails here,
before a user copies it. Each command is composed with its tool's own loader; where nothing on disk is needed
(layouts against the world size, batch divisibility, the data pipeline's and the tokenizer's required keys),
it is also validated.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("pretrain", "data_pipeline", "data_pipeline.tokenizer", "data_pipeline.score", "tools.scaling")


def _document_lines() -> list[tuple[str, str]]:
    """(where, command) for every command line, with backslash continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    readme = ROOT / "README.md"
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", readme.read_text(), flags=re.S | re.M)
    sources = [(f"README.md block {i}", b) for i, b in enumerate(blocks)]
    for script in sorted((ROOT / "slurm").glob("*.sbatch")):
        lines = [ln[1:].strip() for ln in script.read_text().splitlines() if ln.startswith("#   ")]
        sources.append((script.name, "\n".join(lines)))
    for where, text in sources:
        joined = re.sub(r"\\\n\s*", " ", text)
        for line in joined.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line:
                out.append((where, line))
    return out


def _parse(line: str):
    """(tool, subcommand, overrides, world size) for a command of one of TOOLS, else None."""
    first = line.split()[:2]
    if not (first == ["python", "-m"] or first[0] == "sbatch"
            or (first[0] in ("torchrun", "mpiexec") and " -m " in line)):
        return None
    words = shlex.split(line)
    world = 1
    for w in words:
        if m := re.match(r"--nproc[_-]per[_-]node=(\d+)", w):
            world = int(m.group(1))
    if words[0] == "sbatch":
        script = next((w for w in words if w.startswith("slurm/")), None)
        if script not in ("slurm/pretrain.sbatch", "slurm/data_pipeline.sbatch"):
            return None
        flags = words[1:words.index(script)]
        nodes = next((int(f[2:]) for f in flags if re.fullmatch(r"-N\d+", f)), None)
        if nodes is None and "-N" in flags:
            nodes = int(flags[flags.index("-N") + 1])
        per_node = next((int(f.split("=")[1]) for f in flags
                         if re.match(r"--(gpus|ntasks)-per-node=\d+", f)), 1)
        rest = [w for w in words[words.index(script) + 1:] if w != "--dry-run"]
        tool = "pretrain" if script.endswith("pretrain.sbatch") else "data_pipeline"
        if tool == "data_pipeline":
            rest.append("executor=mpi")  # what the script appends
        return tool, None, rest, (nodes or 1) * per_node
    if "-m" not in words:
        return None
    module = words[words.index("-m") + 1]
    if module not in TOOLS:
        return None
    rest = words[words.index("-m") + 2:]
    sub = None
    if module in ("tools.scaling", "data_pipeline.tokenizer", "data_pipeline.score"):
        sub, rest = rest[0], rest[1:]
    if (module, rest[:1]) in (("data_pipeline", ["report"]), ("data_pipeline", ["finalize"])) or sub == "check":
        return None  # positional output directories / shard prefixes, no config
    return module, sub, rest, world


COMMANDS = [(where, line, parsed) for where, line in _document_lines() if (parsed := _parse(line))]


def test_the_documents_show_every_tool():
    shown = {(p[0], p[1]) for _, _, p in COMMANDS}
    assert {("pretrain", None), ("data_pipeline", None), ("tools.scaling", "plan"), ("tools.scaling", "fit"),
            ("tools.scaling", "predict"), ("data_pipeline.tokenizer", "train"),
            ("data_pipeline.tokenizer", "encode"), ("data_pipeline.score", "train")} <= shown
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("where, line, parsed", COMMANDS, ids=[f"{w}: {ln[:60]}" for w, ln, _ in COMMANDS])
def test_documented_command_composes(where, line, parsed):
    tool, sub, overrides, world = parsed
    partial = "..." in overrides or "--multirun" in overrides
    overrides = [o for o in overrides if o not in ("...", "--multirun")]
    if "--multirun" in line:  # a sweep: each value of a,b,c must compose; take the first
        overrides = [re.sub(r"=([^\[\],]+),[^\[\]]*$", r"=\1", o) for o in overrides]
        # Hydra fills ${hydra:...} only inside a launched job
        overrides = [re.sub(r"\$\{hydra:[^}]*\}", "job", o) for o in overrides]
    if tool == "pretrain":
        from pretrain.config import load, validate

        cfg = load(overrides)
        if not partial:
            validate(cfg, world, check_data=False)
    elif tool == "data_pipeline":
        import conf
        from data_pipeline.config import StageConfig, load, register_configs

        if partial:
            register_configs()
            conf.to_object(conf.compose("data_pipeline", overrides, StageConfig), StageConfig, "data_pipeline")
        else:
            load(overrides)
    elif tool == "data_pipeline.tokenizer":
        from data_pipeline.tokenizer.config import load

        load(sub, overrides)
    elif tool == "data_pipeline.score":
        from data_pipeline.score.config import load

        assert sub == "train", line
        load(overrides)
    else:
        import conf
        from tools.scaling.config import ScalingConfig, load_config

        if sub == "plan":
            load_config("plan", overrides)
        else:  # run, fit and predict read a trained ladder: everything but the files
            conf.register("scaling_schema", ScalingConfig)
            conf.to_object(conf.compose("scaling", overrides, ScalingConfig), ScalingConfig, "scaling")


def test_an_old_spelling_in_a_command_would_fail():
    """The check above has teeth: the spellings this release replaced do not compose."""
    from conf import ConfigError
    from data_pipeline.tokenizer.config import load as tokenizer_load
    from tools.scaling.config import load_config

    with pytest.raises(ConfigError, match=r"^data: renamed"):
        load_config("fit", ["data=runs/ladder"])
    with pytest.raises(ConfigError, match=r"^--input: .*Fix: use input.paths=\[\.\.\.\]"):
        tokenizer_load("train", ["--input", "enwiki", "--vocab-size", "4096", "--output", "data/tok/tokenizer"])
