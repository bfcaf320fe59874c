#!/usr/bin/env python3
"""Checks that the PyTorch models of benches/reference/pytorch_step.py (the other side of the
speed comparison) are the reference's: each oracle fixture's parameters load into the matching
model with no missing or unexpected names, and its eval-mode logits and probe logits match the
fixture's float64 values. Needs PyTorch and safetensors (pip install torch safetensors); not part
of the Rust test suite.

    python3 tests/reference/check_pytorch_step_models.py
"""

import json
import pathlib
import sys

import torch
from safetensors.torch import load_file

root = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(root / "benches" / "reference"))
import pytorch_step as ps  # noqa: E402

fixtures = root / "tests" / "fixtures"
failed = False
for path in sorted(fixtures.glob("*.safetensors")):
    meta = json.loads(path.with_suffix(".json").read_text())
    arch, cifs = meta.get("arch"), bool(meta.get("cifs"))
    if arch is None:
        model = ps.ResNet18(meta["width"], cifs=cifs)
    elif arch.startswith("wrn"):
        model = ps.WideResNet(meta["depth"], meta["widen_factor"], cifs=cifs)
    else:
        print(f"{path.stem}: {arch} is not in the bench script, skipped")
        continue
    t = load_file(str(path))
    missing, unexpected = model.double().load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("param.")}, strict=False)
    model.eval()
    logits, probes = model(t["input.x"])
    errs = [(logits - t["eval.logits"]).abs().max().item()] + [(p - t[f"eval.probe{k}"]).abs().max().item() for k, p in enumerate(probes)]
    ok = not missing and not unexpected and max(errs) < 1e-9
    failed |= not ok
    print(f"{path.stem}: missing {missing}, unexpected {unexpected}, max abs error {max(errs):.1e} {'ok' if ok else 'FAIL'}")
sys.exit(1 if failed else 0)
