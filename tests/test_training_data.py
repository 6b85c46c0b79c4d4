"""What training reads: label texts from the caption template (not a teacher's phrasing), which ITC fits images
to; one vocabulary per corpus, whichever process learns it; batches that carry the captions and, when asked, augmented pixels; a
prepared corpus's fold count."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from dataset_builder.question_families import CLASSIFICATION_QUESTION, caption_for_category
from instruct_tuning.arguments import ArgumentError
from instruct_tuning.augmentation import MicrographAugmentation
from instruct_tuning.data import (
    ImageGroupedBatchSampler,
    PixelStore,
    QACollator,
    index_loader,
    tokenize_split,
    with_fold_count,
)
from instruct_tuning.factories import attach_categories, train_processor
from modeling_mvaema import MVaEMaConfig, MVaEMaForQuestionAnswering

CATEGORIES = ["Fibres", "Particles", "Patterned_surface"]
IMAGES_PER_CATEGORY = 6
SIZE = 32


def toy_image(category: int, index: int) -> np.ndarray:
    """Three looks a tiny model tells apart: stripes, dots, a checkerboard (each with its own noise)."""
    rng = np.random.default_rng(category * 100 + index)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    period = 4 + index % 3
    pattern = [np.sin(xs / period), np.cos(xs / period) * np.cos(ys / period), ((xs // period + ys // period) % 2) - 0.5]
    grey = (127 + 100 * pattern[category] + rng.normal(0, 8, (SIZE, SIZE))).clip(0, 255).astype(np.uint8)
    return np.stack([grey] * 3)


def corpus_without_the_image_shows() -> datasets.Dataset:
    """Two QA pairs per image from a teacher that never starts an answer with "The image shows"."""
    rows = []
    phrasing = {0: "Long thin strands run across the field", 1: "Round specks sit apart on a flat ground",
                2: "A regular grid of squares covers the surface"}
    for category in range(len(CATEGORIES)):
        for index in range(IMAGES_PER_CATEGORY):
            for question, answer in ((CLASSIFICATION_QUESTION, f"Most likely: {phrasing[category]}."),
                                     ("Describe the surface.", f"Seen at this scale, {phrasing[category].lower()}.")):
                rows.append({"image_id": f"{category}-{index}", "question": question, "answer": answer,
                             "caption": caption_for_category(CATEGORIES[category]), "category": category,
                             "family": "basics" if question == CLASSIFICATION_QUESTION else "surface_characteristics"})
    features = datasets.Features({"image_id": datasets.Value("string"), "question": datasets.Value("string"),
                                  "answer": datasets.Value("string"), "caption": datasets.Value("string"),
                                  "category": datasets.ClassLabel(names=CATEGORIES),
                                  "family": datasets.Value("string")})
    return datasets.Dataset.from_list(rows, features=features)


def pixel_store(corpus) -> PixelStore:
    keys = sorted(set(corpus["image_id"]))
    pixels = torch.from_numpy(np.stack([toy_image(int(key.split("-")[0]), int(key.split("-")[1])) for key in keys]))
    return PixelStore(pixels, keys)


def test_label_texts_are_the_caption_template_whatever_the_teacher_wrote():
    corpus = corpus_without_the_image_shows()
    processor = attach_categories(train_processor(corpus, vocab_size=400, image_size=SIZE), CATEGORIES)
    captions = [caption_for_category(name) for name in CATEGORIES]
    assert processor.category_texts == captions and processor.category_captions == captions
    inputs = processor.classification_inputs()
    decoded = processor.tokenizer.batch_decode(inputs["label_pair_input_ids"], skip_special_tokens=True)
    assert [text.strip() for text in decoded] == captions
    assert not any("The image shows" in text for text in corpus["answer"])


@pytest.mark.slow
def test_itc_fits_images_to_the_caption_texts_with_a_teacher_of_another_phrasing():
    corpus = corpus_without_the_image_shows()
    processor = attach_categories(train_processor(corpus, vocab_size=400, image_size=SIZE), CATEGORIES)
    store = pixel_store(corpus)
    table = tokenize_split(corpus, processor, store)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    torch.manual_seed(0)
    config = MVaEMaConfig.from_tokenizer(
        processor.tokenizer,
        vision_config=dict(tower, image_size=SIZE, patch_size=8),
        text_config=dict(tower, max_position_embeddings=64),
    )
    model = MVaEMaForQuestionAnswering(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    sampler = ImageGroupedBatchSampler(table.image_index, batch_size=12, questions_per_image=2, seed=0)
    collator = QACollator(table, store, captions="drop", caption_drop_rate=0.5, seed=0)
    for epoch in range(60):
        sampler.set_epoch(epoch)
        collator.set_epoch(epoch)
        for indices in sampler:
            loss = model(**collator(indices)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    images = [Image.fromarray(toy_image(category, index).transpose(1, 2, 0)) for category in range(3) for index in range(6)]
    ranked = processor.rank_categories(model, images, method="itc", top_k=1)
    predicted = [entries[0]["label"] for entries in ranked]
    truth = [CATEGORIES[category] for category in range(3) for _ in range(6)]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
    assert accuracy >= 0.9, (accuracy, predicted)


def test_training_batches_carry_each_pairs_caption_and_augmented_pixels_reproducibly():
    corpus = corpus_without_the_image_shows()
    processor = attach_categories(train_processor(corpus, vocab_size=400, image_size=SIZE), CATEGORIES)
    store = pixel_store(corpus)
    table = tokenize_split(corpus, processor, store)
    indices = list(range(0, 24, 2))
    plain_collator = QACollator(table, store, captions="drop", caption_drop_rate=0.5, seed=3)
    plain_collator.set_epoch(2)
    plain = plain_collator(indices)
    captions = processor.tokenizer.batch_decode(plain["caption_ids"], skip_special_tokens=True)
    assert [text.strip() for text in captions] == [corpus[i]["caption"] for i in indices]

    augmented = QACollator(table, store, captions="drop", caption_drop_rate=0.5, seed=3,
                           augmentation=MicrographAugmentation(SIZE))
    augmented.set_epoch(2)
    first = augmented(indices)
    augmented.set_epoch(2)
    again = augmented(indices)
    assert torch.equal(first["pixel_values"], again["pixel_values"]), "same (seed, epoch, batch): same pixels"
    assert not torch.equal(first["pixel_values"], plain["pixel_values"])
    for name in ("input_ids", "labels", "caption_ids", "image_index"):
        assert torch.equal(first[name], plain[name])


def test_every_process_learns_the_same_vocabulary_from_the_same_corpus(tmp_path):
    """The `tokenizers` trainer numbers sub-words in per-process hash-map order and breaks ties between equally
    frequent merges by those numbers; `train_wordpiece_tokenizer` fixes the numbering, so separate processes (each
    with its own hash seed) learn one vocabulary, and a run's numbers do not depend on which process trained it."""
    corpus = corpus_without_the_image_shows()
    corpus.save_to_disk(tmp_path / "corpus")
    script = textwrap.dedent(f"""
        import datasets, json
        from instruct_tuning.factories import train_processor
        corpus = datasets.load_from_disk({str(tmp_path / "corpus")!r})
        processor = train_processor(corpus, vocab_size=400, image_size={SIZE})
        print(json.dumps(sorted(processor.tokenizer.get_vocab().items())))
    """)
    vocabularies = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        for _ in range(3)
    }
    assert len(vocabularies) == 1
    vocabulary = dict(json.loads(vocabularies.pop()))
    assert len(vocabulary) > 300, "merges were learnt, not just the alphabet"


