"""Tissue properties: relative proton density and relaxation times at 1.5 T and 3 T.

Sources (details and caveats in docs/simulator.md):
- GM, WM, skeletal muscle: Stanisz et al., Magn Reson Med 54:507-512 (2005), 37 C.
- CSF at 3 T: subarachnoid CSF (T1 4309 ms, T2 1886 ms), PMC10696635 (2023); CSF is nearly free
  water, whose T1 changes little between 1.5 T and 3 T, so 1.5 T uses slightly shorter values.
- Subcutaneous fat: in the range reported by Gold et al., AJR 183:343-351 (2004).
- Proton density (water content relative to CSF): WM ~0.69, GM ~0.80 (Neeb et al., NeuroImage
  31:1156-1168, 2006); fat and muscle are approximate.
"""

from __future__ import annotations

from dataclasses import dataclass

FIELD_STRENGTHS_T = (1.5, 3.0)


@dataclass(frozen=True)
class Tissue:
    """One tissue class: proton density (relative to CSF) and relaxation times per field (s)."""

    name: str
    proton_density: float
    t1_s: dict[float, float]
    t2_s: dict[float, float]

    def relaxation(self, field_strength_t: float) -> tuple[float, float]:
        """(T1, T2) in seconds at a supported field strength."""
        if field_strength_t not in self.t1_s:
            raise ValueError(
                f"No relaxation times for {self.name} at {field_strength_t} T; supported: {sorted(self.t1_s)}"
            )
        return self.t1_s[field_strength_t], self.t2_s[field_strength_t]


TISSUES: dict[str, Tissue] = {
    tissue.name: tissue
    for tissue in (
        Tissue("CSF", 1.00, {1.5: 4.10, 3.0: 4.31}, {1.5: 1.90, 3.0: 1.89}),
        Tissue("GM", 0.80, {1.5: 1.124, 3.0: 1.820}, {1.5: 0.095, 3.0: 0.099}),
        Tissue("WM", 0.69, {1.5: 0.884, 3.0: 1.084}, {1.5: 0.072, 3.0: 0.069}),
        Tissue("fat", 0.90, {1.5: 0.343, 3.0: 0.382}, {1.5: 0.058, 3.0: 0.068}),
        Tissue("muscle", 0.75, {1.5: 1.008, 3.0: 1.412}, {1.5: 0.044, 3.0: 0.050}),
    )
}
BRAIN_TISSUES = ("CSF", "GM", "WM")
# Label values of the ground-truth dseg images.
DSEG_LABELS = {"CSF": 1, "GM": 2, "WM": 3}
