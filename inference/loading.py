"""Loading a saved MVaEMa (a folder or a Hub id) without running code that ships with it.

A saved MVaEMa folder carries copies of the model's Python files (so that `trust_remote_code=True` works without this
package). Loading with those copies runs whatever Python the folder or Hub repository holds, so by default the
weights are read into the classes of the installed `modeling_mvaema` package. Shipped code runs only on an explicit
opt-in, and a Hub id must then be pinned to a commit, so that the code reviewed is the code run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoModel, AutoProcessor, PreTrainedConfig

from modeling_mvaema import MVaEMaConfig, MVaEMaForQuestionAnswering, MVaEMaProcessor

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


class ModelLoadError(ValueError):
    """A model source that cannot be loaded as asked; `str()` names the source and the fix."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and whether the code shipped with it may run."""

    name_or_path: str
    trust_remote_code: bool = False
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.name_or_path).expanduser().is_dir()


def load_model_and_processor(source: ModelSource):
    """The model (in eval mode) and processor saved at `source`.

    Without `trust_remote_code` they are the installed `MVaEMaForQuestionAnswering` and `MVaEMaProcessor`, whatever
    Python files the folder holds; with it, the Auto classes load the shipped code.
    """
    check_source(source)
    location = str(Path(source.name_or_path).expanduser()) if source.is_local else source.name_or_path
    try:
        if source.trust_remote_code:
            options = {"trust_remote_code": True, "revision": source.revision}
            model = AutoModel.from_pretrained(location, use_safetensors=True, **options)
            processor = AutoProcessor.from_pretrained(location, **options)
        else:
            # An explicit False keeps transformers from asking on the terminal whether to run the shipped code.
            options = {"trust_remote_code": False, "revision": source.revision}
            model = MVaEMaForQuestionAnswering.from_pretrained(location, **options)
            processor = MVaEMaProcessor.from_pretrained(location, **options)
    except (OSError, ValueError) as error:  # a refused file (pickle weights, absurd settings) names itself
        raise ModelLoadError(str(error)) from None
    return model.eval(), processor


def check_source(source: ModelSource) -> None:
    """Raise `ModelLoadError` for a source that is not an MVaEMa model or asks for unpinned shipped code."""
    if not source.is_local and _looks_like_path(source.name_or_path):
        raise ModelLoadError(
            f"--model {source.name_or_path}: folder not found; give a saved MVaEMa folder (with config.json) "
            "or a Hub id such as owner/name"
        )
    if source.trust_remote_code and not source.is_local:
        _check_pinned(source)
    model_type = _model_type(source)
    if model_type != MVaEMaConfig.model_type:
        raise ModelLoadError(
            f"--model {source.name_or_path}: its config.json says model_type {model_type!r}, not "
            f"{MVaEMaConfig.model_type!r}; give a model saved by MVaEMa (run_instruct_tuning.py writes one)"
        )


def _check_pinned(source: ModelSource) -> None:
    if source.revision is None:
        raise ModelLoadError(
            f"--model {source.name_or_path} with --trust-remote-code: the Hub code must be pinned; add "
            "--revision <40-character commit sha> (the commit whose code you have read)"
        )
    if not COMMIT_SHA.fullmatch(source.revision):
        raise ModelLoadError(
            f"--revision {source.revision}: with --trust-remote-code a Hub model must be pinned to a full commit "
            "sha (40 hex characters), not a branch or tag whose code can change; copy it from the repository's "
            "commit history"
        )


def _model_type(source: ModelSource) -> str | None:
    location = os.path.expanduser(source.name_or_path)
    fix = "give a folder saved by MVaEMa (config.json, model.safetensors, processor files) or a Hub id of one"
    if source.is_local and not (Path(location) / "config.json").is_file():
        raise ModelLoadError(f"--model {source.name_or_path}: this folder has no config.json; {fix}")
    try:
        config, _ = PreTrainedConfig.get_config_dict(location, revision=source.revision)
    except OSError as error:
        raise ModelLoadError(f"--model {source.name_or_path}: cannot read its config.json ({error}); {fix}") from error
    return config.get("model_type")


def _looks_like_path(name: str) -> bool:
    """A Hub id is `name` or `owner/name`; anything else (absolute, relative, deeper) is meant as a folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "") or not name


def add_model_arguments(parser) -> None:
    """`--model`, `--trust-remote-code` and `--revision`, the same for every command that loads a model."""
    parser.add_argument("--model", required=True, help="Saved model folder or Hub repo id.")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="Run the Python files shipped with the model instead of the installed classes.")
    parser.add_argument("--revision", default=None,
                        help="Hub commit sha to load (required with --trust-remote-code for a Hub id).")
