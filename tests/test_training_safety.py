"""What a training run must never lose or get wrong, tested piece by piece (no training run here): atomic files, the
pixel store's validation, checkpoint saving order, non-finite losses, stale run outputs, argument checks and the
model push."""

import errno
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

import run_instruct_tuning
from instruct_tuning import checkpoints, reporting
from instruct_tuning.arguments import ArgumentError, ScriptArguments
from instruct_tuning.atomic_io import replace_directory, write_text_atomically
from instruct_tuning.data import build_pixel_store
from instruct_tuning.training import RunContext, learning_rate_schedule, record_validation_loss, train_epoch


# ----------------------------------------------------------------------------------------------------------------
# Atomic files and folders
# ----------------------------------------------------------------------------------------------------------------
def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    result = tmp_path / "result.json"
    write_text_atomically(result, '{"epochs": 3}')

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("instruct_tuning.atomic_io.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomically(result, '{"epochs": 4, "a long result": "' + "x" * 10_000 + '"}')
    assert json.loads(result.read_text()) == {"epochs": 3}
    assert [path.name for path in tmp_path.iterdir()] == ["result.json"]  # no temporary file left behind


def test_best_model_survives_a_save_that_fails_half_way(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "best" / "model.safetensors").write_text("epoch 1 weights")
    checkpoints.record_own_files(run_dir / "best")  # as save_best leaves it

    class HalfSaved:
        def save_pretrained(self, folder):
            Path(folder).mkdir(parents=True)
            (Path(folder) / "config.json").write_text("{}")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        checkpoints.save_best(HalfSaved(), run_dir)
    assert (run_dir / "best" / "model.safetensors").read_text() == "epoch 1 weights"


def test_a_directory_swap_killed_between_its_renames_is_recovered(tmp_path, monkeypatch):
    final, staged = tmp_path / "best", tmp_path / "staged"
    final.mkdir()
    (final / "weights").write_text("old")
    staged.mkdir()
    (staged / "weights").write_text("new")
    real_replace, calls = checkpoints.os.replace, []

    def killed_on_second_rename(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for the kill: nothing after this line runs
        real_replace(source, target)

    monkeypatch.setattr("instruct_tuning.atomic_io.os.replace", killed_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        replace_directory(staged, final)
    monkeypatch.undo()
    assert not final.exists()
    assert (checkpoints.best_model_dir(tmp_path) / "weights").read_text() == "old"


# ----------------------------------------------------------------------------------------------------------------
# Pixel store
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def small_corpus(tmp_path):
    paths = []
    for index in range(3):
        path = tmp_path / f"image{index}.png"
        Image.fromarray(np.full((40, 40, 3), 60 * index, dtype=np.uint8)).save(path)
        paths.append(str(path))
    corpus = datasets.Dataset.from_dict({"image_id": ["a", "b", "c"], "image": paths})
    return corpus.cast_column("image", datasets.Image())


@pytest.mark.parametrize("damage", ["truncate", "flip_a_pixel", "other_shape"])
def test_a_damaged_pixel_store_is_detected_and_rebuilt(small_corpus, tmp_path, damage, caplog):
    cache = tmp_path / "cache"
    original = build_pixel_store(small_corpus, 16, cache).pixels.clone()
    (stored,) = cache.glob("pixels-*.safetensors")
    data = bytearray(stored.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_a_pixel":
        data[-1] ^= 0xFF
    else:
        from safetensors.torch import save_file

        save_file({"pixels": torch.zeros(2, 3, 16, 16, dtype=torch.uint8)}, str(stored))
        data = bytearray(stored.read_bytes())
    stored.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        rebuilt = build_pixel_store(small_corpus, 16, cache)
    assert torch.equal(rebuilt.pixels, original)
    assert "decoding the images again" in caplog.text
    assert torch.equal(build_pixel_store(small_corpus, 16, cache).pixels, original)  # and the rewritten file is whole
    assert sorted(path.name for path in cache.iterdir()) == [stored.name]


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------
class RecordingAccelerator:
    """The calls `save_checkpoint` makes, in order; `save_state` writes one file per process as accelerate does."""

    is_main_process = True

    def __init__(self, log):
        self.log = log

    def save_state(self, folder, safe_serialization=True):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_text("weights")
        (Path(folder) / "random_states_0.pkl").write_text("rng")
        self.log.append("save_state")

    def wait_for_everyone(self):
        self.log.append("wait_for_everyone")


def test_checkpoint_is_renamed_only_after_every_process_wrote_and_a_stale_partial_is_discarded(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    stale = run_dir / "checkpoint-partial"
    stale.mkdir(parents=True)
    (stale / "random_states_1.pkl").write_text("from a killed two-process save")
    log = []
    real_replace = checkpoints.os.replace
    monkeypatch.setattr(checkpoints.os, "replace", lambda a, b: (log.append("rename"), real_replace(a, b)))
    checkpoints.save_checkpoint(RecordingAccelerator(log), run_dir, checkpoints.TrainingState(epoch=2))

    assert log.index("rename") > log.index("save_state") + 1 and log[log.index("save_state") + 1] == "wait_for_everyone"
    final = run_dir / "checkpoint-epoch-2"
    assert sorted(path.name for path in final.iterdir()) == [checkpoints.OWN_FILES_LIST, "model.safetensors",
                                                             "random_states_0.pkl", "training_state.json"]
    assert not stale.exists()


def test_a_fresh_run_clears_what_an_earlier_run_left(tmp_path):
    run_dir = tmp_path / "run"
    for folder in ("best", "checkpoint-epoch-7", "checkpoint-partial", "best.replaced"):
        (run_dir / folder).mkdir(parents=True)
    (run_dir / "result.json").write_text("{}")
    (run_dir / "notes.txt").write_text("the user's")
    checkpoints.clear_run_outputs(run_dir)
    assert sorted(path.name for path in run_dir.iterdir()) == ["notes.txt"]
    with pytest.raises(FloatingPointError, match="no epoch had a finite validation loss"):
        checkpoints.best_model_dir(run_dir)


class SavedModel:
    def save_pretrained(self, folder):
        Path(folder).mkdir(parents=True)
        (Path(folder) / "model.safetensors").write_text("weights")


def test_a_fresh_run_refuses_to_delete_files_it_did_not_write(tmp_path):
    run_dir = tmp_path / "run"
    checkpoints.save_checkpoint(RecordingAccelerator([]), run_dir, checkpoints.TrainingState(epoch=3))
    checkpoints.save_best(SavedModel(), run_dir)
    (run_dir / "best" / "notes.md").write_text("the user's notes")
    (run_dir / "checkpoint-epoch-3" / "model.safetensors").write_text("the user's own weights, copied over")
    for operation in (lambda: checkpoints.clear_run_outputs(run_dir),
                      lambda: checkpoints.save_best(SavedModel(), run_dir),
                      lambda: checkpoints.save_checkpoint(RecordingAccelerator([]), run_dir,
                                                          checkpoints.TrainingState(epoch=4))):
        with pytest.raises(ArgumentError, match=r"--output_dir: .*(best/notes.md|checkpoint-epoch-3/model.safetensors)"):
            operation()
        assert (run_dir / "best" / "notes.md").read_text() == "the user's notes"
        assert (run_dir / "checkpoint-epoch-3" / "model.safetensors").read_text().startswith("the user's own")

    (run_dir / "best" / "notes.md").unlink()
    (run_dir / "checkpoint-epoch-3" / "model.safetensors").write_text("weights")  # as the run wrote it
    checkpoints.clear_run_outputs(run_dir)
    assert not (run_dir / "best").exists() and not (run_dir / "checkpoint-epoch-3").exists()


def test_a_run_refuses_an_output_dir_whose_tables_or_model_it_did_not_write(tmp_path, monkeypatch):
    """Refused before any work (the script's first step, a stand-in here, is never reached). What a run published
    is recorded as its own, so the next run into the folder, fresh or --resume, may replace it."""
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "results.md").write_text("the user's own results")
    (output_dir / "notes.md").write_text("no run writes this file, so it is never in the way")

    def work(*_):
        raise RuntimeError("the run started its work")

    monkeypatch.setattr(run_instruct_tuning, "make_accelerator", work)
    with pytest.raises(ArgumentError, match=rf"^--output_dir: {output_dir}/results.md were not written by a training"):
        run_instruct_tuning.main(["--output_dir", str(output_dir)])
    assert (output_dir / "results.md").read_text() == "the user's own results"

    (output_dir / "results.md").unlink()
    monkeypatch.setattr(run_instruct_tuning.reporting, "write_reports", lambda summary, folder: [
        (folder / name).write_text("what the script writes") for name in ("results.md", "results.json")])
    run_instruct_tuning.publish(SimpleNamespace(output_dir=str(output_dir)), {}, None, None)  # no MVaEMa: no model
    for resume in ([], ["--resume"]):
        with pytest.raises(RuntimeError, match="the run started its work"):
            run_instruct_tuning.main(["--output_dir", str(output_dir), *resume])

    (output_dir / "model").mkdir()
    (output_dir / "model" / "model.safetensors").write_text("the user's own weights")
    (output_dir / "results.md").write_text("the script's tables, edited by the user")
    with pytest.raises(ArgumentError, match=r"out/model/model.safetensors, .*out/results.md were not written"):
        run_instruct_tuning.main(["--output_dir", str(output_dir), "--resume"])


def test_a_run_starting_while_another_writes_its_tables_into_the_folder_waits_instead_of_refusing(tmp_path,
                                                                                                   monkeypatch):
    """Two runs into one --output_dir (other folds or models, side by side): while one summarises and writes its
    tables (under the folder's lock), the other's start-up check waits, then finds the tables recorded as a run's.
    Without the lock it read them half-written, took them for a user's files and refused (a 50-epoch piece lost)."""
    import threading

    output_dir = tmp_path / "out"
    output_dir.mkdir()  # made by the first run
    monkeypatch.setattr(run_instruct_tuning, "make_accelerator", lambda *_: (_ for _ in ()).throw(
        RuntimeError("the run started its work")))
    outcome = []

    def second_run():
        try:
            run_instruct_tuning.main(["--output_dir", str(output_dir), "--resume"])
        except Exception as error:  # noqa: BLE001 - the outcome is the assertion
            outcome.append(error)

    with checkpoints.top_level_outputs_lock(output_dir):  # the first run, publishing
        (output_dir / "results.md").write_text("tables, written but not yet recorded as the run's")
        starting = threading.Thread(target=second_run)
        starting.start()
        starting.join(timeout=1.0)
        assert starting.is_alive(), "the start-up check must wait for the lock"
        checkpoints.record_top_level_outputs(output_dir)
    starting.join(timeout=30)
    assert len(outcome) == 1 and str(outcome[0]) == "the run started its work", outcome


# ----------------------------------------------------------------------------------------------------------------
# Non-finite losses
# ----------------------------------------------------------------------------------------------------------------
def test_validation_never_takes_a_nan_or_infinite_loss_as_best():
    state = checkpoints.TrainingState(best_validation_loss=1.0)
    assert not record_validation_loss(state, math.nan)
    assert not record_validation_loss(state, math.inf)
    assert state.best_validation_loss == 1.0 and state.epochs_without_improvement == 2
    assert record_validation_loss(state, 0.5)
    assert state.best_validation_loss == 0.5 and state.epochs_without_improvement == 0


class ScriptedLossModel(torch.nn.Module):
    """Loss = weight x the next scripted factor, so a NaN or inf factor gives a non-finite loss."""

    def __init__(self, factors):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.factors = list(factors)

    def forward(self, num_items_in_batch=None, **batch):
        return SimpleNamespace(loss=self.weight * self.factors.pop(0))


def run_epoch(factors, limit, tmp_path):
    from accelerate import Accelerator

    args = ScriptArguments(warmup_steps=0, learning_rate=0.1, max_nonfinite_steps=limit, output_dir=str(tmp_path))
    run = RunContext("mvaema", 0, args, Accelerator(cpu=True), tmp_path)
    model = ScriptedLossModel(factors)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [{"labels": torch.ones(1, 2, dtype=torch.long), "input_ids": torch.ones(1, 2, dtype=torch.long)}] * len(factors)
    state = checkpoints.TrainingState()
    return model, state, lambda: train_epoch(run, model, optimizer, batches, state)


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    model, state, train = run_epoch([1.0, math.nan, 1.0, math.inf], limit=10, tmp_path=tmp_path)
    train()
    assert state.nonfinite_steps == 2 and state.global_step == 4
    assert model.weight.item() == pytest.approx(1.0 - 2 * 0.1)  # two SGD steps of gradient 1, none from NaN or inf


def test_the_cosine_schedule_warms_up_then_falls_to_zero_step_by_step_and_the_plateau_one_waits_for_epochs(tmp_path):
    from accelerate import Accelerator

    batches_per_epoch, epochs = 4, 3
    args = ScriptArguments(warmup_steps=2, learning_rate=0.1, lr_scheduler_type="cosine", num_epochs=epochs,
                           output_dir=str(tmp_path))
    run = RunContext("mvaema", 0, args, Accelerator(cpu=True), tmp_path)
    model = ScriptedLossModel([1.0] * batches_per_epoch * epochs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = learning_rate_schedule(optimizer, "cosine", args.warmup_steps, args.lr_patience,
                                       epochs * batches_per_epoch)
    batches = [{"labels": torch.ones(1, 2, dtype=torch.long), "input_ids": torch.ones(1, 2, dtype=torch.long)}] * batches_per_epoch
    state = checkpoints.TrainingState()
    rates = []
    for _ in range(epochs):
        train_epoch(run, model, optimizer, batches, state, scheduler)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[0] < 0.1 and rates[0] > rates[1] > rates[2] == pytest.approx(0.0)
    # SGD steps of gradient 1 at the scheduled rates: 0, 0.05 (warm-up), then the cosine from 0.1 down.
    assert model.weight.item() < 1.0 - 0.1

    plateau = learning_rate_schedule(optimizer, ScriptArguments(output_dir=str(tmp_path)).lr_scheduler_type, 0, 5, 12)
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
    with pytest.raises(ArgumentError, match="--lr_scheduler_type must be one of reduce_lr_on_plateau, cosine"):
        ScriptArguments(lr_scheduler_type="linear")


def test_too_many_non_finite_steps_stop_the_run_with_the_limit_named(tmp_path):
    _model, state, train = run_epoch([math.nan, 1.0, math.nan], limit=1, tmp_path=tmp_path)
    with pytest.raises(FloatingPointError, match=r"2 training steps had a NaN or infinite loss.*--max_nonfinite_steps 1"):
        train()


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("arguments", "named"), [
    ({"batch_size": 0}, "--batch_size must be at least 1, got 0"),
    ({"num_epochs": 0}, "--num_epochs must be at least 1, got 0"),
    ({"baseline_passes_per_epoch": 0}, "--baseline_passes_per_epoch must be at least 1, got 0"),
    ({"caption_drop_rate": 1.5}, "--caption_drop_rate is a share of prompts, between 0 and 1; got 1.5"),
    ({"caption_drop_rate": -0.1}, "--caption_drop_rate"),
    ({"model_overrides": '{"text_config": {'}, "--model_overrides is not valid JSON"),
    ({"model_overrides": "[4]"}, "--model_overrides must be a JSON object"),
    ({"max_nonfinite_steps": -1}, "--max_nonfinite_steps must be >= 0"),
    ({"baselines": "vit,cnn"}, "--baselines 'vit,cnn': unknown baseline 'cnn'; give a comma-separated list of vit, resnet"),
    ({"baselines": "all,vit"}, "'all' and 'none' stand alone"),
    ({"ask_category_both_ways": True, "ask_category_every_epoch": False}, "--ask_category_both_ways asks the category"),
    ({"category_answer_tokens": 0}, "--category_answer_tokens must be at least 1, got 0"),
])
def test_bad_numbers_and_overrides_are_named(arguments, named):
    with pytest.raises(ArgumentError, match=named.replace("[", r"\[").replace("{", r"\{")) as raised:
        ScriptArguments(**arguments)
    assert "\n" not in str(raised.value)


def test_baselines_default_to_the_fast_pair_on_the_synthetic_corpus_and_to_none_elsewhere():
    assert ScriptArguments().baseline_names == ["vit", "features"]
    assert ScriptArguments(dataset="my-org/sem-instruct").baseline_names == []
    assert ScriptArguments(dataset="my-org/sem-instruct", baselines="all").baseline_names == ["vit", "resnet", "swin", "features"]
    assert ScriptArguments(baselines="none").baseline_names == []
    assert ScriptArguments().augment and not ScriptArguments(augment=False).augment


def test_the_category_question_at_every_view_is_asked_for_and_scores_8_answer_tokens_on_the_built_in_corpus():
    from transformers import HfArgumentParser

    def parsed(*argv):
        return HfArgumentParser(ScriptArguments).parse_args_into_dataclasses(args=list(argv))[0]

    built_in, lab = parsed(), parsed("--dataset", "my-org/sem-instruct")
    assert (built_in.ask_category_every_view, built_in.category_answer_tokens) == (False, 8)
    assert (lab.ask_category_every_view, lab.category_answer_tokens) == (False, None)
    assert parsed("--ask_category_every_view").ask_category_every_view
    assert parsed("--dataset", "my-org/sem-instruct", "--ask_category_every_view").ask_category_every_view
    assert parsed("--category_answer_tokens", "12").category_answer_tokens == 12


def test_the_built_in_corpus_trains_at_batch_32_and_others_at_the_papers_48():
    assert ScriptArguments().batch_size == 32
    assert ScriptArguments(dataset="my-org/sem-instruct").batch_size == 48
    assert ScriptArguments(batch_size=24).batch_size == 24


def test_mixed_precision_is_left_to_accelerate_unless_given():
    assert ScriptArguments().mixed_precision is None


# ----------------------------------------------------------------------------------------------------------------
# Model push
# ----------------------------------------------------------------------------------------------------------------
class FakeHfApi:
    """The HfApi calls a push makes, against a pretend Hub holding `existing` repos ({repo_id: private})."""

    def __init__(self, existing=None, logged_in=True, writable=True):
        self.existing, self.logged_in, self.writable = dict(existing or {}), logged_in, writable
        self.uploads = []

    def whoami(self):
        if not self.logged_in:
            raise OSError("Invalid user token.")
        return {"name": "lab"}

    def create_repo(self, repo_id, private=False, exist_ok=False, repo_type=None):
        if not self.writable:
            raise OSError("403 Forbidden: you cannot create repos under this name")
        self.existing.setdefault(repo_id, private)

    def repo_info(self, repo_id, repo_type=None):
        return SimpleNamespace(private=self.existing[repo_id])

    def upload_folder(self, folder_path, repo_id, repo_type, allow_patterns, commit_message):
        self.uploads.append({"repo_id": repo_id, "files": list(allow_patterns)})


@pytest.fixture()
def saved_model_dir(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    names = ["config.json", "generation_config.json", "model.safetensors", "modeling_mvaema.py", "losses_mvaema.py",
             "processor_config.json", "tokenizer.json", "tokenizer_config.json", "README.md", "results.json"]
    for name in names:
        (model_dir / name).write_text("x")
    return model_dir


def test_push_uploads_the_model_files_and_never_the_results(saved_model_dir):
    api = FakeHfApi()
    reporting.push(saved_model_dir, "lab/mvaema", private=True, api=api)
    (upload,) = api.uploads
    assert "results.json" not in upload["files"]
    assert {"config.json", "model.safetensors", "modeling_mvaema.py", "tokenizer.json", "README.md"} <= set(upload["files"])
    assert api.existing == {"lab/mvaema": True}


def test_push_refuses_an_existing_public_repo_unless_asked(saved_model_dir):
    api = FakeHfApi(existing={"lab/mvaema": False})
    with pytest.raises(ArgumentError, match="--push_to_hub lab/mvaema is an existing public repo: pass --hub_public"):
        reporting.push(saved_model_dir, "lab/mvaema", private=True, api=api)
    assert api.uploads == []
    reporting.push(saved_model_dir, "lab/mvaema", private=False, api=api)
    assert len(api.uploads) == 1


@pytest.mark.parametrize(("api", "named"), [
    (FakeHfApi(logged_in=False), "cannot reach the Hub as a logged-in user"),
    (FakeHfApi(writable=False), "the Hub refuses this model repo"),
])
def test_a_repo_that_will_not_accept_the_push_is_named(api, named):
    with pytest.raises(ArgumentError, match=f"--push_to_hub lab/mvaema: {named}"):
        reporting.check_push_target("lab/mvaema", api=api)
