"""Versions of hyptest and of the libraries that shape its numbers: one home for provenance's versions.

Used by the study's and the reanalysis' ``results.json`` provenance, by the
unit keys (the libraries whose versions can change collected numbers) and by
the Ray executor's check that every worker runs the driver's versions.
"""

from __future__ import annotations

from importlib import metadata

from . import __version__

__all__ = ["LIBRARIES", "library_versions", "package_version"]

#: Libraries listed in every run's provenance.
LIBRARIES: tuple[str, ...] = ("torch", "transformers", "numpy", "scipy", "pandas", "statsmodels", "pyarrow",
                              "pydantic")


def package_version(name: str) -> str:
    """The installed version of distribution ``name``, or ``"not installed"``.

    Examples
    --------
    >>> package_version("numpy") != "not installed"
    True
    >>> package_version("no-such-distribution-hyptest")
    'not installed'
    """
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Versions of hyptest (as imported) and of ``names``."""
    return {"hyptest": __version__, **{name: package_version(name) for name in names}}
