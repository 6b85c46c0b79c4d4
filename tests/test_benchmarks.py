"""The benchmarks run end to end (smallest settings) and their GPU-profile bookkeeping counts what it should."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType

from benchmarks import common, quality, run_all
from benchmarks.training_throughput import gpu_kernels, top_kernels

REPO = Path(__file__).resolve().parent.parent


def kernel(name: str, microseconds: float, device_type=DeviceType.CUDA, annotation=False):
    return SimpleNamespace(name=name, self_device_time_total=microseconds, device_type=device_type,
                           is_user_annotation=annotation)


def test_kernel_profile_counts_kernels_only_and_ranks_them_per_step():
    events = [kernel("gemm", 300), kernel("gemm", 100), kernel("layer_norm", 150), kernel("gemm", 200),
              kernel("aten::linear", 999, DeviceType.CPU), kernel("Optimizer.step#Adam.step", 500),
              kernel("my_range", 800, annotation=True)]
    kernels = gpu_kernels(events)
    assert [event.name for event in kernels] == ["gemm", "gemm", "layer_norm", "gemm"]
    ranked = top_kernels(kernels, steps=2)
    assert [row["kernel"] for row in ranked] == ["gemm", "layer_norm"]
    assert ranked[0]["ms_per_step"] == pytest.approx(0.3) and ranked[0]["launches_per_step"] == pytest.approx(1.5)
    assert top_kernels(kernels, steps=1, top=1) == [{"kernel": "gemm", "ms_per_step": pytest.approx(0.6), "launches_per_step": 3}]


@pytest.mark.slow
def test_every_benchmark_runs_and_reports_both_models_with_ratios(tmp_path):
    """`python -m benchmarks.run_all --quick` as the README gives it: every table, both models, a ratio each."""
    out = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--quick", "--threads", "1", "--cache-dir", str(tmp_path / "cache"),
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    training = {row["model"]: row for row in summary["training_batch48"]}
    assert set(training) == {"mvaema", "blip_peer"} and training["blip_peer"]["ratio_vs_peer"] == 1.0
    assert training["mvaema"]["samples_per_second"] > 0 and training["mvaema"]["ratio_vs_peer"] > 0
    generation = {(row["model"], row["batch_size"]) for row in summary["generation"]}
    assert generation == {(model, size) for model in ("mvaema", "blip_peer") for size in (1, 48)}
    assert all(row["images_per_second"] > 0 for row in summary["data_pipeline"]["decoding"])
    assert {row["model"] for row in summary["projection"]["projection"]} == {"mvaema", "blip_peer"}
    full = json.loads((out / "training.json").read_text())
    assert full["complete"] and {row["model"] for row in full["fast_paths"]} >= {"all fast paths", "no fast path"}
    assert {row["model"] for row in full["peak_memory"]} == {"mvaema", "blip_peer"}


def test_run_all_needs_no_arguments_and_writes_into_benchmarks_results_cpu():
    args = run_all.parse_args([])
    assert args.out == REPO / "benchmarks" / "results" / "cpu"
    assert args.device == "cpu" and not args.quick


def test_every_benchmark_main_is_the_shared_runner(tmp_path):
    """A benchmark's results reach `--out`; its corpus goes to a temporary folder unless `--cache-dir` is given."""
    seen = {}

    def parse_args(argv):
        return argparse.Namespace(cache_dir=None, out=tmp_path / "bench.json", memory_child=None)

    def run(args):
        seen["cache_dir"] = args.cache_dir
        assert args.cache_dir.is_dir()
        return {"rows": [1, 2]}

    assert common.run_benchmark([], parse_args, run) == 0
    assert json.loads((tmp_path / "bench.json").read_text()) == {"rows": [1, 2]}
    assert not seen["cache_dir"].exists()  # the temporary corpus folder is removed afterwards


def test_benchmarks_build_the_models_the_training_script_trains():
    """Same factory: the benchmark's peer and MVaEMa are the classes and configs `instruct_tuning.factories` builds."""
    from instruct_tuning.factories import model_config, model_from_config
    from instruct_tuning.peer import BlipPeerForQuestionAnswering
    from instruct_tuning.variants import MVAEMA, PEER
    from modeling_mvaema import MVaEMaForQuestionAnswering
    from tests.model_fixtures import tiny_processor

    processor = tiny_processor()
    config = model_config(processor, MVAEMA)
    assert isinstance(common.model_from_config(MVAEMA, config, torch.device("cpu")), MVaEMaForQuestionAnswering)
    peer = common.model_from_config(PEER, config, torch.device("cpu"))
    assert isinstance(peer, BlipPeerForQuestionAnswering)
    assert type(peer) is type(model_from_config(PEER, config))
    assert common.paper_config(processor).text_config.vocab_size == common.PAPER_VOCAB_SIZE


