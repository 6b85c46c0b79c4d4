"""run_instruct_tuning.py end to end on a tiny synthetic corpus with a tiny model.

One module-scoped corpus is generated once; each test trains for one or two epochs. The heavier checks
(resume after a kill, 2-process DDP, every ablation) are marked slow: CI runs them, `-m "not slow"` skips them.
"""

import json
import os
import textwrap
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import run_instruct_tuning
from dataset_builder.synthetic import generate_synthetic_corpus
from instruct_tuning.training import check_process_count, optimizer_step_with_warmup
from instruct_tuning.variants import ABLATIONS

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = json.dumps({
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "image_size": 64, "patch_size": 16},
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
})


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_corpus(out, per_category=3, seed=0)
    return out


def tiny_args(synthetic_dir, output_dir, *extra):
    return ["--synthetic_dir", str(synthetic_dir), "--synthetic_per_category", "3", "--output_dir", str(output_dir), "--num_folds", "3",
            "--num_epochs", "2", "--batch_size", "24", "--vocab_size", "600", "--model_overrides", TINY_MODEL,
            "--max_eval_questions", "16", *extra]


def run_script(args, env_extra=None, launcher=(sys.executable, "run_instruct_tuning.py")):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([*launcher, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_end_to_end_train_save_load_generate(synthetic_dir, tmp_path, capsys):
    summary = run_instruct_tuning.main(tiny_args(synthetic_dir, tmp_path / "out"))
    for section in ("mvaema", "blip_peer"):
        classification = summary[section]["classification"]
        assert 0.0 <= classification["top1"] <= classification["top5"] <= 1.0
        assert set(summary[section]["vqa"]) >= {"bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"}
    assert summary["mvaema"]["generation"] == summary["blip_peer"]["generation"]
    for baseline in ("vit", "features"):  # the synthetic corpus's default --baselines, on the same fold
        assert summary[baseline]["folds"] == [0] and "vqa" not in summary[baseline]
        assert 0.0 <= summary[baseline]["classification"]["top1"] <= 1.0 and summary[baseline]["parameters"] > 0
        assert (tmp_path / "out" / "runs" / baseline / "fold_0" / "result.json").exists()
    tables = (tmp_path / "out" / "results.md").read_text()
    assert "| Model | Folds | Top-1 | Top-5 | Macro F1 | Parameters | Method |" in tables
    assert "| VanillaViT (supervised) | fold 0 of 3 |" in tables
    assert "**Table 4: Gradient + spectrum features (logistic regression) per category (fold 0 of 3)**" in tables
    assert "Decoding (every model alike): greedy" in tables
    # Every protocol with the blank-image floor; the peer has no ranking of its own to caption with.
    protocols = {"mvaema": ("caption", "no_caption", "self_caption"), "blip_peer": ("caption", "no_caption")}
    for section, asked in protocols.items():
        numbers = summary[section]["protocols"]
        assert {key.split("/")[0] for key in numbers} == set(asked)
        for protocol in asked:
            assert 0.0 <= numbers[f"{protocol}/category_named"] <= 1.0
            assert numbers[f"{protocol}/adds_bleu2"] == pytest.approx(
                numbers[f"{protocol}/bleu2"] - numbers[f"{protocol}/blank_bleu2"])
            assert 0.0 <= numbers[f"{protocol}/image_facts"] <= 1.0  # the synthetic corpus knows its facts
    assert "| MVaEMa | own caption |" in tables and "| BLIP peer (transformers) | no caption |" in tables
    assert "**Table 1c: grounded fact accuracy per question family" in tables
    printed = capsys.readouterr().out
    assert "\nMVaEMa: Top-1 " in printed and any(line.startswith(("VanillaViT", "Gradient")) for line in printed.splitlines())
    assert "MVaEMa answers: without a caption the category answer names the true category" in printed
    model_dir = tmp_path / "out" / "model"
    assert (model_dir / "model.safetensors").exists() and not list(model_dir.glob("*.bin"))
    card = (model_dir / "README.md").read_text()
    assert card.startswith("---") and "model-index" in card and "synthetic micrographs only" in card
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"mvaema", "blip_peer"} <= set(results)
    assert (tmp_path / "out" / "confusion_matrix_mvaema.png").stat().st_size > 0

    # The saved model answers and classifies from a fresh process, outside the repo, offline.
    image = next((synthetic_dir / "images" / "Nanowires").glob("*.jpg"))
    result = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), "--model", str(model_dir), "--image", str(image),
         "--question", "Describe the overall shape and morphology of the nanomaterials.", "--json"],
        cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    prediction = json.loads(result.stdout)
    assert isinstance(prediction["answer"], str) and len(prediction["categories"]) == 5


