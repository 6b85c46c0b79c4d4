"""Grounded fact scores: generated answers about synthetic micrographs checked against what each scene shows."""

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import evaluate

from dataset_builder.question_families import FAMILIES_BY_KEY
from dataset_builder.question_families import SEM_CATEGORIES
from dataset_builder.question_families import readable_category

_CITATION = """\
@inproceedings{sakhinana2024mvaema,
  title={Multi-Modal Instruction-Tuning Small-Scale Language-and-Vision Assistant for Semiconductor Electron
         Micrograph Analysis},
  author={Sakhinana, Sagar Srinivas and Sannidhi, Geethan and Runkana, Venkataramana},
  booktitle={AAAI Workshops},
  year={2024}
}
"""

_DESCRIPTION = """\
Checks the facts a generated answer states about a synthetic micrograph against the facts of the scene it
was drawn from (`dataset_builder/synthetic/facts.py`, `facts.jsonl` beside the corpus): what BLEU cannot see.
Each sub-question checks the facts the grounded teacher states in its answer to it:

- named things, by case-insensitive whole-word mention; when an answer names several values of one fact, the
  first one counts ("clustered rather than evenly spaced" states clustered): category, sub-type (the
  structure phrase after "specifically", "namely", ...), distribution, contact, boundaries, detector;
- sizes and lengths (nm, µm/um, mm, or % of the image width without a scale bar) within a factor 1.5 of the
  truth; a stated range counts when it overlaps the true range widened by that factor;
- counts ("about 140 visible") within 25 %;
- the data bar: accelerating voltage (kV), magnification ("x 5,000", "5,000x", "5.00 kx") and scale bar
  exactly; an answer saying there is no scale bar or data bar is right only for an image without one, and
  any data bar number stated for such an image is wrong.

A family is scored by the share of the checkable facts its answers state that are correct (`accuracy`), with
how many answers stated one at all; families whose answers state no checkable fact are listed in `left_out`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): generated answers.
    references (`list[dict]`): the facts of each answer's micrograph, as `load_synthetic_facts` returns them
        (join a QA row's `image_id` to the facts' keys).
    families (`list[str]`): each answer's question family (the dataset's `family` column).
    questions (`list[str]`): each answer's sub-question (the dataset's `question` column): a family's
        sub-questions ask for different facts, and an answer about aggregation may say "continuous"
        without stating the distribution.

Returns:
    `accuracy` (`float` or None): the share of all stated checkable facts that are correct, over the kept
        families; None when no answer stated one.
    `answers`, `answers_stating_facts`, `facts_stated`, `facts_correct` (`int`): totals over checked answers.
    `families` (`dict`): per kept family present in the input, the same five entries plus `per_fact`
        (`{fact: {"stated", "correct", "accuracy"}}`).
    `left_out` (`dict[str, str]`): families that are not scored, with the reason.

Examples:
    >>> from dataset_builder.synthetic import load_synthetic_facts
    >>> from metrics.grounded_facts.grounded_facts import GroundedFacts
    >>> facts = load_synthetic_facts("data/synthetic-100-per-category")  # image_id -> facts
    >>> results = GroundedFacts().compute(
    ...     predictions=[row["generated"] for row in rows],
    ...     references=[facts[row["image_id"]] for row in rows],
    ...     families=[row["family"] for row in rows],
    ...     questions=[row["question"] for row in rows],
    ... )
    >>> sorted(results["families"]["size_and_distribution"]["per_fact"]["count"])
    ['accuracy', 'correct', 'stated']
"""

SIZE_FACTOR = 1.5
COUNT_TOLERANCE = 0.25
NM_PER_UNIT = {"nm": 1.0, "µm": 1e3, "um": 1e3, "mm": 1e6}
NUMBER = r"\d+(?:\.\d+)?"
UNIT = r"(?:nm|µm|μm|um|mm)"
LENGTH = rf"{NUMBER}\s*{UNIT}"
RANGE_JOINT = r"\s*(?:-|–|to)\s*"

