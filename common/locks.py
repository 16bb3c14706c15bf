"""An exclusive lock on a file, for a read-change-write shared by several processes."""
from __future__ import annotations

import fcntl
from pathlib import Path


class FileLock:
    """An exclusive `flock` on `path` (created if absent), held from `acquire` to `release`.

    flock, not lockf: it excludes two handles of one process too, so threads of one worker and
    separate workers are treated alike. The operating system drops the lock when its process dies,
    so a killed holder never blocks the others. `release` may be called more than once.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._handle = None

    def acquire(self, on_wait=None) -> None:
        """Block until the lock is held; `on_wait()` is called once first when another holds it."""
        if self._handle is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        self._handle = handle

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
