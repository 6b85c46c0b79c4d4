"""The grounded teacher's answers: one function per sub-question, each stating what the scene's parameters say.

Content is what the image shows (category and sub-type, sizes read with the printed scale, counts, spacing,
contacts, the data bar's settings); each answer has several equivalent phrasings, picked per image.
"""

from __future__ import annotations

from collections.abc import Callable

from ..question_families import category_answer_prefix
from .instrument import format_length
from .phrasing import Phrasing, approximate_count, extent, join_words, sentence
from .scene import IMAGE_WIDTH, SyntheticScene


def _identify(scene: SyntheticScene, say: Phrasing) -> str:
    view = f", seen in a {scene.morphology.view}" if scene.morphology.view.startswith("tilted") else ""
    joint = say.pick("specifically", "more precisely", "namely", "in particular")
    return f"{category_answer_prefix(scene.category)}, {joint} {scene.morphology.structure}{view}."


def _scale(scene: SyntheticScene, say: Phrasing) -> str:
    bar = scene.data_bar
    if bar is None:
        return say.pick(
            "No scale bar or data bar is visible, so the real-world length per unit cannot be read from this image.",
            "The image carries no scale bar or instrument data, so its scale cannot be determined from it.",
            "There is no scale bar in the image; without it the real-world length per pixel cannot be stated.",
        )
    per_pixel = format_length(scene.instrument.nm_per_pixel)
    field = format_length(IMAGE_WIDTH * scene.instrument.nm_per_pixel)
    return say.pick(
        f"The scale bar reads {bar.scale_label} over about {bar.scale_bar_pixels} pixels, so one pixel is roughly "
        f"{per_pixel} and the field is about {field} wide.",
        f"A {bar.scale_label} scale bar ({bar.scale_bar_pixels} px) sits in the data bar at "
        f"{bar.magnification_label}; "
        f"that is about {per_pixel} per pixel.",
        f"The data bar shows a {bar.scale_label} scale bar and {bar.magnification_label} magnification: "
        f"about {per_pixel} per pixel, a {field} field of view.",
    )


def _shape(scene: SyntheticScene, say: Phrasing) -> str:
    mo = scene.morphology
    view = f" ({mo.view})" if mo.view.startswith("tilted") else ""
    lead = say.pick("The structures are", "The image shows", "Morphologically, these are", "The material appears as")
    return f"{lead} {mo.shape}{view}."


def _domains(scene: SyntheticScene, say: Phrasing) -> str:
    lead = say.pick("The image shows", "Layers and domains:", "One can distinguish")
    return f"{lead} {scene.morphology.domains}."


def _consistency(scene: SyntheticScene, say: Phrasing) -> str:
    mo = scene.morphology
    if mo.count == 1:
        outline = "regular" if mo.regular else "irregular"
        return say.pick(
            f"Only one main structure is present, so size variability cannot be judged; its outline is {outline}.",
            f"A single structure with a {outline} outline is shown; there is nothing to compare its size with.",
        )
    spread = f"about ±{100 * mo.size_spread:.0f}%"
    if mo.size_spread < 0.08:
        size = say.pick("sizes are highly uniform", "the structures are very consistent in size")
    elif mo.size_spread < 0.25:
        size = say.pick(f"sizes vary moderately ({spread})", f"sizes are fairly consistent, varying by {spread}")
    else:
        size = say.pick(f"sizes vary widely ({spread})", f"there is strong size variability ({spread})")
    shape = (
        "shapes repeat closely" if mo.regular else say.pick("outlines are irregular", "shapes differ from one another")
    )
    scales = ", with two distinct size populations" if mo.populations > 1 else ""
    return sentence(f"{size}, and {shape}{scales}")


def _size(scene: SyntheticScene, say: Phrasing) -> str:
    mo = scene.morphology
    parts = [f"the {mo.feature} is {extent(scene, *mo.size_px)}"]
    if mo.length_px:
        parts.append(f"length {extent(scene, *mo.length_px)}")
    if mo.pitch_px:
        parts.append(f"{say.pick('pitch', 'centre-to-centre spacing')} {extent(scene, mo.pitch_px, mo.pitch_px)}")
    basis = (
        say.pick(" (from the scale bar)", ", judged against the scale bar")
        if scene.data_bar
        else " (no scale bar, so only relative sizes)"
    )
    return sentence("; ".join(parts) + basis)


