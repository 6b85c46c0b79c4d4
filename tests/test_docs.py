"""Every shell command shown in README.md and docs/*.md works as written.

The commands are the lines of the pages' ```bash blocks (a trailing backslash continues a line, `# ...` is a
comment). Each one is checked in two ways:

- parsed: the program's own argument parser (argparse, in this process) reads the command's arguments exactly as
  written and the check stops right after, before anything runs; an unknown flag, a missing required argument or a
  bad choice fails. `accelerate launch` and `torchrun` are parsed by their own parsers, then the script by the
  script's.
- run: the cheap ones (every `--help`, `mvaema-teacher estimate`, `mvaema-synth`, the projection, and, marked slow,
  `mvaema-build-dataset` and `mvaema-predict`) run for real, page by page in the order shown, in a folder that looks
  like a fresh clone's root (the repository's files linked in) holding the inputs the pages name: `data/SEM` (a tiny
  synthetic micrograph folder), `teacher_cache.jsonl` (its answers), `outputs/mvaema/model` (a tiny saved model)
  and `micrograph.tif` (a 16-bit TIFF). Offline: the venv's bin first on PATH, HF_HUB_OFFLINE=1.

What cannot run here (training, `make main`, the network, pushes, servers) is covered by the parse alone.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_LANGUAGES = {"bash", "sh", "shell"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Programs that are not this package's and are shown only as the user's side of a step (a self-hosted teacher
# server, the shell): they cannot be run or parsed here.
EXTERNAL_PROGRAMS = {"vllm", "ollama", "llama-server", "git", "cd"}
# Pages that must show commands: a page losing its commands would otherwise pass unnoticed.
PAGES_WITH_COMMANDS = {"README.md", "teacher.md", "dataset.md", "training.md", "speed.md", "paper_recipe.md"}
RUN_TIMEOUT_S = 180


@dataclass
class Command:
    page: str
    line: int
    text: str
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def page_commands(page: Path) -> list[Command]:
    """The commands of a page's shell blocks, continuation lines joined, comments and `export` lines dropped."""
    commands = []
    text = page.read_text()
    for block in FENCE.finditer(text):
        if block.group(1) not in SHELL_LANGUAGES:
            continue
        first_line = text[: block.start(2)].count("\n") + 1
        pending, pending_line = "", first_line
        for offset, raw in enumerate(block.group(2).splitlines()):
            if not pending:
                pending_line = first_line + offset
            if raw.rstrip().endswith("\\"):
                pending += raw.rstrip()[:-1] + " "
                continue
            command = _parse_line(page.name, pending_line, pending + raw)
            pending = ""
            if command is not None:
                commands.append(command)
    return commands


def _parse_line(page: str, line: int, text: str) -> Command | None:
    words = shlex.split(text, comments=True)
    if not words or words[0] == "export":
        return None
    for separator in ("|", "||", "&&", ";", ">", "<", "&"):
        assert separator not in words, f"{page}:{line}: show one command per line, without '{separator}': {text}"
    env = {}
    while words and ENV_ASSIGNMENT.match(words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return Command(page, line, " ".join(text.split()), env, words)


ALL_COMMANDS = [command for page in PAGES for command in page_commands(page)]


# ---------------------------------------------------------------------------------------------------------------
# Parsing: the program's argparse reads the arguments, then the check stops before anything runs.


class ArgumentsParsed(BaseException):
    """Raised as soon as the outermost argparse call has read the arguments (BaseException: no `except Exception`
    in the program can swallow it)."""


@contextlib.contextmanager
def stop_after_parsing():
    original = argparse.ArgumentParser.parse_known_args
    depth = 0

    def parse_then_stop(self, args=None, namespace=None):
        nonlocal depth
        depth += 1
        try:
            namespace, extras = original(self, args, namespace)
        finally:
            depth -= 1
        if depth == 0:
            if extras:
                self.error(f"unrecognized arguments: {' '.join(extras)}")
            raise ArgumentsParsed()
        return namespace, extras

    argparse.ArgumentParser.parse_known_args = parse_then_stop
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_known_args = original


def console_script(name: str):
    (entry_point,) = importlib.metadata.entry_points(group="console_scripts", name=name)
    return entry_point.load()


def python_target(argv: list[str]):
    """(what to call, its argv) for `python script.py ...` or `python -m module ...`."""
    if argv[:1] == ["-m"]:
        module = argv[1]
        sys.modules.pop(module, None)  # imported by an earlier command: run_module would warn and reuse nothing
        return (lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)), [module, *argv[2:]]
    script = argv[0]
    assert (REPO / script).is_file(), f"no file {script} in the repository"
    return (lambda: runpy.run_path(str(REPO / script), run_name="__main__")), argv


