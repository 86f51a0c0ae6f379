"""The configuration reference, generated from the schema: every key with its type, default, environment
variables and description, so the page cannot drift from what the code accepts.

``python -m orch.config.reference > docs/configuration-reference.md`` writes it; tests/test_config_reference.py
fails when the committed page differs.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from orch.config.schema import Settings
from orch.config.sources import ENV_ALIASES

PAGE = "docs/configuration-reference.md"
COMMAND = f"python -m orch.config.reference > {PAGE}"

_INTRO = f"""# Configuration reference

<!-- Generated from the schema (orch/config/) by `{COMMAND}`: edit the descriptions there, not this page. -->

Every key ORCH's configuration accepts, generated from the schema's descriptions. How the YAML file, the
environment and the defaults combine, interpolation and generated secrets: [configuration.md](configuration.md).

A key is written in the YAML file at its path (`security.rate_limit.burst_size` is `burst_size` under
`rate_limit` under `security`) or set with an environment variable of its row, listed in the order they win
(`ORCH_<SECTION>__<KEY>` first). A list or mapping in an environment variable is YAML
(`ORCH_API__CORS_ORIGINS='[https://ops.example.com]'`). A key that is *unset* has no value; its description
says what that means. Sizes take bytes or a string such as `100MB`.
"""


def render() -> str:
    """The whole reference page, in Markdown."""
    parts = [_INTRO]
    for title, text, model, path in _sections():
        parts.append(f"\n## {title}\n")
        if text:
            parts.append(f"\n{text}\n")
        parts.append("\n" + _table(model, path))
    return "".join(parts)


def undocumented() -> list[str]:
    """Keys without a description and section models without a docstring: the reference needs both."""
    missing = []
    for _, _, model, path in _sections():
        if not model.__dict__.get("__doc__"):
            missing.append(f"{'.'.join(path) or 'Settings'} ({model.__name__}): no docstring")
        for name, field in model.model_fields.items():
            if not field.description and _section_of(field.annotation) is None:
                missing.append(".".join([*path, name]) + ": no description")
    return missing


def _sections() -> Iterator[tuple[str, str, type[BaseModel], list[str]]]:
    """(heading, text, model, key path) for the top level, then every section depth first."""
    yield "Top level", "", Settings, []
    yield from _subsections(Settings, [])


def _subsections(model: type[BaseModel], path: list[str]) -> Iterator[tuple[str, str, type[BaseModel], list[str]]]:
    for name, field in model.model_fields.items():
        found = _section_of(field.annotation)
        if found is None:
            continue
        section, shape = found
        sub = [*path, name + ("[]" if shape == "list" else ".<id>" if shape == "dict" else "")]
        text = field.description or _docstring(section)
        if shape == "list":
            text += " A list: each entry has the keys below."
        elif shape == "dict":
            text += " A mapping from an id of your choice to the keys below."
        yield f"`{'.'.join(sub)}`", text.strip(), section, sub
        yield from _subsections(section, sub)


def _section_of(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The model a field holds and how (``model``, ``list`` of them, ``dict`` of them), or None for a value."""
    annotation = _unwrap(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, "model"
    if origin is list and args and _is_model(args[0]):
        return args[0], "list"
    if origin is dict and len(args) == 2 and _is_model(args[1]):
        return args[1], "dict"
    return None


def _table(model: type[BaseModel], path: list[str]) -> str:
    rows = ["| key | type | default | environment | description |", "| --- | --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        if _section_of(field.annotation) is not None:
            continue
        key_path = [*path, name]
        cells = [f"`{name}`", _type(field), _default(field), _environment(key_path), field.description or ""]
        rows.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def _type(field: FieldInfo) -> str:
    words = [_type_name(_unwrap(field.annotation))]
    for item in field.metadata:
        for kind, bound, sign in ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", "≥"),
                                  (annotated_types.Lt, "lt", "<"), (annotated_types.Le, "le", "≤")):
            if isinstance(item, kind):
                words.append(f"{sign} {getattr(item, bound)}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            words.append(f"matching `{pattern}`")
    return ", ".join(words)


def _type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if origin is list:
        item = _unwrap(args[0])
        if get_origin(item) is Literal:
            return "list of " + ", ".join(f"`{value}`" for value in get_args(item))
        return f"list of {_type_name(item)}"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(_unwrap(args[1]))}"
    names = {bool: "bool", int: "integer", float: "number", str: "string", SecretStr: "secret string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    factory = field.default_factory
    if factory is not None and inspect.isfunction(factory) and factory.__doc__:
        return inspect.cleandoc(factory.__doc__).rstrip(".")  # computed where it runs, e.g. the hostname
    if factory is None and field.default is PydanticUndefined:
        return "required"
    value = factory() if factory is not None else field.default  # type: ignore[call-arg]
    return "unset" if value is None else f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_yaml(item)}" for key, item in value.items()) + "}"
    if isinstance(value, str) and (value == "" or value[:1] in "#[{*&!|>'\"%@`"):
        return repr(value)
    return str(value)


def _environment(key_path: list[str]) -> str:
    if any(part.endswith("[]") for part in key_path):
        return "–"  # a list entry: only the whole list can be set
    name = "ORCH_" + "__".join(part.replace(".<id>", "__<ID>") for part in key_path).upper()
    aliases = [alias for alias, path in ENV_ALIASES if path == ".".join(key_path)]
    return ", ".join(f"`{n}`" for n in [name, *reversed(aliases)])  # the ones that win first


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` are ``X`` here: unset is shown as the default, checks as the type."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            rest = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _docstring(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__")
    return " ".join(inspect.cleandoc(doc).replace("``", "`").split()) if doc else ""


if __name__ == "__main__":
    sys.stdout.write(render())
