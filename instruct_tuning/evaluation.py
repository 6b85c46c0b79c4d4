"""The paper's evaluation, and the controls that show whether answers come from the micrograph.

VQA text metrics on generated answers in three prompt protocols (`PROTOCOLS`): with the true category caption (the
paper's), without a caption, and with the model's own top-ranked caption (what `mvaema-predict`, the demo and the
pipeline give a user); each also with one blank grey image for every question, the question-only floor, and the
difference: what the image adds. Zero-shot classification without captions, and how often the answer to the
category question names the true category in each protocol. On the built-in synthetic corpus, grounded fact scores
check the answers against what each scene shows.

Both the student and the BLIP peer are evaluated by the same code: answers come from `generate` with one shared
generation config (MVaEMa's decoding settings, `default_generation_config`), and
classification ranks the categories by `classify(..., method=...)` (the peer supports the decoder
likelihood method only). References are decoded from their own token ids, so that truncation, unknown words
and WordPiece detokenisation treat the reference exactly as they treat the model's answer.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from transformers import GenerationConfig

from dataset_builder.question_families import CLASSIFICATION_QUESTION, readable_category
from metrics.grounded_facts.grounded_facts import GroundedFacts
from metrics.vqa_text.vqa_text import VqaText
from metrics.zero_shot_classification.zero_shot_classification import ZeroShotClassification
from modeling_mvaema import MVaEMaConfig
from modeling_mvaema.classification_mvaema import CLASSIFY_METHODS
from modeling_mvaema.modeling_mvaema import default_generation_config

# Prompt protocols: which caption goes before each question.
PROTOCOLS = ("caption", "no_caption", "self_caption")
# Scores whose image contribution the tables state.
CONTRIBUTION_SCORES = ("bleu2", "meteor")


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
def generate_answers(model, processor, pixel_values, prompts, device, batch_size: int,
                     max_new_tokens: int) -> list[str]:
    """Greedy answers, decoded with `shared_generation_config` whichever model answers. `pixel_values` `(N, 3, S, S)`
    holds one image per prompt; `prompts` is a processor output with `input_ids` / `attention_mask` `(N, Lq)`."""
    model.eval()
    generation = generation_config_for(model, shared_generation_config(processor, max_new_tokens))
    answers: list[str] = []
    for start in range(0, len(pixel_values), batch_size):
        stop = min(start + batch_size, len(pixel_values))
        mask = prompts["attention_mask"][start:stop]
        length = int(mask.sum(1).max())
        generated = model.generate(
            pixel_values=pixel_values[start:stop].to(device),
            input_ids=prompts["input_ids"][start:stop, :length].to(device),
            attention_mask=mask[:, :length].to(device),
            generation_config=generation,
        )
        answers.extend(processor.batch_decode(generated, skip_special_tokens=True))
    return answers


def protocol_prompts(processor, questions: list[str], protocol: str, true_captions: list[str],
                     own_captions: list[str] | None) -> dict:
    """The prompts of `protocol` for `questions`: after the true caption, bare, or after the model's own caption."""
    captions = {"caption": true_captions, "no_caption": None, "self_caption": own_captions}[protocol]
    return processor(questions=questions, captions=captions, self_caption=False)


def evaluation_rows(table, limit: int | None, seed: int = 0) -> torch.Tensor:
    """The test pairs the VQA protocols answer: all, or a fixed random `limit` of them (the same for every model)."""
    if limit is None or limit >= len(table):
        return torch.arange(len(table))
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(table), limit, replace=False)))


def own_captions(processor, predicted_category: dict[int, int], image_index: torch.Tensor) -> list[str]:
    """Per pair, the caption of the category the model ranks first for its image (`predicted_category`: pixel-store
    image index -> position in the processor's `category_names`, which the captions share)."""
    return [processor.category_captions[predicted_category[int(image)]] for image in image_index]


