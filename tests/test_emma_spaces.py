"""The emma search spaces: one per preset / profile, resolving to the logged best configurations."""

import pytest

from tuner.family import get_family
from tuner.space import load_space, space_files
from tuner.validation import validate_settings

EMMA_SPACES = {"needle_len256", "needle_len512", "needle_len512_late_gate", "needle_len768_guard", "needle_len1024",
               "listops_lite_512", "needle_len256_contractive", "needle_len512_contractive"}  # the last two: a
# model variant (notes/emma.md)


def resolved(name, scale="cpu", which=0):
    space, family = load_space(name), get_family("emma")
    values = space.resolve(space.base_settings(scale), space.warm_starts[which].params, family)
    return validate_settings(family.settings, values)


def test_one_space_per_preset_and_profile():
    names = {n for n, p in space_files().items() if load_space(p).family == "emma"}
    assert names == EMMA_SPACES


def test_guard_warm_start_is_the_logged_guarded_run():
    s = resolved("needle_len768_guard")
    assert (s.seq_len, s.n_pairs, s.train_size, s.val_size, s.batch_size, s.epochs) == (768, 4, 384, 64, 8, 7)
    assert (s.nce_gate_read_threshold, s.nce_lambda_max, s.nce_lambda_end, s.nce_lambda_freeze_epochs_after_open) == (
        0.63, 0.02, 0.02, 1)
    assert (s.write_decay, s.write_strength, s.write_norm_clip, s.memory_buckets) == (0.99, 0.5, 0.5, 64)


def test_cpu_scale_keeps_the_preset_sizes_and_smoke_is_small():
    for name in EMMA_SPACES:
        cpu, full, smoke = resolved(name, "cpu"), resolved(name, "full"), resolved(name, "smoke")
        assert (cpu.train_size, cpu.val_size, cpu.epochs) == (full.train_size, full.val_size, full.epochs)
        assert cpu.device == "cpu" and smoke.train_size <= 32 and smoke.epochs == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EMMA_SPACES))
def test_smoke_scale_runs(name):
    class Session:
        checkpoint, history = None, []

        def report(self, metrics, save=None):
            self.history.append(dict(metrics))

    session = Session()
    get_family("emma").run(resolved(name, "smoke"), session)
    assert len(session.history) == 1 and session.history[0]["diverged"] == 0.0


def test_len512_contractive_warm_start_is_the_measured_run():
    """The space's warm start is exactly the run notes/emma.md measured: needle_len512's logged best with the
    honest-from-start recipe and the contractive update (benchmarks/emma_parity.py ... --set ...)."""
    family = get_family("emma")
    base = load_space("needle_len512")
    measured = base.resolve(base.base_settings("cpu"), base.warm_starts[0].params, family) | {
        "epochs": 8, "warm_start_epochs": 0, "oracle_mix_ramp_epochs": 0, "oracle_mix_min": 0.0,
        "nce_lambda_max": 0.0, "nce_gate_oracle_hold": 0, "nce_scope": "prototype", "nce_open_loop_start": 1.0,
        "nce_open_loop_end": 1.0, "lambda_write": 0.2, "deq_update": "contractive"}
    space = resolved("needle_len512_contractive")
    measured["n_reports"] = space.n_reports  # how often a sweep reports (the parity run reported every epoch)
    assert space == validate_settings(family.settings, measured)
