"""`platformctl ci SPEC`: the checks a pull request of pipeline code must pass, against the
production platform, as one exit code and one JUnit report (what every CI system shows).

Stages, in order, each stopping the rest when it fails (a spec that does not load cannot be
planned; a batch that cannot be read cannot be dry-run):

1. spec: the spec loads and the code it names imports and is on the allow-lists (exit 2);
2. tests: the user's own tests next to the spec (`tests/` in the spec's folder, or `--tests`),
   run by pytest in a process of their own; their cases are merged into the report;
3. plan: what applying would change (read from production's metadata; never a failure by
   itself: a change is what a pull request is for);
4. dry-run: the whole pipeline on a sample in a scratch home (mlplatform.dryrun.run), one
   case per step, failing with the step's own error.

The user's tests run before the dry-run: they take seconds and say more precisely what broke.
JUnit XML is written with the standard library's ElementTree: the format is a few elements, and
pytest's own report (merged in) is read the same way.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlplatform.errors import PlatformError
from mlplatform.settings import Settings

Outcome = Literal["passed", "failed", "skipped"]


class Case(BaseModel):
    stage: str
    name: str
    outcome: Outcome
    seconds: float = 0.0
    message: str = ""
    output: str = ""


class CiReport(BaseModel):
    pipeline: str | None
    spec: str
    passed: bool
    exit_code: int
    failed_stage: str | None = None
    message: str = ""
    cases: list[Case] = Field(default_factory=list)
    plan: dict[str, Any] | None = None
    seconds: float = 0.0
    user_junit: str | None = Field(None, description="The user's tests' JUnit XML, merged into the report.")

    def junit(self) -> bytes:
        root = ET.Element("testsuites", name="platformctl ci")
        suite = ET.SubElement(root, "testsuite", name=f"mlplatform.ci.{self.pipeline or 'spec'}")
        for c in self.cases:
            case = ET.SubElement(suite, "testcase", classname=f"ci.{c.stage}", name=c.name,
                                 time=f"{c.seconds:.3f}")
            if c.outcome == "failed":
                ET.SubElement(case, "failure", message=c.message[:500]).text = c.output or c.message
            elif c.outcome == "skipped":
                ET.SubElement(case, "skipped", message=c.message[:500])
            elif c.output:
                ET.SubElement(case, "system-out").text = c.output
        _counts(suite, self.cases)
        if self.user_junit:
            user = ET.fromstring(self.user_junit)
            for s in ([user] if user.tag == "testsuite" else list(user.iter("testsuite"))):
                s.set("name", f"user-tests.{s.get('name', 'pytest')}")
                root.append(s)
        totals = {k: sum(int(s.get(k, 0)) for s in root.iter("testsuite"))
                  for k in ("tests", "failures", "errors", "skipped")}
        for k, v in totals.items():
            root.set(k, str(v))
        root.set("time", f"{self.seconds:.3f}")
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _counts(suite: ET.Element, cases: list[Case]) -> None:
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(c.outcome == "failed" for c in cases)))
    suite.set("errors", "0")
    suite.set("skipped", str(sum(c.outcome == "skipped" for c in cases)))
    suite.set("time", f"{sum(c.seconds for c in cases):.3f}")


def user_tests(folder: Path, cwd: Path, log: Callable[[str], None]) -> tuple[Case, str | None]:
    """pytest on `folder` in a process of its own (the user's code, the user's fixtures):
    one case for the stage, and pytest's JUnit XML to merge."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlplatform-ci-") as tmp:
        xml_path = Path(tmp) / "user.xml"
        proc = subprocess.run([sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider",
                               f"--junitxml={xml_path}"], cwd=cwd, capture_output=True, text=True)
        xml = xml_path.read_text() if xml_path.is_file() else None
    out = (proc.stdout + proc.stderr).strip()
    for line in out.splitlines()[-5:]:
        log(f"[tests] {line}")
    summary = out.splitlines()[-1] if out else f"pytest exited {proc.returncode}"
    # 5: no tests collected, which is not a failure of the code
    outcome: Outcome = "passed" if proc.returncode in (0, 5) else "failed"
    return Case(stage="tests", name=str(folder), outcome=outcome, seconds=time.perf_counter() - t0,
                message=summary, output=out[-20000:]), xml


