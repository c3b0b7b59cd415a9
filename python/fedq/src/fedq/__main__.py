"""``python -m fedq``: run a task from the saved session and print its results.

    python -m fedq run --collaboration registries --image fedq/secure-sum:0.1.0 \\
        --org registry-0 --org registry-1 --key alice.key --input-json '{}'
    python -m fedq result TASK --key alice.key
    python -m fedq whoami

Exit status as ``fedq``'s: 0 done, 3 when the wait ended before every result, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import Client, FedqError, Incomplete, Results


def _print(results: Results, as_json: bool) -> None:
    if as_json:
        rows: list[dict[str, Any]] = [
            {
                "organization": r.organization,
                "organization_id": r.organization_id,
                "job": r.job,
                "status": r.status,
                "output": r.output.decode("utf-8", "replace"),
                "reason": r.reason,
            }
            for r in results
        ]
        print(json.dumps(rows, indent=2))
        return
    for r in results:
        detail = r.output.decode("utf-8", "replace") if r.ok else (r.reason or "")
        print(f"{r.organization}  {r.status}  {detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedq", description="fedq's researcher client")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="create a task and wait for its results")
    run.add_argument("--collaboration", required=True)
    run.add_argument("--image", required=True)
    run.add_argument("--org", action="append", required=True, dest="organizations")
    run.add_argument("--key", required=True)
    run.add_argument("--input-json", default=None)
    run.add_argument("--name", default="")
    run.add_argument("--timeout", type=float, default=600)
    run.add_argument("--json", action="store_true")
    run.add_argument("--no-wait", action="store_true", help="print the task id and return")
    run.add_argument("--trust-on-first-use", action="store_true")
    result = sub.add_parser("result", help="wait for a task's results")
    result.add_argument("task")
    result.add_argument("--key", required=True)
    result.add_argument("--timeout", type=float, default=600)
    result.add_argument("--json", action="store_true")
    sub.add_parser("whoami", help="who the saved session is")
    args = parser.parse_args(argv)

    try:
        if args.command == "whoami":
            print(json.dumps(Client.from_session().me()))
            return 0
        if args.command == "run":
            client = Client.from_session(key=args.key, trust_on_first_use=args.trust_on_first_use)
            value = json.loads(args.input_json) if args.input_json is not None else b""
            task = client.create_task(
                args.collaboration, args.image, args.organizations, value, name=args.name
            )
            if args.no_wait:
                print(task.id)
                return 0
            _print(task.wait(timeout=args.timeout), args.json)
            return 0
        client = Client.from_session(key=args.key)
        _print(client.wait(args.task, timeout=args.timeout), args.json)
        return 0
    except Incomplete as e:
        _print(e.results, args.json)
        print(f"error: {e}", file=sys.stderr)
        return e.exit_status
    except FedqError as e:
        print(f"error ({e.code}): {e}", file=sys.stderr)
        return e.exit_status


if __name__ == "__main__":
    sys.exit(main())
