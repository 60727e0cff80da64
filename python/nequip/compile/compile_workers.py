"""The AOTInductor compiles of a package of several models, side by side in worker processes.

A ``pair_nequip_domain`` file holds the whole model and two parts per layer (a committee's, each
member's), each its own AOTInductor compile: mostly single-threaded Python (lowering, code
generation) then g++. Instead of compiling them one after the other, the calling process
compiles from a queue of the models while helper processes (``python -m
nequip.compile.compile_workers``) take models from the same queue: ``NEQUIP_COMPILE_WORKERS``
processes in all, by default as many as the CPUs this process may use, at most 4. A helper gets
a model as a file (``torch.export.save``) and answers with the paths of the files it compiled,
in the Inductor cache directory the processes share; the package is assembled from those paths
as before.

Helpers are started by path, not by ``multiprocessing``: a user's script that compiles a file is
not imported again in them.
"""

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from nequip.utils import torch_internals

from .inductor_speedups import faster_compile

WORKERS_VARIABLE = "NEQUIP_COMPILE_WORKERS"
_MAX_DEFAULT_WORKERS = 4  # each holds a compile's memory (about 2 GiB for the benchmark model)


def compile_processes() -> int:
    """How many processes compile a package's models: ``NEQUIP_COMPILE_WORKERS`` if set, else
    the CPUs this process may run on (at most 4)."""
    value = os.environ.get(WORKERS_VARIABLE)
    if value is not None:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"{WORKERS_VARIABLE} must be a whole number of processes, at least 1, not {value!r}")
        return count
    return max(1, min(len(os.sched_getaffinity(0)), _MAX_DEFAULT_WORKERS))


def _compile_one(program: "torch.export.ExportedProgram", options: Dict[str, object]) -> List[str]:
    args, kwargs = program.example_inputs
    module = program.module(check_guards=False)
    return torch_internals.aoti_compile(module, args, kwargs, dict(options))


class WorkerError(RuntimeError):
    """A helper process failed to compile a model (its traceback in the message), or died."""


def compile_programs(
    programs: Dict[str, "torch.export.ExportedProgram"],
    options: Dict[str, object],
    log: Callable[[str], None],
    processes: Optional[int] = None,
) -> Dict[str, List[str]]:
    """Each program compiled with AOTInductor ``options`` (``aot_inductor.package`` among them):
    its files by name. The programs are taken in their order (put the largest first)."""
    processes = min(processes or compile_processes(), len(programs))
    jobs: "queue.Queue[str]" = queue.Queue()
    for name in programs:
        jobs.put(name)
    files: Dict[str, List[str]] = {}
    if processes <= 1:
        _compile_from(jobs, programs, options, files, log)
        return files

    errors: List[BaseException] = []
    with tempfile.TemporaryDirectory(prefix="nequip-compile-") as scratch:
        first = jobs.get_nowait()  # the first, largest, here: the helpers are still starting
        saved = {}
        for index, (name, program) in enumerate(programs.items()):
            if name != first:
                saved[name] = Path(scratch) / f"{index}.pt2"
                torch.export.save(program, saved[name])
        helpers = [_Helper(number) for number in range(1, processes)]
        threads = [
            threading.Thread(target=helper.run, args=(jobs, saved, options, files, errors, log), daemon=True)
            for helper in helpers
        ]
        for thread in threads:
            thread.start()
        try:
            _compile_from(jobs, programs, options, files, log, errors, first)
        except BaseException:
            _drain(jobs)
            for helper in helpers:
                helper.stop(kill=True)
            raise
        finally:
            for thread in threads:
                thread.join()
            for helper in helpers:
                helper.stop()
    if errors:
        raise errors[0]
    return files


def _drain(jobs: "queue.Queue[str]") -> None:
    while True:
        try:
            jobs.get_nowait()
        except queue.Empty:
            return


def _compile_from(jobs, programs, options, files, log, errors=(), first: Optional[str] = None) -> None:
    """Compile ``first`` and then models from ``jobs`` in this process until none is left (or a
    helper failed)."""
    with faster_compile():
        name = first
        while not errors:
            if name is None:
                try:
                    name = jobs.get_nowait()
                except queue.Empty:
                    return
            log(f"compiling C++ of {name} (AOTInductor)")
            files[name] = _compile_one(programs[name], options)
            name = None


class _Helper:
    """One helper process and the thread of this process that feeds it."""

    def __init__(self, number: int):
        self.number = number
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nequip.compile.compile_workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, jobs, saved, options, files, errors, log) -> None:
        try:
            while not errors:
                try:
                    name = jobs.get_nowait()
                except queue.Empty:
                    return
                log(f"compiling C++ of {name} (AOTInductor, compile process {self.number})")
                request = {"program": str(saved[name]), "options": options, "tf32": _tf32_flags()}
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
                answer = self.process.stdout.readline()
                if not answer:
                    raise WorkerError(
                        f"compile process {self.number} ended (exit status {self.process.wait()}) while "
                        f"compiling {name}; its messages are above"
                    )
                answer = json.loads(answer)
                if "files" not in answer:
                    raise _error_from(answer, name)
                files[name] = answer["files"]
        except BaseException as error:  # noqa: B036 -- handed to the calling thread
            errors.append(error)
            _drain(jobs)

    def stop(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            try:
                self.process.stdin.close()  # the helper's loop ends at the end of its input
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:  # unflushed input to a process that is gone
                pass


def _tf32_flags() -> List[bool]:
    return [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32]


def _error_from(answer: Dict[str, str], name: str) -> BaseException:
    if "write_error" in answer:
        from .compiler import WriteError

        return WriteError(answer["write_error"])
    return WorkerError(f"compiling {name} in a compile process failed:\n{answer['error']}")


def _serve() -> None:
    """A helper: compile each requested model, answer with its files, until the input ends."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever else prints goes to stderr
    sys.stdout = sys.stderr
    # torch's own serialisation warns of its own deprecated calls on every load
    warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
    from nequip.nn.message_passing import register_kernel_shapes

    register_kernel_shapes()
    with faster_compile():
        for line in sys.stdin:
            request = json.loads(line)
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = request["tf32"]
            try:
                program = torch.export.load(request["program"])
                files = _compile_one(program, request["options"])
                if not all(isinstance(path, str) for path in files):  # e.g. weights kept apart
                    raise TypeError(f"AOTInductor returned files that are not paths: {files!r}")
                answer = {"files": files}
            except Exception as error:
                answer = {"error": traceback.format_exc()}
                try:
                    from .compiler import _raise_if_inductor_could_not_write

                    _raise_if_inductor_could_not_write(error)
                except Exception as write_error:  # the one-line message of a failed write
                    answer = {"write_error": str(write_error)}
            answers.write(json.dumps(answer) + "\n")
            answers.flush()


if __name__ == "__main__":
    _serve()
