"""Documentation stays true: it builds offline, names every public object, and the
README's test command is the one CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import agop

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_offline_strict(tmp_path):
    pytest.importorskip("mkdocs")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT, check=True, capture_output=True,
    )
    assert (tmp_path / "site" / "index.html").exists()


def test_api_page_names_every_public_object():
    api = (ROOT / "docs" / "api.md").read_text()
    missing = [name for name in agop.__all__ if f"`{name}" not in api]
    assert not missing, f"docs/api.md does not mention {missing}"


def _bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Setup")[1].split("\n## ")[0]
    commands = [b.strip() for b in _bash_blocks(setup)]
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    main_job, tests = commands
    assert main_job.endswith("agop fit") and "pip install -e '.[plot]'" in main_job
    assert "pytest" in tests and "torch==2.13.0" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci, ".ci/run must run the README's test command"
