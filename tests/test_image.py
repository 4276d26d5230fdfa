"""The image builds from the Dockerfile's steps, and has every plug-in and schema.

There is no Docker engine here, so the steps are replayed in a temporary folder: each stage is
a folder standing for its file system (``/app`` is ``<stage>/app``) and a virtualenv standing for
its Python; COPY copies from the build context less ``.dockerignore``, RUN runs the command in
that stage with absolute paths moved into its folder, ENV and WORKDIR apply. Then the wheels the
steps installed (notice-bus, and each local-system plug-in of consumers/*/, a distribution of
its own) must load every entry point of pyproject.toml and of the plug-ins' pyproject.toml files,
hold nothing but their own packages (no top-level ``consumers``), and find the schemas.

The packages pip would download while building the image are stood in for by the same versions
from this project's .venv, linked into each stage's virtualenv (pip then finds them installed),
and pip runs with no index: no network, except once to cache the pinned setuptools wheel (the
build backend), in ``~/.cache/notice-bus/wheels``. ``test_lock_pins_every_runtime_dependency``
ties those versions to ``requirements.lock``, which the image installs.

``python tests/test_image.py`` prints the lock for the current pyproject.toml and .venv.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
WHEEL_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "notice-bus" / "wheels"
)
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def plugin_pyprojects() -> list[dict[str, Any]]:
    """The pyproject.toml of each local-system plug-in, a distribution of its own."""
    return [tomllib.loads(p.read_text()) for p in sorted(ROOT.glob("consumers/*/pyproject.toml"))]


def declared_entry_points() -> dict[str, set[str]]:
    """The entry points notice-bus and the plug-ins declare: names by group."""
    declared: dict[str, set[str]] = {}
    for project in (pyproject(), *plugin_pyprojects()):
        for group, eps in project["project"].get("entry-points", {}).items():
            declared.setdefault(group, set()).update(eps)
    return declared


def runtime_closure() -> dict[str, str]:
    """Every distribution pyproject.toml's dependencies need, transitively, with its version
    in this interpreter's environment (the project's .venv), by canonical name."""
    found: dict[str, tuple[str, set[str]]] = {}
    todo = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        extras = set(req.extras) | found.get(name, ("", set()))[1]
        if name in found and extras == found[name][1]:
            continue
        dist = metadata.distribution(name)
        found[name] = (dist.version, extras)
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in (extras or {""})
            ):
                todo.append(sub)
    return {name: version for name, (version, _) in sorted(found.items())}


def lock_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"requirements.lock: not pinned with ==: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


@dataclass
class Instruction:
    keyword: str
    args: str


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    out: list[Instruction] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return out


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``relative`` (or a folder holding it) out of the context."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch(p, v) for p in prefixes for v in variants):
            verdict = not negate
    return verdict


def dockerignore() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@dataclass
class Stage:
    name: str
    root: Path  # the stage's file system
    venv: Path  # its Python
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)

    def path(self, image_path: str) -> Path:
        """Where an absolute or WORKDIR-relative path of the image lies here."""
        joined = image_path if image_path.startswith("/") else f"{self.workdir}/{image_path}"
        return self.root / joined.lstrip("/")

    def moved(self, text: str) -> str:
        """``text`` with its absolute image paths moved into the stage's folder."""
        return re.sub(r"(?<![\w./-])/(?=\w)", f"{self.root}/", text)

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env.update({k: self.moved(v) for k, v in self.env.items()})
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PIP_NO_INDEX"] = "1"  # what the image would download is linked in or cached
        env["PIP_FIND_LINKS"] = str(WHEEL_CACHE)
        return env


def link_installed(venv: Path, versions: dict[str, str]) -> None:
    """Make ``versions`` installed in ``venv``: link each distribution's top-level files from
    this environment (their versions must be these)."""
    site = next((venv / "lib").glob("python3*/site-packages"))
    for name, version in versions.items():
        dist = metadata.distribution(name)
        assert dist.version == version, f"{name}: .venv has {dist.version}, expected {version}"
        tops = {Path(f).parts[0] for f in dist.files or ()} - {"..", "__pycache__"}
        for top in tops:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)


