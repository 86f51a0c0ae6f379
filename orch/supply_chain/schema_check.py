"""CycloneDX 1.6 JSON schema validation that is fast and works offline.

cyclonedx-python-lib's validator is correct but spends ~95 % of its time (10 of the 11 s REFERENCE.md
measured) checking the ``iri-reference`` format with an Earley parser built from the RFC 3987 grammar,
once per URL. Here a URL that is a valid RFC 3986 URI-reference (plain ASCII; the common case) is
accepted by one compiled regular expression - every URI-reference is an IRI-reference, so this never
accepts anything the exact check would refuse - and only what the regex does not accept (non-ASCII,
IP literals, invalid strings) goes to the exact grammar. Verdicts are memoised per string. Compiling
that grammar costs 1.4 s, and jsonschema does it on import; :func:`orch.lean_imports.without_iri_grammar`
defers it to the first URL that needs it (usually never). The schema
and the referenced SPDX, JSF and cryptography-definition schemas are the copies shipped inside
cyclonedx-python-lib, registered under their ``$id`` URLs, so no reference ever reaches the network.
The compiled validator is built once per process.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from orch.lean_imports import without_iri_grammar

_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_SEGMENT = rf"{_PCHAR}*"
_SEGMENT_NZ = rf"{_PCHAR}+"
_SEGMENT_NZ_NC = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}@]|{_PCT})+"
_USERINFO = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*"
_REG_NAME = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*"  # also matches every IPv4 address
_AUTHORITY = rf"(?:{_USERINFO}@)?{_REG_NAME}(?::[0-9]*)?"
_PATH_ABEMPTY = rf"(?:/{_SEGMENT})*"
_PATH_ABSOLUTE = rf"/(?:{_SEGMENT_NZ}(?:/{_SEGMENT})*)?"
_PATH_ROOTLESS = rf"{_SEGMENT_NZ}(?:/{_SEGMENT})*"
_PATH_NOSCHEME = rf"{_SEGMENT_NZ_NC}(?:/{_SEGMENT})*"
_QUERY = rf"(?:{_PCHAR}|[/?])*"  # the fragment has the same grammar
_URI = (rf"[A-Za-z][A-Za-z0-9+\-.]*:(?://{_AUTHORITY}{_PATH_ABEMPTY}|{_PATH_ABSOLUTE}|{_PATH_ROOTLESS}|)"
        rf"(?:\?{_QUERY})?(?:#{_QUERY})?")
_RELATIVE_REF = (rf"(?://{_AUTHORITY}{_PATH_ABEMPTY}|{_PATH_ABSOLUTE}|{_PATH_NOSCHEME}|)"
                 rf"(?:\?{_QUERY})?(?:#{_QUERY})?")
URI_REFERENCE = re.compile(rf"(?:{_URI}|{_RELATIVE_REF})")


@lru_cache(maxsize=65536)
def is_iri_reference(value: str) -> bool:
    """RFC 3987 IRI-reference: the regex fast path, else the exact grammar jsonschema uses."""
    if URI_REFERENCE.fullmatch(value):
        return True
    from rfc3987_syntax import is_valid_syntax

    return bool(is_valid_syntax("iri_reference", value))


@lru_cache(maxsize=65536)
def is_iri(value: str) -> bool:
    """RFC 3987 IRI (absolute, with a scheme): the same fast path and fallback."""
    if URI_REFERENCE.fullmatch(value) and re.match(r"[A-Za-z][A-Za-z0-9+\-.]*:", value):
        return True
    from rfc3987_syntax import is_valid_syntax

    return bool(is_valid_syntax("iri", value))


@lru_cache(maxsize=4)
def validator(version: str = "1.6", strict: bool = True) -> Any:
    """A compiled Draft 7 validator for the CycloneDX ``version`` schema, resolving refs locally."""
    without_iri_grammar()
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.schema._res import BOM_JSON, BOM_JSON_STRICT, CRYPTOGRAPHY_DEFS, JSF, SPDX_JSON
    from jsonschema import FormatChecker
    from jsonschema.validators import Draft7Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT7

    schema_version = SchemaVersion.from_version(version)
    schema_file = (BOM_JSON_STRICT if strict else BOM_JSON)[schema_version]
    prefix = "http://cyclonedx.org/schema/"
    resources = []
    for name, path in (("spdx.SNAPSHOT.schema.json", SPDX_JSON), ("jsf-0.82.SNAPSHOT.schema.json", JSF),
                       ("cryptography-defs.SNAPSHOT.schema.json", CRYPTOGRAPHY_DEFS)):
        with open(path, encoding="utf-8") as handle:
            resources.append((prefix + name, DRAFT7.create_resource(json.load(handle))))
    checker = FormatChecker()
    checker.checkers = dict(Draft7Validator.FORMAT_CHECKER.checkers)
    checker.checks("iri-reference")(is_iri_reference)
    checker.checks("iri")(is_iri)
    with open(schema_file, encoding="utf-8") as handle:
        schema = json.load(handle)
    return Draft7Validator(schema, registry=Registry().with_resources(resources), format_checker=checker)


def schema_errors(document: dict[str, Any], version: str = "1.6", limit: int = 10) -> list[str]:
    """Every way ``document`` breaks the CycloneDX schema (at most ``limit``), as ``path: message`` lines."""
    errors = []
    for error in validator(version).iter_errors(document):
        where = "/".join(str(part) for part in error.absolute_path) or "(document)"
        errors.append(f"{where}: {error.message[:300]}")
        if len(errors) >= limit:
            break
    return errors