def test_a_prepared_corpus_with_another_fold_count_is_named():
    corpus = datasets.Dataset.from_dict({"fold": [0, 1, 2, 3, 4, 0]})
    assert with_fold_count(corpus, 5, "my-org/sem") is corpus
    with pytest.raises(ArgumentError, match=r"--num_folds 10 does not match the dataset my-org/sem, which was built with 5 folds"):
        with_fold_count(corpus, 10, "my-org/sem")


def test_every_epoch_asks_each_image_its_category_question_when_asked_to():
    """With one question per image and epoch, the category question is asked every epoch (it leads each image's
    first group), not just in the epochs a shuffle happens to pick it; the order still depends on (seed, epoch)."""
    corpus = corpus_without_the_image_shows()
    processor = attach_categories(train_processor(corpus, vocab_size=400, image_size=SIZE), CATEGORIES)
    table = tokenize_split(corpus, processor, pixel_store(corpus))
    assert table.asks_category.tolist() == [question == CLASSIFICATION_QUESTION for question in corpus["question"]]

    def asked(leading_pairs, epoch: int) -> list[int]:
        sampler = ImageGroupedBatchSampler(table.image_index, 6, 1, seed=3, groups_per_image=1,
                                           leading_pairs=leading_pairs)
        sampler.set_epoch(epoch)
        return [index for batch in sampler for index in batch]

    for epoch in range(3):
        indices = asked(table.asks_category, epoch)
        assert sorted(table.image_index[indices].tolist()) == sorted(set(table.image_index.tolist()))
        assert table.asks_category[indices].all()
        assert indices == asked(table.asks_category, epoch)
    drawn = torch.cat([table.asks_category[asked(None, epoch)] for epoch in range(3)])
    assert 0 < drawn.float().mean() < 1


