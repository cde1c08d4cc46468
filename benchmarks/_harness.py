"""Shared helpers for the benchmarks: run a variant in its own process, sample its memory,
write the results as JSON and print them as a rich table.

Memory is measured from outside: the parent samples, every `interval` seconds, the set of
processes a variant consists of (the child, all its descendants and, for Ray, every process
whose command line names the cluster's temp dir, with their descendants). The headline is
the private anonymous memory of the set (sum over processes of RssAnon = resident - shared
pages in /proc/PID/statm: heaps, Arrow and numpy buffers) plus the shared-memory files the
set holds open in /dev/shm (Ray's object store), counted once each by their allocated blocks.
That counts every page the variant dirtied exactly once; shared libraries and the page cache
(file-backed, reclaimable) are left out. The sum of RSS, which counts a shared page once per
process that maps it, is reported beside it. PSS / USS (smaps_rollup) would be the textbook
choice, but reading them costs 2-15 ms per process, and sampling twenty Ray processes every
50 ms that way took most of a core on a 2-core machine (it slowed what it measured).

The child reports its phases on stdout, one line each (`@@phase NAME`), and its result as one
`@@result {json}` line; the parent timestamps the phase lines when they arrive, so that the
peak can be taken over the timed windows only (warm-ups and data loading outside them).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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


def run_worker(worker: Callable[[], dict[str, Any]]) -> int:
    """The child's main: run one variant, report its result (or why it failed) on stdout."""
    emit_phase("started")
    try:
        result = worker()
    except Exception as exc:
        import traceback

        traceback.print_exc()
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:2000]}
    emit_result(result)
    return 0


