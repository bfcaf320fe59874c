#!/usr/bin/env python3
"""Reference numbers for the single-step adversarial training steps (FGSM-RS and N-FGSM), for
tests/single_step.rs. Run from anywhere (PyTorch CPU and safetensors from PyPI):

    python3 tests/reference/single_step_fixtures.py           # writes tests/fixtures/single_step/
    python3 tests/reference/single_step_fixtures.py --check   # recomputes, compares, writes nothing

The perturbation is computed as each paper's published code computes it, in float64:

  FGSM-RS   Wong, Rice and Kolter 2020, github.com/locuslab/fast_adversarial, CIFAR10/train_fgsm.py:
            delta ~ U(-eps, eps); delta = clamp(delta, lower - X, upper - X); gradient of the loss
            at X + delta; delta = clamp(delta + alpha sign(grad), -eps, eps);
            delta = clamp(delta, lower - X, upper - X); train on X + delta. alpha = 1.25 eps
            (their default: eps 8/255, alpha 10/255).
  N-FGSM    de Jorge et al. 2022, github.com/pdejorge/N-FGSM, train.py (defaults unif 2, clip -1):
            eta ~ U(-2 eps, 2 eps); eta = clamp(eta, lower - X, upper - X) (the noise IS clamped
            to the image range before the step); gradient at X + eta; delta = eta + alpha
            sign(grad); delta = clamp(delta, lower - X, upper - X); no clip to an eps-ball
            (clip -1); train on X + delta. alpha = eps (their commands: --alpha equal to --epsilon).

Both scripts normalise images by the dataset's mean and std inside the model and scale eps,
alpha and the limits to match; our models take images in [0, 1] with no normalisation layer, so
the limits here are 0 and 1 and the radii are in pixel units: the same perturbations.

Where this differs from the papers' code, on purpose, to be the method as cifs-wgpu runs it with
CIFS (docs/DESIGN.md, section 4): the attack's forward runs in evaluation mode (running batch
norm statistics, the CIFS evaluation pair rule) as our PGD-AT's does, whereas both papers' loops
leave the model in training mode for the attack; and the attack's loss is the CIFS joint loss
(beta 2; cross-entropy for the model without probes) instead of cross-entropy.

The random start is our GPU generator's stream (engine::ops::random::uniform, written out below
bit for bit with engine::Rng's first draw): the Rust test draws it from the same seed on the GPU
and checks it against `input.delta0`, so the attack under test runs from its own random start.

The model and batch are those of an oracle fixture (tests/fixtures/<base>.safetensors: a
width-8 ResNet18-CIFS and a plain ResNet-18, 4 images each, built here with
benches/reference/pytorch_step.py's modules, as tests/reference/parity_fixture_kinks.py does).
For each base and method, tests/fixtures/single_step/<base>_<method>.* holds:

  .safetensors  float64: input.delta0 (the start before clamping), attack.x_adv, and of the
                training step on attack.x_adv (train mode, labels, joint loss): train.loss,
                train.logits, train.probe<k>, train.grad.<parameter>, and the batch norms'
                running statistics after it, train.after.<bn>.running_mean|running_var.
  .json         the settings (eps, noise, step, radius, beta as float32 values, the seeds) and
                how the fixture was made.
  .kinks.json   the format of tests/fixtures/*.kinks.json for this fixture's one training
                forward (`passes.train`: the ReLU inputs under 1e-4 and their float64 values) and
                its one attack step (`pgd_steps[0].undecided`: the input-gradient entries whose
                magnitude is under 4x the largest error float32 PyTorch makes in that gradient at
                the same start, so that float32 may give them the other sign; each such pixel may
                then differ by up to 2 steps).

Before writing, the script checks that float32 cannot change the CIFS class pair in either
forward (the gaps between the probe logits that pick it are over 100x float32's error in them)
and that the kink threshold is over 4x float32's error at the ReLU inputs near zero.
"""

import argparse
import json
import pathlib
import re
import sys

import torch
from safetensors.torch import load_file, save_file

root = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(root / "benches" / "reference"))
sys.path.insert(0, str(root / "tests" / "reference"))
import pytorch_step as ps  # noqa: E402
import parity_fixture_kinks as pk  # noqa: E402  (its Recorder watches the ReLUs of ps's models)

FIXTURES = root / "tests" / "fixtures"
OUT = FIXTURES / "single_step"
BASES = ["cifs_w8_n4_seed0", "plain_w8_n4_seed0"]
METHODS = ["fgsm_rs", "n_fgsm"]
MASK = (1 << 64) - 1


# --- our generators, bit for bit --------------------------------------------------------------


