"""MVaEMa: a small, private vision-language assistant for electron micrographs (Hugging Face native).

The flat files next to this one are the whole model (configuration, layers, losses, models, processor);
`save_pretrained` copies them next to the weights, so a saved model also loads where this package is not installed,
with `AutoModel.from_pretrained(path, trust_remote_code=True)`.
"""

from .configuration_mvaema import ABLATIONS, PAPER_ABLATION_NAMES, MVaEMaConfig, MVaEMaTextConfig, MVaEMaVisionConfig
from .modeling_mvaema import (
    MVaEMaClassificationOutput,
    MVaEMaEncoderOutput,
    MVaEMaForQuestionAnswering,
    MVaEMaModel,
    MVaEMaOutput,
    MVaEMaPreTrainedModel,
    MVaEMaZeroShotOutput,
)
from .processing_mvaema import MVaEMaProcessor, train_wordpiece_tokenizer
from .safe_loading_mvaema import never_ask_to_run_mvaema_code

__all__ = [
    "ABLATIONS",
    "PAPER_ABLATION_NAMES",
    "MVaEMaClassificationOutput",
    "MVaEMaConfig",
    "MVaEMaEncoderOutput",
    "MVaEMaForQuestionAnswering",
    "MVaEMaModel",
    "MVaEMaOutput",
    "MVaEMaPreTrainedModel",
    "MVaEMaProcessor",
    "MVaEMaTextConfig",
    "MVaEMaVisionConfig",
    "MVaEMaZeroShotOutput",
    "train_wordpiece_tokenizer",
]


def _register_with_auto_classes() -> None:
    """Tell transformers' Auto classes and pipelines about the installed classes: a saved MVaEMa then loads with them,
    silently and without `trust_remote_code` (its shipped code is only run when the user asks for it)."""
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForImageTextToText,
        AutoModelForVisualQuestionAnswering,
        AutoModelForZeroShotImageClassification,
        AutoProcessor,
    )

    AutoConfig.register(MVaEMaConfig.model_type, MVaEMaConfig, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForImageTextToText, AutoModelForVisualQuestionAnswering):
        auto_class.register(MVaEMaConfig, MVaEMaForQuestionAnswering, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(MVaEMaConfig, MVaEMaModel, exist_ok=True)
    AutoProcessor.register(MVaEMaConfig, MVaEMaProcessor, exist_ok=True)
    never_ask_to_run_mvaema_code()


_register_with_auto_classes()