_DISTRIBUTIONS = {
    "evenly spaced": (
        "The distribution is regular and evenly spaced",
        "Evenly spaced, in a regular, periodic arrangement across the field",
    ),
    "clustered": (
        "The structures are clustered rather than evenly spread",
        "Clustered into groups, rather than evenly spaced or random",
    ),
    "random": (
        "The structures are placed randomly, neither evenly spaced nor clustered",
        "Randomly placed, without any long-range order or clustering",
    ),
    "aligned": (
        "The structures are aligned rather than randomly oriented",
        "Aligned, with most structures following one common direction",
    ),
    "continuous": (
        "There are no separate units to distribute; the material is continuous",
        "Continuous material rather than discrete, separately distributed units",
    ),
    "single": (
        "Only one structure is in view, so there is no distribution",
        "Not applicable: a single structure is in view",
    ),
    "designed": (
        "The layout is engineered rather than random or clustered",
        "A designed device layout, neither random nor clustered",
    ),
}


def _distribution(scene: SyntheticScene, say: Phrasing) -> str:
    mo = scene.morphology
    detail = f": {mo.arrangement}" if mo.arrangement else ""
    count = f" ({approximate_count(mo.count)} visible in the field)" if mo.count and mo.count > 1 else ""
    return f"{say.pick(*_DISTRIBUTIONS[mo.distribution])}{detail}{count}."


def _aggregation(scene: SyntheticScene, say: Phrasing) -> str:
    lead = say.pick("Aggregation and bundling:", "Regarding aggregation:", "As for aggregation or bundling:")
    return f"{lead} {scene.morphology.aggregation}."


def _surface(scene: SyntheticScene, say: Phrasing) -> str:
    lead = say.pick("The surfaces are best described as", "Surface texture:", "Texture of the surfaces:")
    tail = say.pick(
        " at this magnification",
        ", as far as the resolution of this image shows",
        " at the resolution of this micrograph",
    )
    return f"{lead} {scene.morphology.surface}{tail}."


def _imperfections(scene: SyntheticScene, say: Phrasing) -> str:
    defects = scene.morphology.defects
    text = (
        say.pick("Visible imperfections: ", "The image shows ")
        + join_words(defects)
        + say.pick("; otherwise the structures look clean", ", but no other defects or impurities")
        if defects
        else say.pick(
            "No obvious defects, pores or impurities are visible",
            "The structures look free of visible defects or impurities",
        )
    )
    if scene.look.charging:
        text += "; bright charging streaks are imaging artefacts, not defects"
    return sentence(text)


def _composition(scene: SyntheticScene, say: Phrasing) -> str:
    text = say.pick("", "Contrast: ", "Regarding composition, ") + scene.morphology.composition
    if scene.look.charging:
        text += "; a bright glow comes from charging, not composition"
    return sentence(text)


def _labels(scene: SyntheticScene, say: Phrasing) -> str:
    bar = scene.data_bar
    if bar is None:
        return say.pick(
            "No labels, markers or text appear in the image, so no elements or compounds are identified.",
            "There are no labels or markers; nothing in the image names an element or compound.",
        )
    return say.pick(
        f"No element labels; the only text is the data bar: {bar.detector}, {bar.high_voltage_label}, "
        f"{bar.magnification_label}, scale bar {bar.scale_label}.",
        f"No markers name elements or compounds; the data bar only gives imaging settings "
        f"({bar.high_voltage_label}, {bar.magnification_label}) and a {bar.scale_label} scale bar.",
    )


_CONTACTS = {
    "separate": (
        "The structures are separate; they neither touch nor fuse.",
        "They stay apart, with clear gaps between neighbouring structures.",
    ),
    "touching": (
        "Neighbouring structures touch each other but are not fused.",
        "Many structures are in contact with their neighbours without merging.",
    ),
    "fused": (
        "The structures are fused into one continuous, connected body.",
        "They are fused together, forming one connected network.",
    ),
    "crossing": (
        "They cross and overlap one another without fusing.",
        "The structures overlap at crossings but remain distinct from each other.",
    ),
    "continuous": (
        "It is one continuous structure, so there are no separate units to touch or fuse.",
        "The material is continuous rather than made of separate units.",
    ),
    "single": (
        "A single structure stands alone, touching nothing else in view.",
        "Only one structure is present, isolated from any others.",
    ),
}


def _contact(scene: SyntheticScene, say: Phrasing) -> str:
    return say.pick(*_CONTACTS[scene.morphology.contact])


