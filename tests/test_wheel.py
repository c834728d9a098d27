"""A non-editable install holds the whole package (issue 12 item 1): the wheel built from a
clean copy of the tree contains every module of engine/ and kernels/, the extension, the
bundled assets and the `nl3dmm` command. (An editable install finds modules in the tree and
hid a missing subpackage; .ci/run also installs this wheel in a fresh venv and runs it.)"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Source folder -> its name in the installed package (setup.py's package_dir).
PACKAGE_DIRS = {"engine": "nl3dmm", "kernels": "nl3dmm/kernels"}


def _clean_copy(target: Path) -> Path:
    """The files git would check out (tracked plus new, not ignored), so build outputs lying in
    this tree (the editable build's nl3dmm/_C*.so) cannot stand in for missing ones."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.slow  # compiles the extension: ~1 min on 2 cores
@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_wheel_holds_every_module_the_extension_and_the_command(tmp_path):
    source = _clean_copy(tmp_path / "src")
    env = {**os.environ, "NL3DMM_CUDA": "0"}  # the package list does not depend on CUDA
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "-w", str(tmp_path / "dist"), str(source)], env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list((tmp_path / "dist").glob("nl3dmm-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())

    expected = {f"{installed}/{path.relative_to(REPO / folder).as_posix()}"
                for folder, installed in PACKAGE_DIRS.items() for path in (REPO / folder).rglob("*.py")
                if "__pycache__" not in path.parts}
    packages = {name for name in expected if name.endswith("/__init__.py")}
    assert len(packages) >= 9, f"found only {sorted(packages)}: is the layout what this test expects?"
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {missing}"
    assert any(n.startswith("nl3dmm/_C.") and n.endswith(".so") for n in names), "no compiled extension"
    assets = {f"nl3dmm/{p.relative_to(REPO / 'engine').as_posix()}" for p in (REPO / "engine" / "assets").rglob("*")
              if p.is_file()}
    assert not sorted(assets - names), f"the wheel lacks assets {sorted(assets - names)}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "nl3dmm = nl3dmm.cli:main" in zipfile.ZipFile(wheels[0]).read(entry_points).decode()
