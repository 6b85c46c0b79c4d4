"""The result tables: baselines (no VQA part) beside MVaEMa in Table 2 with parameter counts, per-class tables for
every classifier, the decoding settings under Table 1, and the printed headline next to the best baseline."""

import json

import pytest

from instruct_tuning import reporting

CLASS_NAMES = ["Fibres", "Particles"]
DECODING = {"max_new_tokens": 64, "num_beams": 1, "do_sample": False, "no_repeat_ngram_size": 4,
            "suppress_tokens": ["[PAD]", "[CLS]"]}


def classification(top1: float, f1_first: float = 0.5) -> dict:
    per_class = {"Fibres": {"precision": f1_first, "recall": f1_first, "f1": f1_first, "support": 5},
                 "Particles": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 5}}
    return {"top1": top1, "top5": 1.0, "macro_precision": 0.7, "macro_recall": 0.7, "macro_f1": top1 - 0.05,
            "per_class": per_class, "confusion_matrix": [[3, 2], [1, 4]]}


def mvaema_run(top1: float) -> dict:
    vqa = {"bleu2": 0.3, "bleu4": 0.1, "rouge1": 0.4, "rouge2": 0.2, "rougeL": 0.35, "meteor": 0.3,
           "examples": [{"prediction": "a", "reference": "b"}]}
    return {"vqa": vqa, "generation": DECODING, "classification": classification(top1), "classification_method": "itc",
            "parameters": 1_550_000, "training": {"epochs": 3}}


def baseline_run(top1: float, parameters: int, passes: int | None = None) -> dict:
    training = {"epochs": 2, **({} if passes is None else {"passes_per_epoch": passes})}
    return {"classification": classification(top1, f1_first=0.25), "classification_method": "supervised",
            "parameters": parameters, "training": training}


@pytest.fixture()
def summary():
    results = {"mvaema": {0: mvaema_run(0.8), 1: mvaema_run(0.9)},
               "vit": {0: baseline_run(0.6, 500_000, passes=4), 1: baseline_run(0.7, 500_000, passes=4)},
               "features": {0: baseline_run(0.65, 310), 1: baseline_run(0.75, 310)}}
    return reporting.summarize(results, class_names=CLASS_NAMES, args={}, wall_time_seconds=60.0)


def test_baselines_are_summarised_without_a_vqa_part(summary):
    vit = summary["vit"]
    assert "vqa" not in vit and "vqa_examples" not in vit
    assert vit["classification"]["top1"] == pytest.approx(0.65) and vit["classification_std"]["top1"] == pytest.approx(0.05)
    assert vit["classification"]["confusion_matrix"] == [[6, 4], [2, 8]]
    assert vit["parameters"] == 500_000 and vit["classification_method"] == ["supervised"] * 2
    assert summary["mvaema"]["generation"] == DECODING and summary["mvaema"]["vqa"]["bleu4"] == pytest.approx(0.1)


def test_table_2_lists_every_classifier_with_top1_top5_and_parameters(summary):
    tables = reporting.results_tables(summary)
    assert "| Model | Folds | Top-1 | Top-5 | Macro F1 | Parameters | Method |" in tables
    assert "| MVaEMa | folds 0, 1 | 0.850 ± 0.050 | 1.000 ± 0.000 | 0.800 ± 0.050 | 1.55 M | itc |" in tables
    assert ("| VanillaViT (supervised) | folds 0, 1 | 0.650 ± 0.050 | 1.000 ± 0.000 | 0.600 ± 0.050 | 0.50 M | "
            "supervised |") in tables
    assert "| Gradient + spectrum features (logistic regression) | folds 0, 1 | 0.700 ± 0.050 |" in tables
    assert "| 310 | supervised |" in tables


def test_table_2_states_the_passes_an_epoch_of_the_networks_made(summary):
    assert summary["vit"]["passes_per_epoch"] == 4 and "passes_per_epoch" not in summary["features"]
    assert ("Passes over the training micrographs in one epoch: VanillaViT (supervised) 4 (`--baseline_passes_per_epoch`; "
            "by default as many as an epoch of MVaEMa shows each micrograph).") in reporting.results_tables(summary)
    mixed = reporting.summarize({"vit": {0: baseline_run(0.6, 500_000, passes=4)},
                                 "resnet": {0: baseline_run(0.6, 700_000, passes=1)}}, CLASS_NAMES, {}, 1.0)
    assert "one epoch: VanillaViT (supervised) 4, ResNet (supervised) 1 (" in reporting.results_tables(mixed)
    no_networks = reporting.summarize({"features": {0: baseline_run(0.6, 310)}}, CLASS_NAMES, {}, 1.0)
    assert "Passes over" not in reporting.results_tables(no_networks)


