"""The model variants a training run can train: MVaEMa, its five paper ablations and the BLIP peer.

The one place that names them; the script, the reports and the benchmarks read these names from here.
"""

from __future__ import annotations

from modeling_mvaema import ABLATIONS as ABLATION_SWITCHES
from modeling_mvaema import PAPER_ABLATION_NAMES

MVAEMA = "mvaema"
PEER = "blip_peer"
ABLATIONS = tuple(ABLATION_SWITCHES)  # the paper's five: no_itc, no_itm, no_sa, no_ca, no_csa
VARIANTS = (MVAEMA, *ABLATIONS, PEER)
DISPLAY_NAMES = {MVAEMA: "MVaEMa", PEER: "BLIP peer (transformers)", **PAPER_ABLATION_NAMES}


def ablation_of(variant: str) -> str | None:
    """The `MVaEMaConfig` ablation switch a variant trains with (None for MVaEMa and the peer)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; known: {', '.join(VARIANTS)}")
    return variant if variant in ABLATIONS else None


def selected_variants(ablation: str, train_peer: bool) -> list[str]:
    """The variants one run trains: MVaEMa, then the `--ablation` choice (none, all or one name), then the peer."""
    if ablation not in ("none", "all", *ABLATIONS):
        raise ValueError(f"--ablation must be none, all or one of {', '.join(ABLATIONS)}; got {ablation!r}")
    ablations = list(ABLATIONS) if ablation == "all" else [] if ablation == "none" else [ablation]
    return [MVAEMA, *ablations] + ([PEER] if train_peer else [])