def rng_first_u64(seed):
    """engine::Rng::new(seed).next_u64() (SplitMix64)."""
    state = (seed ^ 0x5851_F42D_4C95_7F2D) & MASK
    z = (state + 0x9E37_79B9_7F4A_7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & MASK
    return z ^ (z >> 31)


def pcg(v):
    """shaders/random.wgsl's hash on uint32 values held in int64 tensors."""
    m = 0xFFFF_FFFF
    state = (v * 747796405 + 2891336453) & m
    word = ((torch.bitwise_right_shift(state, (state >> 28) + 4) ^ state) * 277803737) & m
    return (word >> 22) ^ word


def gpu_uniform(shape, lo, hi, seed):
    """engine::ops::random::uniform: element i is lo + (hi - lo) u in float32, u = (h >> 8) / 2^24,
    h = pcg(i ^ pcg(seed_lo ^ pcg(seed_hi))). The GPU may fuse the multiply-add (one rounding
    fewer); the Rust test allows that one rounding."""
    n = 1
    for s in shape:
        n *= s
    key = pcg(torch.tensor(seed & 0xFFFF_FFFF) ^ pcg(torch.tensor(seed >> 32)))
    u = (pcg(torch.arange(n, dtype=torch.int64) ^ key) >> 8).to(torch.float32) * (1.0 / 16777216.0)
    lo, hi = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
    return (lo + (hi - lo) * u).reshape(shape)


def f32(v):
    return torch.tensor(v, dtype=torch.float32).item()


# --- the methods ------------------------------------------------------------------------------


def settings(method, eps64, beta):
    """The float32 values the library computes (SingleStep::fgsm_rs / n_fgsm)."""
    eps = f32(eps64)
    if method == "fgsm_rs":
        step = (torch.tensor(1.25, dtype=torch.float32) * torch.tensor(eps, dtype=torch.float32)).item()
        return {"method": method, "eps": eps, "noise": eps, "step": step, "radius": eps, "beta": beta}
    return {"method": method, "eps": eps, "noise": f32(2 * eps), "step": eps, "radius": None, "beta": beta}


def clamp(v, lo, hi):
    """The papers' clamp: torch.max(torch.min(v, hi), lo)."""
    return torch.max(torch.min(v, hi), lo)


def attack(model, x, y, delta0, s):
    """One step as the paper's code takes it, from the start `delta0`: (x_adv, gradient, the
    clamped start). Model in eval mode, the joint loss."""
    delta = clamp(delta0, -x, 1 - x)  # lower_limit - X, upper_limit - X
    start = delta.detach().clone()
    delta.requires_grad_(True)
    logits, probes = model(x + delta)
    (grad,) = torch.autograd.grad(ps.joint_loss(logits, probes, y, s["beta"]), delta)
    delta = delta.detach() + s["step"] * grad.sign()
    if s["radius"] is not None:  # Wong et al.: clamp(delta + alpha sign(grad), -eps, eps)
        delta = clamp(delta, torch.full_like(delta, -s["radius"]), torch.full_like(delta, s["radius"]))
    delta = clamp(delta, -x, 1 - x)
    return x + delta, grad, start


def pair_gaps(probes, training, y):
    """The smallest gap, over images and probes, between probe logits whose order picks the CIFS
    class pair: in evaluation mode (a and b the two largest, in either order) the second and the
    third largest; in training mode (a the label, b the second largest) also the first and the
    second."""
    gaps = []
    for p in probes:
        s = p.detach().sort(dim=1, descending=True).values
        gaps.append((s[:, 1] - s[:, 2]).abs().min().item())
        if training:
            gaps.append((s[:, 0] - s[:, 1]).abs().min().item())
    return min(gaps) if gaps else None


def train_pass(meta, t, x_adv, y, beta, dtype):
    """Train-mode forward with labels on x_adv, joint loss, backward: (model, logits, probes,
    loss, ReLU inputs)."""
    model = pk.model_at(meta, t, dtype)
    model.train()
    pk.rec.inputs = []
    logits, probes = model(x_adv.to(dtype), y)
    relus, pk.rec.inputs = pk.rec.inputs, None
    loss = ps.joint_loss(logits, probes, y, beta)
    loss.backward()
    return model, logits, probes, loss, relus


def make(base, method, rng_seed):
    meta = json.loads((FIXTURES / f"{base}.json").read_text())
    t = load_file(str(FIXTURES / f"{base}.safetensors"))
    x, y = t["input.x"], t["input.y"]
    s = settings(method, meta["eps"], meta["beta"])
    seed = rng_first_u64(rng_seed)
    delta0 = gpu_uniform(tuple(x.shape), -s["noise"], s["noise"], seed)

    # The step in float64, and its gradient again in float32 at the same start.
    model = pk.model_at(meta, t, torch.float64).eval()
    x_adv, g64, start = attack(model, x, y, delta0.double(), s)
    with torch.no_grad():
        eval_gap = pair_gaps(model(x + start)[1], False, y)
    m32 = pk.model_at(meta, t, torch.float32).eval()
    start32 = start.float().requires_grad_(True)
    logits32, probes32 = m32(x.float() + start32)
    (g32,) = torch.autograd.grad(ps.joint_loss(logits32, probes32, y, s["beta"]), start32)
    err = (g64 - g32.double()).abs().max().item()
    flat = g64.flatten()
    undecided = [[i, flat[i].item()] for i in (flat.abs() < 4 * err).nonzero().flatten().tolist()]

    # The training step on the adversarial images, in float64 and (for the kinks) float32.
    model, logits, probes, loss, relus64 = train_pass(meta, t, x_adv, y, s["beta"], torch.float64)
    *_, probes_32, _, relus32 = train_pass(meta, t, x_adv, y, s["beta"], torch.float32)
    train_gap = pair_gaps(probes, True, y)
    probe_err = max([(a.detach() - b.detach().double()).abs().max().item() for a, b in zip(probes, probes_32)], default=0.0)
    near = [((a[1] - b[1].double()).abs(), a[1].abs() < 10 * pk.THRESHOLD) for a, b in zip(relus64, relus32)]
    kink_err = max(d[n].max().item() for d, n in near if n.any())

    out = {"input.delta0": delta0.double(), "attack.x_adv": x_adv.detach(), "train.loss": loss.detach().reshape(1), "train.logits": logits.detach()}
    out.update({f"train.probe{k}": p.detach() for k, p in enumerate(probes)})
    out.update({f"train.grad.{n}": p.grad for n, p in model.named_parameters()})
    out.update({f"train.after.{n}": b for n, b in model.named_buffers() if "running" in n})
    doc = {
        **s,
        "base": f"{base}.safetensors",
        "rng_seed": rng_seed,
        "start_seed": seed,
        "attack_mode": "eval",
        "made_by": f"tests/reference/single_step_fixtures.py (torch {torch.__version__})",
        "pair_gap": {"attack": eval_gap, "train": train_gap, "float32_probe_error": probe_err},
    }
    kinks = {
        "fixture": f"{base}_{method}.safetensors",
        "made_by": "tests/reference/single_step_fixtures.py",
        "threshold": pk.THRESHOLD,
        "float32_error": {"train": kink_err},
        "relu_inputs": {"train": sum(v.numel() for _, v in relus64)},
        "passes": {"train": pk.kinks(relus64)},
        "pgd_steps": [{"float32_error": err, "smallest": flat.abs().min().item(), "undecided": undecided}],
    }
    problems = []
    if pk.THRESHOLD < 4 * kink_err:
        problems.append(f"the kink threshold {pk.THRESHOLD:.0e} is under 4x float32's error {kink_err:.1e}")
    gap = min(eval_gap, train_gap) if probes else None
    if gap is not None and gap < 100 * max(probe_err, 1e-7):
        problems.append(f"a probe-logit gap {gap:.1e} within 100x float32's error {probe_err:.1e}: float32 may pick another class pair")
    listed = sum(len(v) for v in kinks["passes"]["train"].values())
    print(
        f"{base} {method}: start seed {seed:#018x}; {len(undecided)} undecided pixels (float32 gradient error {err:.1e}); "
        f"{listed} ReLU inputs under {pk.THRESHOLD:.0e} (float32 moves them by up to {kink_err:.1e}); "
        f"smallest pair gap {gap if gap is None else f'{gap:.1e}'}; loss {loss.item():.6f}"
    )
    return out, doc, kinks, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="recompute and compare with the stored files, write nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the same float sums on every machine
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(exist_ok=True)
    failed = False
    for b, base in enumerate(BASES):
        for m, method in enumerate(METHODS):
            out, doc, kinks, problems = make(base, method, rng_seed=31 + 2 * b + m)
            stem = OUT / f"{base}_{method}"
            for p in problems:
                print("  FAIL:", p)
            failed |= bool(problems)
            if args.check:
                stored = load_file(str(stem.with_suffix(".safetensors")))
                worst = max(pk.rel(out[k], stored[k]) for k in out)
                same = set(stored) == set(out) and worst < pk.MATCH
                print(f"  {stem.name}: {'as stored' if same else 'DIFFERS from what is stored'} (worst relative difference {worst:.1e})")
                failed |= not same
            elif not problems:
                save_file({k: v.contiguous() for k, v in out.items()}, str(stem.with_suffix(".safetensors")))
                stem.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
                text = re.sub(r"\[\s+(\d+),\s+(\S+)\s+\]", r"[\1, \2]", json.dumps(kinks, indent=1)) + "\n"
                stem.with_suffix(".kinks.json").write_text(text)
                print(f"  wrote {stem}.*")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