def test_table_4_per_class_for_mvaema_and_every_baseline(summary):
    tables = reporting.results_tables(summary)
    for name in ("MVaEMa", "VanillaViT (supervised)", "Gradient + spectrum features (logistic regression)"):
        assert f"**Table 4: {name} per category (folds 0, 1)**" in tables
    assert "| Fibres | 0.250 | 0.250 | 0.250 | 5 |" in tables  # a baseline's row (fold means)
    assert "| Fibres | 0.500 | 0.500 | 0.500 | 5 |" in tables  # MVaEMa's


def test_the_vqa_table_states_the_decoding_settings(summary):
    tables = reporting.results_tables(summary)
    assert ("Decoding (every model alike): greedy (num_beams 1, no sampling), max_new_tokens 64, "
            "no_repeat_ngram_size 4, suppressed tokens [PAD] [CLS].") in tables


def test_different_decoding_settings_are_flagged(summary):
    summary["blip_peer"] = dict(summary["mvaema"], generation={**DECODING, "no_repeat_ngram_size": 0})
    assert "Decoding (NOT the same for every model)" in reporting.results_tables(summary)


def test_headline_puts_mvaema_next_to_the_best_baseline(summary):
    headline = reporting.headline(summary)
    assert headline.splitlines() == [
        "MVaEMa: Top-1 0.850 ± 0.050, Top-5 1.000 ± 0.000, Macro F1 0.800 ± 0.050",
        "Gradient + spectrum features (logistic regression): Top-1 0.700 ± 0.050, Top-5 1.000 ± 0.000, "
        "Macro F1 0.650 ± 0.050",
    ]


def test_headline_without_baselines_shows_mvaema_alone(summary):
    del summary["vit"], summary["features"]
    assert reporting.headline(summary).splitlines() == ["MVaEMa: Top-1 0.850 ± 0.050, Top-5 1.000 ± 0.000, Macro F1 0.800 ± 0.050"]


def test_tables_cover_every_finished_run_of_the_folder_and_name_each_rows_folds(tmp_path):
    """Runs from several invocations, each with its own subset of folds: every row says which folds it averages."""
    for model, fold, run in (("mvaema", 2, mvaema_run(0.9)), ("mvaema", 0, mvaema_run(0.7)), ("vit", 1, baseline_run(0.6, 5))):
        (tmp_path / model / f"fold_{fold}").mkdir(parents=True)
        (tmp_path / model / f"fold_{fold}" / "result.json").write_text(json.dumps(run))
    (tmp_path / "mvaema" / "fold_1").mkdir()  # a run in progress: no result yet
    results = reporting.finished_runs(tmp_path)
    assert list(results) == ["mvaema", "vit"] and sorted(results["mvaema"]) == [0, 2] and list(results["vit"]) == [1]
    tables = reporting.results_tables(reporting.summarize(results, CLASS_NAMES, {"num_folds": 5}, 1.0))
    assert "| MVaEMa | folds 0, 2 of 5 | 0.800 ± 0.100 |" in tables
    assert "| VanillaViT (supervised) | fold 1 of 5 | 0.600 |" in tables
    assert tables.startswith("Not every row covers the same test folds")


def answering_run(top1: float, distinct: float | None) -> dict:
    """An MVaEMa run with answers in the no-caption protocol; `distinct`: its distinct answers per question (None: a
    run from before the figure existed)."""
    variety = {} if distinct is None else {"distinct_answers": distinct, "teacher_distinct_answers": 30.0}
    image = {"bleu2": 0.33, "meteor": 0.42, **variety}
    blank = {"bleu2": 0.30, "meteor": 0.39}
    protocol = {"image": image, "blank": blank, "image_adds": {"bleu2": 0.03, "meteor": 0.03}}
    return {**mvaema_run(top1), "vqa_protocols": {"no_caption": protocol, "questions": 1000},
            "category_answers": {"images": 200, "no_caption": {"named_share": 0.5, "misses": []}}}


def test_distinct_answers_per_question_are_reported_beside_the_teachers_and_older_runs_still_summarise():
    from instruct_tuning.evaluation import distinct_answers_per_question

    variety = distinct_answers_per_question(
        questions=["size?", "size?", "size?", "shape?", "shape?"],
        answers=["about 110 nm", "about 110 nm ", "about 40 nm", "round", "round"],
        references=["about 120 nm", "about 45 nm", "about 40 nm", "round grains", "long wires"])
    assert variety == {"distinct_answers": 1.5, "teacher_distinct_answers": 2.5}

    both = reporting.summarize({"mvaema": {0: answering_run(0.7, 10.0), 1: answering_run(0.6, 12.0)}}, CLASS_NAMES, {}, 1.0)
    assert both["mvaema"]["protocols"]["no_caption/distinct_answers"] == pytest.approx(11.0)
    assert "distinct answers per question without a caption 11.0 (the teacher's for the same micrographs 30.0)" in \
        reporting.results_tables(both)
    mixed = reporting.summarize({"mvaema": {0: answering_run(0.7, 10.0), 1: answering_run(0.6, None)}}, CLASS_NAMES, {}, 1.0)
    assert "no_caption/distinct_answers" not in mixed["mvaema"]["protocols"]
    assert mixed["mvaema"]["protocols"]["no_caption/bleu2"] == pytest.approx(0.33)
    assert "distinct answers" not in reporting.results_tables(mixed).split("Distinct answers:")[1]


