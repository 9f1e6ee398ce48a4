"""The provenance section and the run's data files."""

from __future__ import annotations

import pathlib
from typing import Any
from urllib.parse import quote, urlsplit

from hyptest.contract import Provenance

from .format import _scalar, _seconds

#: Known files of a run directory -> what they hold (shown beside the links).
DATA_FILE_DESCRIPTIONS: dict[str, str] = {
    "per_query.parquet": "order sensitivity per (demo set, query) unit and method",
    "per_order.parquet": "P(gold) per (unit, query): every demo set, order, method",
    "results.json": "every number in this report (comparisons, summaries, provenance)",
    "manifest.json": "study, planned units and their keys, model identities",
    "units/": "raw records, one Parquet file per collected unit",
}

#: Stages of ``provenance["wall_time_s"]`` in display order, with descriptions.
_STAGES: dict[str, str] = {
    "load_models": "load model weights",
    "collect": "run ICL and fine-tuning on every unit",
    "analyse": "metrics, statistics, report",
    "total": "whole run",
}


def _run_link(name: Any, run_dir: pathlib.Path | None) -> dict[str, Any] | None:
    """A file of the run directory as a relative link (or plain text when unsafe or missing)."""
    if name is None or not str(name).strip():
        return None
    s = str(name)
    ok = _is_relative_path(s)
    missing = bool(ok and run_dir is not None and not (run_dir / s).exists())
    return {"name": s, "href": quote(s, safe="/") if ok and not missing else None, "missing": missing}


_PROV_ORDER = (
    "hyptest_version",
    "python",
    "platform",
    "machine",
    "cpu_count",
    "device",
    "torch_threads",
    "seeds",
    "started",
    "finished",
    "n_units",
    "n_units_reused",
    "tasks",
    "run_dir",
)
_PROV_LABELS = {
    "hyptest_version": "hyptest",
    "cpu_count": "CPU cores",
    "torch_threads": "torch threads",
    "n_units": "units",
    "n_units_reused": "units reused",
    "run_dir": "run directory",
    "tasks": "task data (hash)",
}
_PROV_SPECIAL = {"libraries", "models", "wall_time_s", "warnings"}


def _model_view(m: dict[str, Any]) -> dict[str, Any]:
    """A model's name, source, file hashes and any further fields."""
    sha = m.get("sha256")
    hashes: list[tuple[str, str]] = []
    if isinstance(sha, dict):  # one hash per file
        hashes = [(str(k), _scalar(v)) for k, v in sha.items()]
    elif sha is not None:
        hashes = [(_scalar(m.get("file")) if m.get("file") is not None else "", _scalar(sha))]
    skip = {"name", "source", "sha256"} | ({"file"} if not isinstance(sha, dict) and sha is not None else set())
    extra = {k: v for k, v in m.items() if k not in skip}
    return {
        "name": _scalar(m.get("name")),
        "source": _scalar(m.get("source")),
        "hashes": hashes,
        "extra": _scalar(extra) if extra else "",
    }


def provenance_view(prov: Provenance) -> dict[str, Any]:
    """Versions, machine, seeds and the run's other fields; libraries, models, wall time per stage, warnings."""
    fields = [(_PROV_LABELS.get(k, k), _scalar(prov.get(k))) for k in _PROV_ORDER if k in prov]
    fields += [(str(k), _scalar(v)) for k, v in (prov.model_extra or {}).items()
               if k not in _PROV_ORDER and k not in _PROV_SPECIAL]
    models = [_model_view(m) for m in prov.models]
    wt = prov.wall_time_s
    names = [k for k in _STAGES if k in wt] + [str(k) for k in wt if k not in _STAGES]
    return {
        "fields": fields,
        "libraries": [(str(k), _scalar(v)) for k, v in sorted(prov.libraries.items(), key=lambda kv: str(kv[0]).lower())],
        "models": models,
        "models_extra": any(m["extra"] for m in models),
        "wall": [{"stage": k, "time": _seconds(wt[k]), "what": _STAGES.get(k, ""), "total": k == "total"}
                 for k in names],
        "warnings": list(prov.warnings),
    }


def _is_relative_path(p: str) -> bool:
    """True for a relative path without a URL scheme, host or parent escape."""
    if not p or p.startswith(("/", "\\")) or "\\" in p:
        return False
    parts = urlsplit(p)
    if parts.scheme or parts.netloc:
        return False
    return ".." not in pathlib.PurePosixPath(p).parts


def data_files_view(files: list[str], run_dir: pathlib.Path | None = None) -> list[dict[str, Any]]:
    """The run's files as relative links (plain text when unsafe), with what each holds and whether it is missing."""
    out = []
    for s in files:
        ok = _is_relative_path(s)
        missing = bool(ok and run_dir is not None and not (run_dir / s).exists())
        out.append(
            {
                "name": s,
                "href": quote(s, safe="/") if ok else None,
                "what": DATA_FILE_DESCRIPTIONS.get(s, DATA_FILE_DESCRIPTIONS.get(s.rstrip("/") + "/", "")),
                "missing": missing,
            }
        )
    return out