def test_asked_both_ways_each_image_gets_its_category_question_with_and_without_the_caption_every_epoch():
    """`--ask_category_both_ways`: every epoch each image's first group asks the category question with its caption
    and its second group asks it again without, at the place of another question (the epoch keeps its length);
    the collator turns the second copy back into that question's tokens."""
    corpus = corpus_without_the_image_shows()
    processor = attach_categories(train_processor(corpus, vocab_size=400, image_size=SIZE), CATEGORIES)
    table = tokenize_split(corpus, processor, pixel_store(corpus))
    images = sorted(set(table.image_index.tolist()))
    once = ImageGroupedBatchSampler(table.image_index, 4, 1, seed=3, groups_per_image=2, leading_pairs=table.asks_category)
    twice = ImageGroupedBatchSampler(table.image_index, 4, 1, seed=3, groups_per_image=2, leading_pairs=table.asks_category,
                                     leading_pairs_twice=True)
    assert len(twice) == len(once) and twice.samples_per_epoch == once.samples_per_epoch == 2 * len(images)
    collator = QACollator(table, pixel_store(corpus), captions="drop", caption_drop_rate=0.5,
                          category_caption_drop_rate=0.5, category_question_both_ways=True)
    for epoch in range(2):
        twice.set_epoch(epoch)
        collator.set_epoch(epoch)
        indices = torch.tensor([index for batch in twice for index in batch])
        first, second = indices[indices < len(table)], indices[indices >= len(table)] - len(table)
        assert sorted(table.image_index[first].tolist()) == images == sorted(table.image_index[second].tolist())
        assert table.asks_category[first].all() and table.asks_category[second].all()
        assert set(first.tolist()) == set(second.tolist())
        kept = collator._caption_kept(indices)
        assert kept[indices < len(table)].all() and not kept[indices >= len(table)].any()
        batches = list(index_loader(table, twice, collator))  # the loader's index dataset reaches the second copies
        assert sum(len(batch["input_ids"]) for batch in batches) == len(indices)
        batch = collator(indices.tolist())
        with_caption = table.prompt_ids[indices % len(table)]
        without = table.prompt_ids_no_caption[indices % len(table)]
        length = batch["input_ids"].shape[1]
        expected = torch.where(kept.unsqueeze(1), with_caption, without)[:, :length]
        assert torch.equal(batch["input_ids"], expected)
        assert not torch.equal(with_caption[:, :length], without[:, :length])
    with pytest.raises(ValueError, match="leading_pairs"):
        ImageGroupedBatchSampler(table.image_index, 4, 1, seed=3, leading_pairs_twice=True)


