"""Stage commands run in forks of one warm process (issue 17.3).

Why: ``dvc repro`` starts one process per stage, and a stage with work imports torch,
mlflow, scipy and the sampling and evaluation code (~4.5 s on an idle 2-core machine)
before it samples one graph; a study of 44 results pays that 44 times where ``bdgen
sweep`` pays it once. Here the first such stage starts a server that does those imports
once and then waits on a Unix socket. Every stage command, the first included, is then a
small client (the CLI's entry point, before any heavy import): it hands its arguments,
working directory, environment and standard streams to the server, which forks a child
that runs the command as ``bdgen`` would and sends back its exit status. A fork made
after the imports starts in milliseconds.

What keeps a child the same as a fresh process:

- the server is keyed by what it imported (:func:`server_key`: the interpreter, the
  import path, the installed packages and their versions, the size and mtime of every file
  of the bdgen package, the environment variables read at import time): edited code or
  another environment gets a server of its own, never the old one's modules;
- the server only imports: no thread, no CUDA context, no open store, tracker or file;
  so a child is a clean copy, as a DataLoader worker is, and sets up all of these itself;
- the child gets the client's working directory, environment and streams, its own process
  group, and the signal handlers a fresh interpreter has. The client forwards SIGINT,
  SIGTERM and SIGHUP to that group, and the child ends if its client goes away.

The server exits after ``BDGEN_WARM_IDLE`` seconds (default 300) without a stage.
``BDGEN_WARM=0`` turns this off, and so does a platform without ``fork`` and
``pidfd_open`` (not Linux): each stage then runs in its own process, as it always could.
Side effects (processes, sockets) are this module's business, hence bdgen/pipeline.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import selectors
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

WARM_COMMANDS = (("pipeline", "train"), ("pipeline", "result"))
"""The stage commands that run in the server: those that import torch (dvc.yaml)."""


PRELOAD = ("torch", "scipy.stats", "mlflow", "mlflow.tracking",
           "mlflow.store.tracking.sqlalchemy_store", "matplotlib.pyplot", "networkx",
           "dvc.repo", "dvc.repo.add", "scmrepo.git", "ruamel.yaml", "alembic.command",
           "rich.progress", "PIL.PngImagePlugin", "bdgen.pipeline.stages",
           "bdgen.pipeline.stored_runs",
           "bdgen.pipeline.tracked_generate", "bdgen.pipeline.tracked_evaluate",
           "bdgen.pipeline.tracked_train", "bdgen.pipeline.plots")
"""What the server imports before it forks: what a result or train stage with work
imports (the modules new in ``sys.modules`` after such a stage, by package), besides the
command line's own module (the server's ``entry``)."""

IMPORT_TIME_ENV = ("PYTHON", "TORCH", "PYTORCH", "TRITON", "OMP_", "MKL_", "KMP_", "CUDA",
                   "LD_", "LANG", "LC_", "MPL")
"""Prefixes of environment variables a library may read when it is imported: part of
:func:`server_key`, so that a stage with other values gets a server of its own."""

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""What the client passes on to the command's process group (DVC's Ctrl-C, a kill)."""

IDLE_S = 300.0
"""How long a server waits for a stage before it exits (``BDGEN_WARM_IDLE``)."""

START_S = 120.0
"""How long a client waits for a server it started to listen (its imports) before it
runs the command itself."""

_HEADER = struct.Struct("!I")
_in_child = False  # set in a forked child: its command runs here, not handed on


def enabled() -> bool:
    """Whether stage commands go to a warm server (module docstring)."""
    return (not _in_child and os.environ.get("BDGEN_WARM", "1") not in ("0", "")
            and sys.platform == "linux" and hasattr(os, "pidfd_open"))


def is_warm_command(args: list[str]) -> bool:
    """``args`` (the CLI's arguments, no program name) run a warm stage command (not its
    help: that needs no server)."""
    return (tuple(args[:2]) in WARM_COMMANDS
            and not any(a in ("-h", "--help") for a in args))


def server_key(entry: str) -> str:
    """What the server's imports depend on, hashed (module docstring). Installed
    packages are known by their ``*.dist-info`` names (name and version), bdgen's own
    files (code, profiles, templates) by size and mtime (an edit between two stages)."""
    import bdgen

    h = hashlib.sha256(repr((entry, sys.executable, sys.version, sys.path, sys.flags))
                       .encode())
    for folder in sys.path:  # what is installed there, with its version
        try:
            names = sorted(e.name for e in os.scandir(folder or ".")
                           if e.name.endswith((".dist-info", ".egg-info", ".pth")))
        except OSError:
            continue
        h.update(f"{folder}:{names}\n".encode())
    root = Path(bdgen.__file__).resolve().parent
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for k in sorted(os.environ):
        if k.startswith(IMPORT_TIME_ENV):
            h.update(f"{k}={os.environ[k]}\n".encode())
    return h.hexdigest()[:20]


