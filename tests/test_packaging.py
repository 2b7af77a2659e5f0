"""Installing the project must not put our top-level folders (notably ``datasets``, the name of the
Hugging Face library) into site-packages: the checkout is used in place."""
from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
OUR_TOP_LEVEL = ("bench", "methods", "datasets", "reports", "tests")


def test_pyproject_declares_no_packages() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["packages"] == []
    deps = " ".join(pyproject["project"]["dependencies"])
    for name in ("torch", "torchvision", "timm", "pandas", "scipy", "matplotlib", "seaborn"):
        assert name in deps


def test_installed_distribution_ships_no_top_level_package() -> None:
    """Read the RECORD of the installed wheel in site-packages (not the egg-info a build leaves in the
    checkout, which importlib.metadata would find first when run from the repository root)."""
    records = list(Path(sysconfig.get_paths()["purelib"]).glob("shortcut_bench-*.dist-info/RECORD"))
    if not records:
        pytest.skip("shortcut-bench is not installed in this environment (run in place)")
    shipped = {line.split(",")[0].split("/")[0] for line in records[0].read_text().splitlines() if line}
    assert not shipped & set(OUR_TOP_LEVEL), shipped
    assert all(name.startswith("shortcut_bench-") for name in shipped), shipped


def test_imports_resolve_to_the_checkout() -> None:
    import bench
    import datasets

    assert Path(bench.__file__).resolve().parent == ROOT / "bench"
    assert Path(datasets.__file__).resolve().parent == ROOT / "datasets"
