"""Every shipped space file validates; malformed files are refused with the file and field named."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from tuner.family import families, get_family
from tuner.space import evaluate, load_space, space_files
from tuner.validation import TunerInputError

SIGNAL_BLOCKS = set(range(1, 11))
MPM_REGIMES = {("F", 200), ("F", 400), ("Jp", 400), ("C", 400), ("S", 400), ("F", 600), ("Jp", 600), ("C", 600)}


def test_every_shipped_space_validates() -> None:
    names = space_files()
    assert names, "no space files found"
    for name, path in names.items():
        space = load_space(path)  # schema, bounds, warm starts and prior centres, per scale
        assert space.name == name == path.stem
        assert space.family in families()
        assert space.principles and all(p.source for p in space.principles)
        for ws in space.warm_starts:
            assert ws.recorded, f"{name}: warm start without the metric the seed recorded"


def test_signal_has_one_space_per_seed_block() -> None:
    blocks = {load_space(p).source.block for n, p in space_files().items() if load_space(p).family == "signal"}
    assert blocks == SIGNAL_BLOCKS


def test_scales_change_cost_knobs_only() -> None:
    for path in space_files().values():
        space = load_space(path)
        knobs = get_family(space.family).cost_knobs
        for scale in space.scales.values():
            assert set(scale.settings) <= knobs


def test_derived_ratio() -> None:
    space = load_space("chaotic_10k")
    family = get_family("signal")
    settings = space.resolve(space.base_settings("cpu"), {"lr": 1e-4, "lr_W_ratio": 80.0, "coeff_W_L1": 1e-5,
                                                          "batch_size": 32}, family)
    assert settings["lr_W"] == pytest.approx(8e-3)
    assert "lr_W_ratio" not in settings  # helper parameters are not family settings
    assert evaluate("2 * a ** 2 - b / 4", {"a": 3, "b": 8}) == 16


def test_mpm_inr_has_one_seed_true_space_per_seed_regime() -> None:
    """Each seed regime has exactly one space run as the seed logged it (raw targets); z-scored variants are
    their own spaces, named *_zscored."""
    spaces = [s for s in map(load_space, space_files().values()) if s.family == "mpm_inr"]
    seed_true = [s for s in spaces if not s.name.endswith("_zscored")]
    assert sorted((s.fixed["field"], s.fixed["n_training_frames"]) for s in seed_true) == sorted(MPM_REGIMES)
    assert all(s.fixed["normalize_targets"] is False for s in seed_true)
    zscored = {s.name: s for s in spaces if s.name.endswith("_zscored")}
    assert set(zscored) == {"s_field_400f_zscored", "c_field_400f_zscored", "c_field_600f_zscored"}
    for name, space in zscored.items():
        assert space.fixed["normalize_targets"] is True
        twin = load_space(name.removesuffix("_zscored"))
        assert {k: v for k, v in space.fixed.items() if k != "normalize_targets"} == \
            {k: v for k, v in twin.fixed.items() if k != "normalize_targets"}
    principle = " ".join(p.text for p in zscored["s_field_400f_zscored"].principles)
    assert "z-scoring makes S tractable" in principle and "0.99890" in principle and "0.46651" in principle


def test_priors_are_centred_on_the_seed_evidence() -> None:
    s_field = load_space("s_field_400f")
    assert s_field.params["lr"].prior.center == 2.0e-5 and s_field.params["omega"].prior.center == 48
    assert load_space("jp_field_400f").params["lr"].prior.center < 2.0e-4          # below the 2E-4 ceiling
    for name, path in space_files().items():
        space = load_space(path)
        if space.family == "signal":                                              # L1 < 5E-7 is "catastrophic"
            assert space.params["coeff_W_L1"].low >= 5.0e-7, name


def test_every_warm_start_was_recorded_in_its_space_regime() -> None:
    """A warm start's recorded value was measured under the space's own fixed settings (its `regime`)."""
    checked = 0
    for name, path in space_files().items():
        space = load_space(path)
        if space.family not in ("signal", "mpm_inr"):
            continue
        for i, ws in enumerate(space.warm_starts):
            assert set(space.fixed) <= set(ws.regime), f"{name}: warm_starts[{i}] does not record its regime"
            assert all(ws.regime[k] == v for k, v in space.fixed.items()), f"{name}: warm_starts[{i}]"
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("name, edit", [
    ("s_field_400f", lambda ws: ws["regime"].update(normalize_targets=True)),     # z-scored value in a raw space
    ("s_field_400f_zscored", lambda ws: ws["regime"].update(normalize_targets=False)),
    ("chaotic_10k", lambda ws: ws["regime"].update(n_frames=20000)),               # another block's data
    ("chaotic_10k", lambda ws: ws["regime"].update(sim_seed=0)),                   # another draw
    ("f_field_400f", lambda ws: ws["regime"].update(sim_seed=1)),                  # not fixed: the default must match
    ("chaotic_10k", lambda ws: ws["regime"].update(lr=1e-3)),                      # a tuned parameter is no regime
])
def test_warm_start_from_another_regime_is_refused(tmp_path: Path, name: str, edit) -> None:
    path = _broken(tmp_path, lambda d: edit(d["warm_starts"][0]), name)
    with pytest.raises(TunerInputError, match=r"warm_starts\[0\]\.regime"):
        load_space(path)


def test_scale_params_move_warm_starts_into_their_range() -> None:
    space = load_space("s_field_400f")
    full, cpu = space.at_scale("full"), space.at_scale("cpu")
    assert full.warm_starts == space.warm_starts  # the full scale searches the seed's ranges
    assert cpu.params["hidden_dim"].high == 256 and cpu.params["lr"] == space.params["lr"]
    ws = cpu.warm_starts[0].params
    assert 96 <= ws["hidden_dim"] <= 256 and 25 <= ws["steps_per_frame"] <= 100
    u = math.log(1280 / 512) / math.log(2048 / 512)  # 1280's place in the full range [512, 2048], log units
    assert ws["hidden_dim"] == round(96 * (256 / 96) ** u)  # ... kept in the cpu range [96, 256]
    assert (ws["lr"], ws["omega"], ws["n_layers"]) == (2.0e-5, 55, 3)  # regime params untouched
    settings = space.resolve(space.base_settings("cpu"), ws, get_family("mpm_inr"))
    assert settings["total_steps"] == ws["steps_per_frame"] * 400
    assert space.pin({"hidden_dim": 1280}).at_scale("cpu").params.get("hidden_dim") is None  # a pin wins


def _broken(tmp_path: Path, edit, name: str = "chaotic_10k") -> Path:
    data = yaml.safe_load(space_files()[name].read_text())
    edit(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["params"]["lr"].update(low=1.0), "params.lr"),                       # low >= high
    (lambda d: d["params"]["lr"]["prior"].update(center=1.0), "params.lr"),           # prior outside bounds
    (lambda d: d["warm_starts"][0]["params"].update(lr=5.0), "warm_starts[0].params.lr"),
    (lambda d: d["fixed"].update(n_neuronz=10), "fixed.n_neuronz"),
    (lambda d: d["scales"]["smoke"]["settings"].update(n_neurons=10), "scales.smoke.settings.n_neurons"),
    (lambda d: d["scales"].pop("full"), "scales"),
    (lambda d: d["derived"].update(lr_W="lr * nonsense"), "derived.lr_W"),
    (lambda d: d["fixed"].update(connectivity_type="ring"), "connectivity_type"),
    (lambda d: d.update(principles=[]), "principles"),
    (lambda d: d.update(scheduler={"rung_value": "median"}), "scheduler.rung_value"),
])
def test_malformed_space_names_file_and_field(tmp_path: Path, edit, field: str) -> None:
    path = _broken(tmp_path, edit)
    with pytest.raises(TunerInputError) as err:
        load_space(path)
    assert str(path) in str(err.value) and field in str(err.value)


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["scales"]["cpu"]["params"].update(lr={"type": "float", "low": 1e-5, "high": 1e-4}),
     "scales.cpu.params.lr"),                                                             # sets a regime setting
    (lambda d: d["scales"]["cpu"]["params"].update(hidden_dim={"type": "float", "low": 8, "high": 16}),
     "scales.cpu.params.hidden_dim"),                                                     # changes the type
    (lambda d: d["scales"]["cpu"]["params"].update(width={"type": "int", "low": 8, "high": 16}),
     "scales.cpu.params.width"),                                                          # not a parameter
    (lambda d: d["scales"]["cpu"]["params"]["steps_per_frame"].update(low=200), "scales.cpu.params.steps_per_frame"),
])
def test_malformed_scale_params_name_file_and_field(tmp_path: Path, edit, field: str) -> None:
    path = _broken(tmp_path, edit, "f_field_400f")
    with pytest.raises(TunerInputError) as err:
        load_space(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_unknown_space_suggests_close_names() -> None:
    with pytest.raises(TunerInputError, match="chaotic_10k"):
        load_space("chaotic_10")
