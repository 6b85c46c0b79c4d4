"""The paper's ten question families, the category caption, and the teacher's generation settings.

Everything that defines *what the teacher is asked* lives here, so that the teacher client, the
grounded synthetic teacher and the dataset builder agree on questions, captions and versions.
Change `PROMPT_VERSION` whenever a question, the caption or the answer instructions change: the
version is stored on every cached answer and every dataset row, so corpora from different prompts
are never silently mixed.
"""

from __future__ import annotations

from dataclasses import dataclass

PROMPT_VERSION = "mvaema-cot-v1"

# Folder names of the SEM dataset (Aversa et al. 2018), in the order used for ClassLabel ids.
SEM_CATEGORIES: tuple[str, ...] = (
    "Biological",
    "Fibres",
    "Films_Coated_Surface",
    "MEMS_devices_and_electrodes",
    "Nanowires",
    "Particles",
    "Patterned_surface",
    "Porous_Sponge",
    "Powder",
    "Tips",
)

_READABLE_CATEGORY_NAMES = {
    "Biological": "biological samples",
    "Fibres": "fibres",
    "Films_Coated_Surface": "films and coated surfaces",
    "MEMS_devices_and_electrodes": "MEMS devices and electrodes",
    "Nanowires": "nanowires",
    "Particles": "particles",
    "Patterned_surface": "patterned surfaces",
    "Porous_Sponge": "porous sponges",
    "Powder": "powders",
    "Tips": "tips",
}


def readable_category(category: str) -> str:
    """`"Porous_Sponge"` -> `"porous sponges"` (a noun phrase: captions and answers read "shows porous sponges"); unknown folder names fall back to spaced lower case."""
    return _READABLE_CATEGORY_NAMES.get(category, category.replace("_", " ").lower())


def caption_for_category(category: str) -> str:
    """The context-augmented caption that states the ground-truth category (the paper's CoT prompt)."""
    return f"This image depicts a nanomaterial of the category {readable_category(category)}."


@dataclass(frozen=True)
class QuestionFamily:
    """One of the paper's ten prompts; each sub-question becomes its own QA pair."""

    key: str
    title: str
    questions: tuple[str, ...]


# The paper's "customized CoT prompt format", with each sub-question written as a full question.
QUESTION_FAMILIES: tuple[QuestionFamily, ...] = (
    QuestionFamily(
        "basics",
        "Basics",
        (
            "Identify the specific type of nanomaterial depicted in the image.",
            "Find the image scale: what real-world length does one unit of measurement correspond to?",
        ),
    ),
    QuestionFamily(
        "morphology_and_structure",
        "Morphology and Structure",
        (
            "Describe the overall shape and morphology of the nanomaterials.",
            "Identify any visible layers, phases, or distinct domains.",
            "Assess the consistency in size and shape, or note any variability.",
        ),
    ),
    QuestionFamily(
        "size_and_distribution",
        "Size and Distribution",
        (
            "Estimate the size or size range of the nanostructures.",
            "Describe the distribution: evenly spaced, clustered, or random?",
            "Comment on any aggregation or bundling visible.",
        ),
    ),
    QuestionFamily(
        "surface_characteristics",
        "Surface Characteristics",
        (
            "Describe the surface textures: smooth, rough, or distinct textures?",
            "Comment on any visible imperfections like defects, pores, or impurities.",
        ),
    ),
    QuestionFamily(
        "composition_and_elements",
        "Composition and Elements",
        (
            "Note any visible evidence of compositional variations (color, brightness, contrast differences).",
            "Identify any labels or markers pointing to specific elements or compounds.",
        ),
    ),
    QuestionFamily(
        "interactions_and_boundaries",
        "Interactions and Boundaries",
        (
            "Describe the visual interactions: are the structures touching, fused, or separate?",
            "Can you distinguish boundaries between structures or phases, or do they blend without defined borders?",
        ),
    ),
    QuestionFamily(
        "external_environment",
        "External Environment",
        (
            "Note any visible signs of interaction between the nanomaterials and their surroundings "
            "(solvents, polymers, etc.).",
            "Identify and describe any non-nanomaterial structures or objects present.",
        ),
    ),
    QuestionFamily(
        "image_technique_and_modifications",
        "Image Technique and Modifications",
        (
            "Identify the imaging technique used (SEM, TEM, etc.).",
            "Note any visible post-processing or modifications like false coloring or 3D rendering.",
        ),
    ),
    QuestionFamily(
        "functional_features",
        "Functional Features",
        (
            "Identify any visible functional elements or regions with distinct properties.",
            "Note if the image shows any dynamic processes, or if it is primarily static.",
        ),
    ),
    QuestionFamily(
        "context_and_application",
        "Context and Application",
        (
            "Identify the intended use or application of the nanomaterials.",
            "Are they experimental samples or theoretical/simulation-based representations?",
        ),
    ),
)

FAMILIES_BY_KEY: dict[str, QuestionFamily] = {family.key: family for family in QUESTION_FAMILIES}

# The question whose answer names the category; classification by decoder likelihood asks it.
CLASSIFICATION_QUESTION: str = QUESTION_FAMILIES[0].questions[0]


def family_by_key(key: str) -> QuestionFamily:
    try:
        return FAMILIES_BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown question family {key!r}; known: {', '.join(FAMILIES_BY_KEY)}") from None


ANSWER_INSTRUCTIONS = (
    "You are an expert in electron microscopy and nanomaterials. You are shown one micrograph, a caption "
    "that states its nanomaterial category, and numbered questions about it. Answer every question from what "
    "is visible in the micrograph, using the caption as context. Answer each question in one to three plain "
    "sentences (at most about 60 words). When the micrograph does not show what a question asks about, say so "
    "briefly instead of guessing. Reply with JSON only: the field answer_N holds the answer to question N."
)


def question_prompt(family: QuestionFamily, category: str) -> str:
    """The paper's context-augmented prompt: the caption, the family's title, the numbered sub-questions."""
    numbered = "\n".join(f"{number}. {question}" for number, question in enumerate(family.questions, start=1))
    return f"{caption_for_category(category)}\n\n**{family.title}**\n{numbered}"


@dataclass(frozen=True)
class TeacherGenerationSettings:
    """The paper's sampling settings for the teacher (temperature 0.25, top-p 0.1, 3,500 output tokens)."""

    temperature: float = 0.25
    top_p: float = 0.1
    max_output_tokens: int = 3500


def category_answer_prefix(category: str) -> str:
    """How the grounded (synthetic) teacher begins its answers to `CLASSIFICATION_QUESTION`. Classification does not
    depend on it: its label texts come from the caption template (`caption_for_category`)."""
    return f"The image shows {readable_category(category)}"
