#!/usr/bin/env python3
"""Makes an oracle fixture like those in tests/fixtures (tests/fixtures/README.md lists the keys):
a model of the reference's architectures at any size, its parameters and a batch, and what the
reference computes from them in float64. Run from anywhere (PyTorch CPU and safetensors):

    python3 tests/reference/make_parity_fixture.py --arch wrn_cifs --depth 22 --batch 2 --seed 0 OUT_DIR
    python3 tests/reference/make_parity_fixture.py --arch resnet18_cifs --width 8 --batch 4 OUT_DIR

writes OUT_DIR/<name>.safetensors (float64 tensors, int64 labels and batch counters) and the
`.json` beside it (settings and every tensor's shape). Then run parity_fixture_kinks.py and
parity_fixture_f16.py on OUT_DIR for the files the parity test reads beside it, and point
CIFS_FIXTURES at OUT_DIR.

The models are those of benches/reference/pytorch_step.py (ResNet-18(-CIFS), WideResNet(-CIFS))
and parity_fixture_kinks.py (ResNet-10-CIFS, Fashion-MNIST), whose state-dict names are the
reference's. Parameters: PyTorch's default initialisation at `--seed`, batch-norm weights, biases
and running statistics moved away from their defaults (so that they are exercised), every value
rounded to float32 first, as the input batch (uniform in [0, 1]), the labels and the PGD start
(uniform in the eps ball, clipped to images in [0, 1]). Then, in float64: the eval-mode forward,
joint loss (beta 2) and its input gradient; 3 PGD steps (eps 8/255, step 2/255, advertorch's
loop: eval mode, joint loss); the train-mode forward with labels, every parameter's gradient and
the running statistics after it; two SGD steps (lr 0.1, momentum 0.9, weight decay 2e-4).
"""

import argparse
import json
import pathlib
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import parity_fixture_kinks as kinks  # noqa: E402

ps = kinks.ps


def settings(args):
    """The fixture's `.json` settings (the metadata the parity test reads)."""
    if args.arch.startswith("wrn"):
        name = f"wrn{args.depth}_{'cifs' if args.arch == 'wrn_cifs' else 'plain'}_k{args.widen}_n{args.batch}_seed{args.seed}"
        meta = {"arch": f"wrn{args.depth}{'_cifs' if args.arch == 'wrn_cifs' else ''}", "depth": args.depth, "widen_factor": args.widen, "in_channels": 3, "image": 32, "probe_hidden": 240, "mask_scale": 1.0}
    elif args.arch == "resnet10_gray_cifs":
        name = f"resnet10_gray_cifs_w{args.width}_n{args.batch}_seed{args.seed}"
        meta = {"arch": "resnet10_gray_cifs", "width": args.width, "in_channels": 1, "image": 28, "probe_hidden": ps.PROBE_HIDDEN, "mask_scale": 2.0}
    else:
        cifs = args.arch == "resnet18_cifs"
        name = f"{'cifs' if cifs else 'plain'}_w{args.width}_n{args.batch}_seed{args.seed}"
        meta = {"width": args.width}
    cifs = args.arch.endswith("_cifs")
    meta.update({"seed": args.seed, "batch": args.batch, "cifs": cifs, "pgd_steps": 3, "eps": 8 / 255, "step": 2 / 255, "beta": 2.0})
    meta.update({"lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "sgd_steps": 2})
    meta["note"] = "float64 results from the reference code (tests/reference/make_parity_fixture.py); inputs exactly representable in f32"
    return name, meta


def f32_exact(t):
    return t.float().double()


def initial_state(meta, seed):
    """The model's parameters and buffers at `seed`, batch norms moved, all float32 values."""
    torch.manual_seed(seed)
    model = kinks.build(meta).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn_like(m.weight))
                m.bias.copy_(0.2 * torch.randn_like(m.bias))
                m.running_mean.copy_(0.1 * torch.randn_like(m.running_mean))
                m.running_var.copy_(1 + 0.5 * torch.rand_like(m.running_var))
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(f32_exact(t))
    return model.state_dict()


def batch(meta, seed):
    g = torch.Generator().manual_seed(seed + 1)
    c, s = meta.get("in_channels", 3), meta.get("image", 32)
    x = f32_exact(torch.rand(meta["batch"], c, s, s, generator=g, dtype=torch.float64))
    y = torch.randint(0, 10, (meta["batch"],), generator=g)
    delta = (torch.rand(x.shape, generator=g, dtype=torch.float64) * 2 - 1) * meta["eps"]
    delta = f32_exact((x + delta).clamp(0, 1) - x)
    return x, y, delta


def record(meta, state, x, y, delta0):
    """Everything the fixture holds, computed in float64."""
    out = {f"param.{k}": v.clone() for k, v in state.items()}
    out.update({"input.x": x, "input.y": y, "input.pgd_delta0": delta0})
    t = {**out}
    beta = meta["beta"]

    model = kinks.model_at(meta, t, torch.float64)
    model.eval()
    xl = x.clone().requires_grad_(True)
    logits, probes = model(xl)
    loss = ps.joint_loss(logits, probes, y, beta)
    (gx,) = torch.autograd.grad(loss, xl)
    out.update({"eval.logits": logits, "eval.loss": loss.reshape(1), "eval.grad_x": gx})
    out.update({f"eval.probe{k}": p for k, p in enumerate(probes)})
    out["pgd.x_adv"] = kinks.pgd(meta, t, torch.float64)[0]

    model = kinks.model_at(meta, t, torch.float64)
    model.train()
    logits, probes = model(x, y)
    loss = ps.joint_loss(logits, probes, y, beta)
    loss.backward()
    out.update({"train.logits": logits, "train.loss": loss.reshape(1)})
    out.update({f"train.probe{k}": p for k, p in enumerate(probes)})
    out.update({f"train.grad.{n}": p.grad for n, p in model.named_parameters()})
    out.update({f"train.after.{n}": b for n, b in model.named_buffers() if "running" in n})

    model = kinks.model_at(meta, t, torch.float64)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=meta["lr"], momentum=meta["momentum"], weight_decay=meta["weight_decay"])
    for _ in range(meta["sgd_steps"]):
        logits, probes = model(x, y)
        loss = ps.joint_loss(logits, probes, y, beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    out.update({f"sgd2.{n}": v for n, v in model.state_dict().items()})
    return {k: v.detach().contiguous() for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, choices=["wrn_cifs", "wrn", "resnet18_cifs", "resnet18", "resnet10_gray_cifs"])
    ap.add_argument("--depth", type=int, default=16, help="WideResNet depth, 6n + 4")
    ap.add_argument("--widen", type=int, default=1, help="WideResNet widen factor")
    ap.add_argument("--width", type=int, default=8, help="ResNet base width")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("out", help="directory to write the fixture into")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    name, meta = settings(args)
    state = initial_state(meta, args.seed)
    x, y, delta0 = batch(meta, args.seed)
    tensors = record(meta, state, x, y, delta0)
    tensors = {k: (v if v.dtype == torch.int64 else v.double()) for k, v in tensors.items()}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / f"{name}.safetensors"))
    doc = {**meta, "tensors": {k: list(v.shape) for k, v in tensors.items()}}
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1))
    print(f"wrote {out / name}.safetensors and .json ({len(tensors)} tensors)")


if __name__ == "__main__":
    main()
