#!/usr/bin/env python3
"""Which ReLU inputs of the oracle fixtures' train-mode passes lie near zero, and on which side:
writes `tests/fixtures/<fixture>.kinks.json` beside each `<fixture>.safetensors` (the fixture
itself is left as it is). Run from anywhere (PyTorch CPU and safetensors from PyPI):

    python3 tests/reference/parity_fixture_kinks.py           # checks, then writes
    python3 tests/reference/parity_fixture_kinks.py --check   # checks only
    python3 tests/reference/parity_fixture_kinks.py DIR       # the fixtures in DIR (CIFS_FIXTURES)

Why: a ReLU input within float32 rounding of zero may land on the other side of the kink in a
float32 run, and the gradient upstream of it then changes by that element's whole contribution,
so the float64 fixture does not say what a float32 run must produce there unless it also says
which side the reference took. tests/parity.rs reads these files and puts each listed element
on the reference's side before the backward pass of the same forward.

How: each fixture's model is rebuilt in float64 from benches/reference/pytorch_step.py
(ResNet-18(-CIFS), WideResNet(-CIFS)) or from this script (the reference's ResNet-10-CIFS for
Fashion-MNIST, built of the same blocks), its parameters loaded, and the computations the
fixture records are run again: the train-mode forward with labels (`train`), and the two SGD
steps (lr, momentum, weight decay of the fixture), whose forwards run on the parameters of the
step before (`sgd_step1` is the train forward again, `sgd_step2` runs on the parameters after
one step). Before anything is written, every recorded number the passes reproduce is compared
with the fixture (eval and train logits, probes, loss, every gradient, running statistics
after the train forward, every parameter and buffer after the SGD steps), to 1e-9 relative.

Every ReLU of these models follows a batch norm (ResNets: ReLU(BN(x)) and ReLU(BN(x) +
shortcut); WideResNet: ReLU(BN(x))), and the Rust models fuse each into that batch norm, so a
ReLU is named by its batch norm's state-dict name (`layer1.0.bn2`, `block3.layer.1.bn1`), and
an element by its flat index in the (N, C, H, W) input of the ReLU. A shortcut's batch norm
(`*.shortcut.1`) never has a ReLU of its own.

The threshold: ReLU inputs with |value| < threshold are listed. The script measures how far
float32 moves the inputs near the kink (|value| < 10 threshold; the same passes in float32
PyTorch, SGD steps included, against float64) and takes as threshold the larger of THRESHOLD
(1e-4) and 4x the largest such error, measuring again in the wider window until the two agree;
the threshold and the measurement are written to the file (`threshold`, `float32_error`, and
`float32_error_anywhere` over all inputs, which large activations dominate). At 1e-4 the four
fixtures of the repository list 13 to 52 inputs per pass and float32 moves those near the kink
by at most 8.9e-6 (about 4e-5 anywhere), so their threshold is 1e-4; a deeper model with larger
activations (a WRN-22 at batch 2: 5.3e-5 near the kink) gets a wider one. Listing more than
float32 can flip costs nothing: the listed side is the reference's.

PGD (`pgd_steps`): the fixture's 3 PGD steps are reproduced (to 1e-9), and each step's input
gradient is taken again in float32 at the same iterate; the entries under 4x the largest
difference are listed: float32 may give them the other sign, which moves that pixel by 2 steps.
"""

import argparse
import json
import pathlib
import re
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

root = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(root / "benches" / "reference"))
import pytorch_step as ps  # noqa: E402

THRESHOLD = 1e-4  # the least threshold; wider where float32's error near the kink asks for it
PASSES = ["train", "sgd_step1", "sgd_step2"]
MATCH = 1e-9


