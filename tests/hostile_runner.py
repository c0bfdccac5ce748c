"""Runs fitplan commands for the hostile-input corpus, each in a child forked from one warm process.

A fresh interpreter per case would spend ~0.3 s importing fitplan before the case starts; this
process imports the CLI once and forks a child per case, so a case costs what the command itself
does. The child is what a user's command would be: its own working folder and environment, stdin
from /dev/null, stdout and stderr to files, an address-space limit (RLIMIT_AS), and a kill after a
hang-guard timeout. The parent reports the exit code, both outputs, the child's peak RSS (wait4's
rusage) and whether the guard fired.

Protocol: one JSON request per line on stdin ({"argv", "cwd", "env", "unset", "block", "timeout_s",
"as_limit_bytes"}; "block" lists modules the child sees as not installed); one JSON answer per line on stdout.
argv[0] is "fitplan", "advise" or "pytest".
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys
import tempfile
import time

import fitplan.advisor.cli.commands as cli  # noqa: F401  (imported before forking: the warm part)


def _child(request: dict, out_path: str, err_path: str) -> None:
    """Become the command: never returns."""
    code = 70
    try:
        os.chdir(request["cwd"])
        for key in request.get("unset", []):
            os.environ.pop(key, None)
        os.environ.update(request.get("env", {}))
        for name in request.get("block", []):  # as if not installed: find_spec gives None, import fails
            sys.modules[name] = None  # type: ignore[assignment]
        limit = request.get("as_limit_bytes")
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, out_path), (2, err_path)):
            target = os.open(path, os.O_WRONLY | os.O_TRUNC)
            os.dup2(target, fd)
        sys.stdin = open(0, encoding="utf-8", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
        program, *args = request["argv"]
        sys.argv = [program, *args]
        try:
            if program == "pytest":
                import pytest

                code = int(pytest.main(args))
            elif program == "advise":
                cli.advise_main(args)
            else:
                cli.main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what a user would see: the traceback on stderr, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run(request: dict) -> dict:
    with tempfile.NamedTemporaryFile(delete=False) as out, tempfile.NamedTemporaryFile(delete=False) as err:
        pass
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(request, out.name, err.name)
    deadline = started + request.get("timeout_s", 60)
    timed_out = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            timed_out = True
            break
        time.sleep(0.005)
    answer = {"rc": os.waitstatus_to_exitcode(status), "timed_out": timed_out,
              "seconds": time.monotonic() - started, "max_rss_bytes": usage.ru_maxrss * 1024}
    for key, path in (("stdout", out.name), ("stderr", err.name)):
        with open(path, "rb") as handle:
            answer[key] = handle.read(1 << 20).decode("utf-8", errors="replace")
        os.unlink(path)
    return answer


def main() -> None:
    for line in sys.stdin:
        sys.stdout.write(json.dumps(run(json.loads(line))) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
