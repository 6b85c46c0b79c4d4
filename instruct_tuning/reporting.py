"""Results of a training run: results.json, the paper-style tables, a confusion matrix, the model card, the push.

`summarize` turns per-(model, fold) results (`finished_runs`: every result.json of a run folder) into one section per
model with fold means (and standard deviations when several folds ran); everything else renders that summary, each
table row naming the folds it covers. A model is a variant (MVaEMa, an
ablation, the BLIP peer) or a supervised baseline, which has no VQA part.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np

from instruct_tuning.arguments import ArgumentError
from instruct_tuning.atomic_io import write_text_atomically
from instruct_tuning.baselines import BASELINES
from instruct_tuning.checkpoints import RESULT_FILE
from instruct_tuning.variants import DISPLAY_NAMES, MVAEMA, PEER, VARIANTS

VQA_COLUMNS = (("BLEU-2", "bleu2"), ("BLEU-4", "bleu4"), ("ROUGE-1", "rouge1"), ("ROUGE-2", "rouge2"),
               ("ROUGE-L", "rougeL"), ("METEOR", "meteor"))
# The top-level model_card.md, read as package data (instruct_tuning/model_card.md links to it) so that an installed
# wheel renders the same card as a checkout.
MODEL_CARD_TEMPLATE = "model_card.md"
CLASSIFICATION_COLUMNS = (("Top-1", "top1"), ("Top-5", "top5"), ("Macro F1", "macro_f1"))


def display_name(model: str) -> str:
    """The row name of a variant or baseline in the tables."""
    return BASELINES[model].display_name if model in BASELINES else DISPLAY_NAMES.get(model, model)


def _mean_and_std(values: list) -> tuple:
    """Fold mean and std of numbers, lists (element-wise) or dicts (per key)."""
    first = values[0]
    if isinstance(first, dict):  # keys every run has: a figure added in a later version is left out of mixed folds
        pairs = {key: _mean_and_std([v[key] for v in values]) for key in first if all(key in v for v in values)}
        return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
    array = np.asarray(values, dtype=float)
    return array.mean(0).tolist(), array.std(0).tolist()


def _numeric(section: dict) -> dict:
    return {k: v for k, v in section.items() if isinstance(v, (int, float, list, dict)) and k != "examples"}


# What a model push uploads: weights, config, modeling code, processor and tokenizer files, the card; never the
# results (their examples quote test-set reference answers).
MODEL_FILE_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json", "*.py",
                       "processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                       "special_tokens_map.json", "vocab.txt", "chat_template.jinja", "README.md")


def finished_runs(runs_dir: Path) -> dict:
    """{model: {fold: result}} of every finished run under `runs_dir` (`<model>/fold_<k>/result.json`), whichever
    invocation trained it; models in the tables' order (variants, then baselines)."""
    results: dict = {}
    for model in [*VARIANTS, *BASELINES]:
        for result_file in (runs_dir / model).glob(f"fold_*/{RESULT_FILE}"):
            fold = result_file.parent.name.removeprefix("fold_")
            if fold.isdigit():
                results.setdefault(model, {})[int(fold)] = json.loads(result_file.read_text())
    return results


def summarize(results: dict, class_names: list[str], args: dict, wall_time_seconds: float,
              environment: dict | None = None) -> dict:
    """`results`: {model: {fold: result}}. `environment`: what the run actually used (mixed precision, process count,
    device)."""
    summary: dict = {"meta": {"class_names": class_names, "arguments": args, "wall_time_seconds": wall_time_seconds,
                              **({"environment": environment} if environment else {})}}
    for model, by_fold in results.items():
        summary[model] = _model_section([by_fold[fold] for fold in sorted(by_fold)], sorted(by_fold))
    return summary