class Recorder:
    """Stands in for torch.nn.functional in pytorch_step (and here): `relu` notes its input under
    the name of the batch norm that ran last (shortcut batch norms excepted)."""

    def __init__(self):
        self.inputs = None  # list of (bn name, input) while recording
        self.last_bn = None

    def __getattr__(self, name):
        return getattr(F, name)

    def relu(self, x):
        if self.inputs is not None:
            assert self.last_bn is not None, "a ReLU that does not follow a batch norm"
            self.inputs.append((self.last_bn, x.detach().clone()))
            self.last_bn = None
        return torch.relu(x)

    def watch(self, model):
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d) and not name.endswith("shortcut.1"):
                m.register_forward_hook(lambda _m, _i, _o, name=name: setattr(self, "last_bn", name))


rec = Recorder()
ps.F = rec


class ResNet10Cifs(nn.Module):
    """The reference's ResNet-10-CIFS for Fashion-MNIST as the Rust model builds it: stem conv3x3
    (in -> w) BN ReLU, one BasicBlock per stage (w, 2w, 4w, 8w; strides 1, 2, 2, 2), the
    nonlinear probe `Probe_0` (hidden 128) masking layer3's output and the linear `Probe_1`
    layer4's, both masks scaled by `mask_scale`, avg-pool 4, linear."""

    def __init__(self, width, in_channels=1, classes=10, mask_scale=2.0, hidden=ps.PROBE_HIDDEN):
        super().__init__()
        self.mask_scale = mask_scale
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for stage, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2), (8, 2)]):
            setattr(self, f"layer{stage + 1}", nn.ModuleList([ps.BasicBlock(cin, width * mult, stride)]))
            cin = width * mult
        self.linear = nn.Linear(8 * width, classes)
        self.Probe_0 = ps.Probe(4 * width, classes, nonlinear=True, relevance="autograd", hidden=hidden)
        self.Probe_1 = ps.Probe(8 * width, classes, nonlinear=False, relevance="autograd")

    def forward(self, x, labels=None):
        probes = []
        h = rec.relu(self.bn1(self.conv1(x)))
        for stage in range(1, 5):
            for block in getattr(self, f"layer{stage}"):
                h = block(h, labels, probes)
            if stage >= 3:
                h, p = getattr(self, f"Probe_{stage - 3}")(h, labels)
                h = self.mask_scale * h
                probes.append(p)
        return self.linear(F.avg_pool2d(h, 4).flatten(1)), probes


def build(meta):
    arch, cifs = meta.get("arch"), bool(meta.get("cifs"))
    if arch is None:
        return ps.ResNet18(meta["width"], cifs=cifs)
    if arch.startswith("wrn"):
        return ps.WideResNet(meta["depth"], meta["widen_factor"], cifs=cifs)
    if arch == "resnet10_gray_cifs":
        return ResNet10Cifs(meta["width"], meta["in_channels"], mask_scale=meta["mask_scale"], hidden=meta["probe_hidden"])
    raise SystemExit(f"architecture {arch} is not built here")


def rel(got, want):
    want = want.to(torch.float64)
    den = want.norm().item()
    d = (got.detach().to(torch.float64) - want).norm().item()
    return d / den if den > 1e-30 else d


class Checker:
    def __init__(self, name):
        self.name, self.worst, self.failed = name, (0.0, ""), []

    def __call__(self, what, got, want):
        e = rel(got, want)
        if e > self.worst[0]:
            self.worst = (e, what)
        if e > MATCH:
            self.failed.append(f"{what}: {e:.2e}")