def test_the_category_sentence_leaking_into_other_answers_is_measured_and_reported():
    from instruct_tuning.evaluation import uninvited_categories

    names = ["porous sponges", "particles", "mems devices and electrodes"]
    leak = uninvited_categories(
        answers=["The image shows porous sponges, specifically a foam.", "about 40 nm", "Nanoparticles of 40 nm.",
                 "The image shows particles.", "The image shows MEMS devices and electrodes."],
        references=["Round pores of about 2 µm.", "about 45 nm", "Grains of 40 nm.", "The image shows particles.",
                    "A cantilever."],
        asks_category=[False, False, False, False, True],
        category_names=names)
    # Rows 4 (its reference names a category) and 5 (the category question) are not counted; "nanoparticles" is
    # not the category "particles".
    assert leak == {"uninvited_category": pytest.approx(1 / 3), "uninvited_category_answers": 3}
    assert uninvited_categories(["x"], ["The image shows particles."], [False], names)["uninvited_category"] is None

    run = answering_run(0.7, 10.0)
    run["vqa_protocols"]["no_caption"]["image"]["uninvited_category"] = 0.25
    summary = reporting.summarize({"mvaema": {0: run}}, CLASS_NAMES, {}, 1.0)
    assert summary["mvaema"]["protocols"]["no_caption/uninvited_category"] == pytest.approx(0.25)
    assert "name a category where the teacher's names none 25.0% (no caption)" in reporting.results_tables(summary)


def two_protocol_run(top1: float, method: str, adds_no_caption: float, named_no_caption: float) -> dict:
    """A variant's run answered with and without the true caption, with fact scores."""
    def protocol(adds: float) -> dict:
        facts = {"image": {"facts": {"accuracy": 0.30 + adds, "families": {}, "left_out": []}},
                 "blank": {"facts": {"accuracy": 0.30, "families": {}, "left_out": []}}}
        return {"image": {"bleu2": 0.30 + adds, "meteor": 0.40, **facts["image"]},
                "blank": {"bleu2": 0.30, "meteor": 0.40, **facts["blank"]},
                "image_adds": {"bleu2": adds, "meteor": 0.0}}
    return {**mvaema_run(top1), "classification_method": method,
            "vqa_protocols": {"caption": protocol(0.05), "no_caption": protocol(adds_no_caption), "questions": 100},
            "category_answers": {"images": 200, "caption": {"named_share": 0.95, "misses": []},
                                 "no_caption": {"named_share": named_no_caption, "misses": []}}}


def test_table_6b_sets_each_ablations_accuracy_beside_its_use_of_the_image():
    """An ablation can keep its top-1 and lose the image in its answers (w/o ITM, measured): the table shows both."""
    results = {"mvaema": {0: two_protocol_run(0.665, "itc", 0.047, 0.53), 1: two_protocol_run(0.705, "itc", 0.053, 0.57)},
               "no_itm": {0: two_protocol_run(0.675, "itc", 0.003, 0.195)},
               "no_itc": {0: two_protocol_run(0.225, "itm", 0.011, 0.17)},
               "no_sa": {0: mvaema_run(0.565)}}  # a run from before the protocols: left out of 6b, kept in 5 and 6
    tables = reporting.results_tables(reporting.summarize(results, CLASS_NAMES, {"num_folds": 5}, 1.0))
    table = tables.split("**Table 6b")[1].split("\n\n")[1].splitlines()
    assert table[0].startswith("| Variant | Folds | Top-1 | Method | Named, no caption | Named, true caption | ")
    assert table[2] == "| MVaEMa | folds 0, 1 of 5 | 0.685 ± 0.020 | ITC | 0.550 ± 0.020 | 0.950 ± 0.000 | " \
                       "0.050 ± 0.003 | 0.050 ± 0.000 | 0.050 ± 0.003 |"
    assert table[3] == "| w/o ITC | fold 0 of 5 | 0.225 | ITM | 0.170 | 0.950 | 0.011 | 0.050 | 0.011 |"
    assert table[4] == "| w/o CTC | fold 0 of 5 | 0.675 | ITC | 0.195 | 0.950 | 0.003 | 0.050 | 0.003 |"
    assert len(table) == 5 and "| w/o SA | fold 0 of 5 |" in tables.split("**Table 6b")[0]
