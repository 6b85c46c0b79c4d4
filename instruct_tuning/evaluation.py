"""The paper's evaluation: VQA text metrics on generated answers, zero-shot classification without captions.

Both the student and the BLIP peer are evaluated by the same code: answers come from `generate` with one shared
generation config (MVaEMa's decoding settings, `default_generation_config`), and
classification ranks the categories by `classify(..., method=...)` (the peer supports the decoder
likelihood method only). References are decoded from their own token ids, so that truncation, unknown words
and WordPiece detokenisation treat the reference exactly as they treat the model's answer.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import GenerationConfig

from dataset_builder.question_families import CLASSIFICATION_QUESTION, readable_category
from metrics.vqa_text.vqa_text import VqaText
from metrics.zero_shot_classification.zero_shot_classification import ZeroShotClassification
from modeling_mvaema import MVaEMaConfig
from modeling_mvaema.classification_mvaema import CLASSIFY_METHODS
from modeling_mvaema.modeling_mvaema import default_generation_config



def available_methods(model) -> list[str]:
    config = model.config
    if not hasattr(config, "use_itc"):  # the BLIP peer has no contrastive or matching head
        return ["lm"]
    return [m for m in CLASSIFY_METHODS if (m != "itc" or config.use_itc) and (m != "itm" or config.use_itm)]


def shared_generation_config(processor, max_new_tokens: int) -> GenerationConfig:
    """MVaEMa's decoding settings for the processor's vocabulary, greedy, answers capped at `max_new_tokens`. The
    student and the peer share the tokenizer, so the special-token ids (and the suppressed tokens) are the same."""
    generation = default_generation_config(MVaEMaConfig.from_tokenizer(processor.tokenizer))
    generation.update(max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
    return generation


def generation_config_for(model, shared: GenerationConfig) -> GenerationConfig:
    """`shared` for `model`, after checking that the model's special tokens have the ids `shared` decodes with.
    BLIP's `generate` starts from its decoder start token and stops at its [SEP], whatever the config says."""
    if hasattr(model.config, "use_itc"):
        own = {"bos_token_id": model.config.dec_token_id, "eos_token_id": model.config.sep_token_id,
               "pad_token_id": model.config.pad_token_id}
    else:
        text = model.config.text_config
        own = {"bos_token_id": model.decoder_start_token_id, "eos_token_id": text.sep_token_id,
               "pad_token_id": text.pad_token_id}
    different = {name: (token_id, getattr(shared, name)) for name, token_id in own.items()
                 if token_id != getattr(shared, name)}
    if different:
        raise ValueError(f"the model's special tokens {different} (model, processor) are not the processor's; "
                         "evaluate a model with the processor (tokenizer) it was trained with")
    return shared


def decoding_settings(generation: GenerationConfig, processor) -> dict:
    """What the VQA tables state about decoding: the shared settings, suppressed tokens by name."""
    return {"max_new_tokens": generation.max_new_tokens, "num_beams": generation.num_beams,
            "do_sample": generation.do_sample, "no_repeat_ngram_size": generation.no_repeat_ngram_size,
            "suppress_tokens": processor.tokenizer.convert_ids_to_tokens(list(generation.suppress_tokens or []))}


@torch.no_grad()
def generate_answers(model, processor, table, pixel_store, device, batch_size: int, limit: int | None = None) -> list[str]:
    """Greedy answers for the table's pairs, decoded with `shared_generation_config` whichever model answers."""
    model.eval()
    count = len(table) if limit is None else min(limit, len(table))
    generation = generation_config_for(model, shared_generation_config(processor, table.labels.shape[1]))
    answers: list[str] = []
    for start in range(0, count, batch_size):
        rows = torch.arange(start, min(start + batch_size, count))
        mask = table.prompt_mask[rows]
        length = int(mask.sum(1).max())
        generated = model.generate(
            pixel_values=pixel_store.normalized(table.image_index[rows]).to(device),
            input_ids=table.prompt_ids[rows, :length].to(device),
            attention_mask=mask[:, :length].to(device),
            generation_config=generation,
        )
        answers.extend(processor.batch_decode(generated, skip_special_tokens=True))
    return answers


def evaluate_vqa(model, processor, table, pixel_store, device, batch_size: int, limit: int | None = None) -> dict:
    """BLEU-2/4, ROUGE-1/2/L, METEOR of generated answers against the teacher's (prompts with captions)."""
    predictions = generate_answers(model, processor, table, pixel_store, device, batch_size, limit)
    # Decoding the reference's own token ids treats it exactly as the model's answer is treated (truncation, [UNK]).
    references = processor.batch_decode(table.labels[: len(predictions)].clamp(min=0), skip_special_tokens=True)
    scores = VqaText().compute(predictions=predictions, references=references)
    scores["examples"] = [{"prediction": p, "reference": r} for p, r in list(zip(predictions, references))[:8]]
    return scores