def run_ci(spec_file: Path, settings: Settings, *, sample_rows: int, tests: Path | None,
           log: Callable[[str], None]) -> CiReport:
    """Every stage, in order; never raises for a failing stage (its case and exit code say it)."""
    from mlplatform.dryrun.run import dry_run
    from mlplatform.spec_code import code_problems, load_for
    from mlplatform.spec_loader import SpecError

    t0 = time.perf_counter()
    report = CiReport(pipeline=None, spec=str(spec_file), passed=False, exit_code=1)
    stages = ["spec", "tests", "plan", "dry-run"]

    def stop(stage: str, message: str, exit_code: int = 1) -> CiReport:
        report.failed_stage, report.message, report.exit_code = stage, message, exit_code
        for later in stages[stages.index(stage) + 1:]:
            report.cases.append(Case(stage=later, name=later, outcome="skipped",
                                     message=f"not run: the {stage} stage failed"))
        report.seconds = round(time.perf_counter() - t0, 2)
        return report

    started = time.perf_counter()
    try:
        spec = load_for(spec_file, settings)
    except SpecError as exc:
        text = "\n".join(i.render(str(spec_file)) for i in exc.issues)
        report.cases.append(Case(stage="spec", name="spec check", outcome="failed",
                                 seconds=time.perf_counter() - started, message=text.splitlines()[0],
                                 output=text))
        return stop("spec", text, 2)
    except PlatformError as exc:
        report.cases.append(Case(stage="spec", name="spec check", outcome="failed", message=exc.message))
        return stop("spec", exc.message, 2)
    report.pipeline = spec.name
    problems = code_problems(spec, settings, spec_file.parent)
    report.cases.append(Case(stage="spec", name="spec check", outcome="failed" if problems else "passed",
                             seconds=time.perf_counter() - started, message="; ".join(problems)))
    if problems:
        return stop("spec", "; ".join(problems), 2)

    folder = tests if tests is not None else spec_file.parent / "tests"
    if folder.is_dir():
        case, report.user_junit = user_tests(folder, spec_file.parent, log)
        report.cases.append(case)
        if case.outcome == "failed":
            return stop("tests", f"the tests in {folder} failed: {case.message}")
    elif tests is not None:
        return stop("tests", f"--tests {tests}: no such folder", 2)
    else:
        report.cases.append(Case(stage="tests", name="user tests", outcome="skipped",
                                 message=f"no tests folder at {folder}"))

    started = time.perf_counter()
    try:
        from mlplatform.metadata.store import MetadataStore
        from mlplatform.spec_plan import plan

        planned = plan(spec, MetadataStore(settings.metadata_url))
    except PlatformError as exc:
        report.cases.append(Case(stage="plan", name="plan", outcome="failed", message=exc.message))
        return stop("plan", exc.message)
    report.plan = {**planned.model_dump(mode="json"), "changed": planned.changed}
    what = (f"{len(planned.changes)} change(s): " + "; ".join(e.kind for e in planned.effects)
            if planned.changed else "no changes")
    report.cases.append(Case(stage="plan", name="plan", outcome="passed",
                             seconds=time.perf_counter() - started, message=what,
                             output="\n".join(f"{c.path}: {c.kind} {c.detail}" for c in planned.changes)))

    try:
        dry = dry_run(spec, spec_file.parent, settings, sample_rows=sample_rows, log=log)
    except PlatformError as exc:  # the batch cannot be found or read
        report.cases.append(Case(stage="dry-run", name="dry-run", outcome="failed", message=exc.message))
        return stop("dry-run", exc.message)
    for s in dry.steps:
        outcome: Outcome = {"FAILED": "failed", "SKIPPED": "skipped"}.get(s.status, "passed")  # type: ignore[assignment]
        report.cases.append(Case(stage="dry-run", name=s.step, outcome=outcome, seconds=s.duration_s or 0.0,
                                 message=s.message))
    if dry.status != "SUCCEEDED":
        if not dry.steps:
            report.cases.append(Case(stage="dry-run", name="dry-run", outcome="failed", message=dry.message))
        where = f" at {dry.failed_step}" if dry.failed_step else ""
        report.failed_stage, report.exit_code = "dry-run", 1
        report.message = f"dry-run failed{where}: {dry.message}"
        report.seconds = round(time.perf_counter() - t0, 2)
        return report
    report.passed, report.exit_code = True, 0
    report.message = f"passed: {what}; dry-run of {dry.sample.rows} rows in {dry.seconds:.1f}s"
    report.seconds = round(time.perf_counter() - t0, 2)
    return report