def cache_build_backend(dockerfile: str) -> None:
    """The setuptools wheel the steps install or build with, downloaded once."""
    pinned = re.search(r"setuptools==([\w.]+)", dockerfile)
    spec = pinned.group(0) if pinned else pyproject()["build-system"]["requires"][0]
    wanted = f"setuptools-{pinned.group(1) if pinned else ''}*.whl"
    if not list(WHEEL_CACHE.glob(wanted)):
        WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(WHEEL_CACHE),
                spec,
            ],
            check=True,
            capture_output=True,
        )


def replay(tmp: Path) -> Stage:
    """Runs the Dockerfile's steps under ``tmp``; the last stage, as built."""
    cache_build_backend((ROOT / "Dockerfile").read_text())
    patterns = dockerignore()
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for step in instructions():
        if step.keyword == "FROM":
            words = step.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            venv = tmp / f"python-{name}"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            link_installed(venv, runtime_closure())
            stage = stages[name] = Stage(name, tmp / f"stage-{name}", venv)
            stage.root.mkdir()
            continue
        assert stage is not None, f"{step.keyword} before FROM"
        if step.keyword == "WORKDIR":
            stage.workdir = (
                step.args if step.args.startswith("/") else f"{stage.workdir}/{step.args}"
            )
            stage.path(".").mkdir(parents=True, exist_ok=True)
        elif step.keyword == "ENV":
            words = shlex.split(step.args)
            pairs = [w.split("=", 1) for w in words] if "=" in words[0] else [words[:2]]
            stage.env.update({k: v for k, v in pairs})
        elif step.keyword == "COPY":
            copy(step.args, stage, stages, patterns)
        elif step.keyword == "RUN":
            done = subprocess.run(
                ["bash", "-ec", stage.moved(step.args)],
                cwd=stage.path("."),
                env=stage.process_env(),
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, f"RUN {step.args}\n{done.stdout}\n{done.stderr}"
        elif step.keyword == "ENTRYPOINT":
            stage.entrypoint = json.loads(step.args)
    assert stage is not None, "no FROM in the Dockerfile"
    return stage


def copy(args: str, stage: Stage, stages: dict[str, Stage], patterns: list[str]) -> None:
    words = shlex.split(args)
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    *sources, dest = [w for w in words if not w.startswith("--")]
    source_stage = stages[flags["from"]] if "from" in flags else None
    target = stage.path(dest)
    for source in sources:
        if source_stage is not None:
            origin = source_stage.path(source)
        else:
            origin = ROOT / source
            assert not ignored(source, patterns), f"COPY {source}: left out by .dockerignore"
        assert origin.exists(), f"COPY {source}: not found"
        if origin.is_dir():
            for path in origin.rglob("*"):
                relative = path.relative_to(origin)
                inside = path.relative_to(ROOT).as_posix() if source_stage is None else ""
                if path.is_file() and not (inside and ignored(inside, patterns)):
                    (target / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / relative)
        else:
            into = target / origin.name if dest.endswith("/") or target.is_dir() else target
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, into)


CHECK = """
import json, sys
from importlib import metadata
out = {"loaded": {}, "failed": {}}
for group in sys.argv[1:]:
    for ep in metadata.entry_points(group=group):
        try:
            obj = ep.load()
            out["loaded"][f"{group}:{ep.name}"] = sys.modules[obj.__module__].__file__
        except Exception as exc:
            out["failed"][f"{group}:{ep.name}"] = f"{type(exc).__name__}: {exc}"
from notice_bus.wire.codec import load_schema, schema_dir
out["schema_dir"] = str(schema_dir())
out["schemas"] = sorted(p.stem for p in schema_dir().glob("*.avsc") if load_schema(p.stem))
print(json.dumps(out))
"""


