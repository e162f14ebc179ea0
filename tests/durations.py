"""The suite's cost: the slowest tests and the total per folder and pass.

Reads the JUnit XML files that `tests/run.sh` writes when `KERAS_MAE_JUNIT_DIR`
is set (one per pass: backend-free, tensorflow, jax, torch) and prints two
Markdown tables: the `--top` slowest tests over all passes, and seconds per
test folder and pass. Times are each test's own (set-up, call, tear-down),
summed over workers, so with two workers a pass's wall time is about half its
column's total.

    KERAS_MAE_JUNIT_DIR=/tmp/junit bash tests/run.sh
    python tests/durations.py /tmp/junit/*.xml
"""

import argparse
import collections
import os
import xml.etree.ElementTree as ElementTree


def read(path):
    """`[(test id, seconds)]` of one JUnit XML file, skipped tests left out."""
    cases = []
    for case in ElementTree.parse(path).iter("testcase"):
        if case.find("skipped") is not None:
            continue
        module = case.get("classname", "").replace(".", "/")
        cases.append((f"{module}.py::{case.get('name')}", float(case.get("time", 0.0))))
    return cases


def folder_of(test):
    path = test.split("::")[0]
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="JUnit XML files, one per pass")
    parser.add_argument("--top", type=int, default=30, help="slowest tests shown (default: 30)")
    args = parser.parse_args(argv)
    passes = {os.path.splitext(os.path.basename(path))[0]: read(path) for path in args.files}

    print(f"| {args.top} slowest tests | pass | s |\n|---|---|---|")
    everything = [(s, test, name) for name, cases in passes.items() for test, s in cases]
    for seconds, test, name in sorted(everything, reverse=True)[: args.top]:
        print(f"| `{test}` | {name} | {seconds:.1f} |")

    totals = collections.defaultdict(lambda: collections.defaultdict(float))
    for name, cases in passes.items():
        for test, seconds in cases:
            totals[folder_of(test)][name] += seconds
    names = list(passes)
    print(f"\n| folder | {' | '.join(names)} | all |\n|---|{'---|' * (len(names) + 1)}")
    for folder in sorted(totals):
        row = [totals[folder][name] for name in names]
        print(f"| `{folder}` | {' | '.join(f'{s:.0f}' for s in row)} | {sum(row):.0f} |")
    row = [sum(s for _, s in passes[name]) for name in names]
    counts = [len(passes[name]) for name in names]
    print(f"| **all** | {' | '.join(f'{s:.0f}' for s in row)} | {sum(row):.0f} |")
    print(f"| tests run | {' | '.join(str(c) for c in counts)} | {sum(counts)} |")


if __name__ == "__main__":
    main()
