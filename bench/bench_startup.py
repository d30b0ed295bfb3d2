"""Time to answer of the commands that need no model: listings, help, a missing input, against `import torch`.

A user who types `eclip models`, `eclip methods`, `eclip VERB --help` or mistypes a file name
should get the answer at once; before the CLI imported lazily each of them first paid for torch,
torchvision, open_clip and matplotlib (9 to 49 s on a loaded 2-core machine). Each command runs in
a fresh process (`python -m eclip.cli ...`), as do three references: `python -c "import torch"`
(what the CLI used to pay before anything else), `python -c "import typer"` (what any typer CLI
pays) and `python -c pass` (the interpreter's own start). The commands run round-robin,
`--repeats` times, so a change in the machine's load touches all of them alike; the medians are
reported, and each command's median as a fraction of torch's import, measured in the same run
(the number that carries over to another machine).

    python bench/bench_startup.py                              # about a minute on 2 CPU cores
    python bench/bench_startup.py --json bench/results/startup-cpu.json --label after
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: name -> the arguments after `python`; the first three are the references.
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import torch'": ["-c", "import torch"],
    "python -c 'import typer'": ["-c", "import typer, typer.main, pydantic"],  # the floor of any typer CLI (typer >= 0.2x loads pydantic)
    "eclip --help": ["-m", "eclip.cli", "--help"],
    "eclip models": ["-m", "eclip.cli", "models"],
    "eclip methods": ["-m", "eclip.cli", "methods"],
    "eclip explain --help": ["-m", "eclip.cli", "explain", "--help"],
    "eclip evaluate --help": ["-m", "eclip.cli", "evaluate", "--help"],
    "eclip train --help": ["-m", "eclip.cli", "train", "--help"],
    "eclip explain nosuch.png": ["-m", "eclip.cli", "explain", "nosuch.png"],
    "eclip evalute (a mistyped verb)": ["-m", "eclip.cli", "evalute"],
}


def seconds(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="Also write the record here (under the key --label).")
    parser.add_argument("--label", default="run", help="Key of this run in the --json file (e.g. before, after).")
    options = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "ECLIP_DEBUG"}
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    codes: dict[str, set[int]] = {name: set() for name in COMMANDS}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:  # an empty working folder: nosuch.png is missing there
        for _ in range(options.repeats):
            for name, args in COMMANDS.items():
                wall, code = seconds(args, Path(tmp), env)
                times[name].append(wall)
                codes[name].add(code)
    torch_import = statistics.median(times["python -c 'import torch'"])
    record = {
        "bench": "startup", "device": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "repeats": options.repeats, "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "median_seconds": {name: round(statistics.median(t), 3) for name, t in times.items()},
        "fraction_of_torch_import": {name: round(statistics.median(t) / torch_import, 3) for name, t in times.items()},
        "exit_codes": {name: sorted(c) for name, c in codes.items()},
    }
    print(json.dumps(record, indent=1))
    if options.json:
        from eclip.writing import atomic_write_text

        existing = json.loads(options.json.read_text()) if options.json.exists() else {}
        options.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(options.json, json.dumps({**existing, options.label: record}, indent=1) + "\n")


if __name__ == "__main__":
    main()
