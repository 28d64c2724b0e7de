"""The layering rules of docs/architecture.md, written as import-linter contracts in
pyproject.toml ([tool.importlinter]), hold; and breaking one is caught."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(where: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=where, env=env, capture_output=True, text=True, timeout=120)


def test_every_layering_contract_holds():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    # A domain package reaching for a face.
    ("store/tables.py", "import mailer.cli", "Domain packages never import the web or the command line BROKEN"),
    # The layering upside down: delivery importing the funnel, which imports delivery.
    ("delivery/kinds.py", "import mailer.funnel.actions",
     "Faces over the operator layer over the domain over content and the store BROKEN"),
    # A cycle inside a package: the renderer imports the kind table.
    ("delivery/kinds.py", "import mailer.delivery.rendering", "No import cycles between the modules of any package BROKEN"),
    # Settings pulling in the domain.
    ("settings.py", "import mailer.store.queries", "Settings import no domain module BROKEN"),
    # The command line importing the web part directly.
    ("cli/outbox.py", "import mailer.web", "The command line does not import the web part"),
])
def test_breaking_a_rule_fails_the_check(tmp_path, module, line, broken):
    shutil.copytree(ROOT / "mailer", tmp_path / "mailer", ignore=shutil.ignore_patterns("__pycache__", "_shipped"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "mailer" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert broken in " ".join(result.stdout.split()), result.stdout
