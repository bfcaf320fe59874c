#!/usr/bin/env python3
"""Reference numbers from the torchattacks implementation of AutoAttack's attacks, for
tests/attacks.rs. Run from the repository root (PyTorch CPU and torchattacks from PyPI):

    pip install torch torchattacks
    python3 tests/reference/torchattacks_fixtures.py     # writes tests/fixtures/attacks/*.json

What it records, each straight from torchattacks' own code:
  dlr.json            APGD's DLR loss and APGD-T's targeted DLR loss, per row, and the gradient of
                      their sums w.r.t. the logits (autograd), for random logits.
  square_schedule.json  Square's p_selection(it) for every iteration of a 5000-query run with
                      p_init 0.8, and the square side it gives on 3x32x32 images.
  apgd_control.json   one APGD-CE run (100 iterations) on a small fixed model: the loss of every
                      image at the start and after every iteration, and the step sizes at every
                      checkpoint and at the end, read from inside torchattacks' own loop. The Rust
                      test replays the losses through its step-size control and must take the same
                      decisions.
  success.safetensors + success.json
                      a small ResNet18-CIFS (width 4, our state-dict names, the model of
                      benches/reference/pytorch_step.py) trained a few clean steps on 16 coloured
                      images, the images, and which of them survive torchattacks' APGD-CE, APGD-T
                      and Square (three seeds) at fixed budgets. The Rust test runs our attacks on
                      the same model and images and compares the robust counts.
"""

import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchattacks
from safetensors.torch import save_file
from torchattacks.attacks.apgd import APGD
from torchattacks.attacks.apgdt import APGDT

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "attacks")


def dlr_fixture():
    torch.manual_seed(1)
    n, k = 6, 10
    logits = (torch.rand(n, k, dtype=torch.float64) * 8 - 4)
    labels = torch.tensor([0, 3, 9, 4, 7, 1])
    # Row 0's label is its top class, so the "other" class is the second.
    logits[0, 0] = logits[0].max() + 1.0
    targets = torch.tensor([5, 0, 2, 8, 1, 6])
    x = logits.clone().requires_grad_(True)
    apgd = APGD(nn.Identity(), loss="dlr")
    untargeted = apgd.dlr_loss(x, labels)
    (g_untargeted,) = torch.autograd.grad(untargeted.sum(), x)
    apgdt = APGDT(nn.Identity(), n_classes=k)
    targeted = apgdt.dlr_loss_targeted(x, labels, targets)
    (g_targeted,) = torch.autograd.grad(targeted.sum(), x)
    return {
        "logits": logits.flatten().tolist(),
        "classes": k,
        "labels": labels.tolist(),
        "targets": targets.tolist(),
        "untargeted": untargeted.tolist(),
        "untargeted_grad": g_untargeted.flatten().tolist(),
        "targeted": targeted.tolist(),
        "targeted_grad": g_targeted.flatten().tolist(),
    }


def square_fixture():
    queries, p_init = 5000, 0.8
    sq = torchattacks.Square(nn.Identity(), norm="Linf", n_queries=queries, p_init=p_init)
    c, h, w = 3, 32, 32
    n_features = c * h * w
    p = [sq.p_selection(it) for it in range(queries)]
    side = [max(int(round(math.sqrt(pi * n_features / c))), 1) for pi in p]
    return {"queries": queries, "p_init": p_init, "channels": c, "height": h, "width": w, "p": p, "side": side}


