"""The `edgecvm` entry point: --help without importing the commands, one-line errors for missing extras."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from edgecvm import cli


def test_top_level_help_lists_every_command_without_importing_any() -> None:
    probe = ("import sys\nfrom edgecvm.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith('edgecvm.') or m in ('numpy', 'onnxruntime')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert all(f"    {name}" in done.stdout for name in cli.COMMANDS)
    assert done.stdout.strip().splitlines()[-1] == "['edgecvm.cli', 'edgecvm.errors']"


def test_each_command_module_registers_the_help_line_the_top_level_shows() -> None:
    for name, (_module, help_line) in cli.COMMANDS.items():
        parser = cli.build_parser([name])
        sub = next(a for a in parser._actions if a.dest == "command")
        (choice,) = [c for c in sub._choices_actions if c.dest == name]
        assert choice.help == help_line, name


@pytest.mark.parametrize(("missing", "extra"), [("matplotlib", "plots"), ("cv2", "camera"), ("torch", "export")])
def test_a_missing_extra_is_one_line_naming_it(monkeypatch, capsys, missing: str, extra: str) -> None:
    def register(sub) -> None:
        def run(_args) -> int:
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

        sub.add_parser("fake").set_defaults(func=run)

    monkeypatch.setitem(sys.modules, "edgecvm_fake_command", types.SimpleNamespace(register=register))
    monkeypatch.setitem(cli.COMMANDS, "fake", ("edgecvm_fake_command", "a command whose extra is missing"))
    assert cli.main(["fake"]) == 2
    err = capsys.readouterr().err
    assert err == (f"edgecvm: error: `edgecvm fake` needs the Python module {missing!r}, which is not installed: "
                   f"pip install 'edgecvm[{extra}]'\n")