def _model_section(runs: list[dict], folds: list[int]) -> dict:
    """Fold means and stds of one model's results; the VQA part only where the model answers questions."""
    section = {"folds": folds, "classification_method": [run["classification_method"] for run in runs]}
    for part in ("vqa", "classification"):
        if part in runs[0]:
            section[part], section[f"{part}_std"] = _mean_and_std([_numeric(run[part]) for run in runs])
    section["classification"]["confusion_matrix"] = np.sum(
        [run["classification"]["confusion_matrix"] for run in runs], axis=0).astype(int).tolist()
    if "vqa" in runs[0]:
        section["vqa_examples"] = runs[0]["vqa"].get("examples", [])
    if "generation" in runs[0]:
        section["generation"] = runs[0]["generation"]
    if "vqa_protocols" in runs[0]:
        section["protocols"], section["protocols_std"] = _mean_and_std([protocol_numbers(run) for run in runs])
        section["facts_by_family"] = facts_by_family(runs[0]["vqa_protocols"])
        section["category_answer_misses"] = {protocol: answers["misses"]
                                             for protocol, answers in runs[0]["category_answers"].items()
                                             if isinstance(answers, dict)}
    if "parameters" in runs[0]:
        section["parameters"] = runs[0]["parameters"]
    section["epochs"] = [run["training"]["epochs"] for run in runs]
    if "passes_per_epoch" in runs[0]["training"]:
        section["passes_per_epoch"] = runs[0]["training"]["passes_per_epoch"]
    return section


def protocol_numbers(run: dict) -> dict:
    """The figures of one run's answers per prompt protocol, flat, for fold means: VQA scores with the image and with
    the blank image and their difference, the fact accuracy likewise, and how often the answer to the category
    question names the true category (and, self-captioned, the caption's category)."""
    numbers = {}
    for protocol, scores in run["vqa_protocols"].items():
        if not isinstance(scores, dict):
            continue
        for score in ("bleu2", "meteor"):
            numbers[f"{protocol}/{score}"] = scores["image"][score]
            numbers[f"{protocol}/blank_{score}"] = scores["blank"][score]
            numbers[f"{protocol}/adds_{score}"] = scores["image_adds"][score]
        for variety in ("distinct_answers", "teacher_distinct_answers", "uninvited_category"):
            if scores["image"].get(variety) is not None:
                numbers[f"{protocol}/{variety}"] = scores["image"][variety]
        if "facts" in scores["image"]:
            for name in ("image", "blank"):
                numbers[f"{protocol}/{name}_facts"] = scores[name]["facts"]["accuracy"] or 0.0
            numbers[f"{protocol}/adds_facts"] = numbers[f"{protocol}/image_facts"] - numbers[f"{protocol}/blank_facts"]
    for protocol, answers in run["category_answers"].items():
        if isinstance(answers, dict):
            numbers[f"{protocol}/category_named"] = answers["named_share"]
            if "names_own_caption_share" in answers:
                numbers[f"{protocol}/names_own_caption"] = answers["names_own_caption_share"]
    return numbers


def facts_by_family(protocols: dict) -> dict:
    """{protocol: {"image"|"blank": {family: accuracy}, "left_out": [...]}} of one run (the first fold's)."""
    table = {}
    for protocol, scores in protocols.items():
        if isinstance(scores, dict) and "facts" in scores["image"]:
            table[protocol] = {name: {family: tally["accuracy"] for family, tally in scores[name]["facts"]["families"].items()}
                               for name in ("image", "blank")}
            table[protocol]["left_out"] = sorted(scores["image"]["facts"]["left_out"])
    return table


def _cell(summary: dict, variant: str, part: str, key: str) -> str:
    mean = summary[variant][part][key]
    std = summary[variant][f"{part}_std"][key]
    return f"{mean:.3f} ± {std:.3f}" if len(summary[variant]["folds"]) > 1 else f"{mean:.3f}"


def fold_coverage(summary: dict, model: str) -> str:
    """The test folds a model's row averages over, e.g. "folds 0, 1, 2 of 5"."""
    folds = summary[model]["folds"]
    total = summary["meta"]["arguments"].get("num_folds")
    return f"fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))}" + (f" of {total}" if total else "")


