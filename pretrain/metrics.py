"""Loss against tokens, throughput, FLOPs and MFU: one JSON line per logged step, and the same to wandb.

Validation lines also hold `val_loss` (the blend of data.paths), `val_time_s` (seconds the evaluation took) and,
with several sources, `val_loss/<source>` per source (pretrain.config.source_names), each on its own validation
documents. `<run.dir>/metrics.jsonl` is appended to (a resumed run adds lines; steps after the resumed checkpoint appear
again, and readers keep the last line per step). wandb runs offline by default, so it works with no network;
`logging.wandb.mode=online` syncs, `disabled` turns it off.
"""

from __future__ import annotations

import json
import math
import secrets
from pathlib import Path

import torch

# Dense (no sparsity) bf16 peak TFLOP/s per device, from NVIDIA's datasheets, keyed by the exact name
# torch.cuda.get_device_name() reports. Matched exactly, never by substring: an H100 PCIe (756) is not an
# H100 SXM (989), an H200 NVL (835) is not an H200 SXM (989). Unknown devices get no MFU unless
# logging.peak_tflops is set.
PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.4,  # H100 SXM5
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H100 NVL": 835.0,
    "NVIDIA H200": 989.4,  # H200 SXM
    "NVIDIA H200 NVL": 835.0,
    "NVIDIA GH200 480GB": 989.4,
    "NVIDIA GH200 144G HBM3e": 989.4,
    "NVIDIA B200": 2250.0,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA L40S": 362.0,
    "NVIDIA A10G": 125.0,
}


def peak_tflops(override: float | None, device_name: str | None = None) -> float | None:
    """logging.peak_tflops if set, else the exact-name table entry for this GPU, else None (CPU, unknown)."""
    if override is not None:
        return float(override)
    if device_name is None and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name()
    return PEAK_TFLOPS.get(device_name) if device_name else None


class MetricsLogger:
    """Writes metrics on rank 0 only (the caller passes enabled=False elsewhere)."""

    def __init__(self, run_dir: Path, enabled: bool, wandb_cfg, config_dict: dict):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb = None
        if enabled and wandb_cfg.mode != "disabled":
            import wandb

            run_id = (Path(run_dir) / ".wandb_id")
            if not run_id.exists():
                run_id.write_text(secrets.token_hex(4))
            self.wandb = wandb.init(project=wandb_cfg.project, entity=wandb_cfg.entity,
                                    name=wandb_cfg.name or Path(run_dir).name, dir=str(run_dir),
                                    mode=wandb_cfg.mode, config=config_dict, id=run_id.read_text().strip(),
                                    resume="allow")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(clean) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in clean.items() if v is not None and k != "step"},
                           step=record["step"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl as a list ordered by step, keeping the last line for a step written twice (resume)."""
    by_step: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[rec["step"]] = rec
    return [by_step[k] for k in sorted(by_step)]


VAL_SOURCE_PREFIX = "val_loss/"


def val_loss_by_source(rows: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """{source: (tokens, validation loss)} from metrics rows' val_loss/<source> keys, in row order; a null
    (non-finite) value is left out."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(VAL_SOURCE_PREFIX) and value is not None:
                tokens, losses = out.setdefault(key[len(VAL_SOURCE_PREFIX):], ([], []))
                tokens.append(float(row["tokens"]))
                losses.append(float(value))
    return out
