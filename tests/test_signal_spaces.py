"""Each signal space pins the simulation seed of a draw whose data matches what the seed logged.

Our generator's draws differ from the reference's (other RNG), and one regime's draws vary widely
in how well they excite the network (chaotic N=100: eff_rank(99%) 9-36 over seeds 0-19). A space
pins the family default 42 when its draw lies in the block's logged eff_rank range, otherwise the
first seed 0, 1, 2, ... that does. This test simulates each pinned draw and checks the range.
"""

from __future__ import annotations

import pytest

from trainables.signal.simulate import SIMULATION_SETTINGS, simulate
from tuner.family import get_family
from tuner.space import load_space

# eff_rank column of the Regime Comparison Table, seed 000_816f6ff45b16a1e4.txt (Blocks 1-9)
LOGGED_EFF_RANK = {
    "chaotic_10k": (31, 35), "low_rank20_10k": (6, 12), "chaotic_dale_10k": (10, 10),
    "low_rank50_20k": (7, 21), "low_rank20_dale_20k": (28, 30), "low_rank50_dale_20k": (10, 20),
    "chaotic_dale_20k": (28, 36), "low_rank10_30k": (4, 7), "low_rank10_dale_30k": (10, 16),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LOGGED_EFF_RANK))
def test_pinned_draw_has_the_logged_effective_rank(name: str) -> None:
    space, family = load_space(name), get_family("signal")
    settings = family.settings.model_validate(space.resolve(space.base_settings("smoke", {}),
                                                            space.prior_centers(), family)).model_dump()
    data = simulate(**{k: settings[k] for k in SIMULATION_SETTINGS})
    low, high = LOGGED_EFF_RANK[name]
    assert low <= int(data["eff_rank_99"]) <= high, f"{name}: sim_seed {settings['sim_seed']}"