def test_quality_benchmark_runs_the_training_script_fold_by_fold_with_every_baseline(capsys):
    args = quality.parse_args(["--out", "out/q"])
    assert args.folds == [0, 1, 2, 3, 4] and args.models == ["mvaema", "blip_peer", "vit", "resnet", "swin", "features"]
    full = quality.script_arguments(args, 3)
    assert full == ["--folds", "3", "--models", "mvaema,blip_peer,vit,resnet,swin,features", "--output_dir", "out/q/run",
                    "--num_folds", "5", "--num_epochs", "15"]
    quick = quality.parse_args(["--quick", "--ablations", "--out", "out/q"])
    assert quick.folds == [0, 1, 2] and quick.models == ["mvaema", "no_itc", "no_itm", "no_sa", "no_ca", "no_csa",
                                                         "blip_peer", "vit", "features"]
    quick_arguments = quality.script_arguments(quick, 0)
    assert quick_arguments[quick_arguments.index("--num_folds") + 1] == "3"
    assert quick_arguments[quick_arguments.index("--num_epochs") + 1] == "2"
    piece = quality.parse_args(["--folds", "2,1", "--models", "vit,no_ca", "--out", "out/q"])
    assert piece.folds == [2, 1] and quality.script_arguments(piece, 1)[:4] == ["--folds", "1", "--models", "vit,no_ca"]
    assert quality.parse_args([]).out == REPO / "benchmarks" / "results" / "quality"
    resumed = quality.script_arguments(quality.parse_args(["--resume", "--out", "out/q"]), 3)
    assert resumed == [*full, "--resume"] and "--resume" not in full
    longer = quality.script_arguments(quality.parse_args(["--num-epochs", "50", "--out", "out/q"]), 3)
    assert longer == [*full[:-1], "50"]
    for wrong, message in ((["--quick", "--num-epochs", "50"], "--quick has its own (2 epochs)"),
                           (["--num-epochs", "0"], "--num-epochs must be at least 1, got 0"),
                           (["--quick", "--folds", "3"], "--folds '3': give comma-separated folds between 0 and 2"),
                           (["--models", "mvaema,gpt"], "unknown: gpt"),
                           (["--models", "mvaema", "--ablations"], "add the ablations to it instead of --ablations")):
        with pytest.raises(SystemExit):
            quality.parse_args(wrong)
        assert message in capsys.readouterr().err


def test_quality_benchmark_writes_the_script_tables_after_each_fold_with_a_commit_of_its_own(tmp_path, monkeypatch, capsys):
    """The tables come from the script's own run (here a stand-in that writes what the script writes)."""
    calls = []

    def training_script(argv):
        calls.append(argv)
        run_dir = Path(argv[argv.index("--output_dir") + 1])
        fold = argv[argv.index("--folds") + 1]
        for model in argv[argv.index("--models") + 1].split(","):
            (run_dir / "runs" / model / f"fold_{fold}").mkdir(parents=True)
            (run_dir / "runs" / model / f"fold_{fold}" / "result.json").write_text("{}")
        (run_dir / "results.md").write_text(f"**Table 2: classification** up to fold {fold}\n")
        (run_dir / "results.json").write_text("{}")
        return {}

    monkeypatch.setattr(quality.run_instruct_tuning, "main", training_script)
    assert quality.main(["--folds", "1,3", "--models", "mvaema,vit", "--out", str(tmp_path)]) == 0
    assert [argv[:4] for argv in calls] == [["--folds", "1", "--models", "mvaema,vit"], ["--folds", "3", "--models", "mvaema,vit"]]
    report = (tmp_path / "quality.md").read_text()
    assert "- Command: `python -m benchmarks.quality --folds 1,3 " in report
    assert "min for this invocation, which trained mvaema, vit on test folds 1, 3\n" in report
    assert "- Package: mvaema " in report and "CPU cores" in report and report.endswith("up to fold 3\n")
    facts = json.loads((tmp_path / "quality.json").read_text())
    assert facts["environment"]["cpu_cores"] >= 1 and facts["wall_time_seconds"] >= 0 and facts["resumed"] is False
    printed = capsys.readouterr().out
    first_fold = printed[printed.index("Fold 1 finished"):printed.index("Fold 3 finished")]
    run = tmp_path / "run" / "runs"
    assert f"  git add -f {run}/mvaema/fold_1/result.json {run}/vit/fold_1/result.json {tmp_path}/results.md " in first_fold
    assert f"{tmp_path}/quality.json\n  git commit -m 'Quality benchmark: mvaema, vit, fold 1 of 5' -- {run}" in first_fold
    assert "fold_3" not in first_fold
    assert quality.main(["--resume", "--quick", "--folds", "0", "--out", str(tmp_path / "again")]) == 0
    assert "trained mvaema, blip_peer, vit, features on test fold 0 (resumed: finished runs kept, stopped ones continued)" in (
        tmp_path / "again" / "quality.md").read_text()
    assert (tmp_path / "results.md").exists() and (tmp_path / "results.json").read_text() == "{}"


