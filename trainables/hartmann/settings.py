"""Settings of one `hartmann` trial: the function (dim, noise, seed), the point x1..x6, and the cost knobs."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuner.family import DEVICES

COORDINATES = ("x1", "x2", "x3", "x4", "x5", "x6")


def _coordinate(j: int) -> float | None:
    return Field(None, ge=0, le=1, description=f"coordinate {j} of x in [0, 1]: required for j <= dim, "
                                              f"refused (left unset) for j > dim")


class HartmannSettings(BaseModel):
    """One evaluation of the multi-fidelity Hartmann-`dim` function at x, seen through `n_reports` fidelities."""

    model_config = ConfigDict(extra="forbid")

    # the function (regime)
    dim: int = Field(3, description="3 (Hartmann-3) or 6 (Hartmann-6)")
    noise: float = Field(0.0, ge=0, description="std of the Gaussian noise added to each observed value")
    seed: int = Field(0, ge=0, description="seed of the noise (with x: the same point and seed, the same noise)")
    # the point
    x1: float | None = _coordinate(1)
    x2: float | None = _coordinate(2)
    x3: float | None = _coordinate(3)
    x4: float | None = _coordinate(4)
    x5: float | None = _coordinate(5)
    x6: float | None = _coordinate(6)
    # cost knobs
    n_reports: int = Field(10, ge=1, description="reports; report i of n is observed at fidelity z = i/n")
    seconds_per_report: float = Field(0.0, ge=0, description="sleep before each report: a cost, to study timing")
    device: Literal[DEVICES] = Field("auto", description="numpy on the CPU: auto or cpu (cuda is refused)")

    @field_validator("dim")
    @classmethod
    def _known_dim(cls, value: int) -> int:
        if value not in (3, 6):
            raise ValueError("must be 3 (Hartmann-3) or 6 (Hartmann-6)")
        return value

    @field_validator("device")
    @classmethod
    def _cpu_only(cls, value: str) -> str:
        if value == "cuda":
            raise ValueError("the Hartmann functions run in numpy on the CPU; allowed: auto, cpu")
        return value

    @model_validator(mode="after")
    def _coordinates_match_dim(self) -> HartmannSettings:
        used, unused = COORDINATES[:self.dim], COORDINATES[self.dim:]
        missing = [name for name in used if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} required: Hartmann-{self.dim} takes {', '.join(used)}")
        extra = [name for name in unused if getattr(self, name) is not None]
        if extra:
            raise ValueError(f"{', '.join(extra)} given, but Hartmann-{self.dim} takes only {', '.join(used)}: "
                             f"leave {', '.join(unused)} unset (or set dim=6)")
        return self

    def point(self) -> np.ndarray:
        """x as an array of `dim` coordinates."""
        return np.array([getattr(self, name) for name in COORDINATES[:self.dim]], dtype=np.float64)
