"""The config roots of the three tools, and what they share.

    conf/pretrain/        python -m pretrain              schema: pretrain.config.PretrainConfig
    conf/data_pipeline/   python -m data_pipeline         schema: data_pipeline.config.StageConfig
                          python -m data_pipeline.tokenizer        data_pipeline.tokenizer.config
    conf/scaling/         python -m tools.scaling         schema: tools.scaling.config.ScalingConfig

Each root's `config.yaml` starts its defaults list with its schema, registered in Hydra's ConfigStore, so an
unknown key or a value of the wrong type or outside an enum fails at composition. YAML holds only presets and
values that differ from the dataclass defaults. Every tool raises the one `ConfigError`, whose message names
the key, the problem and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

CONF_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A configuration value that cannot work. The message names the key, the problem and the fix."""


def fail(key: str, problem: str, fix: str) -> None:
    raise ConfigError(f"{key}: {problem}. Fix: {fix}")


def register(name: str, schema: type) -> None:
    """Store `schema` (a dataclass) in Hydra's ConfigStore as `name`, for a root's defaults list."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=name, node=schema)


def compose(root: str, overrides: Sequence[str], schema: type | None = None, config_name: str = "config") -> Any:
    """Compose conf/<root>/<config_name>.yaml with Hydra command-line overrides (the root's schema must be
    registered first). Hydra's and OmegaConf's errors become a ConfigError naming the key and the fix."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR / root), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise from_hydra_error(e, root, schema) from None


def from_hydra_error(e: Exception, root: str, schema: type | None = None) -> ConfigError:
    """A ConfigError for a composition error: the key, Hydra's or OmegaConf's reason, and the fix (the allowed
    values of an enum, the keys of the section for a misspelt key, the presets of a config group)."""
    import re

    cause = e
    while getattr(cause, "__cause__", None) is not None and not getattr(cause, "full_key", None):
        cause = cause.__cause__
    key = getattr(cause, "full_key", None) or getattr(e, "full_key", None)
    lines = str(getattr(cause, "msg", None) or cause).splitlines()
    reason = lines[0].strip()
    fix = f"check it against the schema and presets of conf/{root}/ (`--cfg job` prints the composed config)"
    if m := re.search(r"expected one of \[(.*)\]", reason):
        fix = f"use one of {m.group(1)}"
    elif (m := re.match(r"Key '(.+)' not in '(.+)'", reason)) and key and schema is not None:
        known = _fields_at(schema, key.split(".")[:-1])
        if known:
            fix = f"check the spelling; {'.'.join(key.split('.')[:-1]) or 'the top level'} has {', '.join(known)}"
    elif m := re.match(r"In '.*': Could not find '(.+)/(.+)'", reason):
        group = m.group(1)
        options = sorted(p.stem for p in (CONF_DIR / root / group).glob("*.yaml"))
        key = group.replace("/", ".")
        reason = f"no preset {m.group(2)!r} in conf/{root}/{group}/"
        fix = f"use one of {', '.join(options)}" if options else fix
    return ConfigError(f"{key}: {reason}. Fix: {fix}" if key else f"{reason}. Fix: {fix}")


def _fields_at(schema: type, path: list[str]) -> list[str]:
    """The field names of the dataclass reached from `schema` along `path` ([] if the path leaves dataclasses)."""
    import dataclasses
    import typing

    node: Any = schema
    for part in path:
        if not dataclasses.is_dataclass(node):
            return []
        node = typing.get_type_hints(node).get(part)
    return sorted(f.name for f in dataclasses.fields(node)) if dataclasses.is_dataclass(node) else []


def to_object(cfg: Any, schema: type, root: str) -> Any:
    """The composed config as an instance of the dataclass `schema` (keys outside it, such as hydra, dropped)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema),
                                 OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise from_hydra_error(e, root, schema) from None


def precheck(argv: list[str], load: Callable[[list[str]], Any], exit_code: int, label: str = "error") -> Any:
    """Load a Hydra entry point's command-line overrides with the tool's own loader before `@hydra.main` does: a
    misspelt key or a bad value then exits with `exit_code` and a ConfigError naming the key and the fix, not with
    Hydra's exit 1 (which slurm/pretrain.sbatch would requeue as a crash). Returns the loaded config, or None when
    the command line has Hydra's own flags (--multirun, --cfg, --help, ...) or hydra.* keys: those are left to
    Hydra."""
    import sys

    if uses_hydra_flags(argv):
        return None
    try:
        return load(list(argv))
    except ConfigError as e:
        print(f"{label}: {e}", file=sys.stderr, flush=True)
        sys.exit(exit_code)


def uses_hydra_flags(argv: list[str]) -> bool:
    """Whether a command line needs `@hydra.main` itself (its flags, a sweep, hydra.* keys)."""
    return any(a.startswith(("-", "hydra.", "+hydra.", "++hydra.")) for a in argv)