LENGTH_EXTENT = re.compile(
    rf"(?<![\w.])(?P<low>{NUMBER})\s*(?P<low_unit>{UNIT})?(?:{RANGE_JOINT}(?P<high>{NUMBER}))?\s*(?P<unit>{UNIT})(?!\w)",
    re.IGNORECASE,
)
WIDTH_SHARE_EXTENT = re.compile(
    rf"(?<![\w.])(?P<low>{NUMBER})\s*%?(?:{RANGE_JOINT}(?P<high>{NUMBER}))?\s*% of the (?:image|field)",
    re.IGNORECASE,
)
COUNT = re.compile(r"(?<![\w.])(?P<count>\d[\d,]*)\s+visible\b", re.IGNORECASE)
HIGH_VOLTAGE = re.compile(rf"(?<![\w.])(?P<kv>{NUMBER})\s*kV\b", re.IGNORECASE)
MAGNIFICATION = re.compile(
    r"(?<![\w.,])[x×]\s?(?P<after>\d[\d,]*(?:\.\d+)?)"
    r"|(?<![\w.,])(?P<before>\d[\d,]*(?:\.\d+)?)\s?(?P<kilo>k)?[x×](?!\w)",
    re.IGNORECASE,
)
SCALE_BAR = re.compile(
    rf"scale bar(?: reads| of|:)?\s+(?P<after>{LENGTH})|(?P<before>{LENGTH})\s+scale bar", re.IGNORECASE
)
# How the grounded teacher says that an image has no data bar (answers.py: scale, size, labels, technique).
NO_DATA_BAR = re.compile(
    r"\bno (?:scale|data) bar\b|\bno labels(?:,| or) markers\b|\bsettings are not shown\b|\bno settings are shown\b",
    re.IGNORECASE,
)
# The teacher names the sub-type after the category: "The image shows nanowires, specifically <structure>".
SUBTYPE_JOINT = re.compile(r"\b(?:specifically|more precisely|namely|in particular)\b", re.IGNORECASE)
# Which size a clause of the size answer gives: "the <feature> is ...; length ...; pitch ...".
LENGTH_CLAUSE = re.compile(r"\s*length\b", re.IGNORECASE)
PITCH_CLAUSE = re.compile(r"\s*(?:pitch|(?:centre-to-centre |center-to-center )?spacing)\b", re.IGNORECASE)


def cues(patterns: dict[str, str]) -> dict[str, re.Pattern]:
    return {name: re.compile(pattern, re.IGNORECASE) for name, pattern in patterns.items()}


def phrase_cue(phrase: str) -> str:
    return rf"\b{re.escape(phrase)}\b"


# Words that name each value in the grounded teacher's answers (answers.py) and in plain usage.
CATEGORY_CUES = cues(
    {readable_category(category): phrase_cue(readable_category(category)) for category in SEM_CATEGORIES}
)
DISTRIBUTION_CUES = cues(
    {
        "evenly spaced": r"\bevenly spaced\b",
        "clustered": r"\bclustered\b",
        "random": r"\brandom(?:ly)?\b",
        "aligned": r"\baligned\b",
        "continuous": r"\bcontinuous\b",
        "single": r"\bsingle\b|\bonly one\b",
        "designed": r"\bdesigned\b|\bengineered\b",
    }
)
CONTACT_CUES = cues(
    {
        "separate": r"\bseparate\b|\bapart\b",
        "touching": r"\btouch(?:es|ing)?\b|\bin contact\b",
        "fused": r"\bfused\b",
        "crossing": r"\bcross(?:es|ing)?\b|\bcrossings?\b|\boverlap(?:s|ping)?\b",
        "continuous": r"\bcontinuous\b",
        "single": r"\bsingle\b|\bonly one\b|\balone\b|\bisolated\b",
    }
)
BOUNDARY_CUES = cues(
    {
        "sharp": r"\bsharp\b|\bwell defined\b|\bclearly distinguishable\b",
        "soft": r"\bsoft\b|\bpoorly defined\b|\bblend\b",
    }
)
DETECTOR_CUES = cues(
    {
        "ETD": r"\bETD\b|\bEverhart[- ]Thornley\b",
        "TLD": r"\bTLD\b|\bthrough[- ]the[- ]lens\b",
        "SEI": r"\bSEI\b|\bsecondary[- ]electron imaging detector\b",
        "LEI": r"\bLEI\b|\blower secondary[- ]electron\b",
        "InLens": r"\bin[- ]?lens\b",
        "SE2": r"\bSE2\b",
    }
)