def coverage_note(summary: dict) -> list[str]:
    """A warning above the tables when their rows average over different folds."""
    coverages = {tuple(section["folds"]) for model, section in summary.items() if model != "meta"}
    if len(coverages) < 2:
        return []
    return ["Not every row covers the same test folds (the Folds column): a row over fewer folds than another is a "
            "mean over those folds only, not a paired comparison.", ""]


def _parameters(section: dict) -> str:
    count = section.get("parameters")
    return "" if count is None else f"{count / 1e6:.2f} M" if count >= 10_000 else f"{count:,}"


def decoding_line(summary: dict, models: list[str]) -> list[str]:
    """The decoding settings every VQA row was generated with, stated under Table 1."""
    settings = [summary[model]["generation"] for model in models if "generation" in summary[model]]
    if not settings:
        return []
    first = settings[0]
    same = all(setting == first for setting in settings)
    text = (f"greedy (num_beams {first['num_beams']}, no sampling), max_new_tokens {first['max_new_tokens']}, "
            f"no_repeat_ngram_size {first['no_repeat_ngram_size']}, suppressed tokens "
            f"{' '.join(first['suppress_tokens']) or 'none'}")
    return ["", f"Decoding ({'every model alike' if same else 'NOT the same for every model'}): {text}."]


def vqa_tables(summary: dict) -> list[str]:
    models = [v for v in (MVAEMA, PEER) if v in summary]
    if not models:  # a folder of baselines only
        return []
    lines = ["**Table 1: VQA (test fold, prompts with captions)**", "",
             "| Model | Folds | " + " | ".join(name for name, _ in VQA_COLUMNS) + " |",
             "|---" * (len(VQA_COLUMNS) + 2) + "|"]
    lines += [f"| {display_name(v)} | {fold_coverage(summary, v)} | "
              + " | ".join(_cell(summary, v, "vqa", k) for _, k in VQA_COLUMNS) + " |" for v in models]
    return lines + decoding_line(summary, models) + protocol_table(summary, models) + fact_family_tables(summary, models)


PROTOCOL_NAMES = {"caption": "true caption (paper)", "no_caption": "no caption", "self_caption": "own caption"}


def protocol_table(summary: dict, models: list[str]) -> list[str]:
    """Table 1b: each protocol's answers with the micrograph, with one blank image, and what the image adds."""
    models = [model for model in models if "protocols" in summary[model]]
    if not models:
        return []
    lines = ["", "**Table 1b: answers by prompt protocol, with the micrograph / with one blank grey image for every "
                 "question (the question-only floor) / what the image adds**", "",
             "| Model | Folds | Protocol | BLEU-2 | BLEU-2 blank | BLEU-2 adds | METEOR | METEOR blank | METEOR adds | "
             "Facts | Facts blank | Facts adds | Category named |", "|---" * 13 + "|"]
    for model in models:
        numbers = summary[model]["protocols"]
        for protocol, name in PROTOCOL_NAMES.items():
            if f"{protocol}/bleu2" not in numbers:
                continue
            keys = ["bleu2", "blank_bleu2", "adds_bleu2", "meteor", "blank_meteor", "adds_meteor", "image_facts",
                    "blank_facts", "adds_facts", "category_named"]
            cells = [_protocol_cell(summary, model, f"{protocol}/{key}") for key in keys]
            lines.append(f"| {display_name(model)} | {fold_coverage(summary, model)} | {name} | " + " | ".join(cells) + " |")
    return lines + category_answer_lines(summary, models)


def _protocol_cell(summary: dict, model: str, key: str) -> str:
    if key not in summary[model]["protocols"]:
        return "–"
    mean, std = summary[model]["protocols"][key], summary[model]["protocols_std"][key]
    return f"{mean:.3f} ± {std:.3f}" if len(summary[model]["folds"]) > 1 else f"{mean:.3f}"


