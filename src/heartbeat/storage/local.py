"""Image files in a local folder, handed out through the API's own HMAC-signed URLs."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import hmac
import mimetypes
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode

from heartbeat.errors import BackendUnavailable, Forbidden, NotFound
from heartbeat.private_files import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, private_dir
from heartbeat.storage.base import ObjectInfo, SignedUrl, StoredObject

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_./-]{0,254}$")


def load_or_create_secret(path: Path) -> bytes:
    """The signing secret, made once and kept beside the data so that URLs survive restarts."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    private_dir(path.parent)
    secret = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


class LocalStorage:
    """Files under ``root``, written to a temporary name and renamed into place."""

    def __init__(self, root: Path, *, secret: bytes, clock: Callable[[], float]):
        self._root = Path(root).resolve()
        private_dir(self._root)  # pictures of people: no other user of the machine reads them
        self._root_text = str(self._root)
        self._secret = secret
        self._clock = clock

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def _file(self, key: str) -> str:
        """The file of ``key`` (a plain string: every download of a signed URL comes here, and pathlib
        cost more than the rest of the lookup)."""
        if not KEY_PATTERN.match(key) or ".." in key.split("/"):
            raise NotFound("no such object")
        return os.path.join(self._root_text, key)

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        target = self._path(key)
        os.chmod(path, PRIVATE_FILE_MODE)  # a thumbnail is written by Pillow, as the umask says
        try:
            self._move(path, target)
        except FileNotFoundError:
            # Its folder is made when a file first needs it: a mkdir of a folder that exists cost an
            # upload more than the rename itself.
            target.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            self._move(path, target)

    @property
    def root(self) -> Path:
        """The folder the objects are kept in (absolute, links resolved)."""
        return self._root

    def link_file(self, key: str, source: Path, opened: BinaryIO) -> None:
        """Store the file at ``source``, open as ``opened``, under ``key`` as a hard link (the same
        bytes, no copy), or as a copy of ``opened`` where it cannot be linked (another file system, or
        one without links). ``source`` stays. What is linked is checked to be the file ``opened`` (not a
        symbolic link, nor a file put at its path since it was opened): else the bytes are copied."""
        target = self._path(key)
        target.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        wanted = os.fstat(opened.fileno())
        try:
            os.link(source, target, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            pass  # EXDEV, EPERM, ENOTSUP, ENAMETOOLONG...: copied below
        else:
            linked = os.stat(target, follow_symlinks=False)
            if (linked.st_dev, linked.st_ino) == (wanted.st_dev, wanted.st_ino):
                return
            target.unlink()  # another file than the one read: ours to remove, and copied below
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                opened.seek(0)
                shutil.copyfileobj(opened, out, 1024 * 1024)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @staticmethod
    def _move(path: Path, target: Path) -> None:
        """``path`` to ``target``: renamed, or copied (and synced) then renamed across file systems."""
        try:
            os.replace(path, target)
            return
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
                shutil.copyfileobj(source, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _signature(self, method: str, key: str, expires: str) -> str:
        message = f"{method}\n{key}\n{expires}".encode()
        return hmac.digest(self._secret, message, hashlib.sha256).hex()

    def _sign(self, method: str, key: str, expires_seconds: int, base_url: str) -> SignedUrl:
        expires_at = int(self._clock()) + expires_seconds
        signature = self._signature(method, key, str(expires_at))
        query = urlencode({"expires": expires_at, "signature": signature})
        return SignedUrl(f"{base_url.rstrip('/')}/{quote(key)}?{query}", expires_at)

    def _verify(self, method: str, key: str, expires: str, signature: str) -> None:
        expected = self._signature(method, key, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()) or not expires.isdigit():
            raise Forbidden("the URL's signature is not valid")
        if int(expires) < self._clock():
            raise Forbidden("this URL has expired")

    def presigned_get(self, key: str, *, expires_seconds: int, base_url: str) -> SignedUrl:
        return self._sign("GET", key, expires_seconds, base_url)

    def presigned_put(self, key: str, *, expires_seconds: int, base_url: str) -> SignedUrl:
        return self._sign("PUT", key, expires_seconds, base_url)

    def open_signed(self, key: str, expires: str, signature: str) -> tuple[BinaryIO, ObjectInfo]:
        self._verify("GET", key, expires, signature)
        stream, size = _open_regular(self._file(key), "the object is missing from storage")
        return stream, ObjectInfo(size, _content_type(key))

    def authorize_put(self, key: str, expires: str, signature: str) -> None:
        self._verify("PUT", key, expires, signature)
        self._path(key)

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        stream, _size = _open_regular(self._file(key), f"object {key} is missing from storage")
        with stream:
            yield stream

    def list_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        # Temporary files of writes in flight (or cut short by a crash) are listed too: a crash
        # leaves them behind, and `heartbeat check` should find them.
        # Only the folder the prefix names is walked: listing uploads/ must not read all of images/.
        start = self._root / prefix.rpartition("/")[0]
        for folder, _dirs, files in os.walk(start):
            for name in files:
                path = Path(folder, name)
                key = path.relative_to(self._root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    status = path.stat(follow_symlinks=False)
                except FileNotFoundError:  # renamed or removed meanwhile
                    continue
                if stat.S_ISREG(status.st_mode):  # a link is no object (open and stat refuse it too)
                    yield StoredObject(key, status.st_size, status.st_mtime)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            status = os.stat(self._file(key), follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(status.st_mode):
            return None  # a link or anything else is no object of ours (open refuses it too)
        return ObjectInfo(status.st_size, _content_type(key))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.delete(key)

    def check(self) -> None:
        if not os.access(self._root, os.W_OK):
            raise BackendUnavailable(f"storage folder {self._root} is not writable")


def _open_regular(path: str, missing: str) -> tuple[BinaryIO, int]:
    """The regular file at ``path`` and its size. A symbolic link there is not followed and anything
    but a regular file is not opened for reading (a FIFO would hang): both are :class:`NotFound`
    (``missing``), as a file that is not there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(missing) from None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENXIO):
            raise NotFound(missing) from None
        raise
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise NotFound(missing)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), status.st_size


def _content_type(key: str) -> str:
    return _content_type_of_extension(os.path.splitext(key)[1])


@functools.lru_cache(maxsize=64)
def _content_type_of_extension(extension: str) -> str:
    return mimetypes.guess_type(f"object{extension}")[0] or "application/octet-stream"
