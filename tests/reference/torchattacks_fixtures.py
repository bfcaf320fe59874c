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
                      benches/reference/pytorch_step.py) trained 150 clean steps on 12 coloured
                      images, and 12 test images kept from a pool of 48 (other colours, labelled
                      with the model's own predictions) so that the attacks differ on them: APGD-CE
                      breaks images PGD-20 leaves, APGD-T and APGD-DLR break images APGD-CE leaves,
                      APGD-CE breaks images APGD-DLR leaves, some fall to PGD-20, some to nothing.
                      For those images, as one batch: which survive torchattacks' APGD-CE,
                      APGD-DLR, APGD-T, APGD with the joint loss and Square at 8 seeds each, which
                      survive APGD's random starting point alone, and which survive PGD-20 (our
                      evaluation's: from zero, step 0.1 eps) with CE and with the joint loss, with
                      the margins it leaves. The Rust test runs our attacks on the same model and
                      images and compares image by image.
                      Under "fab": torchattacks' FAB-T as AutoAttack's standard run uses it (FAB
                      with multi_targeted: the 9 most likely other classes in turn, 100 iterations,
                      1 restart, so no random draw; alpha_max 0.1, eta 1.05, beta 0.9) on the same
                      batch: which images survive, and for each target run the images it attacked
                      and the L-inf distance of the closest misclassified point it found for each
                      (null: none), recorded from inside torchattacks' own loop. The same again
                      with the network evaluated in float64 ("float64": only the logits and the
                      gradient differ, at rounding level) shows how far the distances move with
                      rounding alone.
"""

import copy
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
    """The final logits of a model that also returns probe logits (what torchattacks attacks);
    the probe logits of the last call are kept for the joint loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.probes = None

    def forward(self, x):
        logits, self.probes = self.model(x)
        return logits


# The model is trained clean to fit its 12 images; the test images are 48 fresh draws around the
# same colours (so the labels, the model's own predictions, are not all memorised points), from
# which 12 are kept that tell the attacks apart (see `select`).
SUCCESS = {"width": 4, "images": 12, "pool": 48, "eps": 8 / 255, "apgd_iterations": 10, "target_classes": 2, "square_queries": 50, "train_steps": 150, "pgd_steps": 20, "seeds": 8, "beta": 2.0}


def margins(net, x, y):
    """z_y - max_{j != y} z_j per image: positive while classified correctly."""
    with torch.no_grad():
        z = net(x)
    other = z.clone()
    other[torch.arange(len(y)), y] = -float("inf")
    return z[torch.arange(len(y)), y] - other.max(1).values


def joint_indiv(net, logits, y, beta):
    """Per-image joint loss (without its positive 3 / (beta + 1) factor) of the last forward."""
    ce = F.cross_entropy(logits, y, reduction="none")
    return ce + beta / len(net.probes) * sum(F.cross_entropy(p, y, reduction="none") for p in net.probes)


def pgd(net, x, y, eps, steps, loss):
    """PGD as our evaluation runs it: from zero, step 0.1 eps, sign of the gradient, projected on
    the eps-ball and [0, 1]."""
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        logits = net(adv)
        value = F.cross_entropy(logits, y) if loss == "ce" else joint_indiv(net, logits, y, SUCCESS["beta"]).mean()
        (grad,) = torch.autograd.grad(value, adv)
        adv = (x + (adv.detach() + 0.1 * eps * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    return adv


def apgd_start(x, eps, seed):
    """APGD's starting point clip(x + eps t / max|t|), t ~ U(-1, 1): what an APGD that never
    moves would be left with."""
    g = torch.Generator().manual_seed(seed)
    t = 2 * torch.rand(x.shape, generator=g) - 1
    return (x + eps * t / t.flatten(1).abs().max(1).values[:, None, None, None]).clamp(0, 1)


def joint_apgd(net, **kw):
    """torchattacks' APGD-CE with the joint loss in place of CE: its criterion is looked up as
    `nn.CrossEntropyLoss` inside the attack, so that one name is swapped for the run."""
    import types

    import torchattacks.attacks.apgd as apgd_module

    attack = torchattacks.APGD(net, norm="Linf", n_restarts=1, loss="ce", **kw)
    criterion = types.SimpleNamespace(CrossEntropyLoss=lambda reduction: lambda logits, y: joint_indiv(net, logits, y, SUCCESS["beta"]))
    plain = attack.forward

    def forward(images, labels):
        saved, apgd_module.nn = apgd_module.nn, criterion
        try:
            return plain(images, labels)
        finally:
            apgd_module.nn = saved

    attack.forward = forward
    return attack


def robust_flags(net, x, y, seeds):
    """Per attack, per seed (one list for the deterministic PGDs), which images stay classified
    correctly."""
    eps, iters, s = SUCCESS["eps"], SUCCESS["apgd_iterations"], SUCCESS
    flags = lambda adv: (margins(net, adv, y) > 0).tolist()
    made = {
        "apgd-ce": lambda seed: torchattacks.APGD(net, norm="Linf", eps=eps, steps=iters, n_restarts=1, loss="ce", seed=seed),
        "apgd-dlr": lambda seed: torchattacks.APGD(net, norm="Linf", eps=eps, steps=iters, n_restarts=1, loss="dlr", seed=seed),
        "apgd-t": lambda seed: torchattacks.APGDT(net, norm="Linf", eps=eps, steps=iters, n_restarts=1, n_classes=s["target_classes"] + 1, seed=seed),
        "apgd-joint": lambda seed: joint_apgd(net, eps=eps, steps=iters, seed=seed),
        "square": lambda seed: torchattacks.Square(net, norm="Linf", eps=eps, n_queries=s["square_queries"], p_init=0.8, seed=seed),
    }
    out = {name: [flags(make(seed)(x, y)) for seed in seeds] for name, make in made.items()}
    out["start"] = [flags(apgd_start(x, eps, 1000 + seed)) for seed in seeds]
    for loss in ["ce", "joint"]:
        out[f"pgd20-{loss}"] = flags(pgd(net, x, y, eps, s["pgd_steps"], loss))
    return out


def select(r, n):
    """Indices of `n` pool images that tell the attacks apart, from the flags `r` over seeds:
    APGD-CE breaks them and PGD-20 does not (3), APGD-T and APGD-DLR break them and APGD-CE does
    not (3), APGD-CE breaks them and APGD-DLR does not (2), PGD-20 breaks them (2), and nothing
    breaks them (2). Images that a random start alone breaks are left out."""
    pool = len(r["pgd20-ce"])
    always = lambda name, i: not any(f[i] for f in r[name])
    never = lambda name, i: all(f[i] for f in r[name])
    start_safe = lambda i: never("start", i)
    groups = [
        (3, lambda i: always("apgd-ce", i) and r["pgd20-ce"][i]),
        (3, lambda i: always("apgd-t", i) and always("apgd-dlr", i) and never("apgd-ce", i)),
        (2, lambda i: always("apgd-ce", i) and never("apgd-dlr", i) and not r["pgd20-ce"][i]),
        (2, lambda i: not r["pgd20-ce"][i] and not r["pgd20-joint"][i] and always("apgd-ce", i) and always("apgd-t", i)),
        (2, lambda i: all(never(k, i) for k in ["apgd-ce", "apgd-dlr", "apgd-t", "apgd-joint", "square"]) and r["pgd20-ce"][i] and r["pgd20-joint"][i]),
    ]
    chosen = []
    for want, test in groups:
        found = [i for i in range(pool) if i not in chosen and start_safe(i) and test(i)][:want]
        assert len(found) == want, f"group {len(chosen) // 3}: the pool has {len(found)} images of a kind the fixture needs {want} of"
        chosen += found
    assert len(chosen) == n
    return chosen


# FAB-T's settings in AutoAttack's standard run.
FAB = {"iterations": 100, "target_classes": 9, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9}


def fab_t(net, x, y):
    """torchattacks' FAB-T on the batch (every image starts classified correctly): which images
    survive, and per target run (the target's rank among the clean image's classes), the images
    still robust that it attacked, with the L-inf distance of the closest misclassified point it
    found for each (None: none). An image counts as broken when that point lies within eps."""
    eps = SUCCESS["eps"]
    attack = torchattacks.FAB(
        net, norm="Linf", eps=eps, steps=FAB["iterations"], n_restarts=1, alpha_max=FAB["alpha_max"], eta=FAB["eta"], beta=FAB["beta"],
        multi_targeted=True, n_classes=FAB["target_classes"] + 1,
    )
    live, runs = list(range(len(y))), []
    single = attack.attack_single_run_targeted

    def traced(xs, ys, use_rand_start=False):
        adv = single(xs, ys, use_rand_start)
        with torch.no_grad():
            found = net(adv).argmax(1) != ys
        distance = (adv - xs).abs().flatten(1).max(1).values
        broken = found & ~(distance > eps)  # as torchattacks' perturb decides it
        runs.append({"rank": attack.target_class, "images": list(live), "distances": [d if f else None for d, f in zip(distance.tolist(), found.tolist())]})
        live[:] = [i for i, b in zip(live, broken.tolist()) if not b]
        return adv

    attack.attack_single_run_targeted = traced
    robust = (margins(net, attack(x, y), y) > 0).tolist()
    assert robust == [i in live for i in range(len(y))], "the traced runs decide what FAB-T returns"
    return robust, runs


class Float64Logits(nn.Module):
    """The model evaluated in float64, its logits returned in float32 (as the attack expects)."""

    def __init__(self, model):
        super().__init__()
        self.model = copy.deepcopy(model).double()

    def forward(self, x):
        return self.model(x.double())[0].float()


def fab_fixture(net, model, x, y):
    robust, runs = fab_t(net, x, y)
    robust64, runs64 = fab_t(Float64Logits(model).eval(), x, y)
    return {**FAB, "robust": robust, "runs": runs, "float64": {"robust": robust64, "runs": runs64}}


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
    # The pool: 12 other random colours, each with 4 draws of noise.
    torch.manual_seed(3)
    pool_colours = torch.rand(n, 3, 1, 1) * 0.7 + 0.15
    g = torch.Generator().manual_seed(100)
    pool = SUCCESS["pool"]
    x_pool = ((pool_colours[torch.arange(pool) % n] + (torch.rand(pool, 3, 32, 32, generator=g) * 0.2 - 0.1)) * 255).round().clamp(0, 255) / 255
    with torch.no_grad():
        y_pool = net(x_pool).argmax(1)  # every image starts correctly classified
    chosen = select(robust_flags(net, x_pool, y_pool, range(4)), n)
    x, labels = x_pool[chosen].contiguous(), y_pool[chosen].contiguous()
    # The recorded flags are those of the kept images as one batch (torchattacks' draws depend on
    # the batch), over more seeds than the selection used.
    seeds = range(SUCCESS["seeds"])
    robust = robust_flags(net, x, labels, seeds)
    pgd_margins = {f"pgd20-{loss}": margins(net, pgd(net, x, labels, SUCCESS["eps"], SUCCESS["pgd_steps"], loss), labels).tolist() for loss in ["ce", "joint"]}
    state = {k: v.float().contiguous() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state["input.x"] = x
    state["input.y"] = labels
    save_file(state, os.path.join(OUT, "success.safetensors"))
    # Last: torchattacks' FAB seeds torch's generator, which nothing above may see.
    fab = fab_fixture(net, model, x, labels)
    return {**SUCCESS, "pool_indices": chosen, "clean_margin": margins(net, x, labels).tolist(), "pgd_margin": pgd_margins, "robust": robust, "fab": fab}


def main():
    torch.set_num_threads(1)  # the same float sums on every machine
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
