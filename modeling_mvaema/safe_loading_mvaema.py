# Copyright 2026 The MVaEMa authors. Licensed under the Apache License, Version 2.0.
"""Loading a saved MVaEMa with the installed classes only, whatever its files say.

A saved folder names classes in its JSON files (`auto_map`, `processor_class`, `tokenizer_class`,
`image_processor_type`). transformers' Auto classes follow those names, and when they cannot tell which installed
class fits (a pipeline reads the processor and tokenizer files without the model's config) they ask on the terminal
whether to run the folder's Python code. An MVaEMa always has the same parts, so they are built here from the
package's own classes and the names in the files are never followed.
"""

import functools
import json

from transformers import BlipImageProcessorPil, PreTrainedTokenizerFast
from transformers.models.auto import (
    feature_extraction_auto,
    image_processing_auto,
    processing_auto,
    tokenization_auto,
    video_processing_auto,
)
from transformers.utils import cached_file

MODEL_TYPE = "mvaema"
HUB_OPTIONS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
# What transformers reads from a saved image processor to pick a class; the class here is always the same.
CLASS_NAMING_KEYS = ("auto_map", "image_processor_type", "processor_class")
# The Auto classes that read a folder's processor, tokenizer and image-processor files.
AUTO_MODULES_READING_PROCESSOR_FILES = (
    processing_auto,
    tokenization_auto,
    image_processing_auto,
    feature_extraction_auto,
    video_processing_auto,
)


def load_subprocessors(processor_class, name_or_path, processor_dict: dict, **kwargs) -> tuple[dict, dict]:
    """`processor_dict` (from processor_config.json) with its tokenizer and image processor built by the package's
    classes, and the keyword arguments left for `processor_class.from_dict`. Stands in for transformers'
    `ProcessorMixin._resolve_subprocessors`, which loads them through the Auto classes."""
    hub_options = {name: kwargs.pop(name) for name in HUB_OPTIONS if name in kwargs}
    kwargs.pop("trust_remote_code", None)  # nothing shipped is run here, whatever was asked
    image_processor = processor_dict.get("image_processor")
    if not isinstance(image_processor, dict):
        raise ValueError(
            f"{name_or_path}/processor_config.json: its image_processor entry is missing or not an object; save "
            f"the processor with {processor_class.__name__}.save_pretrained"
        )
    settings = {key: value for key, value in image_processor.items() if key not in CLASS_NAMING_KEYS}
    processor_dict["image_processor"] = BlipImageProcessorPil.from_dict(settings)
    processor_dict["tokenizer"] = PreTrainedTokenizerFast.from_pretrained(name_or_path, **hub_options)
    return processor_dict, kwargs


def is_mvaema_model(name_or_path) -> bool:
    """Whether `name_or_path` (a folder or a Hub id) holds a config.json of model_type "mvaema"."""
    try:
        config_file = cached_file(
            str(name_or_path),
            "config.json",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            _raise_exceptions_for_gated_repo=False,
        )
        with open(config_file, encoding="utf-8") as handle:
            return json.load(handle).get("model_type") == MODEL_TYPE
    except (OSError, TypeError, ValueError, AttributeError):
        return False


def never_ask_to_run_mvaema_code() -> None:
    """Make the Auto classes answer "no shipped code" for a saved MVaEMa unless `trust_remote_code=True` was passed,
    instead of asking on the terminal (where "y" would run whatever a folder planted) or telling the user to pass
    `trust_remote_code=True`. Other models are left to transformers."""
    for module in AUTO_MODULES_READING_PROCESSOR_FILES:
        if not getattr(module.resolve_trust_remote_code, "never_asks_for_mvaema", False):
            module.resolve_trust_remote_code = _without_asking_for_mvaema(module.resolve_trust_remote_code)


def _without_asking_for_mvaema(resolve):
    @functools.wraps(resolve)
    def resolve_trust_remote_code(trust_remote_code, model_name, *args, **kwargs):
        if trust_remote_code is not True and is_mvaema_model(model_name):
            return False
        return resolve(trust_remote_code, model_name, *args, **kwargs)

    resolve_trust_remote_code.never_asks_for_mvaema = True
    return resolve_trust_remote_code
