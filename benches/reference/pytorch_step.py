#!/usr/bin/env python3
"""The PyTorch side of `cifs-wgpu bench`: the same three steps on the same models, timed the same
way, so that one run on one GPU gives the ratio users care about.

Written from the project's design, docs/DESIGN.md (not copied from the paper's repository):
  - ResNet-18, CIFAR variant: conv3x3 stem + BN + ReLU, four stages of two BasicBlocks (widths
    w, 2w, 4w, 8w; strides 1, 2, 2, 2; 1x1 conv + BN shortcuts where the shape changes),
    avg-pool 4, linear. Inputs in [0, 1], no normalisation layer.
  - ResNet18-CIFS: both layer4 blocks mask their output z with m = softmax_C(r): block 0 with the
    nonlinear probe (GAP -> Linear(C, 128) -> Softplus(beta 5) -> Linear(128, 10)), block 1 with
    the linear probe (GAP -> Linear(C, 10)). The relevance r is the gradient of p_a + p_b w.r.t. a
    detached copy of z, summed over space, taken with autograd.grad(create_graph=True) as the
    reference implementation does (`--relevance autograd`, the default, so the timing is that of
    the code users run today); `--relevance closed-form` computes the same r in closed form
    (docs/DESIGN.md, section 2), the fastest a PyTorch CIFS could be. Pair (a, b): train mode (label, 2nd largest
    probe logit), eval mode (top-1, top-2).
  - WRN-depth-k (docs/DESIGN.md, section 3), `--model wrn-cifs|wrn`: pre-activation blocks (BN-ReLU before
    each conv; a 1x1 conv of the activated input as shortcut where the channels change, the raw
    input otherwise), stem conv 3->16 without BN, groups of 16k, 32k, 64k channels, final
    BN-ReLU, avg-pool 8, fc. With CIFS the last block of block3 masks its branch's activated
    input (nonlinear probe, hidden 240) and a linear probe masks the head. `--width` is the widen
    factor there (default 10), `--depth` 6n+4 (default 28).
  - Joint loss 3/(beta+1) (CE(final) + beta/K sum_k CE(p_k)), beta 2; plain CE without probes.
  - PGD-10 AT step: eval-mode attack (eps 8/255, step 2/255, random start, joint loss, input
    gradient only), then a train-mode forward on the adversarial batch, joint loss, backward,
    SGD (lr 0.1, momentum 0.9, weight decay 2e-4).
  - Clean training step: the same without the attack. Eval forward: eval mode, no gradients.

Timing: random inputs, warm-up steps, then the median (and minimum) over `--steps` steps by wall
clock, each step bracketed by torch.cuda.synchronize(); PyTorch's default precision settings (on
CUDA that means TF32 convolutions, as it ships). The JSON uses the field names of
`cifs-wgpu bench --json`; the fields PyTorch cannot measure (GPU timestamps, dispatches,
submits) are null.

`--amp` also times PyTorch's own fast path in the same call, after the default: a second model with
the same initial weights in channels_last memory format, forwards (attack included) under
torch.autocast(float16), and the training loss through a GradScaler (PyTorch's AMP recipe); its
rows carry "precision": "amp-f16" (the default's "default"), with the same step names.

  python3 benches/reference/pytorch_step.py [--device cuda|cpu] [--amp]
      [--model resnet18-cifs|resnet18|wrn-cifs|wrn] [--width 64 (WRN: 10)] [--depth 28 (WRN)] [--batch-size 128] [--steps 20] [--warmup 5] [--json FILE]
      [--relevance autograd|closed-form]
"""

import argparse
import copy
import datetime
import json
import platform
import statistics
import subprocess
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SOFTPLUS_BETA = 5.0
PROBE_HIDDEN = 128


class Hidden(nn.Module):
    """The nonlinear probe's first layer: Linear, then Softplus(beta 5)."""

    def __init__(self, channels, hidden=PROBE_HIDDEN):
        super().__init__()
        self.fc = nn.Linear(channels, hidden)

    def forward(self, g):
        return F.softplus(self.fc(g), beta=SOFTPLUS_BETA)


