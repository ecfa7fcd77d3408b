"""python -m tools.scaling {plan,run,fit,predict} key=value ...  (keys: tools/scaling/config.py)

  plan    budgets=[1e15,3e15,1e16] family=llama ladder=DIR  print the IsoFLOP ladder, write DIR/plan.json, runs.txt
  run     ladder=DIR                                         train the planned runs locally, one after another
  fit     ladder=DIR [output.dir=OUT]                        fits with intervals -> OUT/fit.json and plots
  fit     input.paths=[runs.csv] [output.dir=OUT]            the same on published runs (params,tokens,loss,...)
  predict ladder=DIR predict.flops=C [output.dir=OUT]        predict a bigger run's loss, train it, compare
"""

from __future__ import annotations

import sys

from tools.scaling.config import ConfigError, load_config

COMMANDS = ("plan", "run", "fit", "predict")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    command, overrides = argv[0], argv[1:]
    try:
        cfg = load_config(command, overrides)
        if command == "plan":
            from tools.scaling.plan import format_plan, plan_ladder, write_plan

            plan = plan_ladder(cfg)
            print(format_plan(plan))
            ladder = write_plan(plan, cfg)
            print(f"wrote {ladder}/plan.json and {ladder}/runs.txt ({len(plan.runs)} runs; "
                  f"train them with: python -m tools.scaling run ladder={ladder})")
            return 0
        if command == "run":
            from tools.scaling.runner import run_ladder

            failed = run_ladder(cfg)
            return 1 if failed else 0
        if command == "predict":
            from tools.scaling.predict import run_predict

            doc = run_predict(cfg)
            print(f"wrote {doc['out']}/prediction.json")
            return 0
        from tools.scaling.fit import format_summary, run_fit

        print(format_summary(run_fit(cfg)))
        return 0
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a trained run failed: its log is named
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
