"""The flyvis search spaces: valid against the family at every scale, priors and warm starts from seed 001."""

import pytest

from trainables.flyvis.family import FAMILY
from trainables.flyvis.settings import FlyVisSettings, total_steps
from tuner.space import load_space

SPACES = ("fly_N9_62_0", "fly_N9_62_1")
RECORDED = {"conn_R2", "tau_R2", "V_rest_R2", "cluster_accuracy"}


@pytest.mark.parametrize("name", SPACES)
def test_space_cites_the_principles_and_warm_starts(name):
    space = load_space(name)                                    # validates against the family at every scale
    assert space.family == "flyvis"
    assert sorted(int(p.source.rsplit("#", 1)[1]) for p in space.principles) == list(range(1, 28))
    assert all(RECORDED <= set(w.recorded) for w in space.warm_starts)
    assert {w.source.split()[4] for w in space.warm_starts} >= {"N53", "N50", "N62", "N57", "N49", "N44"}


def test_regimes_differ_in_noise_only():
    a, b = (load_space(n) for n in SPACES)
    assert {k: v for k, v in a.fixed.items() if k != "noise_model_level"} == \
        {k: v for k, v in b.fixed.items() if k != "noise_model_level"}
    assert (a.fixed["noise_model_level"], b.fixed["noise_model_level"]) == (0.0, 0.05)


@pytest.mark.parametrize("scale, extent, most_steps", [("smoke", 1, 120), ("cpu", 3, 35_200),
                                                        ("full", 8, 384_000)])
def test_scales(scale, extent, most_steps):
    space = load_space("fly_N9_62_1").at_scale(scale)
    base = space.base_settings(scale)
    steps = []
    for w in space.warm_starts:
        s = FlyVisSettings(**space.resolve(base, w.params, FAMILY))
        assert s.extent == extent
        steps.append(total_steps(s))
    assert max(steps) == most_steps
