"""The grounded teacher: answers every question family from the description a synthetic scene was drawn from.

Offline there is no multimodal teacher, but the generator knows exactly what it drew, so these answers are
true by construction. Their content is what the image shows: the category and sub-type, sizes converted
with the scale the data bar prints (or relative to the field of view when no bar is shown), counts, spacing,
distribution, contacts, the settings printed in the data bar. A student therefore has to read the image to
reproduce them. Each answer has several phrasings, chosen per image, so that a category does not map to a
single memorisable sentence. Answers stay between 8 and 40 words, short enough for a small student.
"""

from __future__ import annotations

import numpy as np

from ..question_families import PROMPT_VERSION, QUESTION_FAMILIES, QuestionFamily
from ..teacher_cache import TeacherRecord
from .answers import ANSWERERS
from .phrasing import Phrasing
from .scene import SyntheticScene

TEACHER_NAME = "grounded-synthetic/v1"


def answer_family(scene: SyntheticScene, family: QuestionFamily, rng: np.random.Generator) -> list[str]:
    """One answer per sub-question of `family`, phrased with `rng`, stating what `scene` shows."""
    answerers = ANSWERERS.get(family.key, ())
    if len(answerers) != len(family.questions):
        raise KeyError(
            f"grounded_teacher.py answers {len(answerers)} sub-questions of family {family.key!r}, which has "
            f"{len(family.questions)}; add or remove answerers in ANSWERERS (answers.py) to match question_families.py"
        )
    say = Phrasing(rng)
    return [answer(scene, say) for answer in answerers]


def grounded_records(
    scene: SyntheticScene, image_id: str, image_path: str, rng: np.random.Generator
) -> list[TeacherRecord]:
    """Teacher-cache records for every question family: what a cloud teacher would have cached, at no cost."""
    return [
        TeacherRecord(
            image_id=image_id,
            image_path=image_path,
            category=scene.category,
            family=family.key,
            prompt_version=PROMPT_VERSION,
            teacher=TEACHER_NAME,
            questions=list(family.questions),
            answers=answer_family(scene, family, rng),
            usage={},
            cost_usd=0.0,
        )
        for family in QUESTION_FAMILIES
    ]
