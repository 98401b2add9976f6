"""The conda environment and pyproject.toml name the same dependencies."""

import re
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r for r in project["dependencies"]}
    for extra in ("dev", "docs"):
        wanted.update({_name(r): r for r in project["optional-dependencies"][extra]})
    text = (ROOT / "environment.yml").read_text()
    pip_section = text.split("- pip:", 1)[1].splitlines()
    pip_lines = [line.strip()[2:].strip() for line in pip_section if line.strip().startswith("- ")]
    listed = {_name(r): r for r in pip_lines if not r.startswith("-e")}
    assert set(listed) == set(wanted), (
        f"only in environment.yml: {set(listed) - set(wanted)}; "
        f"only in pyproject.toml: {set(wanted) - set(listed)}")
    for name, requirement in wanted.items():
        assert listed[name].replace(" ", "") == requirement.replace(" ", ""), (
            f"{name}: pyproject says {requirement!r}, environment.yml says {listed[name]!r}")


def test_torch_range_admits_the_cpu_build_used_in_ci():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(r for r in project["dependencies"] if _name(r) == "torch")
    assert SpecifierSet(torch_req[len("torch"):]).contains("2.13.0")