def _boundaries(scene: SyntheticScene, say: Phrasing) -> str:
    if scene.morphology.boundaries == "sharp":
        return say.pick(
            "Yes, boundaries are sharp and well defined, outlined by bright edges.",
            "Boundaries are clearly distinguishable, marked by bright edge contrast.",
        )
    return say.pick(
        "Boundaries are soft: structures blend into one another without clearly defined borders.",
        "Borders are poorly defined; neighbouring regions merge gradually.",
    )


def _surroundings(scene: SyntheticScene, say: Phrasing) -> str:
    lead = say.pick("Surroundings: ", "Around the material: ", "Environment: ")
    tail = say.pick("no solvent, polymer or matrix is visible", "no sign of solvents or polymers")
    return f"{lead}{scene.morphology.surroundings}; {tail}."


def _other_objects(scene: SyntheticScene, say: Phrasing) -> str:
    objects = list(scene.morphology.other_objects) + (
        ["the instrument data bar with its scale bar"] if scene.data_bar else []
    )
    if not objects:
        return say.pick(
            "No non-nanomaterial objects are present apart from the background.",
            "Nothing besides the nanomaterial and its background is visible.",
        )
    return (
        say.pick("Apart from the nanomaterial, the image shows ", "Non-nanomaterial objects in view are ")
        + join_words(objects)
        + "."
    )


_DETECTOR_NAMES = {
    "ETD": "Everhart-Thornley secondary-electron detector (ETD)",
    "TLD": "through-the-lens detector (TLD)",
    "SEI": "secondary-electron imaging detector (SEI)",
    "LEI": "lower secondary-electron detector (LEI)",
    "InLens": "in-lens secondary-electron detector",
    "SE2": "SE2 secondary-electron detector",
}


def _technique(scene: SyntheticScene, say: Phrasing) -> str:
    bar = scene.data_bar
    if bar is None:
        return say.pick(
            "Scanning electron microscopy (SEM): a greyscale secondary-electron image with bright edges; "
            "no settings are shown.",
            "SEM, judging by the bright edges and depth of field; the acquisition settings are not shown.",
        )
    return say.pick(
        f"Scanning electron microscopy (SEM) with the {_DETECTOR_NAMES[bar.detector]} at {bar.high_voltage_label}.",
        f"SEM: the data bar lists {bar.high_voltage_label}, detector {bar.detector} and {bar.magnification_label}.",
    )


def _post_processing(scene: SyntheticScene, say: Phrasing) -> str:
    text = say.pick(
        "No false colouring or 3D rendering; it is a plain greyscale SEM image",
        "None visible: the image is raw greyscale SEM output",
    )
    text += f" with {scene.look.noise_level} detector noise"
    if scene.data_bar:
        text += " and the instrument's data bar"
    return sentence(text)


def _functional(scene: SyntheticScene, say: Phrasing) -> str:
    lead = say.pick("Functional features: ", "Distinct regions: ", "The notable functional elements are ")
    return sentence(lead + scene.morphology.functional)


def _dynamics(scene: SyntheticScene, say: Phrasing) -> str:
    text = say.pick(
        "The image is static: a single SEM frame with no time series",
        "Primarily static; no dynamic process such as growth or motion is captured",
    )
    if scene.look.charging:
        text += "; only charging streaks show the beam acting on the sample"
    return sentence(text)