def test_asked_at_every_view_each_micrograph_of_a_batch_also_gets_its_category_question():
    """`--ask_category_every_view`: each batch appends, per micrograph, its category question as an answer-only row
    (`lm_only_rows`), with or without the caption at the category question's rate, unless the batch already asks it;
    ITC's texts cover the drawn pairs only, and the drawn pairs' augmented views are those of a run without the rows
    (their caption draws have a random stream of their own)."""
    corpus = corpus_without_the_image_shows()
    processor = attach_categories(train_processor(corpus, vocab_size=400, image_size=SIZE), CATEGORIES)
    table = tokenize_split(corpus, processor, pixel_store(corpus))
    sampler = ImageGroupedBatchSampler(table.image_index, 6, 1, seed=3, groups_per_image=2,
                                       leading_pairs=table.asks_category)
    plain = QACollator(table, pixel_store(corpus), captions="drop", caption_drop_rate=0.5, seed=1,
                       augmentation=MicrographAugmentation(SIZE))
    every_view = QACollator(table, pixel_store(corpus), captions="drop", caption_drop_rate=0.5, seed=1,
                            augmentation=MicrographAugmentation(SIZE), category_question_every_view=True)
    category_row = {int(table.image_index[row]): row for row in table.asks_category.nonzero().flatten().tolist()}
    with_caption = without = 0
    for indices in sampler:
        base, batch = plain(indices), every_view(indices)
        drawn, added = len(indices), batch["lm_only_rows"]
        assert len(batch["input_ids"]) == drawn + added and len(batch["pair_prompt_ids"]) == drawn
        assert torch.equal(batch["pixel_values"], base["pixel_values"])
        assert torch.equal(batch["image_index"][:drawn], base["image_index"])
        assert torch.equal(batch["input_ids"][:drawn, : base["input_ids"].shape[1]], base["input_ids"])
        asked = {int(table.image_index[i]) for i in indices if table.asks_category[i]}
        keys = table.image_index[indices].unique()  # the rows of pixel_values are these micrographs, in this order
        added_images = keys[batch["image_index"][drawn:]].tolist()
        assert sorted(added_images) == sorted(image for image in keys.tolist() if image not in asked)
        for position, image in enumerate(added_images):
            row, ids = category_row[image], batch["input_ids"][drawn + position]
            prompts = {"with": (table.prompt_ids[row], table.prompt_mask[row]),
                       "without": (table.prompt_ids_no_caption[row], table.prompt_mask_no_caption[row])}
            matches = [name for name, (prompt, mask) in prompts.items()
                       if ids[: int(mask.sum())].tolist() == prompt[: int(mask.sum())].tolist()]
            assert len(matches) == 1
            with_caption += matches == ["with"]
            without += matches == ["without"]
            answer = batch["labels"][drawn + position]
            assert answer[answer != -100].tolist() == table.labels[row][table.labels[row] != -100].tolist()
    assert with_caption > 0 and without > 0