def installed_files(stage: Stage, dist: str) -> list[str]:
    """The files of ``dist`` installed in ``stage``'s Python (its RECORD, by ``pip show -f``),
    relative to site-packages."""
    done = subprocess.run(
        [str(stage.venv / "bin" / "python"), "-m", "pip", "show", "-f", dist],
        env=stage.process_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    _, _, files = done.stdout.partition("\nFiles:\n")
    return [line.strip() for line in files.splitlines() if line.strip()]


def test_image_build_loads_every_plugin_and_schema(tmp_path: Path) -> None:
    image = replay(tmp_path)
    groups = declared_entry_points()
    result = subprocess.run(
        [str(image.venv / "bin" / "python"), "-I", "-c", CHECK, *groups],
        cwd=image.path("."),
        env=image.process_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["failed"] == {}
    expected = {f"{g}:{name}" for g, eps in groups.items() for name in eps}
    assert set(found["loaded"]) == expected
    assert "notice_bus.local_systems:legacy-postgres" in expected  # the plug-ins' are there too
    for name, module_file in found["loaded"].items():  # from the wheel, not this checkout
        assert Path(module_file).is_relative_to(image.venv), (name, module_file)
    assert Path(found["schema_dir"]).is_relative_to(image.root)  # the image's, not ours
    assert found["schemas"] == sorted(p.stem for p in (ROOT / "schemas").glob("*.avsc"))
    # The notice-bus wheel holds notice_bus only (no top-level consumers/), every module of
    # src/notice_bus (Alembic's revision folders too) and the migration template.
    files = installed_files(image, "notice-bus")
    tops = {Path(f).parts[0] for f in files if not f.startswith("../")}
    assert not any(Path(f).parts[0] == "consumers" for f in files), files
    assert {t for t in tops if not t.endswith(".dist-info")} == {"notice_bus"}, tops
    package = ROOT / "src" / "notice_bus"
    modules = {f"notice_bus/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")}
    assert modules <= set(files), sorted(modules - set(files))
    assert "notice_bus/runtime/migrations/script.py.mako" in files
    # Each plug-in's wheel holds its own package, with py.typed and its package data.
    for project in plugin_pyprojects():
        setuptools = project["tool"]["setuptools"]
        files = installed_files(image, project["project"]["name"])
        tops = {Path(f).parts[0] for f in files if not f.startswith("../")}
        tops = {t for t in tops if not t.endswith(".dist-info")}
        assert tops == set(setuptools["packages"]), (project["project"]["name"], tops)
        for package_name, data in setuptools["package-data"].items():
            for name in data:
                assert f"{package_name}/{name}" in files, (package_name, name)
    # The entry point runs.
    command = image.venv / "bin" / image.entrypoint[0]
    done = subprocess.run(
        [str(command), "--help"], env=image.process_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_lock_pins_every_runtime_dependency() -> None:
    assert lock_pins() == runtime_closure(), (
        "requirements.lock is out of date: python tests/test_image.py > requirements.lock"
    )


def test_base_images_are_pinned() -> None:
    stages: set[str] = set()
    for step in instructions():
        if step.keyword == "FROM":
            image, *rest = step.args.split()
            assert image in stages or PINNED_PYTHON.match(image), f"FROM {image}: not pinned"
            if len(rest) == 2:
                stages.add(rest[1])


def test_build_context_leaves_out_local_state() -> None:
    patterns = dockerignore()
    for path in (
        ".venv/bin/python",
        ".notice-bus/hq.db",
        "notice_bus.egg-info/PKG-INFO",
        "src/notice_bus.egg-info/PKG-INFO",
        "consumers/file_drop/notice_bus_file_drop.egg-info/PKG-INFO",
        "consumers/rest_api/build/lib/notice_bus_rest_api/__init__.py",
    ):
        assert ignored(path, patterns), path
    assert ignored("src/notice_bus/__pycache__/cli.cpython-311.pyc", patterns)
    for step in instructions():  # and keeps in what the image copies
        if step.keyword == "COPY" and "--from" not in step.args:
            for source in shlex.split(step.args)[:-1]:
                assert not ignored(source, patterns), source


LOCK_HEADER = """\
# The runtime dependencies of notice-bus, pinned: what the image installs (Dockerfile) and what
# `make` installs the tests with (pip -c). Every package [project] dependencies need,
# transitively; tests/test_image.py fails when it drifts. To move to newer versions:
#   .venv/bin/pip install -U -e . && .venv/bin/python tests/test_image.py > requirements.lock"""

if __name__ == "__main__":
    print(LOCK_HEADER)
    print("\n".join(f"{n}=={v}" for n, v in runtime_closure().items()))
