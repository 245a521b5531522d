"""Issue 22's acceptance table: adversarial CLI cases against a small digits run, each classified.

    nice .venv/bin/python benchmarks/experiments/reliability_cases.py --work /tmp/rel [--run DIR] [--only WORD]

Makes the run first unless --run names one (`na-deploy pipeline --epochs-fp 2 --epochs-qat 2 --verify-samples 2
--timesteps 4 --verify-timesteps 4 --eval-samples 50`), then runs every case of `CASES` in its own folder
WORK/cases/NN (copies of the run's small files) and prints one row a case and the totals. A case is the
command line, the exit code it must give (0 pass, 1 a failed check, 2 a refused request, 143 terminated) and
how it is run (writing into a read-only file system: a read-only bind mount in a mount namespace, `unshare -m`,
so it needs root; under `ulimit -f`; beside a concurrent run).
Classes:

    clean         the expected exit code; a non-zero exit with one `error:` line on stderr
    traceback     "Traceback" on stderr, or killed by a signal (segfault: exit 139 / -11)
    hang          no exit within --timeout seconds (killed)
    silent-wrong  exit 0 where a refusal (1 or 2) was expected
    leftover      a temporary file (.NAME.*.tmp / .old / .partial) or a refused command's output remains,
                  or an input's bytes changed
    misleading    another exit code than the expected one, or an error that is not one line
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_case_table import CASES, NA, Case  # noqa: E402  (the table, beside this file)
RUN_FILES = ("net.nad.h5", "net.float.nad.h5", "qat.ckpt", "fp.ckpt")
TEMP = re.compile(r"^\..*\.(tmp|old)$|\.partial$")
CLASSES = ("clean", "traceback", "hang", "silent-wrong", "leftover", "misleading")


# ------------------------------------------------------------------------------------------ running
def digest(path: Path) -> Optional[str]:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def prepare(case: Case, run: Path, w: Path) -> None:
    w.mkdir(parents=True)
    for name in RUN_FILES:
        if (run / name).is_file():
            shutil.copyfile(run / name, w / name)
    if case.setup:
        case.setup(w)


def _preexec(case: Case):
    def run():
        os.setsid()
        if case.fsize_kib is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize_kib * 1024, case.fsize_kib * 1024))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit is EFBIG, as in a shell
    return run


def launch(argv: str, case: Case, w: Path) -> subprocess.Popen:
    args = [NA, *[a.format(w=w) for a in argv.split()]]
    if case.read_only:  # WORK/ro as a read-only file system (EROFS), in a mount namespace of the command only
        ro = w / "ro"
        ro.mkdir(exist_ok=True)
        args = ["unshare", "-m", "sh", "-c", f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "
                'exec "$@"', "sh", *args]
    return subprocess.Popen(args, cwd=w, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_preexec(case))


def stop(p: subprocess.Popen, sig=signal.SIGKILL) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def beside_partial(case: Case) -> set[str]:
    """The concurrent run's own `OUT.partial` (it is stopped with SIGTERM; what it leaves is its to say)."""
    if not case.beside:
        return set()
    args = case.beside.split()
    return {Path(args[args.index("--out") + 1]).name + ".partial"} if "--out" in args else set()


def temp_names(w: Path) -> set[str]:
    return {str(p.relative_to(w)) for p in w.rglob("*") if TEMP.search(p.name)}


def classify(case: Case, rc: Optional[int], err: str, w: Path, before: dict) -> tuple[str, str]:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    if rc is None:
        return "hang", "no exit"
    if "Traceback" in err or rc < 0 or rc in (134, 139):
        return "traceback", (lines[-1] if lines else f"rc {rc}")[:90]
    left = sorted(temp_names(w) - before.pop(" temp", set()))  # what a concurrent run had made is not this one's
    if case.expect != 0:
        left += [a for a in case.absent if os.path.lexists(w / a)]
    left += [f"{k} changed" for k, v in before.items() if digest(w / k) != v]
    if rc == 0 and case.expect != 0:
        return "silent-wrong", "exit 0"
    if left:
        return "leftover", ", ".join(sorted(set(left)))[:90]
    if rc != case.expect:
        return "misleading", f"exit {rc}, expected {case.expect}: {(lines[-1] if lines else '')[:70]}"
    errors = [ln for ln in lines if ln.startswith("error:")]
    if rc not in (0, 143) and (len(errors) != 1 or len(lines) > 1 + sum(ln.startswith("warning") for ln in lines)):
        return "misleading", f"not one error line: {' | '.join(lines)[:80]}"
    return "clean", (lines[-1] if lines else "")[:90]


def run_case(case: Case, run: Path, w: Path, timeout: float) -> tuple[str, str, float]:
    prepare(case, run, w)
    before = {k: digest(w / k) for k in case.keep if (w / k).is_file()}
    other = launch(case.beside, case, w) if case.beside else None
    if other:
        time.sleep(4)
    before[" temp"] = temp_names(w) | beside_partial(case)
    t0 = time.monotonic()
    p = launch(case.argv, case, w)
    try:
        _, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        stop(p)
        _, err = p.communicate()
        rc = None
    took = time.monotonic() - t0
    if other:
        stop(other, signal.SIGTERM)
        try:
            other.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            stop(other)
            return "hang", "the first run ignored SIGTERM for 60 s", took
        if other.returncode != 143:
            return "misleading", f"the first run exited {other.returncode} on SIGTERM, expected 143", took
    return (*classify(case, rc, err.decode(errors="replace"), w, before), took)


def make_run(work: Path) -> Path:
    run = work / "run"
    if not (run / "COMPLETE").exists():
        subprocess.run([NA, "pipeline", "--epochs-fp", "2", "--epochs-qat", "2", "--verify-samples", "2",
                        "--timesteps", "4", "--verify-timesteps", "4", "--eval-samples", "50", "--out", str(run),
                        "--force"], check=True)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--run", type=Path, default=None, help="a finished digits run (default: make WORK/run)")
    ap.add_argument("--timeout", type=float, default=90.0)
    ap.add_argument("--only", default=None, help="run the cases whose name or category contains this")
    a = ap.parse_args()
    run = a.run or make_run(a.work)
    shutil.rmtree(a.work / "cases", ignore_errors=True)
    totals = dict.fromkeys(CLASSES, 0)
    cases = [c for c in CASES if a.only is None or a.only in c.name or a.only in c.category]
    print(f"{'#':>3} {'category':<12} {'case':<38} {'class':<12} {'s':>5}  detail")
    for k, case in enumerate(cases):
        cls, detail, took = run_case(case, run, a.work / "cases" / f"{k:02d}", a.timeout)
        totals[cls] += 1
        print(f"{k:>3} {case.category:<12} {case.name:<38} {cls:<12} {took:5.1f}  {detail}", flush=True)
    print(f"\n{len(cases)} cases: " + ", ".join(f"{c} {n}" for c, n in totals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