_APPLICATIONS = {
    ("Biological", "cells"): "cell-material interaction studies and biomaterial testing",
    ("Biological", "bacteria"): "microbiology, biofilm and antibacterial surface research",
    ("Biological", "pollen or spores"): "botany, allergen research and natural micro-structure studies",
    ("Biological", "fibril network"): "tissue engineering and extracellular-matrix research",
    ("Fibres", "non-woven mat"): "filtration membranes, tissue scaffolds and battery separators",
    ("Fibres", "aligned fibres"): "reinforced composites and guided tissue growth",
    ("Fibres", "single fibre"): "fibre characterisation for textiles and composites",
    ("Fibres", "woven fabric"): "technical textiles and composite reinforcement",
    ("Films_Coated_Surface", "particle film"): "sensing layers, catalytic coatings and electrodes",
    ("Films_Coated_Surface", "smooth film"): "protective, optical or electronic thin-film coatings",
    ("Films_Coated_Surface", "cracked film"): "studies of coating failure and stress in thin films",
    ("Films_Coated_Surface", "wrinkled film"): "flexible electronics and tunable optical or wetting surfaces",
    ("MEMS_devices_and_electrodes", "3D edge"): "microfabrication process control of etched device structures",
    ("MEMS_devices_and_electrodes", "close-up line"): "interconnects in integrated circuits and microdevices",
    ("MEMS_devices_and_electrodes", "electrode"): "capacitive sensors, biosensors and surface-acoustic-wave devices",
    ("MEMS_devices_and_electrodes", "microfluidic"): "lab-on-a-chip fluid handling and mixing",
    ("MEMS_devices_and_electrodes", "waveguide"): "integrated photonics, optical filters and sensors",
    ("Nanowires", "entangled"): "transparent conductive networks, sensors and battery electrodes",
    ("Nanowires", "few"): "nanowire field-effect transistors and single-wire sensors",
    ("Nanowires", "individual"): "single-nanowire electronics, photonics and growth studies",
    ("Nanowires", "forest"): "solar cells, field emitters and high-surface-area electrodes",
    ("Particles", "dispersed"): "catalysis, drug delivery and nanocomposite fillers",
    ("Particles", "individual"): "single-particle studies of growth, facets and catalysis",
    ("Particles", "other shape"): "shape-dependent catalysis and plasmonics",
    ("Particles", "small clusters"): "catalysis and studies of nanoparticle aggregation",
    ("Patterned_surface", "circle array"): "photonic crystals, plasmonic sensors and templates",
    ("Patterned_surface", "line array"): "diffraction gratings and lithography test structures",
    ("Patterned_surface", "square array"): "metasurfaces, plasmonics and patterned data storage",
    ("Patterned_surface", "triangle array"): "plasmonic sensing made by nanosphere lithography",
    ("Patterned_surface", "zigzag"): "lithography test patterns and anisotropic surfaces",
    ("Patterned_surface", "pillars"): "superhydrophobic surfaces, cell studies and photonic structures",
    ("Porous_Sponge", "open-cell foam"): "lightweight structures, filters and thermal insulation",
    ("Porous_Sponge", "nanoporous sponge"): "catalysis, sensing and supercapacitor electrodes",
    ("Porous_Sponge", "mesoporous surface"): "adsorption, catalysis and drug loading",
    ("Porous_Sponge", "macroporous scaffold"): "tissue-engineering scaffolds and filtration",
    ("Powder", "agglomerated powder"): "powder processing, sintering and additive manufacturing feedstock",
    ("Powder", "fine powder"): "pigments, catalysts and ceramic processing",
    ("Powder", "coarse grains"): "abrasives, milling studies and powder metallurgy",
    ("Powder", "flakes"): "lubricants, conductive fillers and 2D-material production",
    ("Tips", "on cantilever"): "atomic force microscopy and scanning probe measurements",
    ("Tips", "zoom in"): "scanning probe microscopy, where the apex sets the resolution",
    ("Tips", "zoom out"): "atomic force microscopy probes and cantilever sensors",
}


def _application(scene: SyntheticScene, say: Phrasing) -> str:
    use = _APPLICATIONS[(scene.category, scene.subtype)]
    return say.pick(
        f"Likely intended applications of this material: {use}.",
        f"Such structures are typically used in {use}.",
        f"This material is well suited to {use}.",
    )


def _experimental(scene: SyntheticScene, say: Phrasing) -> str:
    cue = "the instrument data bar and detector noise" if scene.data_bar else "detector noise and SEM edge contrast"
    return say.pick(
        f"They appear to be experimental samples imaged by SEM, as {cue} show, not a simulation.",
        f"Experimental: a real SEM micrograph of a physical sample, given {cue}; not a rendering.",
    )


# Answerers of each family's sub-questions, in the order of `QuestionFamily.questions`.
ANSWERERS: dict[str, tuple[Callable[[SyntheticScene, Phrasing], str], ...]] = {
    "basics": (_identify, _scale),
    "morphology_and_structure": (_shape, _domains, _consistency),
    "size_and_distribution": (_size, _distribution, _aggregation),
    "surface_characteristics": (_surface, _imperfections),
    "composition_and_elements": (_composition, _labels),
    "interactions_and_boundaries": (_contact, _boundaries),
    "external_environment": (_surroundings, _other_objects),
    "image_technique_and_modifications": (_technique, _post_processing),
    "functional_features": (_functional, _dynamics),
    "context_and_application": (_application, _experimental),
}