def test_init_from_fine_tunes_offline_and_keeps_tokenizer(synthetic_dir, tmp_path):
    first = tmp_path / "first"
    run_instruct_tuning.main(tiny_args(synthetic_dir, first, "--num_epochs", "1", "--no_train_peer"))
    second = tmp_path / "second"
    summary = run_instruct_tuning.main(
        tiny_args(synthetic_dir, second, "--num_epochs", "1", "--no_train_peer", "--init_from", str(first / "model")))
    assert "mvaema" in summary
    assert (first / "model" / "tokenizer.json").read_text() == (second / "model" / "tokenizer.json").read_text()


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(synthetic_dir, tmp_path):
    common = ["--num_epochs", "3", "--no_train_peer"]
    reference = run_script(tiny_args(synthetic_dir, tmp_path / "straight", *common))
    assert reference.returncode == 0, reference.stderr

    # The interrupted run learns its own vocabulary, in another process: it must be the reference run's.
    interrupted = tmp_path / "interrupted"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "run_instruct_tuning.py", *tiny_args(synthetic_dir, interrupted, *common, "--resume")],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = interrupted / "runs" / "mvaema" / "fold_0"
    deadline = time.time() + 300
    while not list(run_dir.glob("checkpoint-epoch-1")) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(run_dir.glob("checkpoint-epoch-*")), "the run was killed before its first checkpoint"
    assert not (interrupted / "results.json").exists()

    resumed = run_script(tiny_args(synthetic_dir, interrupted, *common, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    straight_weights = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    resumed_weights = load_file(interrupted / "model" / "model.safetensors")
    for name, tensor in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=0, atol=1e-6, msg=name)
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())["mvaema"]
    again = json.loads((interrupted / "results.json").read_text())["mvaema"]
    assert straight["vqa"] == pytest.approx(again["vqa"]) and straight["classification"]["top1"] == again["classification"]["top1"]


