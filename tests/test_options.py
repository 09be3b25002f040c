"""Options are defined once: every command's CLI defaults, choices and flags come from its
library options class, and what a run records comes from the same object."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest
from attrib_cli.app import COMMANDS, app
from attrib_cli.build import cli_default, cli_fields
from attrib_cli.evaluate import SUBCOMMANDS
from attrib_cli.index import SUBCOMMANDS as INDEX_SUBCOMMANDS
from attrib_cli.output import FORMATS
from helpers import run_cli

from attrib.methods import method_names
from attrib.options import choices_of, flag_of
from attrib.tasks import task_class, task_names


def _choices(param) -> tuple | None:
    """The choices a CLI parameter accepts (its Literal annotation), or None."""
    annotation = param.get_runtime_param().annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return typing.get_args(candidate)
    return None


def _commands():
    """(command path, its options class, the click command) for every registered command."""
    import typer

    root = typer.main.get_command(app)
    out = []
    for name, module, _ in COMMANDS:
        out.append((name, module.OPTIONS, root.commands[name]))
    evaluate = root.commands["evaluate"]
    for name, module in SUBCOMMANDS:
        out.append((f"evaluate {name}", module.OPTIONS, evaluate.commands[name]))
    for name, module, _ in INDEX_SUBCOMMANDS:
        out.append((f"index {name}", module.OPTIONS, root.commands["index"].commands[name]))
    return out


COMMAND_LIST = _commands()


def test_every_command_is_covered():
    import typer

    root = typer.main.get_command(app)
    listed = {c for c, _, _ in COMMAND_LIST}
    groups = ("evaluate", "index")
    everything = {n for n in root.commands if n not in groups}
    for group in groups:
        everything |= {f"{group} {n}" for n in root.commands[group].commands}
    assert listed == everything


@pytest.mark.parametrize("path, options, command", COMMAND_LIST, ids=[c[0] for c in COMMAND_LIST])
def test_cli_defaults_and_choices_equal_the_library(path, options, command):
    params = {p.name: p for p in command.params}
    for field in cli_fields(options):
        param = params.pop(field.name)
        assert flag_of(field) in param.opts or field.metadata.get("argument"), (path, field.name)
        if field.default is dataclasses.MISSING:
            assert param.required, (path, field.name)
            continue
        assert param.default == cli_default(field), (path, field.name)
        # The CLI value parses back to exactly the library default.
        from attrib_cli.build import from_cli

        assert from_cli(field, param.default) == field.default, (path, field.name)
        choices = choices_of(field)
        if choices is not None and not field.metadata.get("separator"):
            assert _choices(param) == choices, (path, field.name)
        assert param.help.startswith(field.metadata["help"]), (path, field.name)
    # Whatever is left is presentation only.
    assert set(params) <= {"quiet", "fmt", "help"}, (path, sorted(params))
    if "fmt" in params and path != "inspect":
        assert _choices(params["fmt"]) == FORMATS


def test_registries_are_the_choice_lists():
    from attrib.featurize.options import FeaturizeOptions
    from attrib.score.options import ScoreOptions

    fields = {f.name: f for f in dataclasses.fields(ScoreOptions)}
    assert choices_of(fields["method"]) == method_names()
    fields = {f.name: f for f in dataclasses.fields(FeaturizeOptions)}
    assert choices_of(fields["task"]) == task_names()
    for name in task_names():  # the registry's names are the classes' own
        assert task_class(name).name == name


def test_learn_weights_weight_decay_default_is_the_documented_one():
    """The drift that started this: the CLI defaulted to 0.0 while the library said 1.0.
    Both now leave it unset, resolved by the prior (3 uniform, 1 balanced) in check()."""
    import typer

    from attrib.weights.options import DECAY_BY_PRIOR, LearnOptions

    command = typer.main.get_command(app).commands["learn-weights"]
    param = next(p for p in command.params if p.name == "weight_decay")
    assert param.default is None and LearnOptions.default("weight_decay") is None
    assert DECAY_BY_PRIOR == {"uniform": 3.0, "balanced": 1.0}
    assert "3 toward the uniform prior, 1 toward the balanced one" in " ".join(param.help.split())


def test_help_starts_without_heavy_imports():
    code = (
        "import sys; import attrib_cli.app; "
        "names = ('torch', 'transformers', 'diffusers', 'datasets'); "
        "heavy = [m for m in names if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_mistyped_store_fails_before_any_heavy_import(tmp_path):
    """Options check store paths on construction; the options modules import no torch (see
    test_help_starts_without_heavy_imports), so the error comes before any model loading."""
    from attrib.errors import AttribError
    from attrib.evaluate.options import LdsOptions
    from attrib.score.options import ScoreOptions

    with pytest.raises(AttribError, match="--train .* is not an attrib store"):
        ScoreOptions(train=tmp_path / "nope", query=("x",))
    with pytest.raises(AttribError, match="--train .* is not an attrib store"):
        LdsOptions(train=tmp_path, queries=tmp_path, groundtruth=tmp_path / "gt.npz")


def test_list_flags_take_commas_and_repetition_alike():
    """`--weights none --weights w.safetensors` once kept only the last value silently."""
    from attrib_cli.build import from_cli

    from attrib.evaluate.options import LdsOptions

    fields = {f.name: f for f in dataclasses.fields(LdsOptions)}
    for name, values in (("weights", ["none", "w.safetensors"]), ("methods", ["tracin", "trak"])):
        field = fields[name]
        assert from_cli(field, values) == from_cli(field, [",".join(values)]) == tuple(values)
        assert from_cli(field, ["a, b", "c"]) == ("a", "b", "c")


def test_inspect_reads_a_store_without_heavy_imports(tmp_path, resnet_dir, image_data):
    """`attrib inspect` is a metadata read: no torch, transformers or datasets (it took 4 s
    of CPU when it loaded a task class to list the methods a store serves)."""
    args = ["--out", tmp_path / "s", "--max-examples", "4", "--device", "cpu", "-q"]
    code, _, err = run_cli("featurize", "--model", resnet_dir, "--data", image_data, *args)
    assert code == 0, err
    script = (
        "import sys, attrib_cli; sys.argv = ['attrib', 'inspect', sys.argv[1]]\n"
        "try: attrib_cli.main()\nexcept SystemExit: pass\n"
        "names = ('torch', 'transformers', 'diffusers', 'datasets')\n"
        "print('HEAVY', ','.join(m for m in names if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "s")], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert '"featurized_for": "shampoo"' in out.stdout and '"serves": [' in out.stdout
    assert out.stdout.strip().endswith("HEAVY")


def test_every_command_is_in_the_python_api():
    """Each command's options class is exported from `attrib`, beside a function that runs
    it (docs/python.md lists them)."""
    import attrib

    for name, options, _ in COMMAND_LIST:
        assert getattr(attrib, options.__name__) is options, name
    runners = [n for n in attrib.__all__ if n.startswith("run_") or n == "build_index"]
    assert all(callable(getattr(attrib, n)) for n in runners)
    assert len(runners) >= len(COMMAND_LIST) - 1  # inspect's is store_summary
