"""Bad input: a clear message naming the field, exit code 2, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tuner.cli import main as cli
from tuner.space import space_files


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--space", "chaotic_10"], "did you mean 'chaotic_10k'"),
    (["sweep", "--space", "chaotic_10k", "--set", "n_neuronz=5"], "unknown key 'n_neuronz'"),
    (["sweep", "--space", "chaotic_10k", "--set", "Dale_law_factor=2"], "Dale_law_factor"),
    (["sweep", "--space", "chaotic_10k", "--set", "lr=5"], "outside the space's range"),
    (["sweep", "--space", "chaotic_10k", "--set", "batch_size=7"], "not one of the choices"),
    (["sweep", "--space", "chaotic_10k", "--set", "connectivity_type=ring"], "connectivity_type"),
    (["sweep", "--space", "chaotic_10k", "--tracking-uri", "http://127.0.0.1:9"], "cannot reach the MLflow"),
    (["sweep", "--space", "chaotic_10k", "--samples", "0"], "--samples"),
    (["resume", "/nonexistent/sweep"], "holds no tuner_sweep.json"),
    (["table", "--family", "nope"], "unknown family 'nope'"),
])
def test_bad_input_exits_2_and_writes_nothing(results: Path, capsys, argv, message) -> None:
    assert cli(argv) == 2
    assert message.lower() in capsys.readouterr().err.lower()
    assert not results.exists()


def test_malformed_space_file_exits_2(results: Path, tmp_path: Path, capsys) -> None:
    data = yaml.safe_load(space_files()["chaotic_10k"].read_text())
    data["params"]["coeff_W_L1"]["high"] = 1e-9
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli(["sweep", "--space", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "params.coeff_W_L1" in err
    assert not results.exists()


def test_argparse_choices_exit_2(results: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli(["sweep", "--space", "chaotic_10k", "--scale", "huge"])
    assert exc.value.code == 2 and not results.exists()


def test_spaces_and_show(capsys) -> None:
    assert cli(["spaces"]) == 0
    listing = capsys.readouterr().out
    assert "signal:" in listing and "chaotic_dale_20k" in listing
    assert cli(["show", "low_rank10_dale_30k"]) == 0
    shown = capsys.readouterr().out
    assert "warm starts" in shown and "principles" in shown and "lr_W_ratio" in shown
