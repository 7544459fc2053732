"""Files no other user of the machine may read.

The data dir holds pictures of people, the database and the key that signs URLs: the data dir and
local storage's folder are 0700 (folders made by an older release are tightened at start), and
what Heartbeat writes there is 0600: the processes that write it (``heartbeat serve``, and the
commands that change the database) run under :data:`PRIVATE_UMASK`, and the files that matter most
(the SQLite database, the signing secret, stored images and thumbnails) are made so explicitly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def use_private_umask() -> None:
    """From now on, every file and folder this process makes is its user's alone."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: str | Path) -> None:
    """Make the folder ``path`` (and its parents) if missing, and leave it 0700.

    A folder this user does not own, or a shared one (the sticky bit, as ``/tmp`` has), is left as it
    is, with a warning: it is not Heartbeat's to close.
    """
    folder = Path(path)
    folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    status = folder.stat()
    if stat.S_IMODE(status.st_mode) & 0o077 == 0:
        return
    if status.st_uid != os.geteuid() or status.st_mode & stat.S_ISVTX:
        log.warning("%s is readable by other users, and not Heartbeat's own folder: left as it is", folder)
        return
    os.chmod(folder, PRIVATE_DIR_MODE)


def private_file(path: str | Path) -> None:
    """Leave the file ``path`` 0600 if it exists (one another user could read, made by an older release)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
            os.chmod(path, PRIVATE_FILE_MODE)


def create_private_file(path: str | Path) -> None:
    """Make an empty file at ``path``, 0600, unless one is there (then make it 0600)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        private_file(path)
