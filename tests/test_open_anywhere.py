"""minirlhf works outside a checkout: a wheel built from the repository, installed in a fresh virtual
environment, runs ``minirlhf demo --quick`` from another folder, and a tutorial notebook copied out
of the repository runs top to bottom with it (its first cell installs nothing there). The Binder
configuration and the notebooks' "Open in Colab" badges are checked too.

The virtual environment sees the system's packages (``--system-site-packages``), so that torch and
the other dependencies are not downloaded again: only minirlhf comes from the wheel, and the test
checks that the wheel's copy is the one imported."""

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted(ROOT.glob("notebooks/0[0-9]_*.ipynb"))
COPIED = "07_variants"  # needs no file beside it, and reads the scoreboard from the wheel's cached runs


def _env() -> dict:
    """This process's environment without what would import the checkout instead of the wheel."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PIP_NO_INDEX": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _run(command, cwd, timeout=300):
    result = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtual environment with a wheel of the repository installed; returns its python."""
    tmp = tmp_path_factory.mktemp("anywhere")
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp / "dist")], cwd=tmp)
    wheels = list((tmp / "dist").glob("minirlhf-*.whl"))
    assert len(wheels) == 1, wheels
    venv.create(tmp / "venv", system_site_packages=True, with_pip=False)
    python = tmp / "venv" / ("Scripts" if os.name == "nt" else "bin") / "python"
    _run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheels[0])], cwd=tmp)
    return python


def test_the_wheel_runs_the_quick_demo_from_another_folder(installed, tmp_path):
    where = _run([str(installed), "-c", "import minirlhf; print(minirlhf.__file__)"], cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(installed.parent.parent), where  # the wheel's copy
    _run([str(installed.parent / "minirlhf"), "demo", "--quick", "--out", "out"], cwd=tmp_path)
    assert (tmp_path / "out" / "report.html").exists()


def test_a_tutorial_notebook_copied_out_of_the_repository_runs(installed, tmp_path):
    pytest.importorskip("nbconvert")
    shutil.copy(ROOT / "notebooks" / f"{COPIED}.ipynb", tmp_path / f"{COPIED}.ipynb")
    _run([str(installed), "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
          "--ExecutePreprocessor.timeout=300", "--output", "executed.ipynb", f"{COPIED}.ipynb"], cwd=tmp_path)
    cells = json.loads((tmp_path / "executed.ipynb").read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c["outputs"]]
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert not errors, errors
    first = next(c for c in cells if c["cell_type"] == "code")
    assert "find_spec" in "".join(first["source"]) and first["outputs"] == []  # installed nothing
    assert any('cached_runs.load("scoreboard")' in "".join(c["source"]) for c in cells if c["cell_type"] == "code")


# owner/name on GitHub, from pyproject.toml's [project.urls]: the badges and the first cells name it
REPOSITORY = re.search(r'^Repository = "https://github.com/([^"]+)"', (ROOT / "pyproject.toml").read_text(),
                       re.MULTILINE).group(1)


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_every_tutorial_opens_in_colab_and_installs_what_is_missing(path):
    notebook = json.loads(path.read_text())
    markdown, code = notebook["cells"][0], next(c for c in notebook["cells"] if c["cell_type"] == "code")
    badge = (f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/notebooks/{path.name}")
    assert markdown["cell_type"] == "markdown" and badge in "".join(markdown["source"])
    source = "".join(code["source"])
    assert f"git+https://github.com/{REPOSITORY}" in source and 'find_spec("minirlhf") is None' in source
    assert code["outputs"] == []  # inside a checkout it prints nothing


def test_binder_installs_the_cpu_build_of_torch_and_the_package():
    requirements = (ROOT / "binder" / "requirements.txt").read_text()
    assert "download.pytorch.org/whl/cpu" in requirements
    assert re.search(r"^\.\[classroom\]$", requirements, re.MULTILINE)
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch_range = re.search(r'"torch(>=[^"]+)"', pyproject).group(1)
    assert f"torch{torch_range}" in requirements
