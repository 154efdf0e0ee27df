"""Does the GEM reference's absolute ridge change v on real gradients? (docs/PROJECTION.md, issue 29)

    python bench/reference_ridge.py --config configs/real/me5-pos.yaml --set model.backbone=$HOME/me5-small \
        [--steps 12] [--per-language]

Trains a few GEM steps (memory_strength 0.5, the reference's margin) through the engine, records every
step's Gram of [g_1..g_k, g] as the projector sees it (summed over ranks), then solves each step's dual
three ways: distgem's solver (relative ridge 1e-10 after normalising by the memories' norms), the
reference's project2cone2 (quadprog on M M^T + 1e-3 I, v >= 0.5), and the same without its ridge.
Prints, per step, the Gram's scale and how far the reference's v and its projected gradient are from
distgem's, and writes the Grams to --out (JSON) for anyone to re-solve.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], help="run config files (as for train)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="section.key=value")
    parser.add_argument("--steps", type=int, default=12, help="GEM steps to record")
    parser.add_argument("--per-language", action="store_true", help="one constraint per language (k = 3)")
    parser.add_argument("--out", default="runs/reference-ridge/grams.json", help="where the recorded Grams go")
    args = parser.parse_args()

    from distgem.config.sections import load_run_config
    from distgem.distributed import world as distributed
    from distgem.gem import gram as gem_gram
    from distgem.train.engine import Trainer

    overrides = [
        "method.name=gem",
        "method.memory=[xsr]",
        "method.gem.memory_strength=0.5",
        f"method.gem.per_language={str(args.per_language).lower()}",
        "eval.before_training=false",
        "output.tensorboard=false",
        f"output.run_dir={Path(args.out).parent}",
        *args.overrides,
    ]
    config = load_run_config(args.config, overrides)
    world = distributed.init()
    trainer = Trainer(config, world)
    recorded = []
    partial_gram = gem_gram.partial_gram

    def recording(memories, grads, groups):
        out = partial_gram(memories, grads, groups)
        recorded.append(out)  # summed over ranks in place afterwards, before the QP reads it
        return out

    gem_gram.partial_gram = recording
    trainer.engine.train()
    for step in range(args.steps):
        trainer.step(step)
        print(f"step {step + 1}/{args.steps}", file=sys.stderr, flush=True)
    grams = [g[0].cpu().numpy().tolist() for g in recorded]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"config": args.config + overrides, "grams": grams}))
    print(table(grams))
    distributed.shutdown()
    distributed.exit_process(0)


def compare(full: np.ndarray, margin: float = 0.5, eps: float = 1e-3) -> dict:
    """One step's Gram (k+1 square, task gradient last): the reference's v against distgem's, and the projected
    gradients' difference relative to distgem's projected gradient (all from the Gram: x = g + M^T v)."""
    import quadprog
    import torch

    from distgem.gem.qp import solve

    k = full.shape[0] - 1
    G, d, gg = full[:k, :k], full[:k, k], full[k, k]
    if not (d < 0).any():
        return {"projected": False, "scale": float(np.sqrt(np.diag(G).mean()))}
    ours = solve(torch.from_numpy(G), torch.from_numpy(d), margin, "exact").v.numpy()
    out = {"projected": True, "scale": float(np.sqrt(np.diag(G).mean())), "ours": ours.tolist()}
    for name, ridge in (("reference", eps), ("reference_no_ridge", 0.0)):
        P = 0.5 * (G + G.T) + np.eye(k) * ridge
        try:
            v = quadprog.solve_qp(P, -d, np.eye(k), np.zeros(k) + margin)[0]
        except ValueError as err:  # quadprog refuses a singular P without the ridge
            out[name] = str(err)
            continue
        delta = v - ours
        x_norm2 = gg + 2 * ours @ d + ours @ G @ ours  # |g + M^T v_ours|^2
        out[name] = {
            "v": v.tolist(),
            "max_rel_v": float(np.abs(delta).max() / np.abs(ours).max()),
            "rel_projected": float(np.sqrt(max(delta @ G @ delta, 0)) / np.sqrt(max(x_norm2, 1e-300))),
        }
    return out


def table(grams: list) -> str:
    lines = [
        "| step | projected | sqrt(mean |g_i|^2) | v (distgem) | v (reference, eps 1e-3) | max rel. diff of v "
        "| |x_ref - x| / |x| |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, full in enumerate(grams, 1):
        c = compare(np.array(full))
        if not c["projected"]:
            lines.append(f"| {i} | no | {c['scale']:.3g} | - | - | - | - |")
            continue
        ref = c["reference"]
        lines.append(
            f"| {i} | yes | {c['scale']:.3g} | {', '.join(f'{x:.4g}' for x in c['ours'])} | "
            f"{', '.join(f'{x:.4g}' for x in ref['v'])} | {ref['max_rel_v']:.2e} | {ref['rel_projected']:.2e} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