def evaluate_vqa_protocols(model, processor, data, device, batch_size: int, predicted_category: dict[int, int],
                           limit: int | None = None) -> dict:
    """Per protocol: the VQA scores with the micrograph and with one blank (mid-grey) image for every question, the
    image's contribution (`CONTRIBUTION_SCORES`, real minus blank), and the grounded fact scores where the corpus
    has facts. Generation stops at the test answers' token width, as the references are cut there."""
    table = data.test
    rows = evaluation_rows(table, limit)
    questions = [table.questions[int(row)] for row in rows]
    image_index = table.image_index[rows]
    references = processor.batch_decode(table.labels[rows].clamp(min=0), skip_special_tokens=True)
    categories = table.category[rows]
    true_captions = [processor.category_captions[int(category)] for category in categories]
    asks_category = [False] * len(rows) if table.asks_category is None else table.asks_category[rows].tolist()
    category_names = [readable_category(name).lower() for name in data.class_names]
    images = {"image": data.pixel_store.normalized(image_index)}
    images["blank"] = torch.zeros_like(images["image"])
    results = {}
    for protocol in PROTOCOLS:
        if protocol == "self_caption" and not predicted_category:
            continue
        captions = own_captions(processor, predicted_category, image_index) if protocol == "self_caption" else None
        prompts = protocol_prompts(processor, questions, protocol, true_captions, captions)
        scores = {}
        for name, pixel_values in images.items():
            answers = generate_answers(model, processor, pixel_values, prompts, device, batch_size,
                                       table.labels.shape[1])
            scores[name] = VqaText().compute(predictions=answers, references=references)
            if data.facts is not None:
                scores[name]["facts"] = fact_scores(answers, table, rows, data.facts)
            if name == "image":
                scores[name]["examples"] = [{"question": q, "prediction": p, "reference": r}
                                            for q, p, r in list(zip(questions, answers, references))[:8]]
                scores[name].update(distinct_answers_per_question(questions, answers, references))
            scores[name].update(uninvited_categories(answers, references, asks_category, category_names))
        scores["image_adds"] = {score: scores["image"][score] - scores["blank"][score]
                                for score in CONTRIBUTION_SCORES}
        if data.facts is not None:
            scores["image_adds"]["facts"] = _difference(scores["image"]["facts"]["accuracy"],
                                                        scores["blank"]["facts"]["accuracy"])
        results[protocol] = scores
    results["questions"] = len(rows)
    return results


def distinct_answers_per_question(questions: list[str], answers: list[str], references: list[str]) -> dict:
    """How much the answers vary from micrograph to micrograph: per question, the number of distinct answers among
    its rows, averaged over the questions, beside the same count of the teacher's references for those rows. A model
    that says one sentence to every micrograph scores 1 whatever its BLEU."""
    by_question: dict[str, tuple[set, set]] = {}
    for question, answer, reference in zip(questions, answers, references, strict=True):
        generated, taught = by_question.setdefault(question, (set(), set()))
        generated.add(answer.strip())
        taught.add(reference.strip())
    return {
        "distinct_answers": float(np.mean([len(generated) for generated, _ in by_question.values()])),
        "teacher_distinct_answers": float(np.mean([len(taught) for _, taught in by_question.values()])),
    }


def uninvited_categories(answers: list[str], references: list[str], asks_category: list[bool],
                         category_names: list[str]) -> dict:
    """How often the category sentence leaks into other answers: among the answers to questions other than the
    category question whose reference (the teacher's answer) names no category, the share that name one (a whole
    word or phrase: "nanoparticles" does not name "particles"). A decoder that answers every question with "The image
    shows porous sponges, specifically ..." scores 1."""
    pattern = re.compile(r"\b(" + "|".join(re.escape(name) for name in category_names) + r")\b")
    uninvited = [bool(pattern.search(answer.lower()))
                 for answer, reference, category_question in zip(answers, references, asks_category, strict=True)
                 if not category_question and not pattern.search(reference.lower())]
    return {"uninvited_category": float(np.mean(uninvited)) if uninvited else None,
            "uninvited_category_answers": len(uninvited)}


def _difference(real: float | None, blank: float | None) -> float | None:
    return None if real is None or blank is None else real - blank


def fact_scores(answers: list[str], table, rows: torch.Tensor, facts: dict[str, dict]) -> dict:
    """Grounded fact scores of `answers` to the table's pairs at `rows` (metrics/grounded_facts)."""
    return GroundedFacts().compute(
        predictions=answers,
        references=[facts[table.image_ids[int(row)]] for row in rows],
        families=[table.families[int(row)] for row in rows],
        questions=[table.questions[int(row)] for row in rows],
    )


