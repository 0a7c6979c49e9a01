"""Per-result MLflow logging cost: tuner's MlflowTrialLogger vs Ray's MLflowLoggerCallback, same run.

Both callbacks receive the same stream of results (trials x reports, each with the metrics a `signal`
trial reports) against their own sqlite store; the time per result includes starting and ending
each trial's run. Prints both costs and the ratio (target >= 10x).

    python benchmarks/tracking.py [--trials 4] [--reports 25] [--metrics 14]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from mlflow.tracking import MlflowClient
from ray.air.integrations.mlflow import MLflowLoggerCallback

from tuner.tracking import MlflowTrialLogger


class FakeTrial:
    """The attributes the two callbacks read from a Ray Trial."""

    def __init__(self, i: int):
        self.trial_id = f"t{i:04d}"
        self.config = {"lr": 1e-4, "lr_W_ratio": 80.0, "coeff_W_L1": 1e-5, "batch_size": 32}
        self.last_result: dict = {}
        self.local_path = self.path = tempfile.mkdtemp()

    def __str__(self) -> str:
        return f"trial_{self.trial_id}"


def results_for(trial: int, reports: int, metrics: int) -> list[dict]:
    return [{"training_iteration": r + 1, "time_total_s": 1.0 * r, "trial_id": f"t{trial:04d}",
             **{f"metric_{m}": 0.001 * (r + m) for m in range(metrics)}} for r in range(reports)]


def drive(callback, trials: list[FakeTrial], reports: int, metrics: int) -> float:
    start = time.perf_counter()
    for i, trial in enumerate(trials):
        callback.log_trial_start(trial)
        for result in results_for(i, reports, metrics):
            trial.last_result = result
            callback.log_trial_result(result["training_iteration"], trial, result)
        callback.log_trial_end(trial, failed=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--reports", type=int, default=25)
    parser.add_argument("--metrics", type=int, default=14)
    args = parser.parse_args()
    n = args.trials * args.reports
    with tempfile.TemporaryDirectory() as tmp:
        ours_uri, rays_uri = f"sqlite:///{tmp}/ours.db", f"sqlite:///{tmp}/ray.db"
        client = MlflowClient(ours_uri)
        exp = client.create_experiment("bench")
        parent = client.create_run(exp).info.run_id
        ours = MlflowTrialLogger(ours_uri, exp, parent, metric="metric_0", max_reports=args.reports,
                                 resolve=lambda c: c, classify=lambda m: "converged")
        rays = MLflowLoggerCallback(tracking_uri=rays_uri, experiment_name="bench",
                                    tags={"mlflow.parentRunId": "none"})
        rays.setup()
        MlflowClient(rays_uri)  # create the store's tables before timing, as for ours
        t_ours = drive(ours, [FakeTrial(i) for i in range(args.trials)], args.reports, args.metrics)
        t_rays = drive(rays, [FakeTrial(i) for i in range(args.trials)], args.reports, args.metrics)
        logged = len(MlflowClient(ours_uri).get_metric_history(ours.run_id("t0000"), "metric_0"))
    assert logged == args.reports, f"ours logged {logged} of {args.reports} reports"
    print(f"{args.trials} trials x {args.reports} reports x {args.metrics} metrics ({n} results), sqlite store")
    print(f"ray MLflowLoggerCallback : {1e3 * t_rays / n:8.2f} ms per result")
    print(f"tuner MlflowTrialLogger  : {1e3 * t_ours / n:8.2f} ms per result ({ours.calls} store calls)")
    print(f"ratio                    : {t_rays / t_ours:8.1f}x  (target >= 10x)")


if __name__ == "__main__":
    main()