def stray_processes(marker: str) -> list[psutil.Process]:
    """Processes of a run still alive: those whose command line names `marker` (e.g. its
    Ray temp dir), and their children."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in proc.info.get("cmdline") or []):
            found[proc.pid] = proc
            try:
                found.update((c.pid, c) for c in proc.children(recursive=True))
            except psutil.Error:
                pass
    return list(found.values())


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

PAGE = os.sysconf("SC_PAGE_SIZE")
HZ = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    t: float
    mem: int  # private anonymous memory of the set + shared-memory files held by it, counted once
    anon: int
    shm: int
    rss: int  # sum of VmRSS: counts shared pages once per process that maps them
    procs: int


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class ProcessSetSampler(threading.Thread):
    """Samples the memory of `root` + its descendants (+ processes whose cmdline has `marker`).

    Cheap on purpose, so that it does not slow what it measures: psutil's memory_full_info
    (smaps_rollup: PSS / USS) walks page tables and costs 2-15 ms per Python process; with
    twenty Ray processes every 50 ms that is most of a core. Per sample this reads
    /proc/PID/statm of each member (resident - shared = private anonymous pages) and stats
    the /dev/shm files the members hold open (Ray's plasma store: allocated blocks, once per
    file, however many workers map it). The member set is rescanned every `rescan` seconds.
    """

    def __init__(self, root_pid: int, marker: str | Sequence[str] | None = None, interval: float = 0.05,
                 rescan: float = 0.25):
        super().__init__(name="mem-sampler", daemon=True)
        self.root_pid = root_pid
        marks = [marker] if isinstance(marker, str) else list(marker or [])
        self.markers = [m.encode() for m in marks if m]
        self.interval = interval
        self.rescan = rescan
        self.samples: list[Sample] = []
        self.cpu_s = 0.0
        self.members: set[int] = {root_pid}
        self.shm_fds: list[str] = []
        self._marked: dict[int, bool] = {}
        self._ticks: dict[int, int] | None = None
        self._cpu = [0.0, 0.0]
        # (time, cumulative CPU seconds of the set, of every other process but this one)
        self.cpu_marks: list[tuple[float, float, float]] = []
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def scan(self) -> None:
        children: dict[int, list[int]] = {}
        roots = [self.root_pid]
        alive = set()
        ticks: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            stat = _read(f"/proc/{pid}/stat")
            if not stat:
                continue
            alive.add(pid)
            fields = stat[stat.rindex(b")") + 2:].split(b" ", 14)
            ppid = int(fields[1])
            ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
            children.setdefault(ppid, []).append(pid)
            if self.markers:
                if pid not in self._marked:
                    cmdline = _read(f"/proc/{pid}/cmdline") or b""
                    self._marked[pid] = any(m in cmdline for m in self.markers)
                if self._marked[pid]:
                    roots.append(pid)
        self._marked = {pid: v for pid, v in self._marked.items() if pid in alive}
        members: set[int] = set()
        todo = [pid for pid in roots if pid in alive]
        while todo:
            pid = todo.pop()
            if pid not in members:
                members.add(pid)
                todo.extend(children.get(pid, ()))
        shm: dict[tuple[int, int], str] = {}
        for pid in members:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                path = f"/proc/{pid}/fd/{fd}"
                try:
                    if os.readlink(path).startswith("/dev/shm/"):
                        st = os.stat(path)
                        shm.setdefault((st.st_dev, st.st_ino), path)
                except OSError:
                    continue
        self.members = members
        self.shm_fds = list(shm.values())
        if self._ticks is not None:  # CPU used since the last scan: a new process counts from birth
            me = os.getpid()
            for pid, now in ticks.items():
                delta = (now - self._ticks.get(pid, 0)) / HZ
                if pid in members:
                    self._cpu[0] += delta
                elif pid != me:
                    self._cpu[1] += delta
        self._ticks = ticks
        self.cpu_marks.append((time.monotonic(), self._cpu[0], self._cpu[1]))

    def sample(self) -> Sample:
        anon = rss = 0
        for pid in self.members:
            statm = _read(f"/proc/{pid}/statm")
            if statm:
                fields = statm.split()
                resident, shared = int(fields[1]), int(fields[2])
                rss += resident * PAGE
                anon += (resident - shared) * PAGE
        shm = 0
        for path in self.shm_fds:
            try:
                shm += os.stat(path).st_blocks * 512
            except OSError:
                continue
        return Sample(time.monotonic(), anon + shm, anon, shm, rss, len(self.members))

    def run(self) -> None:
        start_cpu = time.thread_time()
        last_scan = -math.inf
        while not self._stop_event.is_set():
            began = time.monotonic()
            if began - last_scan >= self.rescan:
                self.scan()
                last_scan = began
            self.samples.append(self.sample())
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - began)))
        self.cpu_s = time.thread_time() - start_cpu


@dataclass
class Measured:
    returncode: int
    result: dict[str, Any] | None
    phases: list[tuple[str, float]]
    samples: list[Sample]
    cpu_marks: list[tuple[float, float, float]]
    sampler_cpu_s: float
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

    def cpu(self, windows: Sequence[tuple[float, float]]) -> dict[str, float]:
        """CPU seconds used by the variant's processes and by all others during `windows`.

        From /proc/PID/stat at each rescan (every 0.25 s): processes that live less than one
        rescan interval are missed, so `other` is a lower bound of the competition.
        """
        def at(t: float) -> tuple[float, float]:
            prior = [m for m in self.cpu_marks if m[0] <= t]
            mark = prior[-1] if prior else (t, 0.0, 0.0)
            return mark[1], mark[2]

        span = own = other = 0.0
        for a, b in windows:
            (own_a, other_a), (own_b, other_b) = at(a), at(b)
            span += b - a
            own += own_b - own_a
            other += other_b - other_a
        if span <= 0:
            return {}
        return {"window_s": round(span, 2), "variant_cpu_s": round(own, 2), "other_cpu_s": round(other, 2),
                "variant_cores": round(own / span, 2), "other_cores": round(other / span, 2)}

    def before(self, t: float) -> dict[str, float]:
        """The last sample taken before time `t` (MB): e.g. the idle footprint before a timed run."""
        prior = [s for s in self.samples if s.t < t]
        if not prior:
            return {}
        return {"mem_mb": round(prior[-1].mem / MB, 1), "rss_sum_mb": round(prior[-1].rss / MB, 1),
                "processes": prior[-1].procs}

    def peak(self, windows: Sequence[tuple[float, float]] | None = None) -> dict[str, float | int]:
        """Peaks (MB) over the samples inside `windows` (all samples if None)."""
        chosen = [s for s in self.samples
                  if windows is None or any(a <= s.t <= b for a, b in windows)]
        if not chosen:
            return {}
        top = max(chosen, key=lambda s: s.mem)
        return {
            "mem_mb": round(top.mem / MB, 1),
            "anon_mb_at_peak": round(top.anon / MB, 1),
            "shm_mb_at_peak": round(top.shm / MB, 1),
            "rss_sum_mb": round(max(s.rss for s in chosen) / MB, 1),
            "max_processes": max(s.procs for s in chosen),
            "samples": len(chosen),
        }


def run_measured(cmd: Sequence[str], *, env: dict[str, str] | None = None,
                 marker: str | Sequence[str] | None = None,
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
        cpu_marks=sampler.cpu_marks,
        sampler_cpu_s=round(sampler.cpu_s, 2),
        kernel_maxrss_mb=round(usage.ru_maxrss / 1024, 1) if sys.platform == "linux" else None,
        wall_s=round(time.monotonic() - started, 2),
        log_path=log_path,
        stdout_other=other[-50:],
    )


def run_variant(name: str, cmd: list[str], *, env: dict[str, str], ray: bool, interval: float,
                log_path: Path) -> tuple[Measured, dict[str, Any], dict[str, Any]]:
    """Run one variant's subprocess, measured, and clean up after it.

    A Ray variant gets a short temp dir of its own (`--ray-temp-dir`, Ray puts sockets in
    it); whatever of that cluster outlives the child is stopped, and only that. Returns
    the measurement, the child's result and the start of its record (status, wall time,
    log, load averages; with `reason` when it did not succeed).
    """
    import shutil
    import tempfile

    marker = None
    if ray:
        marker = tempfile.mkdtemp(prefix="mlpbench-", dir="/tmp")
        cmd = [*cmd, "--ray-temp-dir", marker]
    load_before = os.getloadavg()[0]
    print(f"[{name}] running in a subprocess (1-min load average {load_before:.2f}) ...", flush=True)
    try:
        m = run_measured(cmd, env=env, marker=marker, interval=interval, log_path=log_path, echo=True)
    finally:
        if marker:
            strays = stray_processes(marker)
            for proc in strays:  # only this run's cluster, named by its own temp dir
                try:
                    proc.terminate()
                except psutil.Error:
                    pass
            psutil.wait_procs(strays, timeout=10)
            shutil.rmtree(marker, ignore_errors=True)
    res = m.result or {"status": "failed", "reason": f"exit code {m.returncode}, no result"}
    record: dict[str, Any] = {"status": res.get("status", "failed"), "wall_s_subprocess": m.wall_s,
                              "log": str(m.log_path), "load_avg_1m_before": round(load_before, 2),
                              "load_avg_1m_after": round(os.getloadavg()[0], 2)}
    if record["status"] != "ok":
        record["reason"] = res.get("reason", "")
        if record["status"] == "failed":
            print(tail(m.log_path), file=sys.stderr)
    return m, res, record


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- Ray processes by role -------------------------------------------------------------

# (what the command line contains, the role), first match wins. A Ray worker retitles itself
# `ray::<actor class or task>`; the replicas are `ray::ServeReplica:<app>:<deployment>`.
RAY_ROLES: tuple[tuple[str, str], ...] = (
    ("gcs_server", "GCS"),
    ("raylet/raylet", "raylet"),
    ("dashboard/agent.py", "dashboard agent"),
    ("runtime_env/agent/main.py", "runtime env agent"),
    ("ray-dashboard-", "dashboard module"),
    ("dashboard/dashboard.py", "dashboard"),
    ("log_monitor.py", "log monitor"),
    ("monitor.py", "autoscaler monitor"),
    ("ray.util.client.server", "Ray client server"),
    ("multiprocessing.forkserver", "dashboard module"),  # the dashboard's process helpers
    ("multiprocessing.resource_tracker", "dashboard module"),
    ("ray::DashboardAgent", "dashboard agent"),
    ("ray::RuntimeEnvAgent", "runtime env agent"),
    ("ray::ServeController", "Serve controller"),
    ("ray::ProxyActor", "Serve proxy"),
    ("ray::HAProxyManager", "Serve HAProxy manager"),
    ("ray::ServeReplica", "Serve replica"),
    ("ray::JobSupervisor", "job supervisor"),
    ("ray::RolloutRunner", "rollout runner actor"),
    ("ray::_StatsActor", "Ray Data actors"),  # started by a pipeline's Ray Data steps; they stay
    ("ray::_AutoscalingCoordinatorActor", "Ray Data actors"),
    ("ray::IDLE", "workers (idle)"),
    ("ray::", "workers (busy)"),
)
PER_PROCESS_ROLES = ("Serve replica",)  # reported one by one (each replica), not summed


def ray_role(cmdline: Sequence[str], parent_role: str | None = None) -> str:
    """The role of a Ray cluster process, from its command line (HAProxy by its binary; a job's
    driver is the job supervisor's child)."""
    joined = " ".join(cmdline)
    if cmdline and Path(cmdline[0].split(" ")[0]).name == "haproxy":
        return "HAProxy"
    for needle, role in RAY_ROLES:
        if needle in joined:
            return role
    if parent_role == "job supervisor":
        return "job driver"
    return "other"


def process_memory(procs: Iterable[psutil.Process]) -> list[dict[str, Any]]:
    """RSS and USS (smaps_rollup: the pages only this process maps) and CPU seconds of each process,
    with its role. USS is the memory a process would give back if it ended; it costs 2-15 ms a
    process, so this is for snapshots, not for sampling every 50 ms (see ProcessSetSampler)."""
    rows: list[dict[str, Any]] = []
    procs = list(procs)
    cmdlines: dict[int, list[str]] = {}
    for p in procs:
        try:
            cmdlines[p.pid] = p.cmdline()
        except psutil.Error:
            continue
    roles = {pid: ray_role(cmd) for pid, cmd in cmdlines.items()}
    for p in procs:
        if p.pid not in cmdlines:
            continue
        try:
            with p.oneshot():
                mem, cpu, ppid = p.memory_full_info(), p.cpu_times(), p.ppid()
        except psutil.Error:
            continue
        role = roles[p.pid]
        if role == "other":
            role = ray_role(cmdlines[p.pid], roles.get(ppid))
        title = " ".join(cmdlines[p.pid])
        rows.append({"pid": p.pid, "role": role, "title": title[:80], "rss_mb": round(mem.rss / MB, 1),
                     "uss_mb": round(mem.uss / MB, 1), "cpu_s": round(cpu.user + cpu.system, 2)})
    return sorted(rows, key=lambda r: (r["role"], r["pid"]))


def role_key(row: dict[str, Any]) -> str:
    """The group a process counts in: its role, or role + pid for the per-process roles."""
    return f"{row['role']} (pid {row['pid']})" if row["role"] in PER_PROCESS_ROLES else row["role"]


def memory_by_role(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per role (or per replica): processes, RSS, USS (MB) and CPU seconds, summed."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        g = out.setdefault(role_key(r), {"processes": 0, "rss_mb": 0.0, "uss_mb": 0.0, "cpu_s": 0.0})
        g["processes"] += 1
        for k in ("rss_mb", "uss_mb", "cpu_s"):
            g[k] = round(g[k] + r[k], 2)
    return out


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
    console = Console() if sys.stdout.isatty() else Console(width=160)
    for header, justify in columns:
        table.add_column(header, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    console.print(table)


def fmt_int(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_float(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