@pytest.mark.slow
def test_a_trained_model_names_the_category_its_caption_states_and_agrees_with_its_ranking():
    """The paper's VQA protocol puts the true category caption in the prompt; the answer to the category question
    must then name that category (at least 98 % of the time), measured by the evaluation's own check on a model
    trained by the training batches (category question asked every epoch, with its caption half the time).
    Self-captioned (the caption of the category its ITC ranking puts first, as mvaema-predict and the demo ask), the
    answer names the ranking's category: the answer and the ranking shown beside it never contradict each other."""
    from types import SimpleNamespace

    from dataset_builder.question_families import readable_category
    from instruct_tuning.evaluation import category_scores, distinct_images, evaluate_category_answers

    rows = []
    for category, name in enumerate(CATEGORIES):
        for index in range(IMAGES_PER_CATEGORY):
            for question, answer in ((CLASSIFICATION_QUESTION, f"Most likely {readable_category(name)}, seen closely."),
                                     ("Describe the surface.", "A flat ground under the features."),
                                     ("Estimate the size.", "About a micrometre across.")):
                rows.append({"image_id": f"{category}-{index}", "question": question, "answer": answer,
                             "caption": caption_for_category(name), "category": category, "family": "basics"})
    features = corpus_without_the_image_shows().features
    corpus = datasets.Dataset.from_list(rows, features=features)
    processor = attach_categories(train_processor(corpus, vocab_size=400, image_size=SIZE), CATEGORIES)
    store = pixel_store(corpus)
    table = tokenize_split(corpus, processor, store)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    torch.manual_seed(0)
    config = MVaEMaConfig.from_tokenizer(processor.tokenizer, vision_config=dict(tower, image_size=SIZE, patch_size=8),
                                         text_config=dict(tower, max_position_embeddings=64))
    model = MVaEMaForQuestionAnswering(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    sampler = ImageGroupedBatchSampler(table.image_index, batch_size=9, questions_per_image=1, seed=0,
                                       groups_per_image=1, leading_pairs=table.asks_category)
    collator = QACollator(table, store, captions="drop", caption_drop_rate=0.5, seed=0)
    for epoch in range(80):
        sampler.set_epoch(epoch)
        collator.set_epoch(epoch)
        for indices in sampler:
            loss = model(**collator(indices)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    data = SimpleNamespace(pixel_store=store, class_names=CATEGORIES)
    image_index, _ = distinct_images(table)
    ranking = category_scores(model, processor, data, image_index, "cpu", batch_size=32, method="itc").argmax(1)
    answers = evaluate_category_answers(model, processor, table, data, "cpu", batch_size=32,
                                        predicted_category=dict(zip(image_index.tolist(), ranking.tolist())))
    assert answers["images"] == len(CATEGORIES) * IMAGES_PER_CATEGORY
    assert answers["caption"]["named_share"] >= 0.98, answers["caption"]["misses"]
    assert answers["self_caption"]["names_own_caption_share"] == 1.0


def test_views_per_epoch_count_each_micrographs_question_groups():
    from instruct_tuning.data import image_views_per_epoch

    image_index = torch.tensor([0, 0, 0, 1, 1, 2])  # 3, 2 and 1 questions
    assert image_views_per_epoch(image_index, questions_per_image=1, groups_per_image=None) == 2.0
    assert image_views_per_epoch(image_index, questions_per_image=2, groups_per_image=None) == pytest.approx(4 / 3)
    assert image_views_per_epoch(image_index, questions_per_image=1, groups_per_image=2) == pytest.approx(5 / 3)
    sampler = ImageGroupedBatchSampler(image_index, 2, 1, seed=0, groups_per_image=2)
    assert sampler.samples_per_epoch == 5  # one view per group: the sampler agrees



def test_each_seed_of_the_built_in_corpus_has_its_own_folder(tmp_path, monkeypatch):
    """The generator draws the micrographs from --seed: a run with another seed gets a corpus of its own size in its
    own folder, and seed 0's folder is left as it was (sharing one, seed 1 added its images to seed 0's)."""
    from accelerate import Accelerator

    from instruct_tuning.arguments import ScriptArguments
    from instruct_tuning.data import load_corpus, synthetic_directory

    monkeypatch.chdir(tmp_path)
    sizes = {}
    for seed in (0, 1):
        args = ScriptArguments(seed=seed, synthetic_per_category=2, num_folds=2, output_dir=str(tmp_path / f"out{seed}"))
        corpus = load_corpus(args, Accelerator(cpu=True))
        folder = synthetic_directory(args)
        sizes[seed] = (len(set(corpus["image_id"])), sorted(p.name for p in folder.glob("images/*/*")))
    assert synthetic_directory(ScriptArguments(seed=1)) != synthetic_directory(ScriptArguments(seed=0))
    assert sizes[0][0] == sizes[1][0] == 20
    assert len(sizes[0][1]) == 20 and all(name.startswith("s0_") for name in sizes[0][1])
    assert synthetic_directory(ScriptArguments(seed=1, synthetic_dir="mine")) == Path("mine")
