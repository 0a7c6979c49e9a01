"""Campaigns: a family's regimes swept one after the other, as the seeds went from block to block.

Each sweep is warm-started with the best configurations of the campaign's earlier sweeps where their parameters
apply (`carried_warm_starts`: only the parameters the next space tunes, clipped into its ranges, the rest from its
prior centres; the most similar earlier regimes first), after the space's own warm starts. In MLflow the campaign is
one parent run (tag `tuner.kind=campaign`) and each sweep's parent run is its child (`mlflow.parentRunId`, plus tag
`tuner.campaign`), so the runs table nests campaign > sweeps > trials. The state file
`results/campaigns/<name>/campaign.json` names each sweep pending / running / done; `resume_campaign` continues the
running sweep with `tuner.driver.resume` and then runs the rest. At the end the campaign's regime table and working
memory (`tuner.memory`) go to its folder and to its run.

This module imports neither Ray, MLflow nor torch at load time: bad input is refused in about a second.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from tuner.family import SCALES, get_family
from tuner.plan import PLAN_FILE, check_inputs
from tuner.space import CategoricalParam, IntParam, SearchSpace, WarmStart, load_space, space_files
from tuner.storage import exists, results_dir, unwritable_reason
from tuner.validation import TunerInputError, close_names

STATE_FILE = "campaign.json"
CARRY = 2  # earlier sweeps whose best configuration a sweep is warm-started with


class CampaignSweep(BaseModel):
    """One regime of a campaign and where it stands."""

    space: str
    name: str  # the sweep's name: <campaign>-<space>
    status: Literal["pending", "running", "done"] = "pending"
    parent_run_id: str | None = None
    best: dict[str, Any] = {}  # the best trial's tuned parameters
    best_metric: float | None = None
    failure: str | None = None  # why the sweep produced no result (no trial reported a finite metric)
    carried_from: list[str] = []  # the earlier sweeps whose best configuration it was warm-started with


class Campaign(BaseModel):
    """A campaign's state file: its options, its MLflow run and its sweeps in order."""

    name: str
    family: str
    scale: str
    samples: int | None = None
    max_concurrent: int | None = None
    seed: int = 0
    carry: int = CARRY
    storage: str
    tracking_uri: str | None = None  # None until the campaign starts: then the default store
    experiment_id: str = ""
    run_id: str = ""
    sweeps: list[CampaignSweep]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        scratch = folder / f".{STATE_FILE}.tmp"
        scratch.write_text(self.model_dump_json(indent=2) + "\n")
        os.replace(scratch, folder / STATE_FILE)  # a killed driver never leaves half a state file


# ---- planning (no Ray, MLflow or torch) --------------------------------------------------------------
def campaign_spaces(family_name: str, names: Sequence[str] | None = None) -> list[SearchSpace]:
    """The named spaces in the given order, or every space of the family that has a seed block, in block order."""
    try:
        family = get_family(family_name)
    except KeyError as err:
        raise TunerInputError(f"--family: {err.args[0]}") from None
    if names:
        if len(set(names)) != len(names):
            raise TunerInputError(f"--spaces: each space once (got {', '.join(names)})")
        spaces = []
        for name in names:
            try:
                space = load_space(name)
            except TunerInputError as err:
                raise TunerInputError(f"--spaces: {err}") from None
            if space.family != family.name:
                raise TunerInputError(f"--spaces: {name!r} is a {space.family} space, not a {family.name} one")
            spaces.append(space)
        return spaces
    spaces = []
    for path in space_files().values():
        try:  # only this family's files are loaded (loading another family's may import torch)
            if (yaml.safe_load(path.read_text()) or {}).get("family") != family.name:
                continue
            space = load_space(path)
        except (TunerInputError, yaml.YAMLError, AttributeError):  # `tuner spaces` reports it
            continue
        if space.source.block is not None:
            spaces.append(space)
    if not spaces:
        raise TunerInputError(f"--spaces: no {family.name} space names a seed block to order it by; name the spaces "
                              f"to run, in order, with --spaces a,b,c")
    return sorted(spaces, key=lambda s: (s.source.block, s.name))


