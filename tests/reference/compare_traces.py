#!/usr/bin/env python3
"""Compares two backward traces written by `tests/parity.rs::trace_train_step` (one per device),
node by node in backward order, and prints every node whose value or gradient differs by more
than --tol (relative norm error), the first one marked: the op that made that node, or one of its
consumers' backward, is where the devices part ways.

    python3 tests/reference/compare_traces.py a.safetensors b.safetensors [--tol 1e-5]
"""
import argparse

import numpy as np
from safetensors.numpy import load_file


def rel(a, b):
    d = np.linalg.norm(a.astype(np.float64) - b.astype(np.float64))
    n = max(np.linalg.norm(b.astype(np.float64)), 1e-30)
    return d / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    a, b = load_file(args.a), load_file(args.b)
    if sorted(a) != sorted(b):
        print(f"the traces have different nodes ({len(a)} vs {len(b)} keys)")
    first = True
    for k in sorted(set(a) & set(b)):
        e = rel(a[k], b[k])
        if e > args.tol:
            print(f"{'FIRST ' if first else '      '}{k} {tuple(a[k].shape)} rel err {e:.2e}")
            first = False
    if first:
        print(f"all {len(a)} traced tensors agree within {args.tol:g}")


if __name__ == "__main__":
    main()
