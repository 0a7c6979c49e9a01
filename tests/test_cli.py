"""Bad input: a clear message naming the field, exit code 2, and nothing written."""

from __future__ import annotations

import subprocess
import sys
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
    (["sweep", "--space", "chaotic_10k", "--tracking-uri", "foo://bar"], "none of the schemes allowed here"),
    (["table", "--family", "signal", "--tracking-uri", "http://127.0.0.1:9"], "cannot reach the MLflow"),
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


def test_unwritable_results_folder_exits_2(results: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TUNER_RESULTS", "/proc/tuner-results")
    assert cli(["sweep", "--space", "chaotic_10k", "--scale", "smoke"]) == 2
    assert "TUNER_RESULTS" in capsys.readouterr().err and not Path("/proc/tuner-results").exists()


def _user_space(folder: Path, name: str, **changes) -> Path:
    data = yaml.safe_load(space_files()["chaotic_10k"].read_text())
    data.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("expression, message", [
    ("lr * (lr_W_ratio // 1)", "'lr_W_ratio // 1' is not allowed"),
    ("lr * lr_W_ratio / 0", "division by zero"),
    ("lr * lr_W_ratio * connectivity_type", "connectivity_type = 'chaotic' is not a number"),
])
def test_bad_derived_expression_exits_2(results: Path, tmp_path: Path, capsys, expression, message) -> None:
    path = _user_space(tmp_path, "derived", derived={"lr_W": expression})
    assert cli(["sweep", "--space", str(path)]) == 2
    err = capsys.readouterr().err
    assert "derived.lr_W" in err and message in err
    assert not results.exists()


def test_broken_or_shadowing_user_spaces_are_reported_per_file(results: Path, tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    user = tmp_path / "user_spaces"
    _user_space(user, "chaotic_10k")  # a shipped space's name
    _user_space(user, "my_regime")
    (user / "broken.yaml").write_text("family: signal\nparams: [unclosed\n")
    monkeypatch.setenv("TUNER_SPACE_PATH", str(user))
    assert cli(["spaces"]) == 2
    out, err = capsys.readouterr()
    assert "my_regime" in out and "chaotic_dale_20k" in out  # the good files still list
    assert "broken.yaml" in err and "'chaotic_10k' is defined by several files" in err
    assert cli(["sweep", "--space", "chaotic_10k"]) == 2
    assert "defined by several files" in capsys.readouterr().err
    assert not results.exists()


@pytest.mark.parametrize("argv", [
    ["sweep", "--space", "chaotic_10k", "--set", "lr"],
    ["sweep", "--space", "chaotic_10k", "--set", "n_neuronz=5"],
    ["sweep", "--space", "chaotic_10"],
    ["sweep", "--space", "needle_len256", "--set", "lr"],
    ["sweep", "--space", "needle_len256", "--set", "n_pairz=5"],
    ["sweep", "--space", "needle_len256", "--set", "memory_mode=batched"],
])
def test_input_errors_are_answered_before_heavy_imports(argv) -> None:
    """Bad input is refused before Ray, MLflow, Optuna or torch load (a second, not twenty)."""
    code = ("import sys\nfrom tuner.cli import main\n"
            f"rc = main({argv!r})\n"
            "print('LOADED', sorted(m for m in ('ray', 'mlflow', 'optuna', 'torch') if m in sys.modules))\n"
            "sys.exit(rc)\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "LOADED []" in done.stdout and "error:" in done.stderr