@pytest.mark.slow
def test_quality_benchmark_quick_mode_trains_and_tabulates_every_model(tmp_path):
    out = tmp_path / "quality"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.quality", "--quick", "--out", str(out), "--synthetic-dir", str(tmp_path / "corpus")],
        cwd=REPO, capture_output=True, text=True, timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert {"mvaema", "blip_peer", "vit", "features"} <= set(results)
    assert all(results[model]["folds"] == [0, 1, 2] for model in ("mvaema", "blip_peer", "vit", "features"))
    report = (out / "quality.md").read_text()
    assert "| VanillaViT (supervised) | " in report and " ± " in report and "Wall time:" in report


def quality_benchmark(out: Path, corpus: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.quality", "--quick", "--out", str(out), "--synthetic-dir", str(corpus),
            *options]


def test_quality_benchmark_in_pieces_adds_up_and_a_kill_loses_at_most_the_fold_in_progress(tmp_path):
    """Invocations with different folds and models fill one --out; its tables cover the union, each row naming its
    folds. An invocation killed in its second fold keeps the first (result and tables); --resume finishes the rest."""
    out, corpus = tmp_path / "quality", tmp_path / "corpus"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.run(quality_benchmark(out, corpus, "--folds", "0", "--models", "features"), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]

    piece = quality_benchmark(out, corpus, "--folds", "1,2", "--models", "mvaema,features")
    killed = subprocess.Popen(piece, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    in_progress = out / "run" / "runs" / "mvaema" / "fold_2"
    deadline = time.time() + 600
    while not (in_progress / "checkpoint-epoch-1").exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (in_progress / "result.json").exists(), "the invocation finished before it was killed"
    results = json.loads((out / "results.json").read_text())
    assert results["mvaema"]["folds"] == [1] and results["features"]["folds"] == [0, 1]
    assert "trained mvaema, features on test fold 1\n" in (out / "quality.md").read_text()
    kept = (out / "run" / "runs" / "mvaema" / "fold_1" / "result.json").read_text()

    resumed = subprocess.run([*piece, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[mvaema fold 2] resumed from" in resumed.stdout and "[mvaema fold 1]" not in resumed.stdout
    assert (out / "run" / "runs" / "mvaema" / "fold_1" / "result.json").read_text() == kept
    assert "git commit -m 'Quality benchmark: mvaema, features, fold 2 of 3' -- " in resumed.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["mvaema"]["folds"] == [1, 2] and results["features"]["folds"] == [0, 1, 2]
    report = (out / "quality.md").read_text()
    assert "| MVaEMa | folds 1, 2 of 3 | " in report and " ± " in report
    assert "| Gradient + spectrum features (logistic regression) | folds 0, 1, 2 of 3 | " in report
    assert "Not every row covers the same test folds" in report


def test_answer_ceiling_is_what_knowing_the_category_adds(tmp_path):
    """Two categories whose answers differ only in the category word: knowing it scores 1.0, the best blank answer
    less, and the image can add a target only up to that gap."""
    from benchmarks.answer_ceiling import accuracy_needed, answer_ceiling

    rows = [{"question": "What is shown?", "category": category,
             "answer": f"The image shows {word} of even size on a dark ground."}
            for category, word in (("Powder", "grains"), ("Fibres", "strands")) for _image in range(6)]
    ceiling = answer_ceiling(rows, sample=12)
    assert ceiling["answers"] == 12
    assert ceiling["known"] == pytest.approx(1.0)
    assert ceiling["wrong"] < ceiling["blank"] < ceiling["known"]
    assert accuracy_needed(ceiling, ceiling["known"] - ceiling["blank"]) == pytest.approx(1.0)
    assert accuracy_needed(ceiling, 0.0) < 1.0
