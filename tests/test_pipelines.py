"""transformers' pipelines on a saved MVaEMa: `image-text-to-text` answers questions and
`zero-shot-image-classification` ranks labels by the ITC similarity. Run where only the saved folder is available
(`trust_remote_code=True`, the package not importable) and with the installed package (no remote code at all)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from isolated_python import run_elsewhere
from model_fixtures import micrographs, tiny_model, tiny_processor

from modeling_mvaema import MVaEMaForQuestionAnswering, MVaEMaModel

QUESTION = "Describe the overall shape and morphology of the nanomaterials."
LABELS = ["nanowires", "particles", "tips", "porous sponge"]

PIPELINES = textwrap.dedent(
    """
    import json
    from PIL import Image
    from transformers import pipeline

    saved, image_path, out = sys.argv[1:4]
    image = Image.open(image_path)
    answerer = pipeline("image-text-to-text", model=saved, trust_remote_code=True)
    classifier = pipeline("zero-shot-image-classification", model=saved, trust_remote_code=True)
    results = {
        "answer": answerer(images=image, text=QUESTION, max_new_tokens=8, return_full_text=False)[0]["generated_text"],
        "full_text": answerer(images=image, text=QUESTION, max_new_tokens=8)[0]["generated_text"],
        "ranking": classifier(image, candidate_labels=LABELS, hypothesis_template="{}"),
        "classes": [type(answerer.model).__module__, type(classifier.model).__name__],
    }
    with open(out, "w") as handle:
        json.dump(results, handle)
    """
)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    model, processor = tiny_model().eval(), tiny_processor()
    processor.category_names = ["MEMS", "Fibres", "Tips"]
    processor.category_captions = ["SEM micrograph of a MEMS device", "SEM micrograph", "a micrograph of tips"]
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    image = micrographs(1)[0]
    image.save(folder / "micrograph.png")
    return model, processor, folder


def expected_answer(model, processor, image) -> str:
    """The answer asked after the caption of the category the model's ITC ranking puts first (self-captioning)."""
    candidates = processor.tokenizer(processor.category_captions, padding=True, return_tensors="pt")
    pixel_values = processor.image_processor([image], return_tensors="pt")["pixel_values"]
    top = model.classify(pixel_values, candidates["input_ids"], candidates["attention_mask"]).top_k_indices[0, 0]
    inputs = processor(images=[image], questions=[QUESTION], captions=[processor.category_captions[int(top)]])
    return processor.batch_decode(model.generate(**inputs, max_new_tokens=8))[0]


def expected_scores(model, processor, image) -> torch.Tensor:
    """softmax over labels of cosine(image, "[CLS] label [SEP]") / temperature, computed by hand."""
    with torch.no_grad():
        pixel_values = processor.image_processor([image], return_tensors="pt")["pixel_values"]
        texts = processor.tokenizer(LABELS, padding=True, return_tensors="pt")
        image_features = F.normalize(model.get_image_features(pixel_values), dim=-1)
        text_features = F.normalize(model.get_text_features(texts["input_ids"], texts["attention_mask"]), dim=-1)
        temperature = model.mvaema.clamped_temperature()
        return (image_features @ text_features.T / temperature).softmax(dim=-1)[0]


def test_pipelines_answer_and_rank_from_the_saved_folder_alone(saved_model, tmp_path):
    model, processor, folder = saved_model
    out = tmp_path / "out.json"
    constants = {"QUESTION": QUESTION, "LABELS": LABELS}
    run_elsewhere(tmp_path, PIPELINES, [str(folder / "model"), str(folder / "micrograph.png"), str(out)], constants)
    results = json.loads(out.read_text())
    image = micrographs(1)[0]

    assert results["classes"][0].startswith("transformers_modules."), "the shipped code must have been used"
    assert results["classes"][1] == "MVaEMaModel"
    assert results["answer"] == expected_answer(model, processor, image)
    assert results["full_text"].startswith(QUESTION) and results["full_text"].endswith(results["answer"])

    ranking = results["ranking"]
    assert abs(sum(entry["score"] for entry in ranking) - 1.0) < 1e-5
    scores = expected_scores(model, processor, image)
    by_label = {entry["label"]: entry["score"] for entry in ranking}
    for label, score in zip(LABELS, scores.tolist()):
        assert by_label[label] == pytest.approx(score, abs=1e-5)
    assert [entry["label"] for entry in ranking] == [LABELS[i] for i in scores.argsort(descending=True).tolist()]


def test_zero_shot_model_loads_the_question_answering_checkpoint(saved_model):
    """`MVaEMaModel` reads the encoders of a saved `MVaEMaForQuestionAnswering` (weights under `mvaema.`), the way
    transformers' base_model_prefix lets a base model load a checkpoint with a head."""
    model, _, folder = saved_model
    encoders = MVaEMaModel.from_pretrained(folder / "model")
    own = model.mvaema.state_dict()
    loaded = encoders.state_dict()
    assert own.keys() == loaded.keys()
    for name, tensor in own.items():
        assert torch.equal(loaded[name], tensor), name


def test_installed_package_loads_a_saved_model_silently_in_a_terminal(saved_model, tmp_path):
    """No "Do you wish to run the custom code? [y/N]" and no model-type warning, even with a terminal attached (a
    pseudo-terminal, where such a prompt would wait for an answer), and no shipped code is imported."""
    _, _, folder = saved_model
    script = tmp_path / "load.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        from transformers import AutoModel, AutoProcessor, pipeline
        from modeling_mvaema import MVaEMaForQuestionAnswering, MVaEMaProcessor
        processor = MVaEMaProcessor.from_pretrained({str(folder / "model")!r})
        model = MVaEMaForQuestionAnswering.from_pretrained({str(folder / "model")!r})
        auto = AutoModel.from_pretrained({str(folder / "model")!r})
        auto_processor = AutoProcessor.from_pretrained({str(folder / "model")!r})
        classifier = pipeline("zero-shot-image-classification", model={str(folder / "model")!r})
        shipped = [name for name in sys.modules if name.startswith("transformers_modules")]
        print("LOADED", type(auto).__module__, type(auto_processor).__module__, shipped)
    """)
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run(
        ["script", "-qec", f"{sys.executable} {script}", "/dev/null"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "custom code" not in output and "[y/N]" not in output, output[-3000:]
    assert "to instantiate a model of type" not in output, output[-3000:]
    assert "LOADED modeling_mvaema.modeling_mvaema modeling_mvaema.processing_mvaema []" in output, output[-3000:]


def test_question_answering_model_keeps_its_weights_under_one_prefix(saved_model):
    model, _, _ = saved_model
    names = {name.split(".")[0] for name in model.state_dict()}
    assert names == {"mvaema", "lm_head"}
    assert isinstance(model, MVaEMaForQuestionAnswering)
