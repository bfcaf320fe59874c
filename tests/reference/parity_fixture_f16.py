#!/usr/bin/env python3
"""What the reference itself does in f16, per oracle fixture: the yardstick of cifs-wgpu's f16
checks. Writes the field `f16_reference` of `tests/fixtures/<fixture>.json` (the rest of the file
is left as it is). Run from anywhere (PyTorch CPU and safetensors):

    python3 tests/reference/parity_fixture_f16.py           # checks, then writes
    python3 tests/reference/parity_fixture_f16.py --check   # checks only
    python3 tests/reference/parity_fixture_f16.py DIR       # the fixtures in DIR (CIFS_FIXTURES)

Each fixture's model is rebuilt (as parity_fixture_kinks.py does) in float32 with every
convolution and dense layer run the way cifs-wgpu runs its GEMMs in f16 (engine/src/precision.rs):
each operand of each GEMM (forward; input gradient: output gradient and weights; weight gradient:
output gradient and input) scaled by the power of two that puts its largest magnitude in
[2^14, 2^15), rounded to f16 (nearest, ties to even), multiplied with f32 accumulation (float32
PyTorch on f16 values: their products are exact in f32), scaled back; a dense layer's bias and
the gradient of the bias in f32; the input gradient of a convolution of at most 4 input channels
(the stem) in f32, as cifs-wgpu computes it directly. Everything else (batch norm, activations,
losses, the CIFS masks) is float32 PyTorch. On the fixture's batch, against its float64 numbers:

- `grad_x_rel_err`: the eval-mode input gradient of the joint loss (what PGD follows), relative
  norm error; `grad_x_backward_only_rel_err` the same with the forward in float32 (only the
  backward's GEMMs in f16);
- `grad_x_sign_disagree`: pixels whose input-gradient sign differs from float64's (zero and
  nonzero count as different), of `pixels`;
- `pgd_disagree`: pixels where the fixture's 3 PGD steps, run in f16, end more than `pgd_match`
  (1e-5) from float64's `pgd.x_adv`;
- the same measured in float32 (`float32`), for scale.

Before anything is written, the float64 model reproduces the fixture's eval-mode input gradient
and PGD result to 1e-9 (so the model is the fixture's).
"""

import argparse
import json
import pathlib
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import parity_fixture_kinks as kinks  # noqa: E402

ps = kinks.ps
root = pathlib.Path(__file__).resolve().parents[2]
PGD_MATCH = 1e-5
# Input channels up to which cifs-wgpu computes a convolution's input gradient directly in f32
# (engine/src/ops/conv2d.rs, NARROW_CHANNELS).
NARROW_CHANNELS = 4


def f16_operand(v):
    """`v` as an f16 GEMM multiplies it: scaled by 2^e, e = 14 - floor(log2 max|v|) (clamped to
    [-126, 126], 0 for all zeros), rounded to f16 (nearest, ties to even; subnormals kept), scaled
    back (exact: powers of two)."""
    v = v.detach()
    top = v.abs().max()
    if top == 0:
        return v.clone()
    _, exp = torch.frexp(top.float())  # top = m 2^exp, m in [0.5, 1): floor(log2 top) = exp - 1
    e = int(max(-126, min(126, 14 - (int(exp) - 1))))
    up, down = torch.tensor(2.0**e, dtype=torch.float32), torch.tensor(2.0**-e, dtype=torch.float32)
    return (v.float() * up).half().float() * down


class F16Conv(torch.autograd.Function):
    """conv2d with cifs-wgpu's f16 GEMMs: forward (if `f16_forward`) and both gradients."""

    @staticmethod
    def forward(ctx, x, w, stride, padding, f16_forward):
        ctx.save_for_backward(x, w)
        ctx.stride, ctx.padding = stride, padding
        if f16_forward:
            return F.conv2d(f16_operand(x), f16_operand(w), None, stride, padding)
        return F.conv2d(x, w, None, stride, padding)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        qg = f16_operand(g)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            if x.shape[1] <= NARROW_CHANNELS:
                dx = torch.nn.grad.conv2d_input(x.shape, w, g, s, p)
            else:
                dx = torch.nn.grad.conv2d_input(x.shape, f16_operand(w), qg, s, p)
        if ctx.needs_input_grad[1]:
            dw = torch.nn.grad.conv2d_weight(f16_operand(x), w.shape, qg, s, p)
        return dx, dw, None, None, None


class F16Linear(torch.autograd.Function):
    """x w^T + b with cifs-wgpu's f16 GEMMs (the bias, and its gradient, in f32)."""

    @staticmethod
    def forward(ctx, x, w, b, f16_forward):
        ctx.save_for_backward(x, w)
        y = f16_operand(x) @ f16_operand(w).t() if f16_forward else x @ w.t()
        return y + b if b is not None else y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        qg = f16_operand(g)
        dx = qg @ f16_operand(w) if ctx.needs_input_grad[0] else None
        dw = qg.t() @ f16_operand(x) if ctx.needs_input_grad[1] else None
        db = g.sum(0) if ctx.needs_input_grad[2] else None
        return dx, dw, db, None