def category_answer_lines(summary: dict, models: list[str]) -> list[str]:
    """The category question's answers beside the ranking: from the pixels (no caption) against ITC top-1."""
    lines = ["", "Category named: how often the answer to \"Identify the specific type of nanomaterial\" names the "
                 "test micrograph's true category (one answer per micrograph). Facts: the share of checkable facts "
                 "stated correctly (metrics/grounded_facts; built-in synthetic corpus only). Distinct answers: per "
                 "question, how many different answers the test micrographs asked it get (mean over the questions), "
                 "beside the teacher's. Uninvited categories: the category sentence leaking into the answers to "
                 "other questions."]
    for model in models:
        numbers = summary[model]["protocols"]
        parts = [f"without a caption {numbers['no_caption/category_named']:.3f}",
                 f"{summary[model]['classification_method'][0].upper()} top-1 "
                 f"{summary[model]['classification']['top1']:.3f}"]
        if "self_caption/names_own_caption" in numbers:
            parts.append(f"self-captioned, the answer names the model's own top category "
                         f"{numbers['self_caption/names_own_caption']:.1%} of the time")
        if "no_caption/distinct_answers" in numbers:
            parts.append(f"distinct answers per question without a caption {numbers['no_caption/distinct_answers']:.1f} "
                         f"(the teacher's for the same micrographs {numbers['no_caption/teacher_distinct_answers']:.1f})")
        if "no_caption/uninvited_category" in numbers:
            parts.append(f"answers to the other questions that name a category where the teacher's names none "
                         f"{numbers['no_caption/uninvited_category']:.1%} (no caption)")
        lines.append(f"- {display_name(model)}: {'; '.join(parts)}.")
    return lines


def fact_family_tables(summary: dict, models: list[str]) -> list[str]:
    """Table 1c: the fact accuracy per question family (first fold), with the micrograph and with the blank image."""
    models = [model for model in models if summary[model].get("facts_by_family")]
    if not models:
        return []
    first = summary[models[0]]["facts_by_family"]
    families = sorted({family for protocol in first.values() for family in protocol["image"]})
    lines = ["", f"**Table 1c: grounded fact accuracy per question family (fold {summary[models[0]]['folds'][0]}), "
                 "micrograph / blank image**", "",
             "| Model | Protocol | " + " | ".join(families) + " |", "|---" * (len(families) + 2) + "|"]
    for model in models:
        for protocol, table in summary[model]["facts_by_family"].items():
            cells = [f"{_maybe(table['image'].get(f))} / {_maybe(table['blank'].get(f))}" for f in families]
            lines.append(f"| {display_name(model)} | {PROTOCOL_NAMES[protocol]} | " + " | ".join(cells) + " |")
    left_out = first[next(iter(first))]["left_out"]
    return lines + ["", f"Left out (their answers state no checkable fact): {', '.join(left_out)}."]


