"""The wheels that carry the project's dependencies to the GPU machine (scripts/gpu_check.sh).

    python scripts/gpu_wheels.py fetch [--dest .whl]   # here: download the list's wheels
    python scripts/gpu_wheels.py check                 # the list against what the project needs
    python scripts/gpu_wheels.py present [--dest .whl] # there: a wheel for every line?
    python scripts/gpu_wheels.py missing               # there, after the install: none missing?

The machine runs CPython 3.12 on x86_64 Linux with its own torch and reaches no package
registry (the device tool's README and KINDS.md). What it lacks travels as wheels:
scripts/gpu_wheels.txt pins one version of each, scripts/gpu_machine.txt names what its image
holds. `check` walks the requirements of pyproject.toml (its dependencies and the `test`
extra) through the packages installed here, stopping at the machine's packages, and says
whether the list is exactly what is left, each pin allowed by every requirement on it.
`missing` walks the same requirements through what is installed there. Each failure is one
line starting `gpu_check:` and exit status 1.

Sizes: every file of the call's working tree travels, wheels included, within 64 MiB; the
wheels may take WHEELS_MIB of it. bitsandbytes' manylinux wheel holds its kernels for every
CUDA and ROCm release (43 MB); only those of the machine's CUDA 13 (and the CPU's) are kept.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
WHEELS_MIB = 48
PYTHON = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name":
          "cpython", "platform_system": "Linux", "sys_platform": "linux",
          "platform_machine": "x86_64"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
# Files of a wheel to drop (name -> pattern of paths inside it): bitsandbytes' kernels for
# CUDA releases other than the machine's 13.x, and its ROCm and XPU builds.
SLIM = {"bitsandbytes": re.compile(r"libbitsandbytes_(cuda1[0-2]\d|rocm\d+|xpu\d+)\.so$")}


def norm(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def fail(message: str) -> None:
    print(f"gpu_check: {message}", flush=True)
    sys.exit(1)


def pins() -> dict[str, str]:
    """scripts/gpu_wheels.txt: name -> the one pinned version."""
    found: dict[str, str] = {}
    for number, line in enumerate((SCRIPTS / "gpu_wheels.txt").read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version or norm(name) in found:
            fail(f"scripts/gpu_wheels.txt line {number}: {line!r} (allowed: one NAME==VERSION "
                 "per package)")
        found[norm(name)] = version.strip()
    return found


def machine() -> set[str]:
    text = (SCRIPTS / "gpu_machine.txt").read_text()
    return {norm(word) for line in text.splitlines() for word in line.split("#")[0].split()}


def project_requirements() -> list[Requirement]:
    """pyproject.toml's dependencies and its `test` extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in
            project["dependencies"] + project["optional-dependencies"]["test"]]


def walk(roots: list[Requirement], environment: dict) -> tuple[dict, dict, list]:
    """The requirements reachable from `roots` through the installed distributions, not
    descending into the machine's packages. Returns (needed: name -> its requirers,
    installed: name -> version, edges: (requirer, Requirement) on packages that travel)."""
    on_machine, carried = machine(), pins()
    needed: dict[str, list[str]] = {}
    installed: dict[str, str] = {}
    edges: list[tuple[str, Requirement]] = []
    todo = [("ablate", r) for r in roots]
    while todo:
        requirer, req = todo.pop()
        if req.marker and not req.marker.evaluate({**environment, "extra": ""}):
            continue
        name = norm(req.name)
        if name in carried:
            edges.append((requirer, req))
        first = name not in needed
        needed.setdefault(name, []).append(requirer)
        if not first:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        installed[name] = dist.version
        if name not in on_machine:
            todo += [(name, Requirement(r)) for r in dist.requires or []]
    return needed, installed, edges


def check() -> None:
    """The list is exactly the packages the project needs beyond the machine's, each pin
    allowed by every requirement on it (walked through what is installed here)."""
    carried, on_machine = pins(), machine()
    needed, installed, edges = walk(project_requirements(), PYTHON)
    absent = sorted(set(needed) - set(installed))
    if absent:
        fail(f"not installed here, so their requirements cannot be walked: {', '.join(absent)}")
    travel = {name for name in needed if name not in on_machine}
    if travel - set(carried):
        fail("scripts/gpu_wheels.txt lacks " + ", ".join(
            f"{n}=={installed[n]} (needed by {', '.join(sorted(set(needed[n])))})"
            for n in sorted(travel - set(carried))))
    if set(carried) - travel:
        fail("scripts/gpu_wheels.txt lists what nothing needs: "
             + ", ".join(sorted(set(carried) - travel)))
    for requirer, req in edges:
        if not req.specifier.contains(Version(carried[norm(req.name)]), prereleases=True):
            fail(f"scripts/gpu_wheels.txt pins {req.name}=={carried[norm(req.name)]}, but "
                 f"{requirer} requires {req}")
    direct = {norm(r.name) for r in project_requirements()}
    print(f"wheel list: {len(carried)} wheels (scripts/gpu_wheels.txt) = the "
          f"{len(needed)} packages pyproject.toml needs (dependencies and test extra: "
          f"{len(direct)} direct) less {len(needed) - len(travel)} on the machine "
          "(scripts/gpu_machine.txt); every pin allowed by its requirers")