TWO_CPU_PROCESSES = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                     "run_instruct_tuning.py")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU processes; on a GPU machine accelerate would take the GPUs")
def test_two_process_ddp_matches_one_process(synthetic_dir, tmp_path):
    """Same global batches, same seed: one epoch on two CPU processes ends where one process ends.

    The whole script under two gloo processes (launch, split batches, gathered ITC, the global LM normalisation,
    checkpoints, evaluation on the main process). Two things are drawn per process and would differ: ITM negatives
    (within each process's share of the batch) and the augmented views (each process draws its share's from the
    epoch's stream), so ITM and augmentation are off here. The rows the ITC gather adds when a micrograph's pairs are
    split between processes remain, and Adam turns rounding noise in near-zero gradients into steps of the learning
    rate, so the check is close agreement at the warm-up's rates, not identity; the gradients themselves are compared
    exactly by `test_itc_across_two_processes_equals_the_single_process_loss`. The run must record two processes: a
    launcher that starts one (as `accelerate launch --cpu --num_processes 2` does) would make this say nothing.
    """
    overrides = json.dumps({**json.loads(TINY_MODEL), "use_itm": False})
    common = ["--num_epochs", "1", "--no_train_peer", "--no_augment", "--model_overrides", overrides]
    single = run_script(tiny_args(synthetic_dir, tmp_path / "one", *common))
    assert single.returncode == 0, single.stderr
    double = run_script(tiny_args(synthetic_dir, tmp_path / "two", *common, "--resume"),
                        env_extra={"ACCELERATE_USE_CPU": "1"}, launcher=TWO_CPU_PROCESSES)
    assert double.returncode == 0, double.stderr

    def run_facts(run):
        result = json.loads((tmp_path / run / "runs" / "mvaema" / "fold_0" / "result.json").read_text())
        processes = json.loads((tmp_path / run / "results.json").read_text())["meta"]["environment"]["num_processes"]
        return result["training"]["history"][0]["validation_loss"], processes

    (loss_one, processes_one), (loss_two, processes_two) = run_facts("one"), run_facts("two")
    assert (processes_one, processes_two) == (1, 2)
    assert loss_two == pytest.approx(loss_one, rel=1e-4)
    one = load_file(tmp_path / "one" / "model" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
    # Adam moves a weight by about the learning rate whatever the size of its gradient, so a weight whose gradient is
    # rounding noise (a bias near zero, the embedding of a position only padding reaches) moves by up to a warm-up
    # step either way: 1e-4 is a few such steps, far below what one wrongly reduced gradient would move.
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="without GPUs accelerate's CPU launch starts one process")
def test_a_cpu_launch_that_starts_one_process_of_several_is_refused(synthetic_dir, tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts one process on a machine without mpirun settings: the run
    stops before any work and says how to start two (the command the docs once gave trained on one, silently)."""
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "run_instruct_tuning.py")
    completed = run_script(tiny_args(synthetic_dir, tmp_path / "launched", "--num_epochs", "1"), launcher=launcher)
    assert completed.returncode != 0
    assert "started one process, not N" in completed.stderr and "torchrun --standalone" in completed.stderr
    assert not (tmp_path / "launched" / "runs").exists()


@pytest.mark.parametrize("environment, message", [
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1"}, "started as one of 2"),
    ({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "started one process"),
])
def test_a_launch_asking_for_several_processes_and_getting_one_is_refused(environment, message):
    with pytest.raises(RuntimeError, match=message):
        check_process_count(1, environment)


@pytest.mark.parametrize("num_processes, environment", [
    (1, {}),  # python run_instruct_tuning.py
    (1, {"ACCELERATE_USE_CPU": "True"}),  # accelerate launch --cpu --num_processes 1
    (1, {"ACCELERATE_USE_CPU": "False", "MASTER_ADDR": "127.0.0.1"}),  # one GPU process; the address set elsewhere
    (2, {"WORLD_SIZE": "2", "ACCELERATE_USE_CPU": "1", "MASTER_ADDR": "127.0.0.1"}),  # two CPU processes joined
])
def test_launches_that_get_what_they_ask_for_pass(num_processes, environment):
    check_process_count(num_processes, environment)


@pytest.mark.slow
def test_every_ablation_trains_saves_and_evaluates(synthetic_dir, tmp_path):
    summary = run_instruct_tuning.main(tiny_args(synthetic_dir, tmp_path / "ablations", "--ablation", "all",
                                                 "--num_epochs", "1", "--no_train_peer"))
    for variant in ABLATIONS:
        assert variant in summary, variant
        assert (tmp_path / "ablations" / "runs" / variant / "fold_0" / "best" / "model.safetensors").exists()
    tables = (tmp_path / "ablations" / "results.md").read_text()
    assert "Table 5" in tables and "w/o CSA" in tables
    assert "| w/o CSA | fold 0 of 3 |" in tables.split("**Table 6b")[1]  # with what the image adds to its answers


def test_bf16_mixed_precision_trains_evaluates_and_saves_fp32_weights(synthetic_dir, tmp_path):
    """`--mixed_precision bf16` (what `accelerate launch --mixed_precision bf16` sets on a GPU) runs every stage of
    the script under autocast, and the saved weights stay fp32."""
    from safetensors import safe_open

    # A fresh process: accelerate's state is process-wide and the other tests set it to full precision.
    completed = run_script(tiny_args(synthetic_dir, tmp_path / "bf16", "--mixed_precision", "bf16", "--num_epochs", "1",
                                     "--no_train_peer"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "bf16" / "results.json").read_text())
    assert 0.0 <= results["mvaema"]["classification"]["top1"] <= 1.0
    with safe_open(tmp_path / "bf16" / "model" / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.float32}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="--teacher-cache"):
        run_instruct_tuning.main(["--images", "somewhere"])
    with pytest.raises(ValueError, match="--ablation"):
        run_instruct_tuning.main(["--ablation", "no_everything"])
    with pytest.raises(ValueError, match="--warmup_steps"):
        run_instruct_tuning.main(["--warmup_steps", "-1"])


def test_folds_and_models_choose_the_runs_of_one_invocation():
    """--folds and --models pick any subset of (model, fold) runs, so a long cross-validation runs in pieces."""
    from instruct_tuning.arguments import ScriptArguments

    piece = ScriptArguments(folds="3,1", models="vit,no_ca,mvaema")
    assert piece.test_folds == [3, 1] and piece.variants == ["mvaema", "no_ca"] and piece.baseline_names == ["vit"]
    assert ScriptArguments(models="blip_peer").baseline_names == [] and ScriptArguments(fold=2).test_folds == [2]
    assert ScriptArguments(cross_validate=True).test_folds == [0, 1, 2, 3, 4]
    for wrong, message in (({"folds": "5"}, "--folds '5': give comma-separated folds between 0 and 4"),
                           ({"folds": "1", "cross_validate": True}, "--folds and --cross_validate"),
                           ({"models": "mvaema,gpt"}, "unknown: gpt")):
        with pytest.raises(ValueError, match=message):
            ScriptArguments(**wrong)


def test_warmup_scales_only_the_first_steps_and_leaves_the_plateau_schedule_alone():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    applied = []
    for step in range(6):
        parameter.grad = torch.ones(1)
        before = parameter.item()
        optimizer_step_with_warmup(optimizer, step, warmup_steps=4)
        applied.append(before - parameter.item())
        assert optimizer.param_groups[0]["lr"] == 1.0  # the scheduler's rate is restored after every step
    assert applied == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    scheduler.step(1.0)
    scheduler.step(2.0)  # no improvement: halved from the paper's rate, not from a warm-up rate
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_collator_drops_captions_from_prompts_but_not_from_pair_prompts():
    from instruct_tuning.data import PixelStore, QACollator, QATable

    captioned = torch.tensor([[2, 10, 11, 12, 3], [2, 10, 11, 13, 3], [2, 10, 11, 14, 3]])
    plain = torch.tensor([[2, 12, 3, 0, 0], [2, 13, 3, 0, 0], [2, 14, 3, 0, 0]])
    table = QATable(image_index=torch.tensor([0, 0, 1]), prompt_ids=captioned, prompt_mask=torch.ones_like(captioned),
                    prompt_ids_no_caption=plain, prompt_mask_no_caption=(plain != 0).long(),
                    labels=torch.tensor([[20, 3], [21, 3], [22, 3]]), category=torch.tensor([0, 0, 1]),
                    caption_ids=captioned, caption_mask=torch.ones_like(captioned))
    store = PixelStore(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), ["a", "b"])
    batch = QACollator(table, store, captions="drop", caption_drop_rate=1.0)([0, 1, 2])
    assert torch.equal(batch["input_ids"], plain[:, :3]) and torch.equal(batch["pair_prompt_ids"], captioned)
    assert torch.equal(batch["image_index"], torch.tensor([0, 0, 1])) and batch["pixel_values"].shape[0] == 2
    assert "pair_prompt_ids" not in QACollator(table, store, captions="always")([0, 1, 2])


def test_a_bad_argument_stops_with_one_line_before_anything_is_written(tmp_path):
    completed = run_script(["--batch_size", "0", "--output_dir", str(tmp_path / "out")])
    assert completed.returncode != 0
    assert completed.stderr.strip() == "run_instruct_tuning.py: error: --batch_size must be at least 1, got 0"
    assert not (tmp_path / "out").exists()


def test_a_hub_repo_that_refuses_the_push_stops_the_run_before_training(synthetic_dir, tmp_path, monkeypatch):
    from instruct_tuning.arguments import ArgumentError
    from tests.test_training_safety import FakeHfApi

    monkeypatch.setattr("huggingface_hub.HfApi", lambda: FakeHfApi(existing={"lab/mvaema": False}))
    with pytest.raises(ArgumentError, match="--push_to_hub lab/mvaema is an existing public repo"):
        run_instruct_tuning.main(tiny_args(synthetic_dir, tmp_path / "out", "--push_to_hub", "lab/mvaema"))
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr("huggingface_hub.HfApi", lambda: FakeHfApi(logged_in=False))
    with pytest.raises(ArgumentError, match="--push_to_hub lab/mvaema: cannot reach the Hub as a logged-in user"):
        run_instruct_tuning.main(tiny_args(synthetic_dir, tmp_path / "out", "--push_to_hub", "lab/mvaema"))
    assert not (tmp_path / "out").exists()


def test_accelerate_launch_mixed_precision_wins_and_is_recorded(synthetic_dir, tmp_path):
    """`accelerate launch --mixed_precision bf16` without the script's flag trains in bf16, logs it and records it."""
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                "--mixed_precision", "bf16", "--dynamo_backend", "no", "run_instruct_tuning.py")
    completed = run_script(tiny_args(synthetic_dir, tmp_path / "launched", "--num_epochs", "1", "--no_train_peer"),
                           launcher=launcher)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "training with mixed precision bf16 on 1 process(es)" in completed.stdout
    environment = json.loads((tmp_path / "launched" / "results.json").read_text())["meta"]["environment"]
    assert environment["mixed_precision"] == "bf16" and environment["num_processes"] == 1


