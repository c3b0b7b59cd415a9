"""``fedq-algorithm test`` (or ``python -m fedq_algorithm test``): run an algorithm image at
simulated organizations with local data, through the mock federation (``fedq_algorithm.mock``),
before any node is involved.

    fedq-algorithm test --image fedq/python-secure-sum:0.1.0 \\
        --org A=data_a.csv --org B=data_b.csv --org C=data_c.csv --input '{"data": "patients"}'

``--org NAME=PATH`` gives organization NAME a data source: a file is mounted under the label
``--label`` names (default ``patients``), ``NAME=LABEL:PATH`` names it, a directory gives each of
its files under its own name; repeat ``--org`` for more sources or organizations, in the task's
order. Exit status 0 when every job completed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from fedq_algorithm import mock


def _place(source: Path, target: Path) -> None:
    """The data file in the organization's folder: a hard link where possible (no copy)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _organizations(specs: list[str], default_label: str, root: Path) -> dict[str, Path]:
    folders: dict[str, Path] = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not name or not source:
            raise ValueError(f"--org {spec!r}: expected NAME=PATH or NAME=LABEL:PATH")
        label, sep, path = source.partition(":")
        if not sep:
            label, path = default_label, source
        path_ = Path(path)
        if not path_.exists():
            raise ValueError(f"--org {spec!r}: {path} does not exist")
        folder = folders.setdefault(name, root / f"org-{len(folders)}")
        folder.mkdir(exist_ok=True)
        if path_.is_dir():
            for item in path_.iterdir():
                if item.is_file():
                    _place(item, folder / item.name)
        else:
            _place(path_, folder / label)
    return folders


def test(args: argparse.Namespace) -> int:
    raw = args.input.encode() if args.input is not None else b""
    if args.input_file is not None:
        raw = Path(args.input_file).read_bytes()
    with tempfile.TemporaryDirectory(prefix="fedq-algorithm-test-") as tmp:
        orgs = _organizations(args.org, args.label, Path(tmp))
        with mock.MockFederation(orgs, other_images=lambda name: mock.container(name, args.timeout)) as federation:
            results = federation.run(
                mock.container(args.image, args.timeout), raw, timeout=args.timeout, image=args.image
            )
    if args.json:
        rows = [
            {"organization": r.organization, "status": r.status, "output": r.output.decode("utf-8", "replace"), "reason": r.reason}
            for r in results.values()
        ]
        print(json.dumps(rows, indent=2))
    else:
        for r in results.values():
            print(f"{r.organization}  {r.status}  {r.output.decode('utf-8', 'replace') if r.status == 'completed' else r.reason}")
    return 0 if all(r.status == "completed" for r in results.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedq-algorithm", description="tools for fedq algorithm authors")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("test", help="run an algorithm image at simulated organizations (the mock federation)")
    t.add_argument("--image", required=True, help="the algorithm image (name:tag), built locally")
    t.add_argument("--org", action="append", required=True, metavar="NAME=[LABEL:]PATH",
                   help="an organization and a data source of it; repeat, in the task's order")
    t.add_argument("--label", default="patients", help="the label of a data file given without one")
    t.add_argument("--input", help="the input, as text (JSON, usually)")
    t.add_argument("--input-file", help="the input, from a file")
    t.add_argument("--timeout", type=float, default=300, help="seconds each container may run")
    t.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    try:
        return test(args)
    except (ValueError, OSError, TimeoutError) as e:
        print(f"fedq-algorithm: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
