"""A data scientist's session against the production platform, as a script (each block is a
notebook cell): train a variant of the pipeline's model on production's newest training set,
compare it with the champion on the same holdout through the platform's own gate, and, with
`--register`, register it as a challenger (a rollout or `platformctl models promote` takes it
from there). Nothing is written without `--register`.

    python -m jobs.examples.challenger [--pipeline demo] [--learning-rate 0.05] [--register]

Prints one JSON object: the variant's and the champion's holdout metric, the gate's decision
and, when registered, the new version.
"""

from __future__ import annotations

import argparse
import json
import sys

import mlplatform
from mlplatform.errors import PlatformError
from mlplatform.training.estimators import build_estimator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.examples.challenger")
    parser.add_argument("--pipeline", default="demo")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--max-leaf-nodes", type=int, default=15)
    parser.add_argument("--register", action="store_true", help="register the variant as a challenger")
    args = parser.parse_args(argv)
    try:
        # Read-only unless registering: the connection refuses writes it was not opened for.
        platform = mlplatform.connect(writable=args.register)
        pipe = platform.pipeline(args.pipeline)
        data = pipe.training_set()  # sha256-checked, split as the train step splits it

        # The variant: the production model's preprocessing and estimator, other parameters.
        variant = build_estimator(pipe.spec.model, data.X, {"learning_rate": args.learning_rate,
                                                            "max_leaf_nodes": args.max_leaf_nodes})
        variant.fit(data.X, data.y)

        # The platform's gate: the champion on the same holdout, the spec's thresholds and slices.
        decision = pipe.evaluate(variant, data)
        out = {"pipeline": pipe.name, "training_set": data.artifact.uri, "holdout_rows": decision.rows,
               "metric": decision.metric, "variant": decision.challenger.get(decision.metric),
               "champion_version": decision.champion_version,
               "champion": (decision.champion or {}).get(decision.metric),
               "passed": decision.passed, "reason": decision.reason, "version": None}
        if args.register:
            version, _ = pipe.register_challenger(variant, data, note=f"learning_rate={args.learning_rate}, "
                                                  f"max_leaf_nodes={args.max_leaf_nodes}")
            out["version"] = version
    except PlatformError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