def first_named(text: str, named: dict[str, re.Pattern]) -> str | None:
    """The value whose cue comes first: answers name the asserted value before any they contrast it with."""
    found = [(match.start(), name) for name, cue in named.items() if (match := cue.search(text))]
    return min(found)[1] if found else None


def number(text: str) -> float:
    return float(text.replace(",", ""))


def nm_per(unit: str) -> float:
    # The micro sign (U+00B5) and the Greek mu (U+03BC) both write micrometres.
    return NM_PER_UNIT[unit.lower().replace("μ", "µ")]


def length_nm(text: str) -> float:
    value, unit = re.fullmatch(rf"({NUMBER})\s*({UNIT})", text, re.IGNORECASE).groups()
    return float(value) * nm_per(unit)


# ----------------------------------------------------------------------------------------- what answers state


def stated_category(answer: str) -> str | None:
    return first_named(answer, CATEGORY_CUES)


def stated_structure(answer: str) -> str | None:
    """The sub-type statement: what follows the joint after a named category."""
    joint = SUBTYPE_JOINT.search(answer)
    return answer[joint.end() :] if joint and stated_category(answer) else None


def stated_extents(answer: str) -> dict[str, tuple[str, float, float]]:
    """Sizes by kind ("feature_size", "length", "pitch"): (unit system "nm" or "%", low, high), first per kind."""
    extents = {}
    for clause in answer.split(";"):
        kind = "length" if LENGTH_CLAUSE.match(clause) else "pitch" if PITCH_CLAUSE.match(clause) else "feature_size"
        extent = clause_extent(clause)
        if extent and kind not in extents:
            extents[kind] = extent
    return extents


def clause_extent(clause: str) -> tuple[str, float, float] | None:
    matches = [match for match in (LENGTH_EXTENT.search(clause), WIDTH_SHARE_EXTENT.search(clause)) if match]
    if not matches:
        return None
    match = min(matches, key=lambda found: found.start())
    if match.re is WIDTH_SHARE_EXTENT:
        return "%", float(match["low"]), float(match["high"] or match["low"])
    low = float(match["low"]) * nm_per(match["low_unit"] or match["unit"])
    return "nm", low, float(match["high"] or match["low"]) * nm_per(match["unit"])


def stated_count(answer: str) -> int | None:
    match = COUNT.search(answer)
    return int(number(match["count"])) if match else None


def stated_high_voltage(answer: str) -> float | None:
    match = HIGH_VOLTAGE.search(answer)
    return float(match["kv"]) if match else None


def stated_magnification(answer: str) -> int | None:
    match = MAGNIFICATION.search(answer)
    if not match:
        return None
    if match["after"]:
        return round(number(match["after"]))
    return round(number(match["before"]) * (1000 if match["kilo"] else 1))


def stated_scale_bar(answer: str) -> float | None:
    match = SCALE_BAR.search(answer)
    return length_nm(match["after"] or match["before"]) if match else None


def stated_data_bar(answer: str) -> bool | None:
    """False when the answer says the image has no data bar; presence is judged through the bar's numbers."""
    return False if NO_DATA_BAR.search(answer) else None


# ----------------------------------------------------------------------------------------- what is true


def same_number(value: float, truth: float | None) -> bool:
    return truth is not None and math.isclose(value, truth, rel_tol=1e-6)


