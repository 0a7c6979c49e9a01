"""`python -m tuner ...` in its own process, for the tests that interrupt, kill or watch a CLI run."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable


class Cli:
    """The CLI in its own session (so its process group, local Ray included, can be signalled); its output lines
    are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "tuner", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until(self, done: Callable[[], bool], what: str, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert self.proc.poll() is None and time.monotonic() < deadline, f"waiting for {what}:\n{self.output}"
            time.sleep(0.1)

    def wait_for(self, pattern: str, count: int = 1, timeout_s: float = 300) -> None:
        """Until `count` output lines match `pattern`."""
        self.wait_until(lambda: sum(bool(re.search(pattern, line)) for line in list(self.lines)) >= count, pattern,
                        timeout_s)

    def running(self) -> set[str]:
        """Trials that have reported (so hold a checkpoint) and not ended."""
        reported = set(re.findall(r"trial (\w+) report", self.output))
        return reported - set(re.findall(r"trial (\w+) (?:finished|pruned|diverged|error)", self.output))

    def reports(self) -> dict[str, list[int]]:
        """Trial id -> the report numbers printed for it, in order."""
        out: dict[str, list[int]] = {}
        for trial, n in re.findall(r"trial (\w+) report (\d+)/", self.output):
            out.setdefault(trial, []).append(int(n))
        return out

    def parent_run_id(self) -> str:
        return re.search(r"MLflow parent run: (\w+)", self.output).group(1)

    def finish(self, timeout_s: float = 600) -> int:
        self.proc.wait(timeout=timeout_s)
        self._reader.join()
        return self.proc.returncode
