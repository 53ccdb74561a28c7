"""The installed dependencies are inside pyproject.toml's ranges: the caps name versions the tests ran on."""

from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

REQUIREMENTS = [Requirement(line) for line in
                tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]]


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=lambda r: r.name)
def test_installed_version_is_in_the_declared_range(requirement):
    installed = version(requirement.name)
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{requirement.name} {installed} is outside {requirement}; test it, then move the range in pyproject.toml")


def test_transformers_is_capped_because_incremental_lm_reads_cache_internals():
    (transformers,) = [r for r in REQUIREMENTS if r.name == "transformers"]
    assert any(spec.operator == "<" for spec in transformers.specifier), transformers
