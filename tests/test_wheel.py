"""The wheel carries what a non-editable install needs: the YAML presets, the scripts, and no tests."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contents(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"  # a copy: setuptools writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, src / name)
    shutil.copytree(ROOT / "versatileffn", src / "versatileffn", ignore=shutil.ignore_patterns("__pycache__"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                          "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=120)
    if run.returncode != 0 and "No module named pip" in run.stderr:
        pytest.skip("pip is not installed in this environment")
    assert run.returncode == 0, run.stderr[-2000:]
    wheel, = (tmp_path / "dist").glob("versatileffn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    presets = {Path(n).stem for n in names if n.startswith("versatileffn/presets/") and n.endswith(".yaml")}
    assert {p.stem for p in (ROOT / "versatileffn" / "presets").glob("*.yaml")} == presets and "tiny-cpu" in presets
    assert "versatileffn/hf/modeling.py" in names and not any(n.startswith("tests/") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "versatileffn = versatileffn.cli:main" in entry_points
    assert "versatileffn-lm-eval = versatileffn.eval.harness:main" in entry_points
