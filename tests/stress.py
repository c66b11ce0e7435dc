"""`python -m tests.stress N TEST...` (`make stress N=20 TESTS=tests/faults`): run the given tests N times in
a row, each run a fresh pytest process, and print every run's result and the pass count, with the machine's
load (a shared machine: a run slower under load is fine; a failing one is a race to find).

Exits 1 when any run failed; each failed run's last lines are printed, so the failure is not lost.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

TAIL_LINES = 30


def run_once(tests: list[str], pytest_args: list[str]) -> tuple[bool, float, str]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args, *tests],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode == 0, time.monotonic() - started, "\n".join(lines[-TAIL_LINES:])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress", description=__doc__)
    parser.add_argument("runs", type=int)
    parser.add_argument("tests", nargs="+")
    parser.add_argument("--pytest-args", default="", help="passed to every pytest run")
    args = parser.parse_args(argv)
    passed = 0
    print(f"stress: {args.runs} runs of {' '.join(args.tests)}; load {os.getloadavg()[0]:.2f}", flush=True)
    for run in range(1, args.runs + 1):
        ok, seconds, tail = run_once(args.tests, args.pytest_args.split())
        passed += ok
        summary = tail.splitlines()[-1] if tail else ""
        verdict = "pass" if ok else "FAIL"
        load = os.getloadavg()[0]
        print(f"run {run:3d}: {verdict} in {seconds:6.1f} s, load {load:.2f}: {summary}", flush=True)
        if not ok:
            print(tail, flush=True)
    print(f"passed {passed}/{args.runs}", flush=True)
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
