"""The parts of uvicorn (and its parsers) :mod:`orch.api.protocol` and :mod:`orch.api.server` rely on,
checked by name.

The bounded protocols subclass uvicorn's httptools and h11 protocols and override parser callbacks and
``send_400_response``, which are not public API. ``tests/test_api_boundary.py`` would fail on an upgrade
that changes them too, but as a timeout or a 50 MB header accepted; these fail with the name of what
changed, so ``make lock UPGRADE=uvicorn`` tells at once whether the protocols need work.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest


def _resolve(dotted: str) -> Any:
    module_name, _, attribute_path = dotted.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.fail(f"uvicorn contract: module {module_name} is gone ({exc})")
    for part in attribute_path.split(".") if attribute_path else ():
        if not hasattr(found, part):
            pytest.fail(f"uvicorn contract: {dotted} is gone (no attribute {part!r})")
        found = getattr(found, part)
    return found


# (what, the parameters ORCH's override or call relies on, excluding self)
METHODS = [
    ("uvicorn.protocols.http.httptools_impl:HttpToolsProtocol.__init__", ["config", "server_state", "app_state"]),
    ("uvicorn.protocols.http.httptools_impl:HttpToolsProtocol.data_received", ["data"]),
    ("uvicorn.protocols.http.httptools_impl:HttpToolsProtocol.on_message_begin", []),
    ("uvicorn.protocols.http.httptools_impl:HttpToolsProtocol.on_url", ["url"]),
    ("uvicorn.protocols.http.httptools_impl:HttpToolsProtocol.on_header", ["name", "value"]),
    ("uvicorn.protocols.http.httptools_impl:HttpToolsProtocol.on_headers_complete", []),
    ("uvicorn.protocols.http.httptools_impl:HttpToolsProtocol.on_message_complete", []),
    ("uvicorn.protocols.http.httptools_impl:HttpToolsProtocol.send_400_response", ["msg"]),
    ("uvicorn.protocols.http.h11_impl:H11Protocol.__init__", ["config", "server_state", "app_state"]),
    ("uvicorn.protocols.http.h11_impl:H11Protocol.send_400_response", ["msg"]),
    ("h11:Connection.__init__", ["our_role", "max_incomplete_event_size"]),
    ("h11:Connection.next_event", []),
    ("uvicorn.middleware.proxy_headers:ProxyHeadersMiddleware.__init__", ["app", "trusted_hosts"]),
]


@pytest.mark.parametrize(("dotted", "names"), METHODS, ids=[m[0].split(":")[1] for m in METHODS])
def test_the_methods_orch_overrides_or_calls_keep_their_shape(dotted: str, names: list[str]) -> None:
    function = _resolve(dotted)
    assert callable(function), f"uvicorn contract: {dotted} is no longer callable"
    parameters = [name for name in inspect.signature(function).parameters if name != "self"]
    missing = [name for name in names if name not in parameters]
    assert not missing, f"uvicorn contract: {dotted} no longer takes {missing} (it takes {parameters})"


def test_a_parser_error_reaches_send_400_response() -> None:
    """Both protocols answer a parser error through ``send_400_response``, which the bounded protocols
    turn into a 431; the httptools one raises from ``on_header``, which httptools must wrap in an
    ``HttpParserError`` that uvicorn's ``data_received`` catches."""
    import h11
    import httptools
    from uvicorn.protocols.http import h11_impl, httptools_impl

    httptools_source = inspect.getsource(httptools_impl.HttpToolsProtocol.data_received)
    assert "except httptools.HttpParserError" in httptools_source and "self.send_400_response(" in httptools_source, \
        "uvicorn contract: HttpToolsProtocol.data_received no longer answers parser errors with send_400_response"
    h11_source = inspect.getsource(h11_impl.H11Protocol.handle_events)
    assert "except h11.RemoteProtocolError" in h11_source and "self.send_400_response(" in h11_source, \
        "uvicorn contract: H11Protocol.handle_events no longer answers protocol errors with send_400_response"
    assert "self.conn = h11.Connection(" in inspect.getsource(h11_impl.H11Protocol.__init__), \
        "uvicorn contract: H11Protocol no longer keeps its h11 connection in self.conn"

    class Refusing:
        def on_header(self, name: bytes, value: bytes) -> None:
            raise httptools.HttpParserError("too large")

    with pytest.raises(httptools.HttpParserError):
        httptools.HttpRequestParser(Refusing()).feed_data(b"GET / HTTP/1.1\r\nX: 1\r\n\r\n")
    assert "error_status_hint" in inspect.signature(h11.RemoteProtocolError).parameters, \
        "uvicorn contract: h11.RemoteProtocolError no longer takes error_status_hint"


def test_uvicorn_still_picks_httptools_when_installed_and_takes_the_options_orch_passes() -> None:
    """``bounded_protocol("auto")`` mirrors uvicorn's own choice; the config options ORCH sets exist."""
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from orch.api.protocol import BoundedHttpToolsProtocol, bounded_protocol

    assert AutoHTTPProtocol is HttpToolsProtocol, "uvicorn contract: http='auto' no longer picks httptools"
    assert bounded_protocol() == "orch.api.protocol:BoundedHttpToolsProtocol"
    assert issubclass(BoundedHttpToolsProtocol, HttpToolsProtocol)
    options = inspect.signature(uvicorn.Config).parameters
    missing = {"http", "proxy_headers", "h11_max_incomplete_event_size", "server_header"} - set(options)
    assert not missing, f"uvicorn contract: uvicorn.Config no longer takes {sorted(missing)}"
    config = uvicorn.Config(lambda: None, http=bounded_protocol(), h11_max_incomplete_event_size=1234)
    assert config.h11_max_incomplete_event_size == 1234  # read back by the bounded protocols
