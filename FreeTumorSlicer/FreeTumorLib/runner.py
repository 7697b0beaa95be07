"""Run the core as ``python -m freetumor_core ... --progress json`` in a subprocess.

Slicer's GUI must never wait on a slow job, so the work runs in its own process (which can also be
killed cleanly, unlike a thread). Two reader threads turn the child's output into items on a queue;
the GUI's ``QTimer`` calls :meth:`CoreProcess.poll`, which drains the queue on the GUI thread and
calls the callbacks there. Nothing here needs Qt or Slicer: a script can call :meth:`wait`.

The child prints one JSON object per line on stdout (see ``freetumor_core.progress``):
``{"event": "progress", "task": ..., "done": 3, "total": 10}``, a final ``{"event": "done", ...}``
and, on failure, ``{"event": "error", "message": ..., "exit_code": 2}``. Exit code 2 means bad
input (the message names the file and the problem), 1 an internal error.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Lines of stderr kept for the error message.
STDERR_TAIL_LINES = 20
# Seconds a cancelled process gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE_S = 3.0


class CoreProcessError(RuntimeError):
    """The core subprocess failed.

    Attributes:
        exit_code: the process's exit code (2: bad input, 1: internal error, negative: killed by a signal).
        message: the core's own error message (from its JSON ``error`` event or its last stderr line).
        stderr: the last lines of its standard error.
    """

    def __init__(self, command: str, exit_code: int, message: str, stderr: str = "") -> None:
        self.exit_code = exit_code
        self.message = message
        self.stderr = stderr
        kind = {2: "bad input", 1: "internal error"}.get(exit_code, "failed")
        super().__init__(f"freetumor {command}: {kind} (exit code {exit_code}): {message}")


def core_python() -> str:
    """The Python that runs the core: ``PythonSlicer`` inside Slicer, else this interpreter.

    Inside Slicer ``sys.executable`` is the Slicer application itself; ``PythonSlicer`` is the
    plain interpreter of the same environment, so packages installed in Slicer are importable.
    """
    slicer = sys.modules.get("slicer")
    if slicer is not None and getattr(slicer, "app", None) is not None:
        python_slicer = shutil.which("PythonSlicer")
        if python_slicer:
            return python_slicer
    return sys.executable


def core_command(arguments: Sequence[str], python: str | None = None) -> list[str]:
    """``[python, "-m", "freetumor_core", *arguments, "--progress", "json"]``."""
    return [python or core_python(), "-m", "freetumor_core", *map(str, arguments), "--progress", "json"]


class CoreProcess:
    """One run of the core in a subprocess, reported through callbacks from :meth:`poll`.

    Callbacks (all called from :meth:`poll`, so on the thread that polls):

    - ``on_progress(event)``: each ``progress`` event, a dict with ``task``, ``done``, ``total``.
    - ``on_done(result)``: once, after a clean exit (0); ``result`` is the ``done`` event's payload
      (``{}`` when the command printed none).
    - ``on_error(error)``: once, with a :class:`CoreProcessError`, after a non-zero exit or a
      cancellation (``cancelled`` is then true).
    - ``on_log(line)``: any other output line (warnings on stderr, non-JSON lines on stdout).
    """

    def __init__(
        self,
        arguments: Sequence[str],
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_done: Callable[[dict[str, Any]], None] | None = None,
        on_error: Callable[[CoreProcessError], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        python: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.arguments = [str(argument) for argument in arguments]
        self.command = core_command(self.arguments, python)
        self.on_progress = on_progress
        self.on_done = on_done
        self.on_error = on_error
        self.on_log = on_log
        self.cwd = cwd
        self.events: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.error: CoreProcessError | None = None
        self.cancelled = False
        self._process: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._error_event: dict[str, Any] | None = None
        self._finished = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> CoreProcess:
        """Start the subprocess and its reader threads.

        Raises:
            RuntimeError: already started.
            OSError: the Python executable cannot be started.
        """
        if self._process is not None:
            raise RuntimeError("this process was already started")
        environment = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        options: dict[str, Any] = {}
        if os.name == "posix":
            # Own process group: cancel() can signal the child and everything it started.
            options["start_new_session"] = True
        else:
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=environment,
            cwd=self.cwd,
            **options,
        )
        for stream, kind in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr")):
            reader = threading.Thread(target=self._read, args=(stream, kind), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    def _read(self, stream: Any, kind: str) -> None:
        # Runs on a reader thread: only parse and enqueue; callbacks happen in poll().
        for line in stream:
            line = line.rstrip("\r\n")
            if not line:
                continue
            if kind == "stdout":
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    event = None
                if isinstance(event, dict) and "event" in event:
                    self._queue.put(("event", event))
                    continue
            self._queue.put((kind, line))
        stream.close()
        self._queue.put(("eof", kind))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True from :meth:`start` until :meth:`poll` has reported the end."""
        return self._process is not None and not self._finished

    @property
    def exit_code(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    # -- polling --------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Deliver everything the child printed since the last call; finish when it has exited.

        Returns:
            True while the process is still running (keep polling), False once it has ended and
            ``on_done`` or ``on_error`` has been called.
        """
        if self._process is None:
            raise RuntimeError("poll() before start()")
        if self._finished:
            return False
        self._drain()
        streams_closed = not any(reader.is_alive() for reader in self._readers)
        if self._process.poll() is None or not streams_closed:
            return True
        for reader in self._readers:
            reader.join()
        self._drain()
        self._finish()
        return False

    def _drain(self) -> None:
        while True:
            try:
                kind, item = self._queue.get_nowait()
            except queue.Empty:
                return
            if kind == "event":
                self._handle_event(item)
            elif kind == "stderr":
                self._stderr_tail.append(item)
                if self.on_log:
                    self.on_log(item)
            elif kind == "stdout" and self.on_log:
                self.on_log(item)

    def _handle_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        name = event.get("event")
        if name == "progress":
            if self.on_progress:
                self.on_progress(event)
        elif name == "done":
            self.result = {key: value for key, value in event.items() if key != "event"}
        elif name == "error":
            self._error_event = event
        elif self.on_log:
            self.on_log(json.dumps(event))

    def _finish(self) -> None:
        self._finished = True
        exit_code = self._process.returncode
        subcommand = self.arguments[0] if self.arguments else ""
        if self.cancelled:
            self.error = CoreProcessError(subcommand, exit_code, "cancelled", "\n".join(self._stderr_tail))
        elif exit_code != 0:
            self.error = CoreProcessError(
                subcommand, exit_code, self._failure_message(), "\n".join(self._stderr_tail)
            )
        if self.error is not None:
            if self.on_error:
                self.on_error(self.error)
            return
        if self.result is None:
            self.result = {}
        if self.on_done:
            self.on_done(self.result)

    def _failure_message(self) -> str:
        if self._error_event and self._error_event.get("message"):
            return str(self._error_event["message"])
        if self._process.returncode < 0:
            return f"killed by signal {-self._process.returncode}"
        for line in reversed(self._stderr_tail):
            if line.strip():
                return line.strip().removeprefix("freetumor: error: ")
        return "no error message"

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.05) -> bool:
        """Poll until the process ends (for scripts and tests; the GUI uses a timer instead).

        Returns:
            True when it ended, False when ``timeout_s`` passed first (it keeps running).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(interval_s)
        return True

    # -- cancelling -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the process and everything it started; :meth:`poll` then reports ``cancelled``.

        SIGTERM to the whole process group, then SIGKILL to whatever of the group is left after a
        short grace period. The core writes each output atomically, so a killed run leaves no
        half-written file under an output's final name.
        """
        process = self._process
        if process is None or process.poll() is not None:
            return
        self.cancelled = True
        if os.name == "posix":
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                process.wait(TERMINATE_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        else:
            # taskkill /T ends the whole tree on Windows.
            subprocess.run(
                ["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False
            )
            process.wait()


class NodeJob:
    """A core command on a CT node, in a background process: the shared part of every panel job.

    :meth:`start` writes the inputs into a temporary folder and starts the command; call
    :meth:`poll` from a timer (or :meth:`wait` in a script). On success :meth:`_load` turns the
    command's output folder into nodes and ``on_done(outputs)`` is called; on failure or
    cancellation ``on_error(exception)``. The temporary folder is removed in both cases (unless
    ``keep_folder``). A job supplies :meth:`_arguments` (write the inputs, return the command line)
    and :meth:`_load`.
    """

    prefix = "freetumor-"

    def __init__(
        self,
        input_node: Any,
        organ_node: Any,
        request: Any,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        python: str | None = None,
        keep_folder: bool = False,
    ) -> None:
        self.input_node = input_node
        self.organ_node = organ_node
        self.request = request
        self.on_progress = on_progress
        self.on_done = on_done
        self.on_error = on_error
        self.python = python
        self.keep_folder = keep_folder
        self.folder: Path | None = None
        self.outputs: Any = None
        self.error: Exception | None = None
        self.process: CoreProcess | None = None

    def _arguments(self, folder: Path) -> list[str]:
        """Write the inputs into ``folder`` and return the core's command line (output: ``folder/output``)."""
        raise NotImplementedError

    def _load(self, output: Path) -> Any:
        """Turn the command's output folder into nodes; returns the job's outputs."""
        raise NotImplementedError

    def start(self) -> NodeJob:
        """Write the inputs and start the subprocess."""
        self.folder = Path(tempfile.mkdtemp(prefix=self.prefix))
        try:
            self.process = CoreProcess(
                self._arguments(self.folder),
                on_progress=self.on_progress,
                on_done=self._loaded,
                on_error=self._failed,
                python=self.python,
            ).start()
        except BaseException:
            self._clean()
            raise
        return self

    def poll(self) -> bool:
        """Deliver progress; returns True while the job runs (see :meth:`CoreProcess.poll`)."""
        if self.process is None:
            raise RuntimeError("poll() before start()")
        return self.process.poll()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Poll until the job ends; False when ``timeout_s`` passed first."""
        if self.process is None:
            raise RuntimeError("wait() before start()")
        return self.process.wait(timeout_s)

    def cancel(self) -> None:
        """Kill the subprocess; the next :meth:`poll` reports the cancellation."""
        if self.process is not None:
            self.process.cancel()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def _loaded(self, _result: dict[str, Any]) -> None:
        try:
            self.outputs = self._load(self.folder / "output")
        except Exception as error:  # a bad output file: report it like a failed run
            self._failed(error)
            return
        self._clean()
        if self.on_done:
            self.on_done(self.outputs)

    def _failed(self, error: Exception) -> None:
        self.error = error
        self._clean()
        if self.on_error:
            self.on_error(error)

    def _clean(self) -> None:
        if self.folder is not None and not self.keep_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
