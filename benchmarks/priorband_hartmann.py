"""PriorBand (NePS, the reference implementation) on the multi-fidelity Hartmann spaces; run by
`benchmarks/prior_value.py` with the Python of an environment that has `neural-pipeline-search` installed
(NePS needs its own venv: installed beside this project it would replace torch, see notes/issue14.md).

Prior mapping: NePS takes a prior as a default value plus a confidence c per parameter and draws from a normal
truncated to the bounds, centred on the default, with standard deviation (1 - c) in units of the normalised
range [0, 1]. Our prior is a centre and a spread (a standard deviation in the parameter's units), so
c = 1 - spread / (high - low); the Hartmann coordinates span [0, 1], so spread 0.1 -> c = 0.9.

Fidelity: an integer r in 1..R (R = the space's reports at the chosen scale), evaluated at z = r / R; Hyperband
brackets with eta = 3, so with R = 27 the rungs are the ASHA rungs 1, 3, 9, 27. Cost of an evaluation: r / R,
in full evaluations. The regret of an evaluation is f(x, r/R) - f_min: what PriorBand observes, an upper bound
of x's full-fidelity regret (the fidelity bias only makes f shallower).

    python benchmarks/priorband_hartmann.py --space hartmann3_good --seeds 20 --budget 100 --out curves.json

writes {seed: [[cumulative cost, observed regret], ...]} per evaluation, in the order PriorBand asked them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from neps import AskAndTell, algorithms
from neps.sampling import priors as neps_priors
from neps.space import HPOFloat, HPOInteger, SearchSpace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainables.hartmann.functions import F_MIN, hartmann

SPACES = Path(__file__).resolve().parents[1] / "search_spaces" / "hartmann"


def neps_space(spec: dict, max_fidelity: int) -> tuple[SearchSpace, list[str]]:
    """The space's coordinates with their priors mapped to NePS (default, confidence), and the fidelity r."""
    elements, names = {}, []
    for name, p in spec["params"].items():
        confidence = 1.0 - p["prior"]["spread"] / (p["high"] - p["low"])
        key = f"spread_{p['prior']['spread']}"
        neps_priors.PRIOR_CONFIDENCE_MAPPING[key] = confidence  # NePS offers only low/medium/high (0.25/0.5/0.75)
        elements[name] = HPOFloat(float(p["low"]), float(p["high"]), prior=float(p["prior"]["center"]),
                                  prior_confidence=key)
        names.append(name)
    elements["r"] = HPOInteger(1, max_fidelity, is_fidelity=True)
    return SearchSpace(elements), names


def run(space_name: str, seed: int, budget: float, scale: str) -> list[tuple[float, float]]:
    spec = yaml.safe_load((SPACES / f"{space_name}.yaml").read_text())
    max_fidelity = int(spec["scales"][scale]["settings"]["n_reports"])
    space, names = neps_space(spec, max_fidelity)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    optimizer = AskAndTell(algorithms.priorband(space, eta=3, base="hyperband"))
    dim = int(spec["fixed"]["dim"])
    cost, out = 0.0, []
    while cost < budget:
        trial = optimizer.ask()
        config = trial.config
        z = int(config["r"]) / max_fidelity
        regret = hartmann(np.array([config[n] for n in names]), z) - F_MIN[dim]
        optimizer.tell(trial, {"objective_to_minimize": float(regret)})
        cost += z
        out.append((cost, float(regret)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", required=True)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=float, default=100, help="in full evaluations")
    parser.add_argument("--scale", default="full", help="the space scale whose n_reports is the max fidelity")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    curves = {seed: run(args.space, seed, args.budget, args.scale) for seed in range(args.seeds)}
    Path(args.out).write_text(json.dumps(curves))


if __name__ == "__main__":
    main()
