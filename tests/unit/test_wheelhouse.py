"""The offline wheelhouse check (scripts/gpu/wheelhouse.py): it fails, naming the package, when a needed wheel is
missing, and the real wheels/ (built by scripts/gpu_wheels.sh, which downloads: not run here) passes it."""

from __future__ import annotations

import importlib.util
import zipfile

import pytest
from packaging.requirements import Requirement

from tests.support import ROOT

spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "scripts" / "gpu" / "wheelhouse.py")
wheelhouse = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheelhouse)


def fake_wheel(directory, name, version, requires=(), tag="py3-none-any"):
    path = directory / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        lines = [
            "Metadata-Version: 2.1",
            f"Name: {name}",
            f"Version: {version}",
            *(f"Requires-Dist: {r}" for r in requires),
        ]
        archive.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(lines) + "\n")
    return path


@pytest.fixture
def world(tmp_path):
    """distgem needs `alpha` (carried) and `numpy` (the image's); alpha needs `beta` (carried) and numpy<3;
    beta's solver extra and a Windows-only requirement do not count on the device."""
    (tmp_path / "wheels").mkdir()
    fake_wheel(tmp_path / "wheels", "alpha", "1.0", ["beta>=2", "numpy<3"])
    fake_wheel(
        tmp_path / "wheels",
        "beta",
        "2.1",
        ['gamma; extra == "solvers"', 'delta; sys_platform == "win32"'],
        tag="cp312-cp312-manylinux_2_17_x86_64",
    )
    return {
        "wheels": tmp_path / "wheels",
        "wanted": {"alpha": "1.0", "beta": "2.1"},
        "image": {"numpy": "2.5.2", "torch": "2.11.0"},
        "needs": [Requirement("alpha>=1"), Requirement("numpy")],
    }


def check(world, capsys) -> tuple[int, str]:
    code = wheelhouse.check(world["wheels"], world["wanted"], world["image"], world["needs"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_complete_wheelhouse_passes(world, capsys):
    code, output = check(world, capsys)
    assert code == 0, output
    assert "2 wheels" in output and "0 problem(s)" in output


def test_a_missing_wheel_is_named(world, capsys):
    (world["wheels"] / "beta-2.1-cp312-cp312-manylinux_2_17_x86_64.whl").unlink()
    code, output = check(world, capsys)
    assert code == 1
    assert "wheels/ lacks beta==2.1" in output


def test_a_requirement_neither_carried_nor_in_the_image_is_named(world, capsys):
    fake_wheel(world["wheels"], "alpha", "1.0", ["beta>=2", "hjson"])
    code, output = check(world, capsys)
    assert code == 1 and "wheels/ lacks hjson, which alpha needs" in output


@pytest.mark.parametrize(
    "name, version, tag, why",
    [
        ("torch", "2.11.0", "cp312-cp312-manylinux_2_28_x86_64", "the image has torch already"),
        ("stray", "0.1", "py3-none-any", "not listed in scripts/gpu/wheels.txt"),
    ],
)
def test_a_wheel_that_must_not_travel_is_refused(world, capsys, name, version, tag, why):
    fake_wheel(world["wheels"], name, version, tag=tag)
    code, output = check(world, capsys)
    assert code == 1 and why in output


def test_a_wheel_for_another_python_or_platform_is_refused(world, capsys):
    (world["wheels"] / "beta-2.1-cp312-cp312-manylinux_2_17_x86_64.whl").unlink()
    fake_wheel(world["wheels"], "beta", "2.1", tag="cp311-cp311-macosx_11_0_arm64")
    code, output = check(world, capsys)
    assert code == 1 and "does not install on CPython 3.12, manylinux x86_64" in output


def test_a_version_bound_the_image_breaks_is_named(world, capsys):
    fake_wheel(world["wheels"], "alpha", "1.0", ["beta>=2", "numpy<2"])
    code, output = check(world, capsys)
    assert code == 1 and "alpha needs numpy<2, the image has numpy 2.5.2" in output


def test_the_lists_are_consistent():
    """Nothing carried is in the image, every carried package is pinned, and the image's torch is 2.11."""
    wanted, image = (wheelhouse.read_list(ROOT / "scripts" / "gpu" / name) for name in ("wheels.txt", "image.txt"))
    assert not set(wanted) & set(image)
    assert all(wanted.values())
    assert image["torch"] == "2.11.0" and "deepspeed" in wanted and "qpth" in wanted


def test_the_built_wheelhouse_is_complete(capsys):
    wheels = ROOT / "wheels"
    if not any(wheels.glob("*.whl")):
        pytest.skip("no wheels/ here (bash scripts/gpu_wheels.sh builds it; it downloads)")
    code = wheelhouse.check(wheels)
    output = capsys.readouterr()
    assert code == 0, output.out + output.err
