"""MVaEMa: a small, private vision-language assistant for electron micrographs (Hugging Face native).

The three files next to this one are the whole model; `save_pretrained` copies them next to the weights, so a saved
model loads anywhere with `AutoModel.from_pretrained(path, trust_remote_code=True)`.
"""

from .configuration_mvaema import ABLATIONS, PAPER_ABLATION_NAMES, MVaEMaConfig, MVaEMaTextConfig, MVaEMaVisionConfig
from .modeling_mvaema import (
    MVaEMaClassificationOutput,
    MVaEMaEncoderOutput,
    MVaEMaForQuestionAnswering,
    MVaEMaOutput,
    MVaEMaPreTrainedModel,
)
from .processing_mvaema import MVaEMaProcessor, train_wordpiece_tokenizer

__all__ = [
    "ABLATIONS",
    "PAPER_ABLATION_NAMES",
    "MVaEMaClassificationOutput",
    "MVaEMaConfig",
    "MVaEMaEncoderOutput",
    "MVaEMaForQuestionAnswering",
    "MVaEMaOutput",
    "MVaEMaPreTrainedModel",
    "MVaEMaProcessor",
    "MVaEMaTextConfig",
    "MVaEMaVisionConfig",
    "train_wordpiece_tokenizer",
]
