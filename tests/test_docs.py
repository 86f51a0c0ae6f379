"""The README and docs/ hold together: every relative link names a file that exists and its ``#anchor`` a
heading of that file (GitHub's anchor rules), every ``orch`` command they show exists with the options
shown, and the README stays short enough to read in five minutes."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import typer.main

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$")
README_MAX_LINES = 200


def _lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """Each line but the fences themselves, with whether it is inside a fenced code block."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        else:
            yield number, line, fenced


def _lines_outside_code(path: Path) -> list[tuple[int, str]]:
    return [(number, line) for number, line, fenced in _lines(path) if not fenced]


def _slug(heading: str) -> str:
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _lines_outside_code(path):
        match = HEADING.match(line)
        if match:
            slug = _slug(match.group(1))
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_resolves() -> None:
    problems = []
    for page in _pages():
        for number, line in _lines_outside_code(page):
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target):
                    continue  # http:, https:, mailto:
                file, _, anchor = target.partition("#")
                destination = (page.parent / file).resolve() if file else page
                where = f"{page.relative_to(ROOT)}:{number}: {target}"
                if not destination.exists():
                    problems.append(f"{where}: no such file")
                elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
                    problems.append(f"{where}: no such heading")
    assert not problems, "\n".join(problems)


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nope)\n", encoding="utf-8")
    assert _anchors(page) == {"title"}


INLINE_CODE = re.compile(r"(`+)(.+?)\1")
SHELL_SEPARATOR = re.compile(r"&&|\|\||[;|()`]|\$\(")
SHELL_COMMENT = re.compile(r"(?:^|\s)#.*$")
REDIRECT = re.compile(r"^\d*[<>]")
PLACEHOLDER = re.compile(r"^(<.+>|[A-Z][A-Z0-9_]*)$")  # orch <group> --help, orch COMMAND


def _code(path: Path) -> Iterator[tuple[int, str]]:
    """What a page shows as code: each line of a fenced block (one ending in a backslash joined with the
    next) and each inline code span elsewhere."""
    pending = ""
    for number, line, fenced in _lines(path):
        if not fenced:
            yield from ((number, match.group(2)) for match in INLINE_CODE.finditer(line))
        elif line.endswith("\\"):
            pending += line[:-1] + " "
        else:
            yield number, pending + line
            pending = ""


def _orch_words(code: str) -> Iterator[list[str]]:
    """The words after each ``orch`` (or ``.../bin/orch``) a piece of code runs, up to the end of that shell
    command or the next ``orch`` (a table of commands in a code block). An escaped table pipe (``on\\|off``)
    is an alternative, not a pipe; ``-u orch`` is a user."""
    code = SHELL_COMMENT.sub("", code.replace("\\|", "/"))
    for segment in SHELL_SEPARATOR.split(code):
        try:
            words = shlex.split(segment)
        except ValueError:  # an apostrophe in a placeholder
            words = segment.split()
        starts = [index for index, word in enumerate(words) if (word == "orch" or word.endswith("bin/orch"))
                  and words[index - 1:index] not in (["-u"], ["--user"])]
        for start, end in pairwise([*starts, len(words)]):
            command = words[start + 1:end]
            yield command[:next((i for i, word in enumerate(command) if REDIRECT.match(word)), len(command))]


def _options(command: Any) -> dict[str, bool]:
    """Each option name of a Click command, with whether it takes a value."""
    names = {"--help": False}
    for param in command.params:
        if param.param_type_name == "option":
            names.update(dict.fromkeys([*param.opts, *param.secondary_opts], not (param.is_flag or param.count)))
    return names


def _unknown(words: list[str], command: Any) -> str | None:
    """What in ``orch <words>`` the real CLI does not have (a command or an option), else None. Only names
    are checked: values and arguments are mostly placeholders (``TASK_ID``, ``[--limit N]``, ``FILE\\|latest``)."""
    path, takes_value = ["orch"], False
    for word in (raw.strip("[]") for raw in words):
        if takes_value or word in ("", "…", "...", "-"):
            takes_value = False
            continue
        if word.startswith("-"):
            name = word.partition("=")[0]
            if name not in _options(command):
                return f"{' '.join(path)} has no option {name}"
            takes_value = "=" not in word and _options(command)[name]
        elif hasattr(command, "list_commands"):  # a group: the word names one of its commands
            if PLACEHOLDER.match(word):
                return None
            if word not in command.commands:
                return f"{' '.join(path)} has no command {word!r}"
            path.append(word)
            command = command.commands[word]
    return None


def _unknown_commands(page: Path, root: Any) -> tuple[int, list[tuple[int, str]]]:
    """How many ``orch`` commands the page shows, and each that the CLI does not have (line, what)."""
    shown, problems = 0, []
    for number, code in _code(page):
        for words in _orch_words(code):
            shown += 1
            problem = _unknown(words, root)
            if problem:
                problems.append((number, problem))
    return shown, problems


def _orch() -> Any:
    """The real CLI's Click tree (its groups load as they are walked); nothing is run."""
    from orch.cli.main import app

    return typer.main.get_command(app)


def test_every_orch_command_the_docs_show_exists() -> None:
    root, shown, problems = _orch(), 0, []
    for page in _pages():
        count, found = _unknown_commands(page, root)
        shown += count
        problems += [f"{page.relative_to(ROOT)}:{number}: {problem}" for number, problem in found]
    assert not problems, "\n".join(problems)
    assert shown > 150, f"only {shown} orch commands found in the docs: is the checker still finding them?"


def test_a_command_or_option_that_does_not_exist_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("Run `orch tasks frobnicate` or `orch up [-c PATH]`, `orch <group> --help`, "
                    "`orch maintenance mode [on\\|off] [--json]`.\n\n"
                    "```\n"
                    "$ sudo -u orch .venv/bin/orch db init --config /etc/orch.yaml >/tmp/log 2>&1  # orch nope\n"
                    "$ orch tasks list --limit 5 \\\n"
                    "    --frobnicate && orch frobnicate\n"
                    "journalctl -u orch-next-worker | orch logs analyze --log - --since 7d\n"
                    "```\n", encoding="utf-8")
    assert _unknown_commands(page, _orch()) == (8, [(1, "orch tasks has no command 'frobnicate'"),
                                                    (6, "orch tasks list has no option --frobnicate"),
                                                    (6, "orch has no command 'frobnicate'")])


def test_readme_is_short() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"
