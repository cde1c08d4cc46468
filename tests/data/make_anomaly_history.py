"""Writes tests/data/anomaly_history.json: 60 normal daily runs of a pipeline, as the metadata store
would have recorded them, for the anomaly test (tests/unit/test_anomaly.py).

Run it again only to change the history on purpose (`python tests/data/make_anomaly_history.py`);
it is deterministic (seeded). The noise is meant to look like a real pipeline's, not a clean one:

- step durations are log-normal around each step's typical time (sigma 0.12), one run in ten is
  moderately slower as a whole (a busy cluster: x1.15 to x1.4) and one in ten has one step slower
  by x1.2 to x1.5 (a cold cache, a retried read);
- rows arrive with 3% noise and half as many on Saturdays and Sundays;
- a fraction of a percent of the rows is quarantined (binomial), some days none;
- the holdout metrics (roc_auc, the spec's metric, and the others the trainer logs) move by a few
  thousandths; live quality is observed every few hours between runs.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

START = dt.datetime(2026, 1, 5, 2, 0)  # a Monday, 02:00 UTC: the first judged weekend comes early
STEPS = {"ingest": 3.0, "validate": 8.0, "featurize": 12.0, "training_set": 6.0, "train": 40.0,
         "evaluate": 5.0, "register": 2.0, "promote": 1.0, "rollout": 4.0}
WEEKDAY_ROWS = 10_000


def generate(seed: int = 14, runs: int = 60) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out = []
    for day in range(runs):
        at = START + dt.timedelta(days=day)
        slow = rng.random()  # at most one slowdown a run: the whole run, or one step
        factor = float(rng.uniform(1.15, 1.4))
        whole = factor if slow < 0.1 else 1.0
        one = str(rng.choice(list(STEPS))) if 0.1 <= slow < 0.2 else None
        durations = {}
        for s, base in STEPS.items():
            d = base * whole * float(rng.lognormal(0.0, 0.12))
            durations[s] = round(d * (factor if s == one else 1.0), 3)
        expected = WEEKDAY_ROWS * (0.5 if at.weekday() >= 5 else 1.0)
        rows_in = int(expected * float(rng.normal(1.0, 0.03)))
        quarantined = int(rng.binomial(rows_in, 0.003))
        auc = float(rng.normal(0.86, 0.004))
        holdout = {"roc_auc": round(auc, 5), "accuracy": round(auc - 0.06 + float(rng.normal(0, 0.003)), 5),
                   "f1": round(auc - 0.12 + float(rng.normal(0, 0.004)), 5),
                   "log_loss": round(1.1 - auc + float(rng.normal(0, 0.004)), 5)}
        quality = [{"hours_before": h, "roc_auc": round(float(rng.normal(0.84, 0.006)), 5)}
                   for h in (20, 14, 8, 2)]
        out.append({"run_id": f"demo-{at:%Y%m%d}", "at": at.isoformat(), "durations": durations,
                    "rows_in": rows_in, "rows_valid": rows_in - quarantined,
                    "rows_quarantined": quarantined, "holdout": holdout, "quality": quality})
    return {"pipeline": "demo", "metric": "roc_auc", "seed": seed, "runs": out}


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("anomaly_history.json")
    path.write_text(json.dumps(generate(), indent=1) + "\n")
    print(f"wrote {path}")
