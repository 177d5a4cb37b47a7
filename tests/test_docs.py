"""The documentation site builds cleanly, and what it states matches the code.

- The site builds with ``mkdocs build --strict`` (no broken link, anchor or reference).
- The model zoo page is what ``scripts/gen_docs.py`` generates from the registry now.
- Every ``mlxvision`` command line in the docs uses options the command has.
- Every Python block in the docs is valid Python; every example script named exists.
"""

import ast
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mlxvision.cli import build_parser
from mlxvision.models import count_parameters, create_model

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blocks(language: str):
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for indent, body in re.findall(
            rf"^([ \t]*)```{language}\n(.*?)^\1```", text, flags=re.S | re.M
        ):
            lines = [line[len(indent) :] for line in body.splitlines()]
            yield page.relative_to(ROOT), "\n".join(lines)


def test_site_builds_with_no_warning(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module)
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    reference = (tmp_path / "reference" / "data" / "index.html").read_text(encoding="utf-8")
    assert 'id="mlxvision.data.ArrayDataset"' in reference
    assert "language-pycon" in reference or "&gt;&gt;&gt;" in reference  # examples as code
    assert ":class:" not in reference  # Sphinx roles shown as code
    chinese = (tmp_path / "zh-TW" / "tutorial" / "index.html").read_text(encoding="utf-8")
    assert "資料增強" in chinese
    cli = (tmp_path / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "usage: mlxvision export" in cli  # generated from the parser at build time
    benchmarks = (tmp_path / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "mlxvision:benchmarks" not in benchmarks


def test_model_zoo_page_is_current():
    # A fresh process: tests in this one may have registered models of their own.
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    page = (DOCS / "models.md").read_text(encoding="utf-8")
    for name in ("resnet20", "simple_cnn"):  # counted here, independently of the model cards
        params = count_parameters(create_model(name))
        assert f"| `{name}` | {params / 1e6:.2f} M |" in page


def test_benchmark_results_are_included_or_announced(tmp_path, monkeypatch):
    gen_docs = _gen_docs()
    monkeypatch.setattr(gen_docs, "RESULTS", tmp_path)
    assert "No results yet" in gen_docs.benchmarks_markdown()
    (tmp_path / "speed.md").write_text("# Speed\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n")
    (tmp_path / "notes.md").write_text("See [the script](../throughput.py).\n")
    text = gen_docs.benchmarks_markdown()
    assert "## Speed" in text and "| 1 | 2 |" in text
    assert "## notes" in text and "the script (`../throughput.py`)" in text


def _commands():
    """``mlxvision`` command lines in the docs' bash blocks, continuation lines joined."""
    for page, block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            if re.search(r"(^|\s)mlxvision\s", line):
                words = shlex.split(line)
                yield page, words[words.index("mlxvision") + 1 :]


def test_command_lines_in_the_docs_use_real_options():
    parser = build_parser()
    commands = next(a for a in parser._actions if hasattr(a, "choices") and a.choices).choices
    seen = 0
    for page, words in _commands():
        assert words and words[0] in commands, f"{page}: unknown command in {words}"
        options = set(commands[words[0]]._option_string_actions)
        for word in words[1:]:
            if word.startswith("--"):
                assert word.split("=")[0] in options, f"{page}: mlxvision {words[0]} {word}"
        seen += 1
    assert seen > 20


def test_python_blocks_are_valid_python():
    blocks = list(_blocks("python"))
    assert len(blocks) > 30
    for page, block in blocks:
        try:
            ast.parse(block)
        except SyntaxError as error:
            pytest.fail(f"{page}: {error}\n{block}")


def test_example_scripts_named_in_the_docs_exist():
    named = set()
    for page in PAGES:
        named |= set(re.findall(r"examples/([\w/]+\.(?:py|cpp))", page.read_text(encoding="utf-8")))
    assert "cifar10_workflow.py" in named
    missing = sorted(n for n in named if not (ROOT / "examples" / n).is_file())
    assert missing == []
