"""The run folder's lock: one live process at a time, and stale locks of dead ones recovered."""

from __future__ import annotations

import json
import os
import socket

from mnist_jax.errors import RunLockedError

LOCK_FILE = "run.lock"


def acquire(path: str) -> str | None:
    """Takes the folder's lock for this process; returns a note if a stale lock was recovered.

    Raises RunLockedError if a live process (on this host, or any process on another)
    holds it. The lock file, holding the holder's pid and host, appears whole or not at all
    (written aside, then hard-linked into place, which fails if it exists).
    """
    os.makedirs(path, exist_ok=True)
    lock, note = os.path.join(path, LOCK_FILE), None
    mine = f"{lock}.{os.getpid()}"
    with open(mine, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
    try:
        for _ in range(2):
            try:
                os.link(mine, lock)
                return note
            except FileExistsError:
                holder = _read_lock(lock)
                if _alive(holder):
                    raise RunLockedError(
                        f"{path} is in use by process {holder.get('pid')} on {holder.get('host')} "
                        f"({lock}); wait for it to finish or stop it"
                    ) from None
                os.remove(lock)
                note = (
                    f"recovered a stale lock on {path} from process {holder.get('pid')}, which "
                    "is no longer running"
                )
        raise RunLockedError(
            f"{path}: another process took the lock while a stale one was being recovered"
        )
    finally:
        os.remove(mine)


def release(path: str) -> None:
    """Releases this process's lock on the folder (if it holds it)."""
    lock = os.path.join(path, LOCK_FILE)
    if _read_lock(lock).get("pid") == os.getpid():
        os.remove(lock)


def _read_lock(lock: str) -> dict:
    try:
        with open(lock) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # unreadable: nobody can prove they hold it


def _alive(holder: dict) -> bool:
    """Whether the lock's holder is a running process (one on another host is assumed to be)."""
    if not holder:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        with open(f"/proc/{holder['pid']}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
