"""The command line: --help everywhere, one-line errors with exit code 2, scripted sampling."""

import subprocess
import sys

import pytest

from harness.cli import build_parser, main


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_core_commands_exist():
    assert {"plugins", "models", "sample"} <= set(subcommands())


@pytest.mark.parametrize("name", subcommands())
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage: mimic" in capsys.readouterr().out


def test_usage_error_is_one_line_exit_2(capsys):
    assert main_exit(["sample"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")


def main_exit(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_unknown_backend_is_one_line_exit_2(capsys):
    assert main(["sample", "nosuch:model", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown mimic backend 'nosuch'" in err and "Traceback" not in err


def test_sample_scripted_fixed(capsys):
    assert main(["sample", "scripted:fixed?text=hello world", "x", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("hello world") == 2


def test_sample_escapes_and_json(capsys):
    assert main(["sample", "scripted:echo", r"first\nsecond", "--json"]) == 0
    assert '"text": "second"' in capsys.readouterr().out


def test_sample_rejects_bad_counts(capsys):
    assert main(["sample", "scripted:echo", "x", "-n", "0"]) == 2
    assert "-n must be at least 1" in capsys.readouterr().err


def test_debug_shows_traceback(capsys):
    assert main(["--debug", "sample", "nosuch:model", "hi"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_console_script_runs_as_module():
    result = subprocess.run([sys.executable, "-m", "harness.cli", "models"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "scripted" in result.stdout
