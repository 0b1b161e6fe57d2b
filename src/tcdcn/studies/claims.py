"""The paper's claims that the studies report judges, as data: which grid variants each compares, on which
metric, and what the paper reports. ``markdown.discussion`` renders them in this order."""

from __future__ import annotations

from dataclasses import dataclass

# Grid variants the report reads by name (configs/studies/grid.yaml).
FLD_ONLY = "fld_only"
FULL_MODEL = "fld_all"
EARLY_STOPPING = "fld_all_early_stopping"


@dataclass(frozen=True)
class Claim:
    """Variant ``better`` has a lower ``metric`` ("nme" or "failure_rate") than ``baseline``; ``{label}`` in
    ``text`` stands for ``better``'s label."""

    better: str
    baseline: str
    text: str
    metric: str = "nme"


@dataclass(frozen=True)
class RegionClaim:
    """Fig. 9: the attribute ``group`` (trained in ``variant``) helps the landmarks of its own face region most;
    the region's landmarks are those whose names hold ``region``."""

    group: str
    variant: str
    region: str


AUXILIARY_TASK_CLAIMS: tuple[Claim, ...] = (
    Claim(FULL_MODEL, FLD_ONLY, "Auxiliary tasks help: FLD+all has a lower mean error than FLD only (Fig. 8)"),
    Claim(FULL_MODEL, FLD_ONLY, "FLD+all has a lower failure rate than FLD only (paper: over 7 points lower)",
          "failure_rate"),
    *(Claim(name, FLD_ONLY, "{label} beats FLD only") for name in ("fld_pose", "fld_global", "fld_eyes", "fld_mouth")),
    Claim("fld_random", FLD_ONLY, "A random task helps (the paper expects it hardly does)"),
)

# The single-group variants, ranked by mean error in the report, and the groups the paper found best.
SINGLE_GROUP_VARIANTS = ("fld_eyes", "fld_mouth", "fld_global", "fld_pose")
PAPER_BEST_SINGLE_GROUPS = "pose and global"

TRAINING_SCHEME_CLAIMS: tuple[Claim, ...] = (
    Claim(FULL_MODEL, "fld_all_dynamic_nocov", "The task covariance term helps (Table 2: 8.07 -> 7.95)"),
    Claim("fld_all_dynamic_nocov", EARLY_STOPPING,
          "Dynamic coefficients beat task-wise early stopping, both without covariance (Table 2: 8.07 vs 8.35)"),
    Claim(FULL_MODEL, EARLY_STOPPING, "Full TCDCN beats early stopping"),
    Claim("fld_all_dynamic_nocov", "fld_all_fixed", "Dynamic coefficients beat fixed equal weights"),
)

REGION_CLAIMS: tuple[RegionClaim, ...] = (RegionClaim("mouth", "fld_mouth", "mouth"),
                                          RegionClaim("eyes", "fld_eyes", "eye"))

# Fig. 5: the attribute group most correlated with the landmarks in the paper.
PAPER_MOST_CORRELATED_GROUP = "pose"
