"""Instruction-tune MVaEMa on a teacher corpus, evaluate it the way the paper does, and publish it.

    python run_instruct_tuning.py                      # the main job: synthetic corpus, MVaEMa + BLIP peer + baselines
    accelerate launch run_instruct_tuning.py --images DIR --teacher-cache answers.jsonl --cross-validate
    accelerate launch run_instruct_tuning.py --dataset my-org/sem-instruct --init-from my-org/mvaema --fold 3

Top to bottom: arguments, data, every (variant, fold) run and the supervised baselines of each fold, then the tables
(over every finished run in the output folder, so that runs of other folds or models from earlier invocations count
too), the model, its card and the push. The pieces live in `instruct_tuning/`: arguments, data, factories, training,
checkpoints, evaluation, baselines, reporting.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import HfArgumentParser

from instruct_tuning import evaluation, reporting
from instruct_tuning.arguments import ArgumentError, ScriptArguments
from instruct_tuning.atomic_io import write_text_atomically
from instruct_tuning.baselines.runs import baseline_settings, mvaema_vision_config, passes_per_epoch, run_baseline
from instruct_tuning.checkpoints import (
    BEST_DIR,
    RESULT_FILE,
    check_top_level_outputs,
    clear_run_outputs,
    record_top_level_outputs,
    top_level_outputs_lock,
)
from instruct_tuning.data import FoldData, build_pixel_store, corpus_facts, load_corpus, prepare_fold
from instruct_tuning.factories import build_processor
from instruct_tuning.training import RunContext, make_accelerator, precision_and_processes, train_one_run
from instruct_tuning.variants import MVAEMA
from modeling_mvaema import MVaEMaForQuestionAnswering

__all__ = ["ScriptArguments", "main"]


def run_variant(run: RunContext, data: FoldData, processor) -> None:
    """Train one variant on one fold and evaluate it on the main process, into the run folder's result.json. On
    --resume a finished run is kept; otherwise what an earlier run left in the run folder is cleared first."""
    result_file = run.run_dir / RESULT_FILE
    if run.args.resume and result_file.exists():
        return
    if not run.args.resume and run.accelerator.is_main_process:
        clear_run_outputs(run.run_dir)
    run.accelerator.wait_for_everyone()
    model, state = train_one_run(run, data, processor)
    if run.accelerator.is_main_process:
        result = evaluation.evaluate_fold(model, processor, data, run.accelerator.device, run.args.eval_batch_size,
                                          run.args.max_eval_questions)
        result["training"] = {"epochs": state.epoch, "best_validation_loss": state.best_validation_loss,
                              "history": state.history}
        write_text_atomically(result_file, json.dumps(result, indent=2))
    run.accelerator.wait_for_everyone()


def run_baselines(args: ScriptArguments, data: FoldData, fold: int, processor, accelerator) -> None:
    """The `--baselines` of one fold, on the main process (each is small; the others wait), into their run folders."""
    if accelerator.is_main_process:
        settings = baseline_settings(args, fold, mvaema_vision_config(args, processor), accelerator.device,
                                     passes=passes_per_epoch(args, data.train))
        for name in args.baseline_names:
            run_dir = Path(args.output_dir) / "runs" / name / f"fold_{fold}"
            run_baseline(name, data, settings, run_dir, args.resume)
    accelerator.wait_for_everyone()


def publish(args: ScriptArguments, summary: dict, processor, corpus) -> None:
    """The result tables, MVaEMa's first finished fold with its card, and the push when asked; what was written is
    then recorded as the run's (even when the push fails), so that the next run into --output_dir may replace it."""
    try:
        write_tables_and_model(args, summary, processor, corpus)
    finally:
        record_top_level_outputs(Path(args.output_dir))


def write_tables_and_model(args: ScriptArguments, summary: dict, processor, corpus) -> None:
    output_dir = Path(args.output_dir)
    reporting.write_reports(summary, output_dir)
    model_dir = first_mvaema_model(summary, output_dir)
    if model_dir is None:  # this folder's runs are of other models, or their weights were not kept (results only)
        print(f"No MVaEMa model in {output_dir / 'runs'} to save: train --models mvaema into it for one.")
        return
    processor.classification_method = summary[MVAEMA]["classification_method"][0]
    final_model = MVaEMaForQuestionAnswering.from_pretrained(model_dir)
    reporting.save_model_with_card(final_model, processor, output_dir / "model", summary, corpus)
    if args.push_to_hub:
        reporting.push(output_dir / "model", args.push_to_hub, private=not args.hub_public)
    reporting.print_summary(summary, output_dir)


def first_mvaema_model(summary: dict, output_dir: Path) -> Path | None:
    """`best/` of the first finished MVaEMa fold that kept its weights, or None."""
    folds = summary.get(MVAEMA, {}).get("folds", [])
    best = [output_dir / "runs" / MVAEMA / f"fold_{fold}" / BEST_DIR for fold in folds]
    return next((path for path in best if path.is_dir()), None)


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ScriptArguments).parse_args_into_dataclasses(args=argv)
    output_dir = Path(args.output_dir)
    with top_level_outputs_lock(output_dir):  # not while another run into this folder writes its tables
        check_top_level_outputs(output_dir)  # they and the model are replaced at the end, after hours of work
    if args.push_to_hub:  # before an hour of training, not after
        reporting.check_push_target(args.push_to_hub, public=args.hub_public)
    accelerator = make_accelerator(args)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    accelerator.init_trackers("mvaema", config={k: str(v) for k, v in asdict(args).items()})
    started = time.perf_counter()

    corpus = load_corpus(args, accelerator)
    processor = build_processor(corpus, args)
    with accelerator.main_process_first():  # the main process decodes; the others read its cache
        pixel_store = build_pixel_store(corpus, processor.image_processor.size["height"], output_dir / "dataset_cache")
    if torch.cuda.is_available() and pixel_store.pixels.numel() < 0.25 * torch.cuda.mem_get_info()[0]:
        pixel_store = pixel_store.to(accelerator.device)

    facts = corpus_facts(args)
    for fold in args.test_folds:
        data = prepare_fold(corpus, fold, args.num_folds, processor, pixel_store, facts)
        for variant in args.variants:
            run_variant(RunContext(variant, fold, args, accelerator, output_dir / "runs" / variant / f"fold_{fold}"),
                        data, processor)
        run_baselines(args, data, fold, processor, accelerator)

    summary = {}
    if accelerator.is_main_process:
        with top_level_outputs_lock(output_dir):  # another run into this folder may be summarising too
            summary = reporting.summarize(reporting.finished_runs(output_dir / "runs"), class_names=data.class_names,
                                          args=asdict(args), wall_time_seconds=time.perf_counter() - started,
                                          environment=precision_and_processes(accelerator))
            publish(args, summary, processor, corpus)
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    try:
        main()
    except ArgumentError as error:
        sys.exit(f"run_instruct_tuning.py: error: {error}")