@torch.no_grad()
def evaluate_category_answers(model, processor, table, data, device, batch_size: int,
                              predicted_category: dict[int, int]) -> dict:
    """How often the answer to the category question names each test micrograph's true category, asked after the
    true caption (the paper's protocol: the answer must follow its prompt), without a caption (the decoder must name
    it from the pixels), and after the model's own caption (then it must also name the caption's category: an answer
    that contradicts the ranking shown beside it is wrong)."""
    image_index, categories = distinct_images(table)
    pixel_values = data.pixel_store.normalized(image_index)
    true_captions = [processor.category_captions[int(category)] for category in categories]
    names = [readable_category(name).lower() for name in data.class_names]
    questions = [CLASSIFICATION_QUESTION] * len(image_index)
    results = {"images": len(image_index)}
    for protocol in PROTOCOLS:
        if protocol == "self_caption" and not predicted_category:
            continue
        captions = own_captions(processor, predicted_category, image_index) if protocol == "self_caption" else None
        prompts = protocol_prompts(processor, questions, protocol, true_captions, captions)
        answers = [answer.lower() for answer in generate_answers(
            model, processor, pixel_values, prompts, device, batch_size, table.labels.shape[1])]
        named = [names[int(category)] in answer for category, answer in zip(categories, answers)]
        results[protocol] = {
            "named_share": float(np.mean(named)),
            "misses": [{"category": names[int(category)], "answer": answer}
                       for category, answer, hit in zip(categories, answers, named) if not hit][:8],
        }
        if protocol == "self_caption":
            follows = [names[predicted_category[int(image)]] in answer for image, answer in zip(image_index, answers)]
            results[protocol]["names_own_caption_share"] = float(np.mean(follows))
    return results


def distinct_images(table) -> tuple[torch.Tensor, torch.Tensor]:
    """One entry per distinct image of the table: (pixel-store image_index [M], category positions [M] in the
    processor's `category_names`, the corpus's own categories: `data.category_positions`)."""
    image_index, first = np.unique(table.image_index.numpy(), return_index=True)
    return torch.from_numpy(image_index), table.category[torch.from_numpy(first)]


@torch.no_grad()
def category_scores(model, processor, data, image_index: torch.Tensor, device, batch_size: int, method: str) -> torch.Tensor:
    """Scores [N_images, C] of each of the processor's C categories (the corpus's own) for each image at
    `image_index` [N_images], asked without a caption."""
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
    image_index, _ = distinct_images(table)
    scores = category_scores(model, processor, data, image_index, device, batch_size, method)
    return classification_metrics(scores, data, table)


def classification_metrics(scores: torch.Tensor, data, table) -> dict:
    """Top-1/top-5 and the per-class figures of category `scores` `(M, C)` for the table's distinct images, over
    the corpus's own categories (`data.class_names`): macro figures never average over a category without images."""
    _, categories = distinct_images(table)
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
    """The evaluation on the test fold of `data` (FoldData): classification without captions by the method that
    classifies the validation fold best; VQA in every protocol with the blank-image floor (`max_questions`: a fixed
    random subset of the test pairs), the category question's answers, and the grounded fact scores."""
    method = select_classification_method(model, processor, data.validation, data, device, batch_size)
    generation = shared_generation_config(processor, data.test.labels.shape[1])
    image_index, _ = distinct_images(data.test)
    scores = category_scores(model, processor, data, image_index, device, batch_size, method)
    # Self-captioning ranks like `rank_categories` with the processor's method (what mvaema-predict and the demo
    # show); the peer has no ranking of its own worth a caption, and is asked the protocols it can answer.
    predicted_category = {}
    if hasattr(model.config, "use_itc"):
        predicted_category = dict(zip(image_index.tolist(), scores.argmax(1).tolist()))
    vqa = evaluate_vqa_protocols(model, processor, data, device, batch_size, predicted_category, max_questions)
    return {
        "vqa": {score: value for score, value in vqa["caption"]["image"].items() if score != "facts"},
        "vqa_protocols": vqa,
        "generation": decoding_settings(generation, processor),
        "classification": classification_metrics(scores, data, data.test),
        "classification_method": method,
        "category_answers": evaluate_category_answers(model, processor, data.test, data, device, batch_size,
                                                      predicted_category),
        "parameters": sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad),
    }
