"""What every benchmark's JSON carries: the machine (with its load average), package versions, resource use;
and writing the report. Imported by the ``benchmarks/bench_*.py`` scripts (run as scripts, so this folder is
on ``sys.path``); not part of the package.
"""
from __future__ import annotations

import json
import os
import platform
import resource
from importlib import metadata
from pathlib import Path


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(*dists: str) -> dict[str, str]:
    return {d: version(d) for d in dists}


def machine() -> dict:
    """The machine, with its 1-minute load average now: these machines are shared, so compare runs made at
    similar load (or both sides of a comparison in the same run)."""
    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0], "processor": platform.processor() or platform.machine(),
    }


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mib() -> float:
    """Resident memory of this process now, MiB (:func:`kgrec.buildcost.rss_mib`, rounded)."""
    from kgrec.buildcost import rss_mib as now

    return round(now(), 1)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_report(report: dict, out: Path | None) -> None:
    """Write ``report`` as indented JSON to ``out`` (creating its folder), or print it when ``out`` is None."""
    text = json.dumps(report, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print("wrote", out)
    else:
        print(text)