class Probe(nn.Module):
    """The CIFS probe and mask on a block output z (N, C, H, W). Its parameters carry the
    reference's state-dict names (`Probe.Probe.0.fc.*`, `Probe.Probe.1.*`), as ours do."""

    def __init__(self, channels, classes, nonlinear, relevance, hidden=PROBE_HIDDEN):
        super().__init__()
        self.nonlinear = nonlinear
        self.relevance = relevance
        first = Hidden(channels, hidden) if nonlinear else nn.Identity()
        self.Probe = nn.Sequential(first, nn.Linear(hidden if nonlinear else channels, classes))

    @property
    def hidden(self):
        return self.Probe[0].fc

    @property
    def out(self):
        return self.Probe[1]

    def logits(self, g):
        return self.Probe(g)

    def pair_relevance(self, z, a, b):
        if self.relevance == "autograd":
            # The relevance is itself a gradient, so it needs autograd even under no_grad.
            with torch.enable_grad():
                zd = z.detach().requires_grad_(True)
                p = self.logits(zd.mean((2, 3)))
                picked = p.gather(1, a[:, None]).sum() + p.gather(1, b[:, None]).sum()
                (grad,) = torch.autograd.grad(picked, zd, create_graph=torch.is_grad_enabled())
            return grad.sum((2, 3))
        w = self.out.weight
        rows = w[a] + w[b]
        if not self.nonlinear:
            return rows
        u = self.hidden(z.detach().mean((2, 3)))
        return (rows * torch.sigmoid(SOFTPLUS_BETA * u)) @ self.hidden.weight

    def forward(self, z, labels):
        p = self.logits(z.mean((2, 3)))
        top2 = p.topk(2, dim=1).indices
        if self.training and labels is not None:
            a, b = labels, top2[:, 1]
        else:
            a, b = top2[:, 0], top2[:, 1]
        m = torch.softmax(self.pair_relevance(z, a, b), dim=1)
        return z * m[:, :, None, None], p


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, probe=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        if probe is not None:
            self.Probe = probe

    def forward(self, x, labels, probes):
        h = F.relu(self.bn1(self.conv1(x)))
        z = F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))
        if hasattr(self, "Probe"):
            z, p = self.Probe(z, labels)
            probes.append(p)
        return z


class ResNet18(nn.Module):
    """State-dict names as the reference's and ours: conv1, bn1, layer{1..4}.{0,1}.*, linear."""

    def __init__(self, width=64, classes=10, cifs=True, relevance="autograd"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for stage, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2), (8, 2)]):
            cout = width * mult
            blocks = []
            for i in range(2):
                probe = None
                if cifs and stage == 3:
                    probe = Probe(cout, classes, nonlinear=(i == 0), relevance=relevance)
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1, probe))
                cin = cout
            setattr(self, f"layer{stage + 1}", nn.ModuleList(blocks))
        self.linear = nn.Linear(8 * width, classes)

    def forward(self, x, labels=None):
        probes = []
        h = F.relu(self.bn1(self.conv1(x)))
        for stage in range(1, 5):
            for block in getattr(self, f"layer{stage}"):
                h = block(h, labels, probes)
        return self.linear(F.avg_pool2d(h, 4).flatten(1)), probes


class PreActBlock(nn.Module):
    """The WideResNet's block; names as the reference's: bn1, conv1, bn2, conv2, convShortcut."""

    def __init__(self, cin, cout, stride, probe=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        if not self.equal:
            self.convShortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)
        if probe is not None:
            self.Probe = probe

    def forward(self, x, labels, probes):
        a = F.relu(self.bn1(x))
        branch = a
        if hasattr(self, "Probe"):
            branch, p = self.Probe(a, labels)
            probes.append(p)
        y = self.conv2(F.relu(self.bn2(self.conv1(branch))))
        return y + (x if self.equal else self.convShortcut(a))


class Group(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.layer = nn.ModuleList(blocks)


class WideResNet(nn.Module):
    """Names as the reference's: conv1, block{1,2,3}.layer.{i}.*, bn1, fc, Probe (the head's)."""

    def __init__(self, depth=28, widen=10, classes=10, cifs=True, relevance="autograd"):
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        cin = 16
        for g, (cout, stride) in enumerate([(16 * widen, 1), (32 * widen, 2), (64 * widen, 2)]):
            blocks = []
            for i in range(n):
                probe = None
                if cifs and g == 2 and i == n - 1:
                    probe = Probe(cin, classes, nonlinear=True, relevance=relevance, hidden=240)
                blocks.append(PreActBlock(cin, cout, stride if i == 0 else 1, probe))
                cin = cout
            setattr(self, f"block{g + 1}", Group(blocks))
        self.bn1 = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, classes)
        if cifs:
            self.Probe = Probe(cin, classes, nonlinear=False, relevance=relevance)

    def forward(self, x, labels=None):
        probes = []
        h = self.conv1(x)
        for g in (self.block1, self.block2, self.block3):
            for block in g.layer:
                h = block(h, labels, probes)
        h = F.relu(self.bn1(h))
        if hasattr(self, "Probe"):
            h, p = self.Probe(h, labels)
            probes.append(p)
        return self.fc(F.avg_pool2d(h, 8).flatten(1)), probes


def joint_loss(logits, probes, labels, beta=2.0):
    ce = F.cross_entropy(logits, labels)
    if not probes:
        return ce
    probe_ce = sum(F.cross_entropy(p, labels) for p in probes)
    return 3.0 / (beta + 1.0) * (ce + beta / len(probes) * probe_ce)


