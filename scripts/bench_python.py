"""The measurements of scripts/bench-python: commands timed from outside, A and B alternated and
compared pair by pair, medians printed as a Markdown table."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEDQ = ROOT / "target/release/fedq"
DEMO = ROOT / "target/release/fedq-demo"


def timed(command: list[str], env: dict[str, str] | None = None, check: bool = True) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    if check and done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr.decode()}")
    return elapsed


def compare(
    a: list[str], b: list[str], runs: int, env: dict[str, str] | None = None, check: bool = True
) -> tuple[float, float, float]:
    """Median seconds of A and of B, and the median of the ratios A/B taken pair by pair."""
    timed(a, env, check), timed(b, env, check)  # warm-up
    times_a, times_b = [], []
    for _ in range(runs):
        times_a.append(timed(a, env, check))
        times_b.append(timed(b, env, check))
    ratios = [x / y for x, y in zip(times_a, times_b)]
    return statistics.median(times_a), statistics.median(times_b), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.runs} runs each, alternated, medians\n")

    # The algorithm starts and exits at once (no node: it stops at the missing FEDQ_ENDPOINT), so
    # this is Docker's work plus the program's start.
    run = ["docker", "run", "--rm", "--network", "none", "--read-only"]
    python, rust, ratio = compare(
        run + ["fedq/python-secure-sum:0.1.0"], run + ["fedq/secure-sum:0.1.0"], args.runs, check=False
    )
    print("| image | create, start, exit, remove |")
    print("|---|---|")
    print(f"| `fedq/secure-sum` (Rust) | {rust * 1000:.0f} ms |")
    print(f"| `fedq/python-secure-sum` (Python) | {python * 1000:.0f} ms (× {ratio:.2f}, pair by pair) |\n")

    with tempfile.TemporaryDirectory(prefix="fedq-bench-python-") as tmp:
        connection = Path(tmp) / "demo.json"
        log = open(Path(tmp) / "demo.log", "wb")
        demo = subprocess.Popen(
            [str(DEMO), "secure-sum", "--serve", str(connection), "--no-setup"], stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 300
            while not connection.exists():
                if demo.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the demo did not come up:\n" + (Path(tmp) / "demo.log").read_text())
                time.sleep(0.2)
            served = json.loads(connection.read_text())
            env = dict(os.environ, XDG_CONFIG_HOME=tmp)
            env.pop("FEDQ_SESSION", None)
            env.pop("FEDQ_TRUST_STORE", None)
            login = [str(FEDQ), "login", "--server", served["server"], "--user", served["username"], "--password-stdin"]
            if served["ca_file"]:
                login += ["--ca-file", served["ca_file"]]
            subprocess.run(login, input=served["password"].encode(), env=env, check=True, capture_output=True)
            # The registries' fingerprints, trusted as after comparing them out of band.
            trust = (
                "import fedq, json, sys\n"
                "served = json.load(open(sys.argv[1]))\n"
                "client = fedq.Client.from_session()\n"
                "for name, fp in served['fingerprints'].items(): client.trust(name, fp)\n"
            )
            subprocess.run([sys.executable, "-c", trust, str(connection)], env=env, check=True)
            orgs = [arg for name in served["organizations"] for arg in ("--org", name)]
            common = ["--collaboration", served["collaboration"], "--image", served["image"], *orgs,
                      "--key", served["key_file"], "--input-json", json.dumps(served["input"]), "--json"]
            python, rust, ratio = compare(
                [sys.executable, "-m", "fedq", "run", *common], [str(FEDQ), "task", "create", *common, "--wait"],
                args.runs, env,
            )
            n = len(served["organizations"])
            print(f"| client | one Secure Sum task over {n} registries, command start to results |")
            print("|---|---|")
            print(f"| `fedq task create --wait` (Rust) | {rust * 1000:.0f} ms |")
            print(f"| `python -m fedq run` (Python, PyO3) | {python * 1000:.0f} ms (× {ratio:.3f}, pair by pair; "
                  f"{(python - rust) * 1000:+.0f} ms) |")
        finally:
            demo.send_signal(signal.SIGTERM)
            demo.wait(timeout=120)


if __name__ == "__main__":
    main()