def parse_targets(command: Command) -> list[tuple[str, object, list[str]]]:
    """(label, callable, sys.argv) for each parser the command goes through."""
    program, *args = command.argv
    if program.startswith("mvaema-") or program in ("accelerate", "torchrun"):
        targets = [(program, console_script(program), [program, *args])]
        launches = (program == "accelerate" and args[:1] == ["launch"]) or program == "torchrun"
        if launches and "--help" not in args:
            script_at = next(i for i, word in enumerate(args) if word.endswith(".py") or word == "-m")
            call, argv = python_target(args[script_at:])
            targets.append((argv[0], call, argv))
        return targets
    if Path(program).name in {"python", "python3"}:
        call, argv = python_target(args)
        return [(argv[0], call, argv)]
    raise AssertionError(f"{command}: unknown program {program!r}; add it to the test if it is not this package's")


def check_parses(command: Command, monkeypatch) -> None:
    program = command.argv[0]
    if program in EXTERNAL_PROGRAMS:
        return
    if program == "make":
        targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.MULTILINE)
        assert command.argv[1:] and set(command.argv[1:]) <= set(targets), f"{command}: not a Makefile target"
        return
    if program == "pip":
        check_pip_install(command)
        return
    monkeypatch.chdir(REPO)
    for label, call, argv in parse_targets(command):
        monkeypatch.setattr(sys, "argv", argv)
        stderr = io.StringIO()
        with stop_after_parsing(), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                call()
            except ArgumentsParsed:
                continue
            except SystemExit as exit_:
                if "--help" in argv and exit_.code in (0, None):
                    continue
                raise AssertionError(f"{command}\n{label} rejects its arguments:\n{stderr.getvalue()}") from None
        raise AssertionError(f"{command}: {label} returned without parsing arguments with argparse")


def check_pip_install(command: Command) -> None:
    extras = importlib.metadata.metadata("mvaema").get_all("Provides-Extra") or []
    assert command.argv[1:3] == ["install", "-e"], f"{command}: only `pip install -e .` forms are checked"
    target = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", command.argv[3])
    assert target, f"{command}: install the repository (.) or one of its extras (.[name])"
    for extra in (target.group(1) or "").split(","):
        assert not extra or extra in extras, f"{command}: the package has no extra {extra!r}"


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=str)
def test_command_parses_as_written(command, monkeypatch):
    check_parses(command, monkeypatch)


# ---------------------------------------------------------------------------------------------------------------
# Running: the cheap commands for real, page by page, in a folder that looks like a clone's root with inputs.

HEAVY = {"mvaema-build-dataset", "mvaema-predict"}


def runs_here(command: Command) -> bool:
    argv = command.argv
    if argv[0] in EXTERNAL_PROGRAMS or argv[0] in {"make", "pip"}:
        return False
    if "--help" in argv or "-h" in argv:
        return True
    if argv[0] == "mvaema-teacher":
        return argv[1] == "estimate"
    if argv[0] == "mvaema-synth":
        return int(argv[argv.index("--per-category") + 1]) <= 10
    if argv[0] == "mvaema-build-dataset":
        return "--push-to-hub" not in argv
    if argv[0] == "mvaema-predict":
        return True
    return argv[1:3] == ["-m", "benchmarks.projection"]


