"""Using a trained MVaEMa: safe loading, one-image and folder prediction (`mvaema-predict`), the web demo
(`mvaema-demo`, with the optional `demo` extra)."""

from .assistant import MicrographAssistant
from .batch_prediction import find_micrographs, predict_folder
from .loading import ModelLoadError, ModelSource, load_model_and_processor

__all__ = [
    "MicrographAssistant",
    "ModelLoadError",
    "ModelSource",
    "find_micrographs",
    "load_model_and_processor",
    "predict_folder",
]
