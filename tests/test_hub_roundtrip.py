"""A saved model + processor loads through the Auto classes, with trust_remote_code, in a Python process that cannot
import our packages, offline, and gives the same outputs as the original."""

import json
import os
import textwrap

import torch
from isolated_python import run_elsewhere
from model_fixtures import ANSWERS, CAPTIONS, QUESTIONS, micrographs, qa_batch, tiny_model, tiny_processor

IMAGE_INDEX = [0, 0, 1, 2]

LOADER = textwrap.dedent(
    """
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
    shipped_code = {
        "modeling_mvaema.py",
        "layers_mvaema.py",
        "losses_mvaema.py",
        "classification_mvaema.py",
        "configuration_mvaema.py",
        "processing_mvaema.py",
    }
    assert {"model.safetensors", *shipped_code} <= files
    assert not any(name.endswith(".bin") for name in files)
    auto_map = json.loads((saved / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForVisualQuestionAnswering",
        "AutoModelForImageTextToText",
        "AutoModelForZeroShotImageClassification",
    }
    for index, image in enumerate(micrographs(max(IMAGE_INDEX) + 1)):
        image.save(tmp_path / f"image_{index}.png")

    constants = {"QUESTIONS": QUESTIONS, "CAPTIONS": CAPTIONS, "ANSWERS": ANSWERS, "IMAGE_INDEX": IMAGE_INDEX}
    run_elsewhere(tmp_path, LOADER, [str(saved), str(tmp_path), str(tmp_path / "out.pt")], constants)
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
