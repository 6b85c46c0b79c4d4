"""A saved model + processor loads through the Auto classes, with trust_remote_code, in a Python process that cannot
import our packages, offline, and gives the same outputs as the original."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from model_fixtures import ANSWERS, CAPTIONS, QUESTIONS, micrographs, qa_batch, tiny_model, tiny_processor

import modeling_mvaema

IMAGE_INDEX = [0, 0, 1, 2]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(modeling_mvaema.__file__)))

# Runs in a fresh interpreter: `-I` drops PYTHONPATH, the working directory and the user site; the editable install's
# import hook is removed too, so `modeling_mvaema` can only come from the code copied into the saved folder.
LOADER = textwrap.dedent(
    """
    import importlib.util, sys
    def editable(hook):
        return getattr(hook, "__module__", "").startswith("__editable__")
    sys.meta_path = [finder for finder in sys.meta_path if not editable(finder) and not editable(type(finder))]
    sys.path_hooks = [hook for hook in sys.path_hooks if not editable(hook)]
    sys.path = [entry for entry in sys.path if entry.rstrip("/") != REPO_ROOT and not entry.startswith("__editable__")]
    sys.path_importer_cache.clear()
    assert importlib.util.find_spec("modeling_mvaema") is None, "the package must not be importable here"

    import torch
    from PIL import Image
    from transformers import AutoModel, AutoModelForVisualQuestionAnswering, AutoProcessor

    saved, images_dir, out = sys.argv[1:4]
    model = AutoModel.from_pretrained(saved, trust_remote_code=True).eval()
    vqa_model = AutoModelForVisualQuestionAnswering.from_pretrained(saved, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(saved, trust_remote_code=True)
    images = [Image.open(f"{images_dir}/image_{i}.png") for i in range(max(IMAGE_INDEX) + 1)]
    batch = processor(images=images, questions=QUESTIONS, captions=CAPTIONS, answers=ANSWERS, image_index=IMAGE_INDEX)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=8)
        results = {
            "batch": dict(batch),
            "loss": model(**batch).loss,  # ITC (learnt temperature), ITM (eval: hardest negatives) and LM
            "logits": model(**batch).logits,
            "vqa_logits": vqa_model(**batch).logits,
            "generated": generated,
            "beam": vqa_model.generate(**inputs, max_new_tokens=8, num_beams=2),
            "decoded": processor.batch_decode(generated),
            "model_module": type(model).__module__,
            "processor_module": type(processor).__module__,
        }
    torch.save(results, out)
    """
)


def test_saved_model_and_processor_load_with_auto_classes_elsewhere(tmp_path):
    model, processor = tiny_model().eval(), tiny_processor()
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    processor.save_pretrained(saved)
    files = set(os.listdir(saved))
    assert {"model.safetensors", "modeling_mvaema.py", "configuration_mvaema.py", "processing_mvaema.py"} <= files
    assert not any(name.endswith(".bin") for name in files)
    auto_map = json.loads((saved / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForVisualQuestionAnswering"}
    for index, image in enumerate(micrographs(max(IMAGE_INDEX) + 1)):
        image.save(tmp_path / f"image_{index}.png")

    script = tmp_path / "load_elsewhere.py"
    constants = {
        "REPO_ROOT": REPO_ROOT,
        "QUESTIONS": QUESTIONS,
        "CAPTIONS": CAPTIONS,
        "ANSWERS": ANSWERS,
        "IMAGE_INDEX": IMAGE_INDEX,
    }
    script.write_text("".join(f"{name} = {value!r}\n" for name, value in constants.items()) + LOADER)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(saved), str(tmp_path), str(tmp_path / "out.pt")],
        cwd=elsewhere,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = torch.load(tmp_path / "out.pt", weights_only=False)
    assert loaded["model_module"].startswith("transformers_modules.")
    assert loaded["processor_module"].startswith("transformers_modules.")

    batch = qa_batch(processor, IMAGE_INDEX)
    for key, value in batch.items():
        torch.testing.assert_close(loaded["batch"][key], value)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        output = model(**batch)
        logits = output.logits
        generated = model.generate(**inputs, max_new_tokens=8)
        beam = model.generate(**inputs, max_new_tokens=8, num_beams=2)
    torch.testing.assert_close(loaded["loss"], output.loss)
    torch.testing.assert_close(loaded["logits"], logits)
    torch.testing.assert_close(loaded["vqa_logits"], logits)
    assert torch.equal(loaded["generated"], generated)
    assert torch.equal(loaded["beam"], beam)
    assert loaded["decoded"] == processor.batch_decode(generated)