def wheels_in(dest: Path) -> dict[tuple[str, Version], Path]:
    """The wheels in `dest` by (normalized name, version)."""
    return {(norm(p.name.split("-")[0]), Version(p.name.split("-")[1])): p
            for p in dest.glob("*.whl")}


def present(dest: Path) -> None:
    have = wheels_in(dest)
    lacking = [f"{n}=={v}" for n, v in pins().items() if (n, Version(v)) not in have]
    if lacking:
        fail(f"no wheel in {dest}/ for {', '.join(lacking)} (scripts/gpu_wheels.txt; fetch "
             "them here with: python scripts/gpu_wheels.py fetch)")
    print(f"wheels: all {len(pins())} of scripts/gpu_wheels.txt in {dest}/")


def missing() -> None:
    """After the install: every package the installed project needs is there (torch and the
    rest of the machine's image included); version differences are printed, not fatal."""
    roots = [Requirement(r) for r in metadata.requires("ablate") or []]
    roots = [r for r in roots if not r.marker or r.marker.evaluate({"extra": "test"})]
    for r in roots:
        r.marker = None  # the test extra's marker: wanted
    needed, installed, _ = walk(roots, {})
    absent = sorted(set(needed) - set(installed))
    if absent:
        fail("missing " + "; ".join(f"{n} (needed by {', '.join(sorted(set(needed[n])))})"
                                    for n in absent))
    for name, version in sorted(installed.items()):
        for req in roots:
            if norm(req.name) == name and not req.specifier.contains(version, prereleases=True):
                print(f"note: {name} {version} here, pyproject.toml asks {req.specifier}")
    print(f"installed: all {len(needed)} packages the project needs")


def slim(path: Path, drop: re.Pattern) -> None:
    """Rewrite a wheel without the files `drop` matches (and their RECORD lines)."""
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            for item in src.infolist():
                if drop.search(item.filename):
                    continue
                data = src.read(item)
                if item.filename.endswith(".dist-info/RECORD"):
                    data = "".join(line for line in data.decode().splitlines(True)
                                   if not drop.search(line.split(",")[0])).encode()
                out.writestr(item, data)
    Path(tmp.name).replace(path)


def fetch(dest: Path) -> None:
    """Each pinned wheel for CPython 3.12 on manylinux x86_64; a package that has only a
    source release is built here into a wheel, which must then be pure Python."""
    dest.mkdir(exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for name, version in pins().items():
        if (name, Version(version)) in wheels_in(dest):
            continue
        spec = f"{name}=={version}"
        got = subprocess.run(pip + ["download", "-q", "--no-deps", "--only-binary=:all:",
                                    "--python-version", "3.12", "--implementation", "cp",
                                    *platforms, "-d", str(dest), spec])
        if got.returncode:
            print(f"{spec}: no wheel for 3.12 x86_64, building one from its source release")
            before = set(dest.glob("*.whl"))
            subprocess.run(pip + ["wheel", "-q", "--no-deps", "-w", str(dest), spec], check=True)
            built = set(dest.glob("*.whl")) - before
            if not all(p.name.endswith("-py3-none-any.whl") for p in built):
                fail(f"{spec}: its source release builds no pure-Python wheel")
        if name in SLIM:
            slim(wheels_in(dest)[name, Version(version)], SLIM[name])
    sizes = {p.name: p.stat().st_size for p in dest.glob("*.whl")}
    for file, size in sorted(sizes.items(), key=lambda item: -item[1]):
        print(f"{size / 2**20:7.2f} MiB  {file}")
    total = sum(sizes.values()) / 2**20
    print(f"{total:7.2f} MiB  in {len(sizes)} wheels (at most {WHEELS_MIB} MiB)")
    if total > WHEELS_MIB:
        fail(f"the wheels take {total:.1f} MiB, more than {WHEELS_MIB} MiB of the call's 64")
    present(dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("fetch", "check", "present", "missing"))
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl")
    args = parser.parse_args()
    if args.command in ("fetch", "present"):
        {"fetch": fetch, "present": present}[args.command](args.dest)
    else:
        {"check": check, "missing": missing}[args.command]()


if __name__ == "__main__":
    main()
