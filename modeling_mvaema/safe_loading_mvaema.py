# Copyright 2026 The MVaEMa authors. Licensed under the Apache License, Version 2.0.
"""Loading a saved MVaEMa with the installed classes only, whatever its files say.

A saved folder names classes in its JSON files (`auto_map`, `processor_class`, `tokenizer_class`,
`image_processor_type`). transformers' Auto classes follow those names, and when they cannot tell which installed
class fits (a pipeline reads the processor and tokenizer files without the model's config) they ask on the terminal
whether to run the folder's Python code. An MVaEMa always has the same parts, so they are built here from the
package's own classes and the names in the files are never followed.

The model's files are checked before anything is allocated or read: weights only from model.safetensors (a pickle
such as pytorch_model.bin can run code when read), and the sizes in config.json and the settings in
generation_config.json within bounds (a planted `num_beams: 1000000` or `max_position_embeddings: 2e7` would take
gigabytes), each refusal naming the file and the field.
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
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
# Far above any MVaEMa (hidden width 64, answers of 64 tokens), far below what would exhaust a machine's memory.
MODEL_SIZE_LIMITS = {
    "projection_dim": 8192,
    "text_config.max_position_embeddings": 4096,
    "text_config.vocab_size": 1_000_000,
    "text_config.hidden_size": 8192,
    "text_config.intermediate_size": 32768,
    "text_config.num_hidden_layers": 64,
    "text_config.num_attention_heads": 128,
    "vision_config.image_size": 4096,
    "vision_config.patch_size": 4096,
    "vision_config.num_channels": 4,
    "vision_config.hidden_size": 8192,
    "vision_config.intermediate_size": 32768,
    "vision_config.num_hidden_layers": 64,
    "vision_config.num_attention_heads": 128,
}
POSITIONS = "text_config.max_position_embeddings"
MAX_BEAMS = 64
# Generation settings -> their smallest value; the largest is MAX_BEAMS for beams and sequences, else the decoder's
# max_position_embeddings (an answer longer than that has no position to take).
GENERATION_MINIMUMS = {"num_beams": 1, "num_beam_groups": 1, "num_return_sequences": 1, "max_new_tokens": 1,
                       "max_length": 1, "min_new_tokens": 0, "min_length": 0}
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


def checked_loading_options(name_or_path, options: dict) -> dict:
    """`from_pretrained`'s keyword arguments with safetensors required, once the saved files at `name_or_path` (a
    folder or a Hub id) passed the checks; raises `OSError` or `ValueError` naming the file and the field."""
    if name_or_path is None:  # built from a config alone: no files to check
        return options
    if options.get("use_safetensors") is False:
        raise ValueError(f"{name_or_path}: use_safetensors=False is refused; only model.safetensors is accepted")
    hub_options = {name: options[name] for name in HUB_OPTIONS if name in options}
    location = "/".join(filter(None, [str(name_or_path), hub_options.get("subfolder")]))
    if not any(_saved_file(name_or_path, name, hub_options) for name in SAFE_WEIGHTS):
        raise OSError(
            f"{location}: only model.safetensors is accepted (pickle weights such as pytorch_model.bin can run code "
            "when read and are never loaded); there is no model.safetensors here"
        )
    config = options.get("config")
    config = config.to_dict() if hasattr(config, "to_dict") else _read_json(name_or_path, "config.json", hub_options)
    _check_model_sizes(config, f"{location}/config.json")
    generation = _read_json(name_or_path, "generation_config.json", hub_options)
    if generation is not None:
        positions = _setting(config, POSITIONS) or MODEL_SIZE_LIMITS[POSITIONS]
        _check_generation_settings(generation, f"{location}/generation_config.json", positions)
    return {**options, "use_safetensors": True}


def _saved_file(name_or_path, filename: str, hub_options: dict) -> str | None:
    return cached_file(
        str(name_or_path),
        filename,
        **hub_options,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        _raise_exceptions_for_gated_repo=False,
    )


def _read_json(name_or_path, filename: str, hub_options: dict) -> dict | None:
    """The saved JSON object `filename` (None when there is none): transformers would skip a broken
    generation_config.json silently and generate with other settings than the saved ones."""
    path = _saved_file(name_or_path, filename, hub_options)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        content = error
    if not isinstance(content, dict):
        location = "/".join(filter(None, [str(name_or_path), hub_options.get("subfolder")]))
        raise ValueError(f"{location}/{filename} is not a valid JSON object ({content}); restore the saved file")
    return content


def _setting(config: dict | None, field: str):
    """`config`'s value of "section.name" or "name" (None when absent)."""
    section, _, name = field.rpartition(".")
    values = (config or {}).get(section) if section else config
    return values.get(name) if isinstance(values, dict) else None


def _check_model_sizes(config: dict | None, where: str) -> None:
    for field, largest in MODEL_SIZE_LIMITS.items():
        _check_whole_number(_setting(config, field), 1, largest, where, field)


def _check_generation_settings(settings: dict, where: str, positions) -> None:
    for field, smallest in GENERATION_MINIMUMS.items():
        largest = MAX_BEAMS if field in ("num_beams", "num_beam_groups", "num_return_sequences") else positions
        _check_whole_number(settings.get(field), smallest, largest, where, field)


def _check_whole_number(value, smallest: int, largest: int, where: str, field: str) -> None:
    """Raise a ValueError unless `value` is missing or a whole number in smallest..largest."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not smallest <= value <= largest:
        raise ValueError(
            f"{where}: {field} {value!r:.40} is not a whole number in {smallest}..{largest}; a saved MVaEMa never "
            "needs more, so the file was damaged or edited: restore the saved value"
        )