class Amp:
    """PyTorch's mixed precision: autocast to float16 around forwards, and a GradScaler for the
    training loss. Disabled, both are no-ops (the default precision)."""

    def __init__(self, device, enabled):
        self.device = device
        self.enabled = enabled
        self.scaler = torch.amp.GradScaler(device.type, enabled=enabled)

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.enabled)


def pgd(model, x, labels, amp, eps=8 / 255, step=2 / 255, steps=10):
    """PGD-10 in eval mode from a random start; only the input gradient is taken (its sign: the
    loss is not scaled under AMP, as adversarial-training code using autocast does)."""
    model.eval()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with amp.autocast():
            logits, probes = model(x_adv)
            loss = joint_loss(logits, probes, labels)
        (grad,) = torch.autograd.grad(loss, x_adv)
        delta = (x_adv.detach() + step * grad.sign() - x).clamp(-eps, eps)
        x_adv = (x + delta).clamp(0, 1)
    return x_adv.detach()


def train_step(model, opt, x, labels, attack, amp):
    inputs = pgd(model, x, labels, amp) if attack else x
    model.train()
    with amp.autocast():
        logits, probes = model(inputs, labels)
        loss = joint_loss(logits, probes, labels)
    opt.zero_grad(set_to_none=True)
    amp.scaler.scale(loss).backward()
    amp.scaler.step(opt)
    amp.scaler.update()
    return loss


def eval_forward(model, x, amp):
    model.eval()
    with torch.no_grad(), amp.autocast():
        return model(x)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_step(device, fn, warmup, steps):
    times = []
    for i in range(warmup + max(steps, 1)):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return times


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def time_steps(device, steps, args, precision):
    """Times each of `steps` (name -> function) as `time_step` does; the rows of the JSON."""
    results = []
    for step, fn in steps.items():
        times = time_step(device, fn, args.warmup, args.steps)
        median = statistics.median(times)
        results.append({
            "step": step,
            "wall_median_ms": median,
            "wall_min_ms": min(times),
            "gpu_median_ms": None,
            "images_per_s": args.batch_size / (median / 1e3),
            "dispatches_per_step": None,
            "submits_per_step": None,
            "steps": len(times),
            "precision": precision,
        })
        print(f"{step:<18} {precision:<8} {median:>10.2f} ms  {args.batch_size / (median / 1e3):>9.0f} img/s")
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--model", default="resnet18-cifs", choices=["resnet18-cifs", "resnet18", "wrn-cifs", "wrn"])
    ap.add_argument("--width", type=int, help="ResNet width (64) or WRN widen factor (10)")
    ap.add_argument("--depth", type=int, default=28, help="WRN depth, 6n+4")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--relevance", default="autograd", choices=["autograd", "closed-form"])
    ap.add_argument("--amp", action="store_true", help="also time autocast float16 + channels_last (after the default)")
    ap.add_argument("--json")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    cifs = args.model.endswith("-cifs")
    if args.model.startswith("wrn"):
        args.width = args.width or 10
        model = WideResNet(args.depth, args.width, cifs=cifs, relevance=args.relevance).to(device)
    else:
        args.width = args.width or 64
        model = ResNet18(args.width, cifs=cifs, relevance=args.relevance).to(device)
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)

    # (precision, model, input): the AMP model starts from the same weights, copied before any
    # step of the default one, in channels_last with a channels_last input.
    runs = [("default", model, x)]
    if args.amp:
        fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
        runs.append(("amp-f16", fast, x.contiguous(memory_format=torch.channels_last)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {name}; torch {torch.__version__}; {args.model} width {args.width}, batch {args.batch_size}, "
          f"relevance {args.relevance}, {args.warmup} warm-up + {args.steps} timed steps each")
    results = []
    for precision, m, inp in runs:
        amp = Amp(device, precision != "default")
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
        steps = {
            "pgd10-at-step": lambda: train_step(m, opt, inp, labels, True, amp),
            "clean-train-step": lambda: train_step(m, opt, inp, labels, False, amp),
            "eval-forward": lambda: eval_forward(m, inp, amp),
        }
        results.extend(time_steps(device, steps, args, precision))
    if args.json:
        doc = {
            "tool": "benches/reference/pytorch_step.py",
            "adapter": name,
            "backend": "CUDA" if device.type == "cuda" else "CPU",
            "driver": f"CUDA {torch.version.cuda}" if device.type == "cuda" else "",
            "torch": torch.__version__,
            "tf32_convolutions": torch.backends.cudnn.allow_tf32,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "relevance": args.relevance,
            "amp": args.amp,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "commit": git_commit(),
            "model": args.model,
            "width": args.width,
            "depth": args.depth if args.model.startswith("wrn") else None,
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)


if __name__ == "__main__":
    main()
