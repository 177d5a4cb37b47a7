import json

import pytest

from mlxvision.cli import main

optuna = pytest.importorskip("optuna")


def test_tune_runs_eight_trials_on_the_digits_and_reports_the_best(tmp_path, capsys):
    out = tmp_path / "tune"
    code = main(["tune", "--trials", "8", "--epochs", "2", "--out", str(out), "--seed", "1"])
    assert code == 0
    summary = json.loads((out / "tune.json").read_text())
    assert len(summary["trials"]) == 8
    states = {t["state"] for t in summary["trials"]}
    assert states <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states
    complete = [t for t in summary["trials"] if t["state"] == "COMPLETE"]
    assert summary["best"]["value"] == max(t["value"] for t in complete)
    assert 0.5 < summary["best"]["value"] <= 1.0
    assert set(summary["best"]["params"]) == {"lr", "batch_size", "crop_padding"}
    best = out / f"trial-{summary['best']['trial']:03d}"
    result = json.loads((best / "result.json").read_text())
    assert result["val_accuracy"] == pytest.approx(summary["best"]["value"])
    assert (best / "model.safetensors").is_file()
    assert "Best trial" in capsys.readouterr().out