def check_campaign(family: str, scale: str, spaces: Sequence[str] | None, *, samples: int | None = None,
                   max_concurrent: int | None = None, carry: int = CARRY, name: str | None = None) -> list[SearchSpace]:
    """Every campaign input checked as `tuner sweep` checks a sweep's: the spaces, in campaign order."""
    if scale not in SCALES:
        raise TunerInputError(f"--scale: {scale!r} is not a scale; allowed: {', '.join(SCALES)}")
    if carry < 0:
        raise TunerInputError(f"--carry: must be 0 or more (got {carry})")
    chosen = campaign_spaces(family, spaces)
    for space in chosen:
        check_inputs(space, scale=scale, samples=samples, max_concurrent=max_concurrent)
    if name is not None:
        if not name or "/" in name or name.startswith("."):
            raise TunerInputError(f"--name: {name!r} is not a folder name")
        if (campaign_folder(name) / STATE_FILE).exists():
            raise TunerInputError(f"--name: campaign {name!r} exists; continue it with: "
                                  f"python -m tuner resume-campaign {name}")
    problem = unwritable_reason(results_dir())
    if problem:
        raise TunerInputError(f"results folder (TUNER_RESULTS): {problem}")
    return chosen


def campaign_folder(name: str) -> Path:
    return results_dir() / "campaigns" / name


def find_campaign(path_or_name: str) -> Path:
    """A campaign's folder from its path or its name (under results/campaigns)."""
    for folder in (Path(path_or_name), campaign_folder(path_or_name)):
        if (folder / STATE_FILE).is_file():
            return folder
    root = results_dir() / "campaigns"
    known = sorted(p.parent.name for p in root.glob(f"*/{STATE_FILE}")) if root.is_dir() else []
    raise TunerInputError(f"resume-campaign: {path_or_name!r} is neither a campaign folder nor the name of one in "
                          f"{root}.{close_names(path_or_name, known)} Known: {', '.join(known) or 'none'}")


