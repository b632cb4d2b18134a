# Copyright: clawbot.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An flock held for the length of a ``with`` block (key_rotate's keyrings, bot_release's root)."""

from __future__ import annotations

import errno
import fcntl
import os
import time


class FileLock:
    """Exclusive (the lock file is created 0600) or shared flock on ``path``, polled until ``timeout``.

    A shared lock on a missing file waits for nothing (nothing was written there yet). Failures raise
    ``error`` (a subclass names its module's error class); ``holder`` says who holds it when it times out.
    """

    error = OSError
    holder = "another run"

    def __init__(self, path, timeout, poll, shared=False):
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self.shared = shared
        self._fd = None

    def __enter__(self):
        flags = os.O_RDONLY if self.shared else os.O_RDWR | os.O_CREAT
        try:
            self._fd = os.open(self.path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileNotFoundError:
            if self.shared:
                return self
            raise self.error(f"cannot open the lock file {self.path}: no such directory") from None
        except OSError as exc:
            raise self.error(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        operation = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self._fd, operation | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    self.close()
                    raise self.error(f"cannot lock {self.path} within {self.timeout:g} seconds: "
                                     f"{self.holder} holds it") from None
            time.sleep(self.poll)

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