class Small(nn.Module):
    """A small fixed convolutional classifier on 3x8x8 images."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))

    def forward(self, x):
        return self.net(x)


def apgd_fixture():
    torch.manual_seed(2)
    model = Small().eval()
    n = 16
    x = torch.rand(n, 3, 8, 8)
    labels = model(x).argmax(1)  # every image starts correctly classified
    iters, eps = 100, 8 / 255
    attack = APGD(model, norm="Linf", eps=eps, steps=iters, n_restarts=1, loss="ce", seed=0, rho=0.75)

    record = {"initial": None, "checkpoints": [], "final_step": None, "history": None}

    def tracer(frame, event, arg):
        if frame.f_code.co_name != "attack_single_run":
            return None

        def local(frame, event, arg):
            loc = frame.f_locals
            if event == "line" and record["initial"] is None and "loss_best" in loc:
                record["initial"] = loc["loss_best"].double().tolist()
            if event == "line" and "counter3" in loc and "k" in loc and "i" in loc:
                # Just before the check: counter3 reached k in this iteration.
                pass
            if event == "return":
                record["final_step"] = loc["step_size"].flatten().double().tolist()
                record["history"] = loc["loss_steps"].double().tolist()
            return local

        return local

    original = APGD.check_oscillation

    def check(self, x_, j, k, y5, k3=0.75):
        caller = sys._getframe(1).f_locals
        record["checkpoints"].append({"iteration": int(j), "window": int(k), "step_before": caller["step_size"].flatten().double().tolist()})
        return original(self, x_, j, k, y5, k3)

    APGD.check_oscillation = check
    sys.settrace(tracer)
    try:
        attack.perturb(x, labels)
    finally:
        sys.settrace(None)
        APGD.check_oscillation = original
    return {"images": n, "iterations": iters, "eps": eps, "rho": 0.75, **record}


class Logits(nn.Module):
    """The final logits of a model that also returns probe logits (what torchattacks attacks)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


SUCCESS = {"width": 4, "images": 12, "eps": 16 / 255, "apgd_iterations": 10, "target_classes": 2, "square_queries": 50, "train_steps": 40}


def success_fixture():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benches", "reference"))
    from pytorch_step import ResNet18, joint_loss

    torch.manual_seed(3)
    n = SUCCESS["images"]
    model = ResNet18(SUCCESS["width"], cifs=True, relevance="closed-form")
    colours = torch.rand(n, 3, 1, 1) * 0.7 + 0.15
    x = ((colours + (torch.rand(n, 3, 32, 32) * 0.2 - 0.1)) * 255).round().clamp(0, 255) / 255
    distinct = torch.arange(n) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(SUCCESS["train_steps"]):
        logits, probes = model(x, distinct)
        loss = joint_loss(logits, probes, distinct)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    net = Logits(model).eval()
    with torch.no_grad():
        labels = net(x).argmax(1)  # every image starts correctly classified
    eps, iters = SUCCESS["eps"], SUCCESS["apgd_iterations"]
    attacks = {
        "apgd-ce": torchattacks.APGD(net, norm="Linf", eps=eps, steps=iters, n_restarts=1, loss="ce", seed=0),
        "apgd-t": torchattacks.APGDT(net, norm="Linf", eps=eps, steps=iters, n_restarts=1, n_classes=SUCCESS["target_classes"] + 1, seed=0),
    }
    # Square with few queries is decided by its random squares: record three seeds.
    for seed in range(3):
        attacks[f"square-seed{seed}"] = torchattacks.Square(net, norm="Linf", eps=eps, n_queries=SUCCESS["square_queries"], p_init=0.8, seed=seed)
    robust = {}
    for name, attack in attacks.items():
        adv = attack(x, labels)
        with torch.no_grad():
            robust[name] = (net(adv).argmax(1) == labels).tolist()
    state = {k: v.float().contiguous() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state["input.x"] = x.contiguous()
    state["input.y"] = labels.contiguous()
    save_file(state, os.path.join(OUT, "success.safetensors"))
    return {**SUCCESS, "robust": robust, "robust_counts": {k: sum(v) for k, v in robust.items()}}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, make in [("dlr", dlr_fixture), ("square_schedule", square_fixture), ("apgd_control", apgd_fixture), ("success", success_fixture)]:
        path = os.path.join(OUT, f"{name}.json")
        doc = make()
        doc["made_by"] = f"tests/reference/torchattacks_fixtures.py (torch {torch.__version__}, torchattacks {torchattacks.__version__})"
        with open(path, "w") as f:
            json.dump(doc, f)
        print("wrote", path)


if __name__ == "__main__":
    main()
