"""Shared helpers for the benchmarks: run a variant in its own process, sample its memory,
write the results as JSON and print them as a rich table.

Memory is measured from outside: the parent samples, every `interval` seconds, the set of
processes a variant consists of (the child, all its descendants and, for Ray, every process
whose command line names the cluster's temp dir) and sums their PSS, RSS and USS read from
/proc/<pid>/smaps_rollup (psutil.memory_full_info). PSS (proportional set size) is the
headline: it counts each physical page once, split among the processes that map it, so the
sum over a set of processes is the memory that set occupies. A sum of RSS counts shared pages
(libraries, Ray's object store in /dev/shm, mapped by the raylet and every worker that reads
an object) once per process; a sum of USS drops shared pages altogether, the object store
included.

The child reports its phases on stdout, one line each (`@@phase NAME`), and its result as one
`@@result {json}` line; the parent timestamps the phase lines when they arrive, so that the
peak can be taken over the timed windows only (warm-ups and data loading outside them).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

PHASE = "@@phase "
RESULT = "@@result "
MB = 1024 * 1024


# --- child side -------------------------------------------------------------------------


def emit_phase(name: str) -> None:
    print(PHASE + name, flush=True)


def emit_result(result: dict[str, Any]) -> None:
    print(RESULT + json.dumps(result, default=str), flush=True)


# --- machine ----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    info: dict[str, Any] = {
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_mb": round(vm.total / MB),
        "memory_available_mb_at_start": round(vm.available / MB),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# --- memory sampling --------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    pss: int
    rss: int
    uss: int
    procs: int


class ProcessSetSampler(threading.Thread):
    """Samples the memory of `root` + descendants (+ processes whose cmdline has `marker`)."""

    def __init__(self, root_pid: int, marker: str | None = None, interval: float = 0.05):
        super().__init__(name="mem-sampler", daemon=True)
        self.root_pid = root_pid
        self.marker = marker
        self.interval = interval
        self.samples: list[Sample] = []
        self.cpu_s = 0.0
        self.max_procs = 0
        self._stop_event = threading.Event()
        self._cache: dict[int, psutil.Process] = {}

    def stop(self) -> None:
        self._stop_event.set()

    def _proc(self, pid: int) -> psutil.Process | None:
        proc = self._cache.get(pid)
        if proc is None:
            try:
                proc = self._cache[pid] = psutil.Process(pid)
            except psutil.Error:
                return None
        return proc

    def members(self) -> dict[int, psutil.Process]:
        found: dict[int, psutil.Process] = {}
        root = self._proc(self.root_pid)
        if root is None:
            return found
        roots = [root]
        if self.marker:
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = proc.info.get("cmdline") or []
                if any(self.marker in part for part in cmdline):
                    roots.append(proc)
        for proc in roots:
            found[proc.pid] = proc
            try:
                for child in proc.children(recursive=True):
                    found[child.pid] = child
            except psutil.Error:
                pass
        return found

    def sample(self) -> Sample:
        pss = rss = uss = 0
        members = self.members()
        for proc in members.values():
            try:
                mem = proc.memory_full_info()
            except psutil.Error:
                continue
            pss += getattr(mem, "pss", mem.rss)
            rss += mem.rss
            uss += mem.uss
        self.max_procs = max(self.max_procs, len(members))
        return Sample(time.monotonic(), pss, rss, uss, len(members))

    def run(self) -> None:
        start_cpu = time.thread_time()
        while not self._stop_event.is_set():
            began = time.monotonic()
            try:
                self.samples.append(self.sample())
            except psutil.Error:
                pass
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - began)))
        self.cpu_s = time.thread_time() - start_cpu


@dataclass
class Measured:
    returncode: int
    result: dict[str, Any] | None
    phases: list[tuple[str, float]]
    samples: list[Sample]
    sampler_cpu_s: float
    sampler_max_procs: int
    kernel_maxrss_mb: float | None
    wall_s: float
    log_path: Path
    stdout_other: list[str] = field(default_factory=list)

    def windows(self, start: str, end: str) -> list[tuple[float, float]]:
        """Time windows between each `start` phase and the next `end` phase."""
        out: list[tuple[float, float]] = []
        opened: float | None = None
        for name, t in self.phases:
            if name == start:
                opened = t
            elif name == end and opened is not None:
                out.append((opened, t))
                opened = None
        return out

    def peak(self, windows: Sequence[tuple[float, float]] | None = None) -> dict[str, float | int]:
        """Peak PSS / RSS / USS sums (MB) over the samples inside `windows` (all if None)."""
        chosen = [s for s in self.samples
                  if windows is None or any(a <= s.t <= b for a, b in windows)]
        if not chosen:
            return {}
        return {
            "pss_mb": round(max(s.pss for s in chosen) / MB, 1),
            "rss_mb": round(max(s.rss for s in chosen) / MB, 1),
            "uss_mb": round(max(s.uss for s in chosen) / MB, 1),
            "max_processes": max(s.procs for s in chosen),
            "samples": len(chosen),
        }


def run_measured(cmd: Sequence[str], *, env: dict[str, str] | None = None, marker: str | None = None,
                 interval: float = 0.05, log_path: Path, echo: bool = False) -> Measured:
    """Run `cmd`, sample its memory until it exits, collect its phases and its result."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                bufsize=1)
        sampler = ProcessSetSampler(proc.pid, marker, interval)
        sampler.start()
        phases: list[tuple[str, float]] = []
        result: dict[str, Any] | None = None
        other: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic()
            line = line.rstrip("\n")
            if line.startswith(PHASE):
                phases.append((line[len(PHASE):].strip(), now))
                if echo:
                    print(f"    [{now - started:7.1f}s] {line[len(PHASE):].strip()}", flush=True)
            elif line.startswith(RESULT):
                result = json.loads(line[len(RESULT):])
            else:
                other.append(line)
                log.write(line + "\n")
        # wait4 rather than wait(): it returns the child's own resource usage (peak RSS).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
        sampler.join()
    return Measured(
        returncode=proc.returncode,
        result=result,
        phases=phases,
        samples=sampler.samples,
        sampler_cpu_s=round(sampler.cpu_s, 2),
        sampler_max_procs=sampler.max_procs,
        kernel_maxrss_mb=round(usage.ru_maxrss / 1024, 1) if sys.platform == "linux" else None,
        wall_s=round(time.monotonic() - started, 2),
        log_path=log_path,
        stdout_other=other[-50:],
    )


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- output -----------------------------------------------------------------------------


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **payload}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


def print_table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]],
                caption: str | None = None) -> None:
    """columns: (header, justify) pairs."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption, caption_justify="left", show_lines=False)
    for header, justify in columns:
        table.add_column(header, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def fmt_int(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_float(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
