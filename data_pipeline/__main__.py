"""Command line.

    python -m data_pipeline stage=filter input.paths=[DIR] input.format=warc filters=fineweb \\
        executor=local executor.tasks=4 output.dir=OUT          # Hydra; --multirun sweeps
    python -m data_pipeline stage=dedup dedup=fineweb input.paths=[OUT/documents] input.format=jsonl \\
        executor=local executor.tasks=4 output.dir=DEDUPED      # exact + URL + MinHash dedup
    python -m data_pipeline stage=score score.model=PREFIX.model input.paths=[OUT/documents] input.format=jsonl \\
        output.dir=SCORED                                       # metadata.quality_score on every document
    python -m data_pipeline pipeline=full output.dir=OUT       # every stage, crawl to token shards + data card
    python -m data_pipeline report OUT                           # the manifest as a table
    python -m data_pipeline finalize OUT                         # (re)write manifest.json once all tasks are done
"""

from __future__ import annotations

import sys


def _hydra_main() -> None:
    import conf
    from data_pipeline.config import CONF_DIR, load, register_configs, to_stage_config

    # a wrong key or value: exit 2 with the key and the fix, before any work
    cfg = conf.precheck(sys.argv[1:], load, 2)
    if cfg is not None:
        # a single run with no Hydra flags: conf/data_pipeline/config.yaml gives Hydra nothing to do (no output
        # subdir, run dir ".", no logging config), so the config composed above is the run's and is not composed
        # again (twice more, by @hydra.main: about 0.4 CPU-seconds of every command)
        _run(cfg)
        return
    import hydra

    register_configs()

    @hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
    def main(hcfg) -> None:
        _run(to_stage_config(hcfg))

    main()


def _run(cfg) -> None:
    from data_pipeline.config import ConfigError

    try:
        from data_pipeline.executors import run_stage

        if cfg.pipeline.kind == "full":
            from data_pipeline.full import run_full

            run_full(cfg)
            return
        run_stage(cfg)
    except ConfigError as exc:  # found once the input or a half-done stage is seen: still exit 2, no work done
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except RuntimeError as exc:
        raise SystemExit(f"error: {exc}") from None
    from data_pipeline.report import report

    if cfg.executor.kind != "mpi" or _mpi_rank() == 0:
        print(report(cfg.output.dir), flush=True)


def _mpi_rank() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "advance":  # a pipeline=full launcher job on Slurm (data_pipeline/full.py)
        if len(args) != 3:
            raise SystemExit("usage: python -m data_pipeline advance OUTPUT_DIR STEP")
        from data_pipeline.config import ConfigError
        from data_pipeline.full import advance_main

        try:
            advance_main(args[1], int(args[2]))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        return
    if args and args[0] in ("report", "finalize"):
        if len(args) != 2:
            raise SystemExit(f"usage: python -m data_pipeline {args[0]} OUTPUT_DIR")
        from data_pipeline.manifest import AccountingError, write_manifest
        from data_pipeline.report import report

        try:
            if args[0] == "finalize":
                write_manifest(args[1])
            print(report(args[1]))
        except (FileNotFoundError, AccountingError) as exc:
            raise SystemExit(f"error: {exc}") from None
        return
    _hydra_main()


if __name__ == "__main__":
    main()