# A child process that runs the script and SIGKILLs itself right after the N-th file operation of its checkpoint
# saves (N from MVAEMA_TEST_KILL_AT): accelerate's file saves, torch.save, fsync, rename and removal all count.
KILLED_DURING_SAVE = textwrap.dedent("""
    import os, shutil, signal, sys
    import accelerate.checkpointing, torch
    from instruct_tuning import checkpoints, training
    import run_instruct_tuning

    kill_at, seen, saving = int(os.environ["MVAEMA_TEST_KILL_AT"]), [0], [False]

    def counted(function):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            if saving[0]:
                seen[0] += 1
                if seen[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapper

    accelerate.checkpointing.save = counted(accelerate.checkpointing.save)
    torch.save, os.fsync, os.replace, shutil.rmtree = map(counted, (torch.save, os.fsync, os.replace, shutil.rmtree))
    real_save_checkpoint = checkpoints.save_checkpoint

    def save_checkpoint(*args, **kwargs):
        saving[0] = True
        try:
            real_save_checkpoint(*args, **kwargs)
        finally:
            saving[0] = False

    training.save_checkpoint = save_checkpoint
    sys.argv = ["run_instruct_tuning.py", *sys.argv[1:]]
    run_instruct_tuning.main()
""")


# File operations of a run's first checkpoint save on one process (remove the stale partial, weights, optimizer,
# RNG state, training state, 7 fsyncs, rename); the rename of the checkpoint folder is the 14th.
FIRST_SAVE_EVENTS = 15
CHECKPOINT_RENAME_EVENT = 14