def socket_dir() -> Path | None:
    """``BDGEN_WARM_DIR``, else ``$XDG_RUNTIME_DIR/bdgen`` or ``/tmp/bdgen-<uid>``: made
    private (0700) if missing; None when it exists but another user owns it or others may
    write to it (a socket there could be someone else's server)."""
    base = os.environ.get("BDGEN_WARM_DIR")
    if not base:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        base = os.path.join(runtime, "bdgen") if runtime else f"/tmp/bdgen-{os.getuid()}"
    path = Path(base)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return path


# --- the client: a stage command's process --------------------------------------------

def hand_off(args: list[str], entry: str) -> int | None:
    """Run the CLI command ``args`` in a fork of the warm server (started if there is
    none) and return its exit status; None if no server can take it (then the caller
    runs the command itself). ``entry``: the Click command that runs ``args``, as
    ``module:attribute`` (the command line passes itself: it is a layer above this one)."""
    if not enabled():
        return None
    folder = socket_dir()
    if folder is None:
        return None
    path = folder / f"{server_key(entry)}.sock"
    sock = _connect(path)
    if sock is None:
        server = _start_server(path, entry)
        deadline = time.monotonic() + START_S
        while sock is None and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            sock = _connect(path)
        if sock is None:
            sock = _connect(path)  # a concurrent client's server, where this one gave way
        if sock is None:
            return None
    with sock:
        return _request(sock, args)


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def _start_server(path: Path, entry: str) -> subprocess.Popen[bytes]:
    """The server, in its own session (it outlives this stage), with this process's import
    path; its own output goes to ``<key>.log`` beside the socket."""
    boot = ("import sys; sys.path[:] = __import__('json').loads(sys.argv[1]); "
            "from bdgen.pipeline.stage_server import serve; serve(sys.argv[2], sys.argv[3])")
    with open(path.with_suffix(".log"), "ab") as log:
        return subprocess.Popen([sys.executable, "-c", boot, json.dumps(sys.path), str(path),
                                 entry],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, cwd="/")