def in_f16(model, f16_forward):
    """`model` (float32) with its convolutions and dense layers on f16 GEMMs."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None and m.groups == 1 and m.dilation == (1, 1)
            m.forward = types.MethodType(lambda self, x: F16Conv.apply(x, self.weight, self.stride, self.padding, f16_forward), m)
        elif isinstance(m, nn.Linear):
            m.forward = types.MethodType(lambda self, x: F16Linear.apply(x, self.weight, self.bias, f16_forward), m)
    return model


def model_in(meta, t, mode):
    """The fixture's model in `mode`: float64, float32, f16 or f16_backward (float32 forward)."""
    dtype = torch.float64 if mode == "float64" else torch.float32
    model = kinks.model_at(meta, t, dtype)
    if mode.startswith("f16"):
        in_f16(model, f16_forward=mode == "f16")
    model.eval()
    return model


def input_gradient(meta, t, mode):
    model = model_in(meta, t, mode)
    dtype = next(model.parameters()).dtype
    x = t["input.x"].to(dtype).requires_grad_(True)
    logits, probes = model(x)
    (g,) = torch.autograd.grad(ps.joint_loss(logits, probes, t["input.y"], meta["beta"]), x)
    return g


def pgd(meta, t, mode):
    """The fixture's PGD (parity_fixture_kinks.pgd's loop) with the model in `mode`."""
    model = model_in(meta, t, mode)
    dtype = next(model.parameters()).dtype
    x, y = t["input.x"].to(dtype), t["input.y"]
    delta = t["input.pgd_delta0"].to(dtype)
    for _ in range(meta["pgd_steps"]):
        delta = delta.detach().requires_grad_(True)
        logits, probes = model(x + delta)
        (g,) = torch.autograd.grad(ps.joint_loss(logits, probes, y, meta["beta"]), delta)
        delta = (delta.detach() + meta["step"] * g.sign()).clamp(-meta["eps"], meta["eps"])
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).clamp(0, 1)


def departures(meta, t, mode):
    """The input gradient's and PGD's departures from the fixture in `mode`."""
    want_g, want_adv = t["eval.grad_x"], t["pgd.x_adv"]
    g = input_gradient(meta, t, mode).double()
    adv = pgd(meta, t, mode).double()
    return {
        "grad_x_rel_err": kinks.rel(g, want_g),
        "grad_x_sign_disagree": int((torch.sign(g) != torch.sign(want_g)).sum().item()),
        "pgd_disagree": int(((adv - want_adv).abs() > PGD_MATCH).sum().item()),
    }


def measure(meta, t):
    for what, got, want in [("eval.grad_x", input_gradient(meta, t, "float64"), t["eval.grad_x"]), ("pgd.x_adv", pgd(meta, t, "float64"), t["pgd.x_adv"])]:
        e = kinks.rel(got, want)
        assert e < kinks.MATCH, f"the float64 model reproduces {what} only to {e:.1e}"
    f16 = departures(meta, t, "f16")
    f16["grad_x_backward_only_rel_err"] = kinks.rel(input_gradient(meta, t, "f16_backward").double(), t["eval.grad_x"])
    return {
        "made_by": "tests/reference/parity_fixture_f16.py",
        "pixels": t["input.x"].numel(),
        "pgd_match": PGD_MATCH,
        **f16,
        "float32": departures(meta, t, "float32"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="measure and compare with the stored field, write nothing")
    ap.add_argument("dirs", nargs="*", default=[str(root / "tests" / "fixtures")], help="fixture directories (tests/fixtures; another for CIFS_FIXTURES)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    failed = False
    for path in [p for d in args.dirs for p in sorted(pathlib.Path(d).glob("*.safetensors"))]:
        doc_path = path.with_suffix(".json")
        text = doc_path.read_text()
        doc = json.loads(text)
        got = measure(doc, load_file(str(path)))
        n = got["pixels"]
        print(
            f"{path.stem}: f16 input gradient {got['grad_x_rel_err']:.2e} (backward only {got['grad_x_backward_only_rel_err']:.2e}), "
            f"signs differ at {got['grad_x_sign_disagree']} of {n} pixels, PGD at {got['pgd_disagree']}; "
            f"float32: {got['float32']['grad_x_rel_err']:.1e}, {got['float32']['grad_x_sign_disagree']}, {got['float32']['pgd_disagree']}"
        )
        if args.check:
            same = doc.get("f16_reference") == got
            print(f"  {doc_path.name}: {'as stored' if same else 'DIFFERS from what is stored'}")
            failed |= not same
        else:
            doc["f16_reference"] = got
            # The other fields as they were: json.dumps(indent=1) is the files' own format.
            assert json.dumps({k: v for k, v in doc.items() if k != "f16_reference"}, indent=1) == text or "f16_reference" in json.loads(text)
            doc_path.write_text(json.dumps(doc, indent=1))
            print(f"  wrote {doc_path.name}'s f16_reference")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