def resume_through_kills(synthetic_dir, tmp_path, epochs: int, kill_points: list[int]):
    """An uninterrupted run, then runs killed during checkpoint saves at `kill_points` and resumed each time to the
    end: the final weights and results must be the uninterrupted run's."""
    common = ["--num_epochs", str(epochs), "--no_train_peer", "--max_eval_questions", "8"]
    straight = run_script(tiny_args(synthetic_dir, tmp_path / "straight", *common))
    assert straight.returncode == 0, straight.stderr[-3000:]
    interrupted = tmp_path / "interrupted"
    arguments = tiny_args(synthetic_dir, interrupted, *common, "--resume")
    for kill_at in kill_points:
        killed = run_script(["-c", KILLED_DURING_SAVE, *arguments], env_extra={"MVAEMA_TEST_KILL_AT": str(kill_at)},
                            launcher=(sys.executable,))
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr[-3000:])
        assert not (interrupted / "results.json").exists()
    resumed = run_script(arguments)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight_weights = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    resumed_weights = load_file(interrupted / "model" / "model.safetensors")
    for name, tensor in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=0, atol=1e-6, msg=name)
    expected = json.loads((tmp_path / "straight" / "results.json").read_text())["mvaema"]
    again = json.loads((interrupted / "results.json").read_text())["mvaema"]
    assert again["vqa"] == pytest.approx(expected["vqa"])
    assert again["classification"]["top1"] == expected["classification"]["top1"]
    assert again["classification"]["confusion_matrix"] == expected["classification"]["confusion_matrix"]
    assert sorted(path.name for path in (interrupted / "runs" / "mvaema" / "fold_0").iterdir()) == [
        "best", f"checkpoint-epoch-{epochs}", "result.json"]


def test_killed_in_the_middle_of_a_checkpoint_save_resumes_to_the_same_result(synthetic_dir, tmp_path):
    # In the second save, after the weights and the optimizer state, before the RNG state: a partial checkpoint beside
    # a complete checkpoint-epoch-1.
    resume_through_kills(synthetic_dir, tmp_path, epochs=2, kill_points=[FIRST_SAVE_EVENTS + 4])


@pytest.mark.slow
def test_killed_at_several_points_of_checkpoint_saves_resumes_to_the_same_result(synthetic_dir, tmp_path):
    """Each killed run counts from its own first save: after the weights of the first save (2); among the fsyncs of
    the first save (9); after the optimizer state of the second save; right after a checkpoint's rename, before the
    previous checkpoint is removed."""
    kill_points = [2, 9, FIRST_SAVE_EVENTS + 4, CHECKPOINT_RENAME_EVENT]
    resume_through_kills(synthetic_dir, tmp_path, epochs=3, kill_points=kill_points)
