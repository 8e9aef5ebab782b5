"""Every numeric option of every command, fed what a hostile user would type: the run stops at the parser
with exit status 2 and one line that names the flag, before any work is done."""
import argparse

import pytest

from mobileunet.cli import build_parser, main
from mobileunet.commands import args as types

NUMERIC = {types.whole_number, types.positive_int, types.nonneg_int, types.seed, types.finite_float,
           types.fraction, types.nonneg_float, types.positive_float, types.threads, types.edge_shift}
ALWAYS_BAD = ["nan", "inf", "-inf", "1e309", "abc", "", "0x10"]
REQUIRED = {"train": ["--out", "{tmp}/m.pt"], "distill": ["--out", "{tmp}/m.pt"], "evaluate": ["{tmp}/m.pt"],
            "effect": ["--out", "{tmp}/m.pt"], "bench": [],
            "export": ["{tmp}/m.pt", "--format", "onnx", "--out", "{tmp}/m.onnx"]}


def numeric_options():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, parser in sub.choices.items():
        for action in parser._actions:
            if action.option_strings and action.type in NUMERIC:
                yield command, action.option_strings[0], action.type


OPTIONS = list(numeric_options())


def bad_values(kind) -> list[str]:
    values = list(ALWAYS_BAD)
    if kind not in (types.finite_float, types.whole_number):
        values.append("-1")                              # every other numeric option has a floor of 0 or 1
    if kind not in (types.finite_float, types.fraction, types.nonneg_float, types.positive_float):
        values += ["1.5", "2**64"]                       # counts and seeds are whole numbers
    if kind in (types.fraction,):
        values.append("1.01")
    if kind in (types.seed, types.threads):
        values.append(str(2**64))
    return values


def test_the_battery_covers_every_command():
    assert {c for c, _, _ in OPTIONS} == set(REQUIRED)
    assert len(OPTIONS) >= 40


@pytest.mark.parametrize("command,flag,kind", OPTIONS, ids=[f"{c} {f}" for c, f, _ in OPTIONS])
def test_a_bad_number_is_refused_by_the_parser_naming_the_flag(command, flag, kind, tmp_path, capsys):
    for value in bad_values(kind):
        argv = [command, *[a.format(tmp=tmp_path) for a in REQUIRED[command]], flag, value]
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2, (argv, err)
        assert err[-1].startswith(f"python -m mobileunet {command}: error: argument {flag}"), (argv, err)
        assert not list(tmp_path.iterdir()), argv       # nothing written
