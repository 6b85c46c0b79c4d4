"""Run a script in a fresh interpreter that cannot import this repository's packages: what a user who only has the
saved model folder (and transformers) sees. `-I` drops PYTHONPATH, the working directory and the user site; the
editable install's import hook is removed too, so `modeling_mvaema` can only come from the code copied into a saved
model folder."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import modeling_mvaema

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(modeling_mvaema.__file__)))

WITHOUT_OUR_PACKAGES = textwrap.dedent(
    """
    import importlib.util, sys
    def editable(hook):
        return getattr(hook, "__module__", "").startswith("__editable__")
    sys.meta_path = [finder for finder in sys.meta_path if not editable(finder) and not editable(type(finder))]
    sys.path_hooks = [hook for hook in sys.path_hooks if not editable(hook)]
    sys.path = [entry for entry in sys.path if entry.rstrip("/") != REPO_ROOT and not entry.startswith("__editable__")]
    sys.path_importer_cache.clear()
    assert importlib.util.find_spec("modeling_mvaema") is None, "the package must not be importable here"
    """
)


def run_elsewhere(tmp_path: Path, body: str, arguments: list[str], constants: dict | None = None) -> None:
    """Write `constants` + the import guard + `body` to a script and run it offline from an empty folder; fails the
    test with the script's stderr when it exits non-zero."""
    script = tmp_path / "run_elsewhere.py"
    constants = {"REPO_ROOT": REPO_ROOT, **(constants or {})}
    script.write_text(
        "".join(f"{name} = {value!r}\n" for name, value in constants.items()) + WITHOUT_OUR_PACKAGES + body
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-I", str(script), *arguments],
        cwd=elsewhere,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