@pytest.fixture(scope="module")
def clone_with_inputs(tmp_path_factory) -> Path:
    """The repository's tracked top-level entries, linked, plus the inputs the pages name."""
    root = tmp_path_factory.mktemp("clone")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in sorted({line.split("/")[0] for line in tracked.splitlines()}):
        (root / name).symlink_to(REPO / name)
    environment = clone_environment(root)
    subprocess.run(
        ["mvaema-synth", "--out", "data/synth", "--per-category", "10", "--categories", "Nanowires", "Particles"],
        cwd=root, env=environment, check=True, capture_output=True, timeout=RUN_TIMEOUT_S,
    )
    (root / "data" / "synth" / "images").rename(root / "data" / "SEM")
    (root / "data" / "synth" / "teacher_cache.jsonl").rename(root / "teacher_cache.jsonl")
    sys.path.insert(0, str(REPO / "tests"))
    from inference_fixtures import save_tiny_model, sixteen_bit_tiff

    save_tiny_model(root / "outputs" / "mvaema" / "model")
    sixteen_bit_tiff(root / "micrograph.tif")
    return root


def clone_environment(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(root / ".hf_home"),
        "PYTHONPATH": "",
    }


def run_page(page: Path, clone: Path, tmp_path: Path, heavy: bool) -> int:
    """Run the page's cheap (or, with `heavy`, its heavy) runnable commands in order in a copy of `clone`; returns
    how many ran. The heavy ones read only the prepared inputs, never what a cheap one wrote."""
    workdir = tmp_path / "clone"
    shutil.copytree(clone, workdir, symlinks=True)
    ran = 0
    for command in page_commands(page):
        if not runs_here(command) or (command.argv[0] in HEAVY) != heavy:
            continue
        result = subprocess.run(
            command.argv, cwd=workdir, env={**clone_environment(workdir), **command.env},
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, (
            f"{command}\nexit code {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n"
            f"{result.stderr[-3000:]}"
        )
        ran += 1
    return ran


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_cheap_commands_run_as_written(page, clone_with_inputs, tmp_path):
    run_page(page, clone_with_inputs, tmp_path, heavy=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    "page",
    [page for page in PAGES if any(c.argv[0] in HEAVY and runs_here(c) for c in page_commands(page))],
    ids=lambda page: page.name,
)
def test_heavy_commands_run_as_written(page, clone_with_inputs, tmp_path):
    assert run_page(page, clone_with_inputs, tmp_path, heavy=True) > 0


# ---------------------------------------------------------------------------------------------------------------
# The pages themselves.


def test_pages_show_commands_and_the_test_sees_them():
    pages_with_commands = {command.page for command in ALL_COMMANDS}
    assert PAGES_WITH_COMMANDS <= pages_with_commands, PAGES_WITH_COMMANDS - pages_with_commands
    assert sum(runs_here(command) for command in ALL_COMMANDS) >= 10


def test_a_wrong_flag_in_a_page_fails_the_check(monkeypatch):
    """The parse check is not a formality: a misspelt flag or a missing required argument is caught."""
    for text in ("mvaema-teacher estimate --images data/SEM --max-usd 5", "mvaema-synth --out data/x",
                 "python run_instruct_tuning.py --cross_validation", "accelerate launch --gpus 2 run_instruct_tuning.py"):
        command = _parse_line("example.md", 1, text)
        with pytest.raises(AssertionError, match="rejects its arguments"):
            check_parses(command, monkeypatch)
    with pytest.raises(AssertionError, match="no extra 'gui'"):
        check_parses(_parse_line("example.md", 1, 'pip install -e ".[gui]"'), monkeypatch)
    with pytest.raises(AssertionError, match="not a Makefile target"):
        check_parses(_parse_line("example.md", 1, "make train"), monkeypatch)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_point_at_files_that_exist(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name}: link to {target}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_pages_read_as_documentation_not_as_a_work_log(page):
    text = page.read_text()
    for pattern in (r"\bsessions?\b", r"\bwe changed\b", r"\bpreviously\b", r"\bwork period", r"\bcommit [0-9a-f]{7,40}\b"):
        assert not re.search(pattern, text, re.IGNORECASE), f"{page.name}: {pattern!r} reads like a work log"


def test_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in ("teacher", "dataset", "training", "model", "metrics", "speed", "results", "guarantees", "paper_recipe"):
        assert f"docs/{page}.md" in readme, f"README.md does not link docs/{page}.md"