@torch.no_grad()
def evaluate_caption_following(model, processor, table, data, device, batch_size: int) -> dict:
    """With the true category caption in the prompt (the paper's VQA protocol), how often the answer to the category
    question names that category: an answer that contradicts its own prompt is wrong however it scores on BLEU."""
    model.eval()
    image_index, categories = distinct_images(table)
    generation = generation_config_for(model, shared_generation_config(processor, table.labels.shape[1]))
    captions = [processor.category_captions[int(category)] for category in categories]
    answers: list[str] = []
    for start in range(0, len(image_index), batch_size):
        stop = min(start + batch_size, len(image_index))
        prompts = processor(questions=[CLASSIFICATION_QUESTION] * (stop - start), captions=captions[start:stop])
        generated = model.generate(pixel_values=data.pixel_store.normalized(image_index[start:stop]).to(device),
                                   input_ids=prompts["input_ids"].to(device),
                                   attention_mask=prompts["attention_mask"].to(device), generation_config=generation)
        answers.extend(processor.batch_decode(generated, skip_special_tokens=True))
    names = [readable_category(data.class_names[int(category)]).lower() for category in categories]
    named = [name in answer.lower() for name, answer in zip(names, answers)]
    misses = [{"category": name, "answer": answer} for name, answer, hit in zip(names, answers, named) if not hit]
    return {"named_share": float(np.mean(named)), "images": len(named), "misses": misses[:8]}


def distinct_images(table) -> tuple[torch.Tensor, torch.Tensor]:
    """One entry per distinct image of the table: (pixel-store image_index [M], category ids [M])."""
    image_index, first = np.unique(table.image_index.numpy(), return_index=True)
    return torch.from_numpy(image_index), table.category[torch.from_numpy(first)]


@torch.no_grad()
def category_scores(model, processor, data, image_index: torch.Tensor, device, batch_size: int, method: str) -> torch.Tensor:
    """Scores [N_images, C] of every category for each image at `image_index` [N_images], asked without a caption."""
    model.eval()
    text_inputs = {name: tensor.to(device) for name, tensor in processor.classification_inputs().items()}
    scores = []
    for start in range(0, len(image_index), batch_size):
        chunk = image_index[start : start + batch_size]
        output = model.classify(pixel_values=data.pixel_store.normalized(chunk).to(device), **text_inputs,
                                method=method, top_k=min(5, len(data.class_names)))
        scores.append(output.scores.float().cpu())
    return torch.cat(scores)


def evaluate_classification(model, processor, table, data, device, batch_size: int, method: str) -> dict:
    image_index, categories = distinct_images(table)
    scores = category_scores(model, processor, data, image_index, device, batch_size, method)
    metrics = ZeroShotClassification().compute(
        predictions=scores.tolist(), references=categories.tolist(), label_names=data.class_names)
    metrics.pop("label_names")
    metrics["top1"], metrics["top5"] = metrics.pop("top1_accuracy"), metrics.pop("top5_accuracy")
    return metrics


def select_classification_method(model, processor, validation_table, data, device, batch_size: int) -> str:
    """The method with the best validation top-1 (ties: the cheaper one, in CLASSIFY_METHODS order)."""
    methods = available_methods(model)
    if len(methods) == 1:
        return methods[0]
    image_index, categories = distinct_images(validation_table)
    accuracy = {}
    for method in methods:
        scores = category_scores(model, processor, data, image_index, device, batch_size, method)
        accuracy[method] = float((scores.argmax(1) == categories).float().mean())
    return max(methods, key=lambda m: accuracy[m])


def evaluate_fold(model, processor, data, device, batch_size: int, max_questions: int | None = None) -> dict:
    """The paper's evaluation on the test fold of `data` (FoldData): VQA with captions, classification without, by
    the method that classifies the validation fold best."""
    method = select_classification_method(model, processor, data.validation, data, device, batch_size)
    generation = shared_generation_config(processor, data.test.labels.shape[1])
    return {
        "vqa": evaluate_vqa(model, processor, data.test, data.pixel_store, device, batch_size, max_questions),
        "generation": decoding_settings(generation, processor),
        "classification": evaluate_classification(model, processor, data.test, data, device, batch_size, method),
        "classification_method": method,
        "caption_following": evaluate_caption_following(model, processor, data.test, data, device, batch_size),
        "parameters": sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad),
    }
