"""The versions of the stack a run used, recorded so a later session can tell what changed."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("tensorflow", "tf-agents", "gymnasium", "ale-py", "gin-config", "numpy")

# The packages whose objects a checkpoint pickles (the training envs, their RNGs): a pickle
# written under one version of these may unpickle under another into objects that break later.
PICKLED_ENV_PACKAGES = ("gymnasium", "ale-py", "numpy")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Python's version and each package's (None where it is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def changed(saved: dict[str, str | None], packages: tuple[str, ...]) -> list[str]:
    """`gymnasium 1.3.0 -> 1.4.0` for each of `packages` whose saved version differs from
    the one installed now; a package the record lacks counts as changed."""
    now = package_versions(packages)
    return [
        f"{package} {saved.get(package, 'unrecorded')} -> {now[package]}"
        for package in packages
        if saved.get(package, "unrecorded") != now[package]
    ]
