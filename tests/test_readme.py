"""README.md stays honest: its command lines parse and its links lead somewhere.

Every ``edgecvm ...`` line in a shell or plain code block goes through the real
parser (subcommand and flags only: nothing is opened or run), so a renamed flag
or command fails here before a newcomer types it. The Python example is run by
tests/install/test_device_install.py against an installed wheel.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from edgecvm.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL_BLOCKS = {"", "sh", "bash", "shell", "console", "text"}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1).strip(), m.group(2)) for m in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, re.M | re.S)]


def edgecvm_commands(text: str) -> list[list[str]]:
    """argv (without the program name) of every `edgecvm ...` line in the shell blocks."""
    commands = []
    for language, body in code_blocks(text):
        if language not in SHELL_BLOCKS:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            words = shlex.split(line, comments=True)
            if words and words[0] == "edgecvm":
                commands.append(words[1:])
    return commands


COMMANDS = edgecvm_commands(README.read_text(encoding="utf-8"))


def test_readme_has_commands() -> None:
    assert len(COMMANDS) >= 5, COMMANDS


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_command_parses(argv: list[str]) -> None:
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`edgecvm {' '.join(argv)}` does not parse (exit {exc.code})")
    assert args.command == argv[0]


def test_continuation_lines_are_joined() -> None:
    text = "```sh\nedgecvm learn --bundle B \\\n    --stream camera0 --state S  # note\n```\n"
    assert edgecvm_commands(text) == [["learn", "--bundle", "B", "--stream", "camera0", "--state", "S"]]


def relative_links(text: str) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    return sorted({t.split("#")[0] for t in targets if not re.match(r"[a-z]+:|#", t)} - {""})


def test_relative_links_exist() -> None:
    links = relative_links(README.read_text(encoding="utf-8"))
    assert links, "README.md links to no file"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_python_example_is_marked() -> None:
    text = README.read_text(encoding="utf-8")
    marker = text.index("<!-- tested: python-api -->")
    assert text[marker:].split("\n", 1)[1].startswith("```python\n")
