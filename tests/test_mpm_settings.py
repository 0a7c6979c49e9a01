"""Settings schema of the mpm_inr family: defaults, bad values, registration and CLI."""

import subprocess
import sys

import pytest

from trainables.mpm_inr.family import FAMILY
from tuner.family import families
from tuner.validation import TunerInputError, validate_settings


def test_registered_and_defaults():
    assert families()["mpm_inr"] is FAMILY
    s = validate_settings(FAMILY.settings, {"field": "Jp", "n_training_frames": "100", "normalize_targets": "true"})
    assert s.field == "Jp" and s.n_training_frames == 100 and s.normalize_targets is True
    assert s.batch_frames == 1 and s.n_reports == 10 and s.inr_type == "siren_txy"
    assert FAMILY.table.regime(s.model_dump()) == {"INR Type": "siren_txy", "Field": "Jp", "n_training_frames": 100}
    assert all(f.description for f in FAMILY.settings.model_fields.values())


@pytest.mark.parametrize("values, named", [
    ({"field": "G"}, "field"),
    ({"inr_type": "ngp"}, "inr_type"),
    ({"n_training_frames": 20000}, "n_training_frames"),
    ({"n_training_frames": 0}, "n_training_frames"),
    ({"hidden_dim": 0}, "hidden_dim"),
    ({"omega_f": 8.0}, "omega_f"),
    ({"n_particles": 10000}, "n_particles"),
    ({"sim_particles": 1000}, "sim_particles"),
    ({"device": "tpu"}, "device"),
])
def test_bad_settings_name_the_setting(values, named):
    with pytest.raises(TunerInputError, match=named):
        validate_settings(FAMILY.settings, values)


def test_bad_choice_lists_allowed_values():
    with pytest.raises(TunerInputError) as err:
        validate_settings(FAMILY.settings, {"field": "G"})
    assert all(name in str(err.value) for name in ("'F'", "'Jp'", "'C'", "'S'"))


def test_cli_help_and_bad_setting():
    run = [sys.executable, "-m", "trainables.mpm_inr"]
    shown = subprocess.run([*run, "--help"], capture_output=True, text=True, check=True).stdout
    assert all(name in shown for name in FAMILY.settings.model_fields)
    bad = subprocess.run([*run, "--set", "field=G"], capture_output=True, text=True)
    assert bad.returncode == 2 and "field" in bad.stderr