def _maybe(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def classification_models(summary: dict) -> list[str]:
    """MVaEMa, the peer, then the baselines in the order they ran."""
    return [v for v in (MVAEMA, PEER) if v in summary] + [name for name in summary if name in BASELINES]


def classification_table(summary: dict) -> list[str]:
    lines = ["**Table 2: classification (test fold, no captions; MVaEMa and the peer zero-shot, baselines supervised)**",
             "", "| Model | Folds | " + " | ".join(name for name, _ in CLASSIFICATION_COLUMNS) + " | Parameters | Method |",
             "|---" * (len(CLASSIFICATION_COLUMNS) + 4) + "|"]
    for model in classification_models(summary):
        section = summary[model]
        cells = [_cell(summary, model, "classification", key) for _, key in CLASSIFICATION_COLUMNS]
        methods = classification_methods(section)
        lines.append(f"| {display_name(model)} | {fold_coverage(summary, model)} | {' | '.join(cells)} | "
                     f"{_parameters(section)} | {methods} |")
    return lines + passes_line(summary)


def classification_methods(section: dict) -> str:
    """The ranking methods a model's folds used (each fold's validation chooses), e.g. "itc" or "itc, lm"."""
    return ", ".join(sorted(set(section["classification_method"])))


def passes_line(summary: dict) -> list[str]:
    """How many passes over the training micrographs an epoch of each supervised network made, under Table 2."""
    passes = [f"{display_name(name)} {summary[name]['passes_per_epoch']}" for name in summary
              if name in BASELINES and "passes_per_epoch" in summary[name]]
    if not passes:
        return []
    return ["", f"Passes over the training micrographs in one epoch: {', '.join(passes)} (`--baseline_passes_per_epoch`; "
                "by default as many as an epoch of MVaEMa shows each micrograph)."]


def per_class_tables(summary: dict) -> list[str]:
    """Table 4's per-category precision, recall and F1 for MVaEMa and every baseline."""
    lines = []
    for model in [m for m in classification_models(summary) if m != PEER]:
        per_class = summary[model]["classification"]["per_class"]
        lines += ["", f"**Table 4: {display_name(model)} per category ({fold_coverage(summary, model)})**", "",
                  "| Category | Precision | Recall | F1 | Support |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']:.0f} |"
                  for name, c in per_class.items()]
    return lines


def ablation_tables(summary: dict) -> list[str]:
    ablations = [v for v in DISPLAY_NAMES if v in summary and v not in (MVAEMA, PEER)]
    if not ablations:
        return []
    rows = [MVAEMA, *ablations] if MVAEMA in summary else ablations
    lines = ["", "**Table 5: ablations, VQA**", "", "| Variant | Folds | BLEU-4 | ROUGE-L | METEOR |",
             "|---|---|---|---|---|"]
    lines += [_ablation_row(summary, v, "vqa", ("bleu4", "rougeL", "meteor")) for v in rows]
    lines += ["", "**Table 6: ablations, classification**", "",
              "| Variant | Folds | Avg precision | Avg recall | Avg F1 |", "|---|---|---|---|---|"]
    lines += [_ablation_row(summary, v, "classification", ("macro_precision", "macro_recall", "macro_f1")) for v in rows]
    return lines + ablation_image_table(summary, rows)


# Table 6b's columns: what each ablation does to the ranking and to the image's part in the answers.
ABLATION_IMAGE_COLUMNS = (("Named, no caption", "no_caption/category_named"),
                          ("Named, true caption", "caption/category_named"),
                          ("BLEU-2 the image adds, no caption", "no_caption/adds_bleu2"),
                          ("BLEU-2 the image adds, true caption", "caption/adds_bleu2"),
                          ("Facts the image adds, no caption", "no_caption/adds_facts"))


def ablation_image_table(summary: dict, rows: list[str]) -> list[str]:
    """Table 6b: top-1 (by the method each variant's validation chose) beside the category named by the answers and
    what the micrograph adds over the blank image, so that an ablation's effect on accuracy and on the use of the
    image are read together."""
    rows = [v for v in rows if "protocols" in summary[v]]
    if not rows:
        return []
    lines = ["", "**Table 6b: ablations, the ranking and the image's part in the answers (Table 1b's measures)**", "",
             "| Variant | Folds | Top-1 | Method | " + " | ".join(name for name, _ in ABLATION_IMAGE_COLUMNS) + " |",
             "|---" * (len(ABLATION_IMAGE_COLUMNS) + 4) + "|"]
    for variant in rows:
        methods = classification_methods(summary[variant]).upper()
        cells = [fold_coverage(summary, variant), _cell(summary, variant, "classification", "top1"), methods,
                 *(_protocol_cell(summary, variant, key) for _, key in ABLATION_IMAGE_COLUMNS)]
        lines.append(f"| {display_name(variant)} | " + " | ".join(cells) + " |")
    return lines


def _ablation_row(summary: dict, variant: str, part: str, keys: tuple) -> str:
    cells = [fold_coverage(summary, variant), *(_cell(summary, variant, part, key) for key in keys)]
    return f"| {display_name(variant)} | " + " | ".join(cells) + " |"


def results_tables(summary: dict) -> str:
    """Markdown tables in the paper's layout (Tables 1, 2, 4, 5, 6), with 1b, 1c and 6b on the use of the image."""
    vqa = vqa_tables(summary)
    lines = [*coverage_note(summary), *vqa, *([""] if vqa else []), *classification_table(summary),
             *per_class_tables(summary), *ablation_tables(summary)]
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(summary: dict, variant: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = summary["meta"]["class_names"]
    matrix = np.asarray(summary[variant]["classification"]["confusion_matrix"])
    figure, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center", fontsize=7,
                  color="white" if count > matrix.max() / 2 else "black")
    axis.set_title(f"{display_name(variant)}: confusion matrix (test, no captions)")
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_reports(summary: dict, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(output_dir / "results.json", json.dumps(summary, indent=2))
    (output_dir / "results.md").write_text(results_tables(summary))
    for variant in (MVAEMA, PEER):
        if variant in summary:
            plot_confusion_matrix(summary, variant, output_dir / f"confusion_matrix_{variant}.png")


def render_model_card(summary: dict, corpus) -> str:
    """model_card.md rendered with the Hub metadata (model-index results) and this run's tables."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    teachers = sorted(set(corpus["teacher"]))
    prompt_versions = sorted(set(corpus["prompt_version"]))
    section = summary.get(MVAEMA, {})
    eval_results = [
        EvalResult(task_type="visual-question-answering", dataset_type="sem-instruct", dataset_name="SEM instruct (test fold)",
                   metric_type=key.lower(), metric_name=name, metric_value=round(section["vqa"][key], 4))
        for name, key in VQA_COLUMNS if section
    ] + [
        EvalResult(task_type="image-classification", dataset_type="sem-instruct", dataset_name="SEM instruct (test fold)",
                   metric_type="accuracy", metric_name=name, metric_value=round(section["classification"][key], 4))
        for name, key in (("Top-1 accuracy", "top1"), ("Top-5 accuracy", "top5")) if section
    ]
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="visual-question-answering", license="apache-2.0",
        tags=["electron-microscopy", "sem", "vision-language", "blip", "instruction-tuning", "mvaema"],
        metrics=["bleu", "rouge", "meteor", "accuracy"], model_name="MVaEMa", eval_results=eval_results or None,
    )
    arguments = summary["meta"]["arguments"]
    card = ModelCard.from_template(
        card_data, template_str=files("instruct_tuning").joinpath(MODEL_CARD_TEMPLATE).read_text(encoding="utf-8"),
        teachers=", ".join(teachers), prompt_versions=", ".join(prompt_versions),
        num_images=len(set(corpus["image_id"])), num_pairs=len(corpus), class_names=", ".join(summary["meta"]["class_names"]),
        synthetic_only=all(t.startswith("grounded-synthetic") for t in teachers),
        results_tables=results_tables(summary), epochs=arguments["num_epochs"], batch_size=arguments["batch_size"],
        learning_rate=arguments["learning_rate"], warmup_steps=arguments["warmup_steps"], folds=", ".join(str(f) for f in section.get("folds", [])),
        num_folds=arguments["num_folds"], category_every_view=arguments.get("ask_category_every_view", False),
        category_answer_tokens=arguments.get("category_answer_tokens"),
    )
    return str(card)


def save_model_with_card(model, processor, model_dir: Path, summary: dict, corpus) -> None:
    """save_pretrained (config with auto_map, safetensors, modeling code), processor, card and results."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    (model_dir / "README.md").write_text(render_model_card(summary, corpus))
    (model_dir / "results.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "meta"}, indent=2))


def check_push_target(repo_id: str, public: bool = False, api=None):
    """Before training: the user is logged in, the model repo exists or can be created, and a repo that is already
    public is used only with `--hub_public`. Raises `ArgumentError` naming `--push_to_hub`; returns the HfApi."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    try:
        api.whoami()
    except Exception as error:  # offline, no token, bad token: the Hub's own exception types vary
        raise ArgumentError(f"--push_to_hub {repo_id}: cannot reach the Hub as a logged-in user ({error}); run "
                            "`hf auth login` or set HF_TOKEN, or leave out --push_to_hub") from None
    try:
        api.create_repo(repo_id, private=not public, exist_ok=True, repo_type="model")
        is_private = api.repo_info(repo_id, repo_type="model").private
    except Exception as error:
        raise ArgumentError(f"--push_to_hub {repo_id}: the Hub refuses this model repo ({error}); check the name and "
                            "your write access to its owner") from None
    if not public and not is_private:
        raise ArgumentError(f"--push_to_hub {repo_id} is an existing public repo: pass --hub_public to publish into it, "
                            "or make it private on the Hub first")
    return api


def model_files(model_dir: Path) -> list[str]:
    """The files of `model_dir` a push uploads (MODEL_FILE_PATTERNS), by name."""
    return sorted({path.name for pattern in MODEL_FILE_PATTERNS for path in Path(model_dir).glob(pattern) if path.is_file()})


def push(model_dir: Path, repo_id: str, private: bool = True, api=None) -> str:
    """Upload the saved model (weights, config, code, processor, card; never results.json) to the Hub; private unless
    asked, and never into an existing public repo without `--hub_public`."""
    api = check_push_target(repo_id, public=not private, api=api)
    files = model_files(model_dir)
    if "model.safetensors" not in files and "model.safetensors.index.json" not in files:
        raise FileNotFoundError(f"{model_dir}: no model.safetensors to push; nothing was uploaded")
    api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, repo_type="model", allow_patterns=files,
                      commit_message="Upload MVaEMa (run_instruct_tuning.py)")
    return repo_id


def best_baseline(summary: dict) -> str | None:
    """The trained baseline with the highest mean top-1, or None when none ran."""
    baselines = [name for name in summary if name in BASELINES]
    return max(baselines, key=lambda name: summary[name]["classification"]["top1"], default=None)


def headline(summary: dict) -> str:
    """MVaEMa next to the best baseline it trained: top-1, top-5, macro F1 (mean ± std over folds)."""
    rows = [model for model in (MVAEMA, best_baseline(summary)) if model in summary]
    lines = [f"{display_name(model)}: " + ", ".join(
        f"{name} {_cell(summary, model, 'classification', key)}" for name, key in CLASSIFICATION_COLUMNS)
        for model in rows]
    return "\n".join(lines + [answers_headline(summary, model) for model in (MVAEMA, PEER)
                               if "protocols" in summary.get(model, {})])


def answers_headline(summary: dict, model: str) -> str:
    """Whether a model's answers come from the micrograph: the category named without a caption next to its ranking's
    top-1, and what the image adds over a blank image to the answers asked without a caption."""
    section = summary[model]
    return (f"{display_name(model)} answers: without a caption the category answer names the true category "
            f"{_protocol_cell(summary, model, 'no_caption/category_named')} ({section['classification_method'][0].upper()} "
            f"ranking top-1 {_cell(summary, model, 'classification', 'top1')}); the micrograph adds "
            f"{_protocol_cell(summary, model, 'no_caption/adds_bleu2')} BLEU-2 and "
            f"{_protocol_cell(summary, model, 'no_caption/adds_meteor')} METEOR over a blank image (no caption).")


def print_summary(summary: dict, output_dir: Path) -> None:
    print("\n" + results_tables(summary))
    print(headline(summary))
    minutes = summary["meta"]["wall_time_seconds"] / 60
    print(f"Done in {minutes:.1f} min. Model: {output_dir / 'model'}  Results: {output_dir / 'results.json'}, "
          f"{output_dir / 'results.md'}  Confusion matrix: {output_dir / 'confusion_matrix_mvaema.png'}  "
          f"TensorBoard: tensorboard --logdir {output_dir}")
