"""Run a gang's node programs on this machine, with stand-ins for what a cloud provides.

The node program an adapter renders (``multicloud.adapterkit.node``) is a bash script that
talks to its cloud through a few commands: ``curl`` to the metadata service, the cloud's CLI,
``getent``, ``docker`` and ``shutdown``. :func:`run_gang` runs every node's program at once,
each in its own directory whose ``bin/`` holds stand-ins for exactly those commands:

* ``docker`` records its flags and runs the command after the image on the host, with the
  variables of its ``--env-file`` and nothing else of the node's environment but ``PATH``
  and ``HOME`` (what a container's image would give);
* ``shutdown`` records that the node stopped itself;
* every other stand-in answers by rule (:class:`Answer`: a regex over its arguments → what
  it prints and its exit status) and records each call.

So a test sees what each node really ran, with which flags and environment, what it reported
and whether it stopped — and the command itself (a real ``torchrun``, say) really runs.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multicloud.provider import LaunchSpec
from multicloud.testing.builders import launch_spec

__all__ = [
    "ALLREDUCE_PY",
    "Answer",
    "ContainerRun",
    "NodeRun",
    "free_port",
    "gang_spec",
    "run_gang",
    "torchrun_command",
]


@dataclass(frozen=True)
class Answer:
    """How a stand-in answers a call whose arguments match ``pattern``.

    Attributes:
        pattern: Regex searched in the call's arguments joined by spaces.
        stdout: What it prints.
        exit: Its exit status (curl's ``-f`` answers an HTTP error with 22).
    """

    pattern: str
    stdout: str = ""
    exit: int = 0


@dataclass
class ContainerRun:
    """One ``docker run`` a node made.

    Attributes:
        flags: The options between ``run`` and the image.
        image: The image.
        command: The command after the image.
        env: The variables of its ``--env-file``.
    """

    flags: list[str]
    image: str
    command: list[str]
    env: dict[str, str]


@dataclass
class NodeRun:
    """What one node did.

    Attributes:
        index: Which node (its position in the gang as the test set it up).
        returncode: The program's exit status.
        stdout: What it printed.
        stderr: What it printed on stderr.
        calls: Each stand-in call, ``{"tool": ..., "argv": [...]}``, in order.
        containers: Each ``docker run``.
        halted: The node ran ``shutdown``.
    """

    index: int
    returncode: int
    stdout: str
    stderr: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    containers: list[ContainerRun] = field(default_factory=list)
    halted: bool = False

    def argv_of(self, tool: str) -> list[list[str]]:
        """Return the argument lists of every call of ``tool``."""
        return [c["argv"] for c in self.calls if c["tool"] == tool]


_RESPONDER = """\
import json, re, sys
NAME, LOG, RULES = {name!r}, {log!r}, json.loads({rules!r})
argv = sys.argv[1:]
with open(LOG, "a") as f:
    f.write(json.dumps({{"tool": NAME, "argv": argv}}) + "\\n")
line = " ".join(argv)
for pattern, out, code in RULES:
    if re.search(pattern, line):
        sys.stdout.write(out)
        sys.exit(code)
sys.stderr.write("stand-in %s: no answer for: %s\\n" % (NAME, line))
sys.exit(99)
"""

_DOCKER = """\
import json, os, subprocess, sys
LOG, RUNS = {log!r}, {runs!r}
argv = sys.argv[1:]
with open(LOG, "a") as f:
    f.write(json.dumps({{"tool": "docker", "argv": argv}}) + "\\n")
if not argv or argv[0] != "run":
    sys.exit(0)
WITH_VALUE = {{"--network", "--net", "--ipc", "--ulimit", "--group-add", "--env-file", "--name",
              "-e", "--env", "--gpus", "--shm-size", "--device", "--cap-add", "-v", "--volume",
              "--entrypoint", "-w", "--workdir", "--user", "-u"}}
flags, i, args = [], 1, argv
while i < len(args) and args[i].startswith("-"):
    flags.append(args[i])
    if args[i] in WITH_VALUE:
        flags.append(args[i + 1])
        i += 1
    i += 1
image, command = args[i], args[i + 1:]
env = {{}}
if "--env-file" in flags:
    path = flags[flags.index("--env-file") + 1]
    with open(path) as f:
        for line in f.read().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
with open(RUNS, "a") as f:
    f.write(json.dumps({{"flags": flags, "image": image, "command": command, "env": env}}) + "\\n")
base = {{"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}}
sys.exit(subprocess.call(command, env={{**base, **env}}) if command else 0)
"""


def _write_tool(path: Path, body: str) -> None:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_gang(
    programs: Sequence[str],
    answers: Sequence[Mapping[str, Sequence[Answer]]],
    *,
    workdir: Path,
    timeout: float = 180.0,
) -> list[NodeRun]:
    """Run every node's program at once, each with its own stand-ins; wait for all.

    Args:
        programs: One bash program per node.
        answers: Per node, the stand-in commands it has (``"curl"``, ``"aws"``, ...) and
            how each answers.
        workdir: An empty directory for the nodes' files.
        timeout: Seconds after which every node still running is killed (then this
            raises).

    Returns:
        What each node did, in order.

    Raises:
        TimeoutError: If a node did not finish in time.
        ValueError: If ``programs`` and ``answers`` differ in length.
    """
    if len(programs) != len(answers):
        raise ValueError("one set of answers per program")
    procs: list[tuple[subprocess.Popen[str], Path]] = []
    for index, (program, tools) in enumerate(zip(programs, answers, strict=True)):
        home = workdir / f"node{index}"
        bin_dir = home / "bin"
        bin_dir.mkdir(parents=True)
        log = home / "calls.jsonl"
        for name, rules in tools.items():
            table = json.dumps([[a.pattern, a.stdout, a.exit] for a in rules])
            _write_tool(bin_dir / name, _RESPONDER.format(name=name, log=str(log), rules=table))
        _write_tool(bin_dir / "docker", _DOCKER.format(log=str(log), runs=str(home / "runs.jsonl")))
        (bin_dir / "shutdown").write_text(f"#!/bin/sh\ntouch {shlex.quote(str(home / 'halted'))}\n")
        (bin_dir / "shutdown").chmod(0o755)
        script = home / "program.sh"
        script.write_text(program)
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}{os.pathsep}"
            + os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "TMPDIR": str(home),
        }
        proc = subprocess.Popen(
            ["bash", str(script)],
            cwd=home,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        procs.append((proc, home))
    deadline = time.monotonic() + timeout
    outputs: list[tuple[str, str]] = []
    try:
        for proc, _ in procs:
            remaining = max(0.1, deadline - time.monotonic())
            outputs.append(proc.communicate(timeout=remaining))
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"a node program did not finish within {timeout:.0f} s") from exc
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    runs = []
    for index, ((proc, home), (out, err)) in enumerate(zip(procs, outputs, strict=True)):
        containers = [
            ContainerRun(r["flags"], r["image"], r["command"], r["env"])
            for r in _read_lines(home / "runs.jsonl")
        ]
        runs.append(
            NodeRun(
                index=index,
                returncode=proc.returncode,
                stdout=out,
                stderr=err,
                calls=_read_lines(home / "calls.jsonl"),
                containers=containers,
                halted=(home / "halted").exists(),
            )
        )
    return runs


ALLREDUCE_PY = """\
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
assert value.item() == world * (world + 1) / 2, value
print(f"all-reduce ok: rank {rank} of {world}, sum {value.item():g}", flush=True)
dist.destroy_process_group()
"""
"""A gloo all-reduce over every process of the gang: it completes only if the gang formed."""


def torchrun_command(script: Path) -> str:
    """Return a job command that runs ``script`` under torchrun, from the contract's env alone.

    No ``--nnodes``, ``--node-rank``, ``--master-addr`` or ``--master-port``: torchrun reads
    the contract's ``PET_*`` variables. One process per node (this machine has no GPU).

    Args:
        script: The Python file to run (e.g. :data:`ALLREDUCE_PY` written to disk).

    Returns:
        A shell command line.
    """
    return (
        f"{shlex.quote(sys.executable)} -m torch.distributed.run --nproc-per-node 1 "
        f"{shlex.quote(str(script))}"
    )


def gang_spec(
    command: str,
    *,
    job: str = "job-0123456789ab",
    nodes: int = 2,
    env: Mapping[str, str] | None = None,
    **fields: Any,
) -> LaunchSpec:
    """Return the launch spec of a gang whose node programs :func:`run_gang` runs here.

    Its nodes are processes of this machine, so Gloo talks over the loopback interface
    (``GLOO_SOCKET_IFNAME=lo``) whatever interfaces the machine has.

    Args:
        command: The job's command.
        job: Job id (and name, unless ``job_name`` is given).
        nodes: Nodes in the gang.
        env: The job's other variables.
        **fields: Other launch spec fields (``market``, ``secrets``, ``job_name``, ...).

    Returns:
        The launch spec.
    """
    gloo = {"GLOO_SOCKET_IFNAME": "lo", **(env or {})}
    return launch_spec(job, nodes=nodes, command=command, env=gloo, **fields)


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 now (a gang's ``MASTER_PORT``, say)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