def extent_is_true(stated: tuple[str, float, float], truth_nm: list[float] | None, facts: dict) -> bool:
    if not truth_nm:
        return False
    system, low, high = stated
    scale = 100 / facts["field_width_nm"] if system == "%" else 1.0
    true_low, true_high = min(truth_nm) * scale, max(truth_nm) * scale
    return low <= true_high * SIZE_FACTOR and high >= true_low / SIZE_FACTOR


def count_is_true(count: int, truth: int | None) -> bool:
    return truth is not None and abs(count - truth) <= COUNT_TOLERANCE * truth


def structure_is_true(statement: str, truth: str) -> bool:
    return " ".join(truth.lower().split()) in " ".join(statement.lower().split())


@dataclass(frozen=True)
class Fact:
    """One checkable fact: what an answer states about it (None: nothing), and whether that is true."""

    read: Callable[[str], object]
    judge: Callable[[object, dict], bool]


def size_fact(kind: str, truth: Callable[[dict], list[float] | None]) -> Fact:
    return Fact(
        read=lambda answer: stated_extents(answer).get(kind),
        judge=lambda extent, facts: extent_is_true(extent, truth(facts), facts),
    )


def named_fact(key: str, named: dict[str, re.Pattern]) -> Fact:
    return Fact(read=lambda answer: first_named(answer, named), judge=lambda value, facts: value == facts[key])


FACTS: dict[str, Fact] = {
    "category": Fact(stated_category, lambda value, facts: value == facts["category_name"]),
    "structure": Fact(stated_structure, lambda value, facts: structure_is_true(value, facts["structure"])),
    "feature_size": size_fact("feature_size", lambda facts: facts["feature_size_nm"]),
    "length": size_fact("length", lambda facts: facts["length_nm"]),
    "pitch": size_fact("pitch", lambda facts: facts["pitch_nm"] and [facts["pitch_nm"]]),
    "count": Fact(stated_count, lambda value, facts: count_is_true(value, facts["count"])),
    "distribution": named_fact("distribution", DISTRIBUTION_CUES),
    "contact": named_fact("contact", CONTACT_CUES),
    "boundaries": named_fact("boundaries", BOUNDARY_CUES),
    "data_bar": Fact(stated_data_bar, lambda value, facts: value == facts["data_bar"]),
    "detector": named_fact("detector", DETECTOR_CUES),
    "high_voltage": Fact(stated_high_voltage, lambda value, facts: same_number(value, facts["high_voltage_kv"])),
    "magnification": Fact(stated_magnification, lambda value, facts: value == facts["magnification"]),
    "scale_bar": Fact(stated_scale_bar, lambda value, facts: same_number(value, facts["scale_bar_nm"])),
}

# The facts each sub-question's grounded answer states (dataset_builder/synthetic/answers.py), by the index of
# the sub-question in its family. Sub-questions not named here are not checked.
CHECKED_FACTS: dict[tuple[str, int], tuple[str, ...]] = {
    ("basics", 0): ("category", "structure"),
    ("basics", 1): ("data_bar", "scale_bar", "magnification"),
    ("size_and_distribution", 0): ("data_bar", "feature_size", "length", "pitch"),
    ("size_and_distribution", 1): ("distribution", "count"),
    ("composition_and_elements", 1): ("data_bar", "detector", "high_voltage", "magnification", "scale_bar"),
    ("interactions_and_boundaries", 0): ("contact",),
    ("interactions_and_boundaries", 1): ("boundaries",),
    ("image_technique_and_modifications", 0): ("data_bar", "detector", "high_voltage", "magnification"),
}
LEFT_OUT: dict[str, str] = {
    "morphology_and_structure": "shape, domains and size consistency are free descriptions without a checkable value",
    "surface_characteristics": "surface textures and imperfections are free descriptions without a checkable value",
    "external_environment": "surroundings and other objects are free descriptions without a checkable value",
    "functional_features": "functional regions are free descriptions; 'static' is the same for every image",
    "context_and_application": "applications restate the sub-type in free words; 'experimental' holds for every image",
}