def clip_value(param: Any, value: Any) -> Any:
    """`value` placed in `param`'s range: clipped (rounded for an int), the nearest numeric choice of a categorical,
    or None when it has no place there (a category the parameter lacks, a number for a category of strings)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(param, CategoricalParam):  # a bool matches only a bool (True == 1 in Python)
        same = [c for c in param.choices if isinstance(c, bool) == isinstance(value, bool) and c == value]
        if same:
            return same[0]
        numeric = [c for c in param.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        if not number or len(numeric) != len(param.choices):
            return None
        return min(numeric, key=lambda c: abs(c - value))
    if not number or not math.isfinite(value):
        return None
    clipped = min(max(value, param.low), param.high)
    return round(clipped) if isinstance(param, IntParam) else float(clipped)


def _shared_regime(a: SearchSpace, b: SearchSpace) -> int:
    return sum(1 for k, v in a.fixed.items() if k in b.fixed and b.fixed[k] == v)


def carried_warm_starts(target: SearchSpace, earlier: Sequence[tuple[SearchSpace, CampaignSweep]],
                        limit: int = CARRY) -> list[WarmStart]:
    """Warm starts for `target` (already at the campaign's scale) from the best configurations of earlier sweeps:
    the regimes sharing most fixed settings with it first (the latest among equals), each giving the parameters
    `target` tunes, clipped into its ranges (the others at its prior centres); none that repeats a configuration."""
    order = sorted(range(len(earlier)), key=lambda i: (-_shared_regime(target, earlier[i][0]), -i))
    centres = target.prior_centers()
    seen = [dict(w.params) for w in target.warm_starts]
    out: list[WarmStart] = []
    for i in order:
        if len(out) >= limit:
            break
        space, done = earlier[i]
        applied = {k: clip_value(target.params[k], v) for k, v in sorted(done.best.items()) if k in target.params}
        applied = {k: v for k, v in applied.items() if v is not None}
        if not applied:
            continue
        params = {k: applied.get(k, centres[k]) for k in target.params}
        if params in seen:
            continue
        seen.append(params)
        out.append(WarmStart(params=params, carried_from=done.name,
                             source=f"campaign: best of sweep {done.name} ({space.name}); carried "
                                    f"{', '.join(applied)}"))
    return out


def with_carried(target: SearchSpace, carried: Sequence[WarmStart]) -> SearchSpace:
    """`target` with the carried warm starts after its own."""
    return target.model_copy(update={"warm_starts": [*target.warm_starts, *carried]})


def new_campaign(family: str, scale: str, spaces: Sequence[SearchSpace], *, samples: int | None,
                 max_concurrent: int | None, seed: int, carry: int, name: str | None, tracking_uri: str | None,
                 storage: str | None) -> Campaign:
    name = name or f"{family}-{scale}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Campaign(name=name, family=family, scale=scale, samples=samples, max_concurrent=max_concurrent, seed=seed,
                    carry=carry, storage=storage or str(results_dir() / "ray"),
                    tracking_uri=tracking_uri,
                    sweeps=[CampaignSweep(space=s.name, name=f"{name}-{s.name}") for s in spaces])


# ---- running ----------------------------------------------------------------------------------------
def _interrupted(campaign: Campaign, folder: Path, code: int) -> int:
    from tuner.tracking import mark_interrupted

    try:
        mark_interrupted(campaign.tracking_uri, campaign.experiment_id, campaign.run_id)
    except Exception as err:  # resume reopens it
        print(f"warning: MLflow did not take the interruption ({err})", flush=True)
    print(f"\ncampaign {campaign.name} interrupted. Continue it with:\n  python -m tuner resume-campaign {folder}",
          flush=True)
    return code


def _next_space(campaign: Campaign, index: int) -> SearchSpace:
    target = load_space(campaign.sweeps[index].space).at_scale(campaign.scale)
    earlier = [(load_space(s.space), s) for s in campaign.sweeps[:index] if s.status == "done" and s.best]
    return with_carried(target, carried_warm_starts(target, earlier, campaign.carry))


def run_campaign(campaign: Campaign, folder: Path) -> int:
    """Run (or continue) the campaign's sweeps in order, then write its regime table and working memory. Returns
    the exit code: 0, 130 after a Ctrl-C, 75 when a disk ran full (resume later), 1 when a sweep failed."""
    from tuner.driver import resume, sweep
    from tuner.memory import family_memory
    from tuner.outcome import best_trial
    from tuner.progress import short_config
    from tuner.table import fmt, to_markdown
    from tuner.tracking import (
        CAMPAIGN_TAG,
        CARRIED_TAG,
        PARENT_TAG,
        check_tracking_uri,
        default_tracking_uri,
        end_campaign_run,
        reopen_sweep_run,
        start_campaign_run,
    )

    campaign.tracking_uri = campaign.tracking_uri or default_tracking_uri()
    check_tracking_uri(campaign.tracking_uri)
    family = get_family(campaign.family)
    if not campaign.run_id:
        params = {"scale": campaign.scale, "spaces": ",".join(s.space for s in campaign.sweeps),
                  "samples": campaign.samples, "max_concurrent": campaign.max_concurrent, "seed": campaign.seed,
                  "carry": campaign.carry}
        campaign.experiment_id, campaign.run_id = start_campaign_run(campaign.tracking_uri, family.name,
                                                                     campaign.name, params)
        campaign.save(folder)
    else:
        reopen_sweep_run(campaign.tracking_uri, campaign.run_id)
    try:
        for index, entry in enumerate(campaign.sweeps):
            if entry.status == "done":
                continue
            experiment = f"{campaign.storage.rstrip('/')}/{entry.name}"
            print(f"campaign {campaign.name}: sweep {index + 1}/{len(campaign.sweeps)}: {entry.space} "
                  f"({entry.name})", flush=True)
            if entry.status == "running" and exists(f"{experiment}/{PLAN_FILE}"):
                outcome = resume(experiment)
            else:
                space = _next_space(campaign, index)
                carried = [w for w in space.warm_starts if w.carried_from]
                entry.status, entry.carried_from = "running", [w.carried_from for w in carried]
                campaign.save(folder)
                for w in carried:
                    print(f"  warm start carried from {w.carried_from}: {short_config(w.params)}", flush=True)
                tags = {PARENT_TAG: campaign.run_id, CAMPAIGN_TAG: campaign.name,
                        CARRIED_TAG: json.dumps([{"from": w.carried_from, "params": w.params} for w in carried])}
                outcome = sweep(space, scale=campaign.scale, samples=campaign.samples,
                                max_concurrent=campaign.max_concurrent, seed=campaign.seed, name=entry.name,
                                storage=campaign.storage, tracking_uri=campaign.tracking_uri, run_tags=tags)
            if outcome.interrupted:
                return _interrupted(campaign, folder, 75 if outcome.stopped_for else 130)
            best = best_trial(outcome.trials, family.metric, family.mode)
            entry.status, entry.parent_run_id = "done", outcome.parent_run_id
            if best is not None:
                entry.best = {c.removeprefix("param."): getattr(best[c], "item", lambda v=best[c]: v)()
                              for c in outcome.trials.columns if c.startswith("param.")}
                entry.best_metric = float(best[f"metric.{family.metric}"])
                print(f"campaign {campaign.name}: {entry.space}: best {family.metric} {fmt(entry.best_metric)}",
                      flush=True)
            entry.failure = outcome.failure
            campaign.save(folder)
        memory, table = family_memory(family.name, campaign.tracking_uri, [s.name for s in campaign.sweeps],
                                      title=f"{family.name}, campaign {campaign.name}")
    except KeyboardInterrupt:
        return _interrupted(campaign, folder, 130)
    failed = [s.name for s in campaign.sweeps if s.failure]
    table_md = to_markdown(table) + "\n" if len(table) else "No finished sweep.\n"
    (folder / "regime_table.md").write_text(table_md)
    (folder / "memory.md").write_text(memory)
    end_campaign_run(campaign.tracking_uri, campaign.run_id, {"regime_table.md": table_md, "memory.md": memory})
    print(f"\n{table_md}\ncampaign {campaign.name}: {len(campaign.sweeps)} sweeps done"
          + (f", {len(failed)} failed ({', '.join(failed)})" if failed else "")
          + f"\nregime table: {folder / 'regime_table.md'}\nworking memory: {folder / 'memory.md'}"
          f"\nMLflow campaign run: {campaign.run_id}\nopen it with:\n  mlflow ui --backend-store-uri "
          f"{campaign.tracking_uri}", flush=True)
    return 1 if failed else 0


def start_campaign(family: str, scale: str, spaces: Sequence[str] | None = None, *, samples: int | None = None,
                   max_concurrent: int | None = None, seed: int = 0, carry: int = CARRY, name: str | None = None,
                   tracking_uri: str | None = None, storage: str | None = None) -> int:
    """`tuner campaign`: check the inputs, write the state file, run the campaign."""
    chosen = check_campaign(family, scale, spaces, samples=samples, max_concurrent=max_concurrent, carry=carry,
                            name=name)
    campaign = new_campaign(family, scale, chosen, samples=samples, max_concurrent=max_concurrent, seed=seed,
                            carry=carry, name=name, tracking_uri=tracking_uri, storage=storage)
    folder = campaign_folder(campaign.name)
    campaign.save(folder)
    print(f"campaign {campaign.name}: {', '.join(s.space for s in campaign.sweeps)} at scale {scale}; state in "
          f"{folder / STATE_FILE}", flush=True)
    return run_campaign(campaign, folder)


def resume_campaign(path_or_name: str) -> int:
    """`tuner resume-campaign`: continue the running sweep of a campaign, then the rest."""
    folder = find_campaign(path_or_name)
    campaign = Campaign.model_validate_json((folder / STATE_FILE).read_text())
    return run_campaign(campaign, folder)