def _request(sock: socket.socket, args: list[str]) -> int | None:
    """Send the command, forward signals to the child while it runs, return its status
    (None if the server closed the connection before forking: it could not start)."""
    streams = [fd if _is_open(fd) else os.open(os.devnull, os.O_RDWR) for fd in (0, 1, 2)]
    payload = json.dumps({"args": args, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    child: list[int] = []  # the forked command's pid (and process group), once known
    pending: list[int] = []  # signals that came before it was known

    def forward(signum: int, _frame: object) -> None:
        if child:
            _signal_group(child[0], signum)
        else:
            pending.append(signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    try:
        socket.send_fds(sock, [b"R"], streams)
        sock.sendall(_HEADER.pack(len(payload)) + payload)
        replies = sock.makefile("rb")
        started = replies.readline()
    except OSError:
        started = b""
    if not started:  # no command forked: this process runs it, as if never asked
        _fresh_handlers(FORWARDED)
        for early in pending:
            os.kill(os.getpid(), early)
        return None
    child.append(json.loads(started)["pid"])
    for early in pending:
        _signal_group(child[0], early)
    ended = replies.readline()
    if not ended:
        print("error: the warm stage server went away before the stage ended "
              "(run it again, or with BDGEN_WARM=0)", file=sys.stderr)
        return 1
    code: int = json.loads(ended)["exit"]
    return code


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _fresh_handlers(signums: tuple[int, ...]) -> None:
    """The handlers a fresh interpreter has: KeyboardInterrupt for SIGINT, else the
    default action."""
    for signum in signums:
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT
                      else signal.SIG_DFL)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signum)


def running_servers(folder: Path | None = None) -> list[tuple[int, Path]]:
    """(pid, socket) of each server listening in ``folder`` (default :func:`socket_dir`),
    the pid as the kernel reports the socket's owner."""
    folder = socket_dir() if folder is None else folder
    found = []
    for path in sorted(folder.glob("*.sock")) if folder is not None else []:
        sock = _connect(path)
        if sock is None:
            continue
        with sock:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            found.append((struct.unpack("3i", creds)[0], path))
    return found


def stop_servers(folder: Path | None = None, wait_s: float = 10.0) -> list[tuple[int, Path]]:
    """SIGTERM to each of :func:`running_servers`, then wait (up to ``wait_s``) until each
    has removed its socket: from then on a stage starts a new server. A server whose
    stages are running exits once they have ended."""
    servers = running_servers(folder)
    for pid, _ in servers:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while any(path.exists() for _, path in servers) and time.monotonic() < deadline:
        time.sleep(0.02)
    return servers


# --- the server ------------------------------------------------------------------------

def serve(path_str: str, entry: str, idle_s: float | None = None) -> None:
    """Listen on ``path_str``, import :data:`PRELOAD` and ``entry`` (the Click command,
    ``module:attribute``), then fork a child per command until no command came for
    ``idle_s`` seconds (default ``BDGEN_WARM_IDLE``, else :data:`IDLE_S`) or SIGTERM came
    (then the running children are waited for). Listening comes first, so the first client
    waits on the imports instead of starting a server of its own; only one server binds a
    path (a lock)."""
    path = Path(path_str)
    idle = float(os.environ.get("BDGEN_WARM_IDLE", IDLE_S)) if idle_s is None else idle_s
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = _connect(path)
        if running is not None:  # another client's server got there first
            running.close()
            return
        path.unlink(missing_ok=True)  # a socket left by a server that was killed
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(64)
    server = _Server(listener, path)
    try:
        for module in PRELOAD:
            importlib.import_module(module)
        module, attr = entry.split(":")
        command = getattr(importlib.import_module(module), attr)
        from bdgen.store.engine import configure_mappers_now

        configure_mappers_now()
        import torch

        if torch.cuda.is_initialized():  # a fork could not use the GPU: serve nothing
            raise RuntimeError("CUDA was initialised while importing; not serving")
        server.run(idle, command)
    finally:
        server.stop_listening()
        log = path.with_suffix(".log")
        with contextlib.suppress(OSError):
            if log.stat().st_size == 0:  # kept where the server had something to say
                log.unlink()


class _Server:
    """One thread, one selector: new commands (the listening socket), ended children (a
    pidfd is readable once its process has exited) and SIGTERM (a wake-up socket)."""

    def __init__(self, listener: socket.socket, path: Path) -> None:
        self.listener: socket.socket | None = listener
        self.path, self.inode = path, path.stat().st_ino
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, "listener")
        self.running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, client)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "signal")
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGTERM, lambda *_: None)  # delivered through wake_w

    def run(self, idle: float, command: Any) -> None:
        last = time.monotonic()
        while self.listener is not None or self.running:
            timeout = None if self.running else last + idle - time.monotonic()
            if timeout is not None and timeout <= 0:
                return
            for key, _ in self.sel.select(timeout):
                if key.data == "listener":
                    self._fork_child(command)
                elif key.data == "signal":
                    self.wake_r.recv(64)
                    self.stop_listening()  # new stages start a new server
                else:
                    self._report(key.fd)
                last = time.monotonic()  # idle from the last event, not the last wake-up

    def stop_listening(self) -> None:
        if self.listener is None:
            return
        self.sel.unregister(self.listener)
        self.listener.close()
        self.listener = None
        try:
            if self.path.stat().st_ino == self.inode:  # not a later server's socket
                self.path.unlink()
        except OSError:
            pass

    def _report(self, pidfd: int) -> None:
        """A child ended: its exit status to its client (killed by signal N: 128 + N, what
        a shell reports)."""
        pid, conn = self.running.pop(pidfd)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):  # the client may have gone first
            conn.sendall(json.dumps({"exit": code if code >= 0 else 128 - code}).encode()
                         + b"\n")
        conn.close()

    def _fork_child(self, command: Any) -> None:
        assert self.listener is not None
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            _, fds, _, _ = socket.recv_fds(conn, 1, 3)
            (size,) = _HEADER.unpack(_read_exactly(conn, _HEADER.size))
            request = json.loads(_read_exactly(conn, size))
            if len(fds) != 3:
                raise ValueError("a request without its 3 streams")
        except (OSError, ValueError, struct.error):  # not a client (running_servers)
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        # Signals wait across the fork: the child gets them with its own handlers, in its
        # own process group, both set before the client learns its pid.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        pid = os.fork()
        if pid == 0:
            try:
                self._close_in_child()
                _run_child(conn, fds, request, command)
            finally:  # whatever happens, the child never returns to the server's loop
                os._exit(1)
        with contextlib.suppress(OSError):  # (the child may have done it already)
            os.setpgid(pid, pid)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        for fd in fds:
            os.close(fd)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        pidfd = os.pidfd_open(pid)
        self.running[pidfd] = (pid, conn)
        self.sel.register(pidfd, selectors.EVENT_READ, "child")

    def _close_in_child(self) -> None:
        """What is the server's, not the command's."""
        signal.set_wakeup_fd(-1)
        for sock in (self.listener, self.wake_r, self.wake_w):
            if sock is not None:
                sock.close()
        self.sel.close()
        for pidfd, (_, other) in self.running.items():
            os.close(pidfd)
            other.close()


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ValueError("short request")
        data += chunk
    return data


def _run_child(conn: socket.socket, fds: list[int], request: dict[str, Any],
               command: Any) -> None:
    """The forked child: become the client's command (module docstring), run it with the
    Click ``command``, exit."""
    global _in_child
    _in_child = True
    os.setpgid(0, 0)
    _fresh_handlers((*FORWARDED, signal.SIGCHLD))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["bdgen", *request["args"]]
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1,  # noqa: SIM115
                      closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False,  # noqa: SIM115
                      errors="backslashreplace")
    # The client waits on the connection until the server reports the exit; if it goes
    # away first (killed), the command would run on for nobody: end the group.
    threading.Thread(target=_end_with_client, args=(conn,), daemon=True).start()
    code = 1
    try:
        command.main(args=request["args"], prog_name="bdgen")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - what an uncaught exception prints, then exit 1
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()  # what the interpreter runs at exit (logging, mlflow, ...)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):
                stream.flush()
        os._exit(code)


def _end_with_client(conn: socket.socket) -> None:
    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    _signal_group(os.getpid(), signal.SIGTERM)