def model_at(meta, t, dtype):
    model = build(meta).to(dtype)
    rec.watch(model)
    sd = {k[6:]: v for k, v in t.items() if k.startswith("param.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model


def run_passes(meta, t, dtype, check=None):
    """The train forward (+ backward) and the SGD steps at `dtype`; the ReLU inputs of each
    pass's forward. With `check`, compares everything the fixture records."""
    x, y = t["input.x"].to(dtype), t["input.y"]
    beta = meta["beta"]
    relus = {}

    model = model_at(meta, t, dtype)
    if check:
        model.eval()
        logits, probes = model(x)
        check("eval.logits", logits, t["eval.logits"])
        for k, p in enumerate(probes):
            check(f"eval.probe{k}", p, t[f"eval.probe{k}"])
        check("eval.loss", ps.joint_loss(logits, probes, y, beta), t["eval.loss"])

    model.train()
    rec.inputs = []
    logits, probes = model(x, y)
    relus["train"], rec.inputs = rec.inputs, None
    loss = ps.joint_loss(logits, probes, y, beta)
    loss.backward()
    if check:
        check("train.logits", logits, t["train.logits"])
        for k, p in enumerate(probes):
            check(f"train.probe{k}", p, t[f"train.probe{k}"])
        check("train.loss", loss, t["train.loss"])
        for n, p in model.named_parameters():
            check(f"train.grad.{n}", p.grad, t[f"train.grad.{n}"])
        for n, b in model.named_buffers():
            if "running" in n:
                check(f"train.after.{n}", b, t[f"train.after.{n}"])

    model = model_at(meta, t, dtype)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=meta["lr"], momentum=meta["momentum"], weight_decay=meta["weight_decay"])
    assert meta["sgd_steps"] == 2, "the file names the passes of two SGD steps"
    for step in range(meta["sgd_steps"]):
        rec.inputs = []
        logits, probes = model(x, y)
        relus[f"sgd_step{step + 1}"], rec.inputs = rec.inputs, None
        loss = ps.joint_loss(logits, probes, y, beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if check:
        for n, v in model.state_dict().items():
            want = t[f"sgd2.{n}"]
            if n.endswith("num_batches_tracked"):
                assert v.item() == want.item(), f"{n}: {v.item()} != {want.item()}"
            else:
                check(f"sgd2.{n}", v, want)
    return relus


def pgd(meta, t, dtype, at=None):
    """The fixture's PGD (advertorch's loop: eval mode, joint loss, delta += step sign(grad),
    clamped to the eps ball and to images in [0, 1]) from `input.pgd_delta0`: the result and each
    step's input gradient. With `at` (the float64 run's iterates), each gradient is taken at the
    given iterate instead, so that only the gradient's own rounding differs."""
    model = model_at(meta, t, dtype)
    model.eval()
    x, y = t["input.x"].to(dtype), t["input.y"]
    delta = t["input.pgd_delta0"].to(dtype)
    grads, iterates = [], []
    for k in range(meta["pgd_steps"]):
        if at is not None:
            delta = at[k].to(dtype)
        iterates.append(delta.detach().clone())
        delta = delta.detach().requires_grad_(True)
        logits, probes = model(x + delta)
        (g,) = torch.autograd.grad(ps.joint_loss(logits, probes, y, meta["beta"]), delta)
        grads.append(g)
        delta = (delta.detach() + meta["step"] * g.sign()).clamp(-meta["eps"], meta["eps"])
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).clamp(0, 1), grads, iterates


def pgd_undecided(meta, t):
    """The input-gradient entries of the float64 PGD whose sign float32 may not decide: |g| under
    4x the largest error float32 makes in any entry of that step's gradient (taken at the same
    iterate). A flip moves that pixel by 2 step in that step (then clamped)."""
    adv, g64, iterates = pgd(meta, t, torch.float64)
    err = rel(adv, t["pgd.x_adv"])
    assert err < MATCH, f"PGD reproduces pgd.x_adv only to {err:.1e}"
    _, g32, _ = pgd(meta, t, torch.float32, at=iterates)
    steps = []
    for k, (a, b) in enumerate(zip(g64, g32)):
        e = (a - b.double()).abs().max().item()
        flat = a.flatten()
        idx = (flat.abs() < 4 * e).nonzero().flatten().tolist()
        steps.append({"float32_error": e, "smallest": flat.abs().min().item(), "undecided": [[i, flat[i].item()] for i in idx]})
    return steps


def kinks(relus, threshold):
    """Per batch norm, [flat index, float64 input] of the ReLU inputs under `threshold`."""
    out = {}
    for bn, v in relus:
        assert bn not in out, f"{bn}'s ReLU ran twice in one forward"
        flat = v.flatten()
        idx = (flat.abs() < threshold).nonzero().flatten().tolist()
        out[bn] = [[i, flat[i].item()] for i in idx]
    return out


def near_kink_error(pairs, threshold):
    """The largest float32 error of the ReLU inputs within 10 `threshold` of the kink."""
    diffs = [((a[1] - b[1].double()).abs(), a[1].abs() < 10 * threshold) for a, b in pairs]
    return max((d[near].max().item() for d, near in diffs if near.any()), default=0.0)


def threshold_for(r64, r32):
    """The threshold: THRESHOLD, or 4x float32's error near the kink where that is larger (the
    window widens with the threshold, so measured again until it stops growing)."""
    threshold = THRESHOLD
    for _ in range(20):
        err = max(near_kink_error(list(zip(r64[p], r32[p])), threshold) for p in PASSES)
        if threshold >= 4 * err:
            return threshold
        threshold = float(f"{4 * err:.1e}") * 1.05
    raise SystemExit("the threshold does not settle: float32's error keeps growing with the window")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="check the fixtures and the stored files, write nothing")
    ap.add_argument("dirs", nargs="*", default=[str(root / "tests" / "fixtures")], help="fixture directories (tests/fixtures; another for CIFS_FIXTURES)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    failed = False
    for path in [p for d in args.dirs for p in sorted(pathlib.Path(d).glob("*.safetensors"))]:
        meta = json.loads(path.with_suffix(".json").read_text())
        t = load_file(str(path))
        checker = Checker(path.stem)
        r64 = run_passes(meta, t, torch.float64, checker)
        r32 = run_passes(meta, t, torch.float32)
        print(f"{path.stem}: worst relative error against the fixture {checker.worst[0]:.1e} ({checker.worst[1]})")
        if checker.failed:
            failed = True
            print("  FAIL (over 1e-9): " + "; ".join(checker.failed[:8]))
            continue
        threshold = threshold_for(r64, r32)
        doc = {
            "fixture": path.name,
            "made_by": "tests/reference/parity_fixture_kinks.py",
            "threshold": threshold,
            "float32_error": {},
            "float32_error_anywhere": {},
            "relu_inputs": {},
            "passes": {},
            "pgd_steps": pgd_undecided(meta, t),
        }
        for k, st in enumerate(doc["pgd_steps"]):
            print(f"  PGD step {k + 1}: {len(st['undecided'])} input-gradient entries under 4x float32's error {st['float32_error']:.1e} (smallest |entry| {st['smallest']:.1e})")
        for p in PASSES:
            pairs = list(zip(r64[p], r32[p]))
            assert all(a[0] == b[0] and a[1].shape == b[1].shape for a, b in pairs)
            err = near_kink_error(pairs, threshold)
            doc["float32_error"][p] = err
            doc["float32_error_anywhere"][p] = max((a[1] - b[1].double()).abs().max().item() for a, b in pairs)
            doc["relu_inputs"][p] = sum(a[1].numel() for a, _ in pairs)
            doc["passes"][p] = kinks(r64[p], threshold)
            n = sum(len(v) for v in doc["passes"][p].values())
            nearest = min(a[1].abs().min().item() for a in r64[p])
            print(f"  {p}: {doc['relu_inputs'][p]} ReLU inputs, {n} under {threshold:.1e} (nearest {nearest:.1e}); float32 moves those within {10 * threshold:.1e} by up to {err:.1e}")
        assert doc["passes"]["sgd_step1"] == doc["passes"]["train"], "the first SGD step's forward is the train forward"
        out = path.with_suffix(".kinks.json")
        # One [index, input] pair a line.
        text = re.sub(r"\[\s+(\d+),\s+(\S+)\s+\]", r"[\1, \2]", json.dumps(doc, indent=1)) + "\n"
        if args.check:
            stored = json.loads(out.read_text()) if out.exists() else {}
            same = all(stored.get(k) == doc[k] for k in ("passes", "threshold")) and [s["undecided"] for s in stored.get("pgd_steps", [])] == [s["undecided"] for s in doc["pgd_steps"]]
            print(f"  {out.name}: {'as stored' if same else 'DIFFERS from what is stored'}")
            failed |= not same
        elif not failed:
            out.write_text(text)
            print(f"  wrote {out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
