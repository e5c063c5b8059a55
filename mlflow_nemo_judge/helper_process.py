"""The package's helper processes (today the chart worker, ``compare/plot_worker.py``): start, talk, stop.

A helper is ``python -m <module>`` of this interpreter, a subprocess with text pipes: not
``multiprocessing``, whose spawn start method would re-run a user's unguarded script. It imports the
package as this process does (installed or from a checkout: the package's root goes first on its
``PYTHONPATH``), inherits the environment, and its stderr is discarded, so nothing it prints (MLflow's
warnings, a traceback quoting a request) reaches the user's terminal or logs. It talks in lines: one
reader thread per helper queues what it prints, so a caller that stops waiting (a timeout) loses no
line to the next one.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path


class Helper:
    """One running helper process and the lines it has printed."""

    def __init__(self, module: str, *args: str) -> None:
        """Start ``python -m module args``. ``args`` are visible to other users of the machine
        (``ps``): never a URI, a key or a path with a secret in it; those go on the pipe."""
        import mlflow_nemo_judge

        env = dict(os.environ)
        root = str(Path(mlflow_nemo_judge.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"{module}-reader", daemon=True).start()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            for line in stdout:
                self._lines.put(line.rstrip("\n"))
        except (OSError, ValueError):  # closed by ``stop``
            pass
        self._lines.put(None)  # the helper exited

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, line: str) -> None:
        """One line to the helper (``OSError`` when it has gone)."""
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()

    def readline(self, timeout: float | None) -> str:
        """The helper's next line; ``TimeoutError`` after ``timeout`` seconds (None: no limit), and
        ``RuntimeError`` when it has exited."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer within {timeout:g} s") from None
        if line is None:
            self._lines.put(None)  # every later read says so too
            raise RuntimeError("exited")
        return line

    def stop(self, wait: bool = True) -> None:
        """End the helper: its stdin closes, so it leaves its loop and exits by itself. ``wait=False``
        (at interpreter exit) does not wait for that (~0.15 s)."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            if wait:
                self.proc.wait(timeout=2)
        except Exception:
            self.proc.kill()
            self.proc.wait()
