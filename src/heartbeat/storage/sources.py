"""Where ``heartbeat import`` reads objects from: a prefix of a bucket on the server's S3 store, or,
with local storage, a folder.

A folder is read as a tree nobody vouches for. Only regular files inside it are objects: a symbolic
link (to a file or a folder, inside or outside, dangling or looping), a FIFO, a socket or a device is
:class:`Skipped` with its reason, never followed nor opened. The tree is walked with ``scandir`` on
folder descriptors (each folder opened relative to its parent with ``O_NOFOLLOW``), and a file is
opened the same way with ``O_NOFOLLOW | O_NONBLOCK`` and taken only when ``fstat`` says it is a
regular file: an entry swapped for a FIFO or a link between the listing and the read neither hangs
the import nor leads it out of the folder. What is linked into the store is checked to be the very
file that was read (else its bytes are copied from the open file).

Neither kind takes Heartbeat's own objects (the store's images, thumbnails and direct uploads,
``OWN_PREFIXES``) for pictures: they are :class:`Skipped` as ``OWN_OBJECT``, whatever the prefix or
folder named.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from heartbeat.config import SettingError
from heartbeat.errors import NotFound
from heartbeat.storage.base import Storage, StoredObject
from heartbeat.storage.local import LocalStorage
from heartbeat.storage.s3 import LOCATOR_SCHEME, S3Storage, object_locator

# The key prefixes Heartbeat writes in its store; anything else in a shared bucket is the user's.
OWN_PREFIXES = ("images/", "thumbnails/", "uploads/")
OWN_OBJECT = "one of Heartbeat's own objects (an image, thumbnail or upload of its store)"

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclasses.dataclass(frozen=True)
class Skipped:
    """An entry of a source that is no object to read: its key, and why (shown to the user).
    ``unreadable``: it is there but could not be read (a folder's key ends in ``/``): what was
    recorded of it, or under it, is not gone."""

    key: str
    reason: str
    unreadable: bool = False


class NotAFile(Exception):
    """The entry is not (or no longer) a regular file inside the folder; the message says what it is."""


class Unreadable(Exception):
    """The file is there but cannot be opened (no permission, an I/O error); the message says why."""


class Source(Protocol):
    """Where an import reads objects from, and how their bytes become the store's."""

    name: str  # what its records are kept under: s3://BUCKET/PREFIX, or the folder's absolute path

    def list(self) -> Iterator[StoredObject | Skipped]:
        """Every entry of the source; the keys of objects are what :meth:`open` and :meth:`place` take."""

    def open(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """The object's bytes; :class:`NotFound` when it is gone, :class:`NotAFile` when it is no
        longer a regular file."""

    def placed_key(self, key: str, image_key: str) -> str:
        """The storage key the object will have as the bytes of a new image whose own key would be ``image_key``."""

    def place(self, key: str, opened: BinaryIO, storage_key: str) -> bool:
        """Make the object (``opened``, as :meth:`open` gave it) the bytes at ``storage_key``
        (:meth:`placed_key`); whether the store owns that object (and removes it should the image lose)."""


def text_of(name: str) -> str:
    """A name from the file system as text that can be stored: bytes that are not UTF-8 (kept by
    Python as lone surrogates) written as ``\\xNN``. Valid Unicode is returned as it is."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def filename_of(key: str) -> str:
    """The name of an object without its folders, bytes that are not UTF-8 as U+FFFD (the image's ``filename``)."""
    return key.rpartition("/")[2].encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class BucketSource:
    """Objects under a prefix of a bucket on the server's S3 store, registered where they lie."""

    def __init__(self, storage: S3Storage, bucket: str, prefix: str):
        self.name = f"{LOCATOR_SCHEME}{bucket}/{prefix}"
        self._storage = storage
        self._prefix = object_locator(bucket, prefix)
        # The store's own bucket: its images, thumbnails and uploads are Heartbeat's.
        self._own = object_locator(bucket, "") if bucket == storage.bucket else None

    def list(self) -> Iterator[StoredObject | Skipped]:
        for stored in self._storage.list_objects(self._prefix):
            if self._own is not None and stored.key.removeprefix(self._own).startswith(OWN_PREFIXES):
                yield Skipped(stored.key, OWN_OBJECT)
            else:
                yield stored

    def open(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._storage.open(key)

    def placed_key(self, key: str, image_key: str) -> str:
        return key  # where it lies

    def place(self, key: str, opened: BinaryIO, storage_key: str) -> bool:
        return False


class FolderSource:
    """Regular files of a local folder, hard-linked (else copied) into the local store."""

    def __init__(self, storage: LocalStorage, folder: Path):
        self.name = text_of(str(folder))
        self._storage = storage
        self._folder = folder
        self._store_root = _identity(os.stat(storage.root))

    def list(self) -> Iterator[StoredObject | Skipped]:
        """Depth first, one folder descriptor open for each level."""
        top = os.open(self._folder, FOLDER_FLAGS & ~os.O_NOFOLLOW)  # SOURCE itself may be a link: the user named it
        levels: list[tuple[int, Iterator[os.DirEntry[str]], str, str | None]] = []
        try:
            levels.append((top, os.scandir(top), "", self._path_in_store()))
        except BaseException:
            os.close(top)
            raise
        try:
            while levels:
                folder, entries, prefix, in_store = levels[-1]
                entry = next(entries, None)
                if entry is None:
                    levels.pop()
                    _close(folder, entries)
                    continue
                key = prefix + entry.name
                try:
                    status = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed meanwhile
                    continue
                except OSError as error:
                    yield Skipped(key, f"cannot be read: {error.strerror}", unreadable=True)
                    continue
                if stat.S_ISDIR(status.st_mode):
                    inside = "" if _identity(status) == self._store_root else _below(in_store, entry.name)
                    opened = _open_folder(folder, entry.name)
                    if isinstance(opened, Skipped):
                        yield Skipped(key + "/", opened.reason, unreadable=True)
                    else:
                        levels.append((opened[0], opened[1], key + "/", inside))
                elif not stat.S_ISREG(status.st_mode):
                    yield Skipped(key, _what(status.st_mode))
                elif in_store is not None and (in_store + entry.name).startswith(OWN_PREFIXES):
                    yield Skipped(key, OWN_OBJECT)
                else:
                    yield StoredObject(key, status.st_size, status.st_mtime, etag=str(status.st_mtime_ns))
        finally:
            for folder, entries, _prefix, _inside in levels:
                _close(folder, entries)

    def _path_in_store(self) -> str | None:
        """The folder's path under the store's root (``""`` for the root, ``"a/b/"`` below it), or None
        when it is not inside the store: the root is found among its parents by identity, not by name."""
        for depth, parent in enumerate([self._folder, *self._folder.parents]):
            try:
                if _identity(os.stat(parent)) == self._store_root:
                    return "".join(f"{part}/" for part in self._folder.parts[len(self._folder.parts) - depth :])
            except OSError:
                continue
        return None

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        with os.fdopen(self._open_file(key), "rb") as stream:
            yield stream

    def _open_file(self, key: str) -> int:
        """A descriptor of the regular file ``key``, reached from the folder one name at a time, no link
        followed; :class:`NotFound` when it is gone, :class:`NotAFile` when it is something else now."""
        *folders, name = key.split("/")
        parent = os.open(self._folder, FOLDER_FLAGS & ~os.O_NOFOLLOW)
        try:
            for part in folders:
                inner = os.open(part, FOLDER_FLAGS, dir_fd=parent)
                os.close(parent)
                parent = inner
            opened = os.open(name, FILE_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            raise NotFound(f"{text_of(key)} is gone") from None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise NotAFile("a symbolic link, or a folder on its path became one: not followed") from None
            if error.errno == errno.ENXIO:
                raise NotAFile("a socket, not a file") from None
            raise Unreadable(f"cannot be read: {error.strerror}") from None
        finally:
            os.close(parent)
        status = os.fstat(opened)
        if not stat.S_ISREG(status.st_mode):
            os.close(opened)
            raise NotAFile(_what(status.st_mode))
        os.set_blocking(opened, True)
        return opened

    def placed_key(self, key: str, image_key: str) -> str:
        return image_key

    def place(self, key: str, opened: BinaryIO, storage_key: str) -> bool:
        self._storage.link_file(storage_key, self._folder / key, opened)
        return True


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _below(in_store: str | None, name: str) -> str | None:
    return None if in_store is None else f"{in_store}{name}/"


def _open_folder(parent: int, name: str) -> tuple[int, Iterator[os.DirEntry[str]]] | Skipped:
    """The subfolder ``name`` of ``parent``, not through a link, and its entries; or why it cannot be read."""
    try:
        folder = os.open(name, FOLDER_FLAGS, dir_fd=parent)
    except OSError as error:
        return Skipped(name, f"a folder that cannot be read: {error.strerror}")
    try:
        return folder, os.scandir(folder)
    except OSError as error:
        os.close(folder)
        return Skipped(name, f"a folder that cannot be read: {error.strerror}")


def _close(folder: int, entries: Iterator[os.DirEntry[str]]) -> None:
    entries.close()  # type: ignore[attr-defined]  # a ScandirIterator
    os.close(folder)


def _what(mode: int) -> str:
    """What an entry that is no regular file is, for the list of skipped ones."""
    if stat.S_ISLNK(mode):
        return "a symbolic link: not followed"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a file"
    return "not a regular file"


def open_source(text: str, storage: Storage) -> Source:
    """The source ``text`` names on ``storage`` (checked first by :func:`check_source`); :class:`SettingError`
    naming SOURCE when its bucket does not exist, or it is not of the storage's kind."""
    if text.startswith(LOCATOR_SCHEME) and isinstance(storage, S3Storage):
        bucket, _, prefix = text.removeprefix(LOCATOR_SCHEME).partition("/")
        try:
            exists = bool(bucket) and storage.bucket_exists(bucket)
        except ValueError as error:  # the S3 client's refusal of a name no bucket can have
            raise SettingError(f"SOURCE {text}: {error}") from None
        if not exists:
            raise SettingError(f"SOURCE {text}: the S3 store has no bucket {bucket!r}")
        return BucketSource(storage, bucket, prefix)
    if isinstance(storage, LocalStorage) and "://" not in text:
        return FolderSource(storage, Path(text).resolve())
    raise SettingError(f"SOURCE {text}: not a source of this storage")
