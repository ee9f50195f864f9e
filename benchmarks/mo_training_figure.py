"""The README's figure of benchmarks/results/mo_training.json: fronts by arm, and bounds against what they bought.

    python benchmarks/mo_training_figure.py benchmarks/results/mo_training.json docs/mo_training.png

Left: one seed's models on validation (accuracy vs demographic parity difference; the ones
meeting balanced accuracy >= 0.70), for today's weighted penalty, the constrained and Chebyshev
combiners, the preference-conditioned model and fairlearn's best arms. Right: every seed's
constrained trainings, the bound on the parity-gap surrogate against the demographic parity
difference measured on validation and on test (hard predictions).
"""

from __future__ import annotations

import json
import sys

import plotly.graph_objects as go
from plotly.subplots import make_subplots

ARMS = {"weighted_penalty": "weighted penalty (today)", "constrained": "constrained (bound)",
        "chebyshev": "Chebyshev", "conditioned": "conditioned (1 model)", "eg": "fairlearn ExponentiatedGradient",
        "threshold": "fairlearn ThresholdOptimizer"}


def figure(result: dict, seed: int = 0) -> go.Figure:
    runs = result["runs"]["dp"]
    fig = make_subplots(cols=2, subplot_titles=(
        f"validation, seed {seed}: feasible models by arm", "constrained: the bound and the difference it bought"))
    for arm, label in ARMS.items():
        run = next((r for r in runs.get(arm, []) if r["seed"] == seed), None)
        if run is None:
            continue
        ok = [m for m in run["models"] if m["valid"]["balanced_accuracy"] >= 0.70]
        fig.add_trace(go.Scatter(x=[m["valid"]["gap"] for m in ok], y=[m["valid"]["accuracy"] for m in ok],
                                 mode="markers", name=f"{label} ({run['trainings']:g} training{'' if run['trainings'] == 1 else 's'})"), row=1, col=1)
    for split, symbol in (("valid", "circle"), ("test", "x")):
        points = [(m["knob"], m[split]["gap"]) for r in runs.get("constrained", []) for m in r["models"]]
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="markers",
                                 marker={"symbol": symbol}, name=f"constrained, {split} difference"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[0, 0.2], y=[0, 0.2], mode="lines", line={"dash": "dot", "color": "grey"},
                             name="difference = bound"), row=1, col=2)
    fig.update_xaxes(title_text="demographic parity difference (lower is better)", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_xaxes(title_text="bound on the parity-gap surrogate (the study's knob)", row=1, col=2)
    fig.update_yaxes(title_text="demographic parity difference", row=1, col=2)
    fig.update_layout(width=1300, height=520, legend={"orientation": "h", "y": -0.2}, template="plotly_white")
    return fig


if __name__ == "__main__":
    source, target = sys.argv[1], sys.argv[2]
    with open(source) as f:
        figure(json.load(f)).write_image(target, scale=1)
    print(target)
