"""Ray Job entrypoint: run (or resume) one pipeline run on the cluster.

    python -m jobs.pipeline --spec SPEC --run-id RUN [--step STEP ...] [--base-dir DIR]
                            [--cause CAUSE] [--cause-detail TEXT] [--retrain]

`--cause` says what started the run (manual, the trigger that fired: new_data, schedule,
drift, live_drift, quality, or code_change from `platformctl apply`) and `--cause-detail` why;
both are run properties. `--retrain` trains on the pipeline's validated data without ingesting
(mlplatform.triggers.retrain); with `--refeaturize` it computes the features of that data
again first (a feature view whose code changed has a new version).

Exits 0 when the run succeeded (including "nothing new to ingest"), 1 when a step
failed, 2 when the spec is invalid; the reason is the last line of the job's logs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    # Imported here, not above: a driver that hands its run to the node's warm process
    # (mlplatform.runtime.warm_driver) never needs them.
    from mlplatform.errors import InputError, PlatformError
    from mlplatform.pipeline import run_pipeline
    from mlplatform.redact import redact_text
    from mlplatform.services import Services
    from mlplatform.settings import load_settings
    from mlplatform.spec_code import load_for

    parser = argparse.ArgumentParser(prog="python -m jobs.pipeline")
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--step", action="append", default=None)
    parser.add_argument("--base-dir", type=Path, default=None,
                        help="folder the spec's relative paths resolve against")
    parser.add_argument("--cause", default="manual",
                        choices=["manual", "new_data", "schedule", "drift", "live_drift", "quality",
                                 "code_change"])
    parser.add_argument("--cause-detail", default="")
    parser.add_argument("--retrain", action="store_true",
                        help="retrain on the validated data: the steps after featurize")
    parser.add_argument("--refeaturize", action="store_true",
                        help="with --retrain: featurize the validated data again first")
    args = parser.parse_args(argv)
    from mlplatform.runtime.warm_driver import CHILD_FLAG

    if os.environ.get(CHILD_FLAG):
        print(f"driver: running in the node's warm driver process (pid {os.getpid()}): its imports "
              "were done before this job started", flush=True)
    try:
        settings = load_settings()
        if os.environ.get("PLATFORM_JOB_ID") and settings.sources.get("ray_address") == "env RAY_ADDRESS":
            from mlplatform.runtime.connect import own_dashboard

            # Ray gives this driver RAY_ADDRESS = the GCS address (for ray.init), not the dashboard
            # that the steps calling Serve's REST API need: ask the cluster for it.
            url = own_dashboard(settings)
            settings = settings.model_copy(update={
                "ray_address": url, "sources": {**settings.sources, "ray_address": "this job's cluster"}})
        spec = load_for(args.spec, settings, base_dir=args.base_dir)
        job_id = os.environ.get("PLATFORM_JOB_ID")
        spec_file = (args.base_dir or args.spec.parent).resolve() / args.spec.name
        services = Services(settings)
        properties = {"spec_file": str(spec_file), "cause": args.cause, "cause_detail": args.cause_detail}
        only = args.step
        if args.refeaturize and not args.retrain:
            raise InputError("--refeaturize: only with --retrain")
        if args.retrain:
            from mlplatform.run_ids import new_run_id
            from mlplatform.triggers.retrain import adopt_validated_batch, retrain_steps

            args.run_id = args.run_id or new_run_id(spec.name)
            adopt_validated_batch(spec, services, args.run_id, {**properties, "job_id": job_id})
            steps = ["featurize", *retrain_steps()] if args.refeaturize else retrain_steps()
            only = [s for s in steps if not args.step or s in args.step]
            if not only:  # an empty list would mean every step, ingest included
                raise InputError(f"--retrain with --step {' '.join(args.step)}: none of them is a "
                                 f"retraining step ({', '.join(retrain_steps())})")
        report = run_pipeline(spec, services, run_id=args.run_id, only=only,
                              job_id=job_id, log=lambda m: print(m, flush=True),
                              properties=properties)
    except PlatformError as exc:
        print(f"error: {redact_text(exc.message)}", file=sys.stderr, flush=True)
        return exc.exit_code
    finally:
        from mlplatform.monitoring import webhook

        webhook.flush(15)  # the alerts' webhook calls still under way: the driver is about to exit
    return 0 if report.status == "SUCCEEDED" else 1


if __name__ == "__main__":
    from mlplatform.process_start import raise_gc_thresholds

    raise_gc_thresholds()
    from mlplatform.runtime.warm_driver import exit_like, run_warm

    warm = run_warm("jobs.pipeline", sys.argv[1:])  # None: no warm process, run it here
    if warm is not None:
        exit_like(warm)
    code = main()
    from mlplatform.process_exit import fast_exit

    fast_exit()
    sys.exit(code)
