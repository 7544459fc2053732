"""The body of an upload: multipart/form-data encoded as it is sent, the file read a chunk at a time
(requests-toolbelt's ``MultipartEncoder``), never whole in memory.

A request is sent again after a connection refused or a 503 (see :func:`~heartbeat.worker.client.retry_policy`):
urllib3 asks the body's position (``tell``) before sending it and ``seek``\\ s back there before each retry.
"""

from __future__ import annotations

import io
import os
from typing import IO

from requests_toolbelt import MultipartEncoder


class UploadBody:
    """The form ``fields`` and the ``file`` part, from where ``file`` stands to its end.

    ``file`` must be seekable: starting over puts it back where it stood and encodes the form anew with
    the same boundary (the Content-Type header, sent with every try, names it). ``content_type`` and
    ``len`` (bytes) are the request's Content-Type and Content-Length.
    """

    def __init__(self, fields: dict[str, str], filename: str, file: IO[bytes]) -> None:
        self._fields = fields
        self._filename = filename
        self._file = file
        self._start = file.tell()
        self._end = file.seek(0, os.SEEK_END)
        self._position = 0
        self._encoder = self._encoded(boundary=None)
        self.content_type: str = self._encoder.content_type
        self.len: int = self._encoder.len

    def _encoded(self, boundary: str | None) -> MultipartEncoder:
        self._file.seek(self._start)
        part = (self._filename, _Rest(self._file, self._end), "application/octet-stream")
        return MultipartEncoder({**self._fields, "file": part}, boundary=boundary)

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._encoder.read(size)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Start over (the only move a retry makes): ``offset`` 0 from the start."""
        if (offset, whence) != (0, os.SEEK_SET):
            raise io.UnsupportedOperation("an upload's body can only start over")
        self._encoder = self._encoded(boundary=self._encoder.boundary_value)
        self._position = 0
        return 0


class _Rest:
    """The bytes of ``file`` from where it stands to ``end``, read as the encoder asks; ``len`` is how
    many are left (the encoder reads while it is above 0, so a file that ends early ends it too)."""

    def __init__(self, file: IO[bytes], end: int) -> None:
        self._file = file
        self._end = end

    @property
    def len(self) -> int:
        return max(0, self._end - self._file.tell())

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if not data:
            self._end = self._file.tell()
        return data