FACT_FEATURES = {
    "image_id": datasets.Value("string"),
    "image_path": datasets.Value("string"),
    "category": datasets.Value("string"),
    "category_name": datasets.Value("string"),
    "subtype": datasets.Value("string"),
    "structure": datasets.Value("string"),
    "feature": datasets.Value("string"),
    "feature_size_nm": datasets.List(datasets.Value("float64")),
    "length_nm": datasets.List(datasets.Value("float64")),
    "pitch_nm": datasets.Value("float64"),
    "field_width_nm": datasets.Value("float64"),
    "count": datasets.Value("int64"),
    "distribution": datasets.Value("string"),
    "contact": datasets.Value("string"),
    "boundaries": datasets.Value("string"),
    "data_bar": datasets.Value("bool"),
    "detector": datasets.Value("string"),
    "high_voltage_kv": datasets.Value("float64"),
    "magnification": datasets.Value("int64"),
    "scale_bar": datasets.Value("string"),
    "scale_bar_nm": datasets.Value("float64"),
}


def judged_facts(answer: str, facts: dict, checked: tuple[str, ...]) -> dict[str, bool]:
    """Each checked fact that the answer states, and whether what it states is true of the micrograph."""
    stated = {name: FACTS[name].read(answer) for name in checked}
    return {name: FACTS[name].judge(value, facts) for name, value in stated.items() if value is not None}


def sub_question_index(family: str, question: str) -> int:
    if family not in FAMILIES_BY_KEY:
        raise ValueError(
            f"metrics/grounded_facts: unknown question family {family!r}; known: {', '.join(FAMILIES_BY_KEY)}"
        )
    questions = FAMILIES_BY_KEY[family].questions
    if question not in questions:
        raise ValueError(f"metrics/grounded_facts: {question!r} is not a sub-question of family {family!r}")
    return questions.index(question)


def share(correct: int, stated: int) -> float | None:
    return correct / stated if stated else None


def summary(tally: Counter) -> dict:
    return {
        "answers": tally["answers"],
        "answers_stating_facts": tally["answers_stating_facts"],
        "facts_stated": tally["stated"],
        "facts_correct": tally["correct"],
        "accuracy": share(tally["correct"], tally["stated"]),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GroundedFacts(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": FACT_FEATURES}),
        )

    def _enforce_nested_string_type(self, schema, obj):
        # A fact the micrograph does not show is None (no data bar: no detector); evaluate's check of string
        # features would take it for a non-string.
        return None if obj is None else super()._enforce_nested_string_type(schema, obj)

    def _compute(self, predictions, references, families, questions) -> dict:
        if not len(predictions) == len(families) == len(questions):
            raise ValueError(
                f"metrics/grounded_facts: {len(predictions)} answers but {len(families)} families and "
                f"{len(questions)} questions; pass one of each per answer."
            )
        totals, by_family, by_fact = Counter(), {}, {}
        for answer, facts, family, question in zip(predictions, references, families, questions, strict=True):
            checked = CHECKED_FACTS.get((family, sub_question_index(family, question)))
            if checked is None:
                continue
            verdicts = judged_facts(answer, facts, checked)
            answer_tally = Counter(
                answers=1,
                answers_stating_facts=int(bool(verdicts)),
                stated=len(verdicts),
                correct=sum(verdicts.values()),
            )
            for name, verdict in verdicts.items():
                by_fact.setdefault(family, {}).setdefault(name, Counter()).update(stated=1, correct=int(verdict))
            totals.update(answer_tally)
            by_family.setdefault(family, Counter()).update(answer_tally)
        return {
            **summary(totals),
            "families": {
                family: {**summary(tally), "per_fact": per_fact(by_fact.get(family, {}))}
                for family, tally in by_family.items()
            },
            "left_out": dict(LEFT_OUT),
        }


def per_fact(tallies: dict[str, Counter]) -> dict[str, dict]:
    return {
        name: {
            "stated": tally["stated"],
            "correct": tally["correct"],
            "accuracy": share(tally["correct"], tally["stated"]),
        }
        for name, tally in tallies.items()
    }
