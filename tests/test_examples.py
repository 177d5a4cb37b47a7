"""Every example runs as a user would run it, with a tiny setting, and says what it did."""

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script, *args, cwd):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quickstart(tmp_path):
    out = _run("quickstart.py", "--epochs", "2", "--out", str(tmp_path / "qs"), cwd=tmp_path)
    accuracy = float(re.search(r"Test Accuracy: ([0-9.]+)%", out).group(1))
    assert accuracy > 50.0
    assert f"reloaded accuracy {accuracy:.2f}%" in out
    assert re.search(r"reads the first test image as \d \(true: \d\)", out)
    assert (tmp_path / "qs" / "digits_cnn.safetensors").is_file()
    assert (tmp_path / "qs" / "digits_cnn.mlxfn").is_file()


def test_readme_script_runs_as_written(tmp_path, monkeypatch):
    readme = (EXAMPLES.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "digits_cnn.safetensors").is_file()
