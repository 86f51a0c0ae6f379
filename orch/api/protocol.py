"""uvicorn's HTTP/1.1 protocols with a bound on the request head: 431 and the connection closed.

Neither parser uvicorn uses bounds a request's line and headers: httptools (llhttp) accumulates a header
value across reads by concatenation until its end, so one 50 MB header cost every other client 1.6 s and
the process 50 MB, and 200 MB made the API unresponsive. h11 has a bound (``max_incomplete_event_size``)
but none on the number of fields. ASGI middleware runs only after the whole head is parsed, too late; the
bound has to be in the protocol, which sees the bytes as they arrive.

:func:`bounded_protocol` names the subclass of the protocol uvicorn's ``http="auto"`` would pick
(httptools when installed, as ``uvicorn[standard]`` does, else h11). It relies on
uvicorn internals (the parser callbacks, ``send_400_response``, the h11 ``conn`` attribute), which
``tests/test_uvicorn_contract.py`` checks by name so an upgrade that changes them fails loudly.
"""

from __future__ import annotations

import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from orch.api.middleware import SECURITY_HEADERS

try:
    import httptools
except ImportError:  # pragma: no cover - uvicorn[standard] installs it
    httptools = None

STATUS = 431
REASON = b"Request Header Fields Too Large"


def _refusal(detail: str) -> bytes:
    """A complete 431 response that closes the connection (the rest of the head is never read)."""
    body = json.dumps({"detail": detail}).encode()
    security = b"".join(name + b": " + value + b"\r\n" for name, value in SECURITY_HEADERS)
    return (b"HTTP/1.1 431 " + REASON + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n" + security + b"connection: close\r\n\r\n" + body)


DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_HEADER_BYTES = 64 * 1024


class _Limits:
    """The limits, read from uvicorn's config, and their wording, shared by both protocols.

    The limits travel in the config (``h11_max_incomplete_event_size``, uvicorn's own bound on a head, and
    ``max_headers``, set by :class:`orch.api.server.OrchUvicornConfig`) rather than in a class built at run
    time, because uvicorn's worker processes receive the config pickled and the class by name.
    """

    max_header_bytes: int
    max_headers: int

    def _read_limits(self, config: Any) -> None:
        self.max_header_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES
        self.max_headers = getattr(config, "max_headers", DEFAULT_MAX_HEADERS)

    def _size_detail(self) -> str:
        return f"request line and headers larger than {self.max_header_bytes} bytes (api.max_header_bytes)"

    def _count_detail(self) -> str:
        return f"more than {self.max_headers} header fields (api.max_headers)"


class _BoundedH11Connection(h11.Connection):
    """h11's connection, refusing a request with too many header fields as it refuses a too large head."""

    def __init__(self, max_header_bytes: int, max_headers: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.refused: str | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == STATUS:
                self.refused = "size"
            raise
        if isinstance(event, h11.Request):
            # h11's own bound applies to a head still arriving; one that arrived whole is measured here.
            size = len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers)
            if size > self.max_header_bytes:
                self.refused = "size"
            elif len(event.headers) > self.max_headers:
                self.refused = "count"
            if self.refused:
                raise h11.RemoteProtocolError("request head over the limits", error_status_hint=STATUS)
        return event


class BoundedH11Protocol(_Limits, H11Protocol):
    """h11 bounds a head still arriving (``max_incomplete_event_size``); this adds the bound on a head that
    arrived whole and on the field count."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._read_limits(config)
        self.conn = _BoundedH11Connection(self.max_header_bytes, self.max_headers)

    def send_400_response(self, msg: str) -> None:
        refused = getattr(self.conn, "refused", None)
        if refused is None:
            super().send_400_response(msg)
            return
        self.transport.write(_refusal(self._size_detail() if refused == "size" else self._count_detail()))
        self.transport.close()


if httptools is not None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpToolsProtocol(_Limits, HttpToolsProtocol):
        """Counts the head's bytes as they are read (before llhttp accumulates them) and its fields.

        ``_head_open`` is true from a message's first byte until its headers are complete; every read in
        that span counts fully, so the count may include the start of the body in the read that ends the
        head, but is only judged while the head is still open. Each field is also counted exactly in
        ``on_header``, for a head that arrives whole in one read.
        """

        def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            self._read_limits(config)
            self._head_open = True
            self._head_read = 0  # bytes read while the head was open
            self._head_size = 0  # bytes of url, names and values parsed so far
            self._fields = 0
            self._refused: str | None = None

        def data_received(self, data: bytes) -> None:
            if self._head_open:
                self._head_read += len(data)
            super().data_received(data)
            if self._head_open and self._head_read > self.max_header_bytes and self._refused is None:
                self._refuse(self._size_detail())

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_size = self._fields = 0

        def on_url(self, url: bytes) -> None:
            self._head_size += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_size += len(name) + len(value) + 4  # ": " and CRLF
            self._fields += 1
            if self._head_size > self.max_header_bytes:
                self._refused = self._size_detail()
            elif self._fields > self.max_headers:
                self._refused = self._count_detail()
            if self._refused:  # stops the parser; uvicorn then calls send_400_response
                raise httptools.HttpParserError(self._refused)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._head_open = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._head_open, self._head_read = True, 0  # a pipelined request's head may follow

        def send_400_response(self, msg: str) -> None:
            if self._refused is None:
                super().send_400_response(msg)
            else:
                self._refuse(self._refused)

        def _refuse(self, detail: str) -> None:
            self._refused = detail
            self._head_open = False
            self.transport.write(_refusal(detail))
            self.transport.close()


def bounded_protocol(implementation: str = "auto") -> str:
    """uvicorn's ``http=`` for ``auto`` (httptools when installed, as uvicorn picks), ``httptools`` or
    ``h11``: an import path, so that worker processes can load it."""
    if implementation == "auto":
        implementation = "h11" if httptools is None else "httptools"
    name = "BoundedHttpToolsProtocol" if implementation == "httptools" else "BoundedH11Protocol"
    return f"{__name__}:{name}"
