"""Where a small model's compiled step spends its time, stage by stage (BENCHMARKS.md, session 11).

The digits default (one param group, its one compiled bucket) stepped by `opt.step()` in the Learner loop (new
gradient tensors every step), with a clock around the engine's own functions for each stage: the parameters with a
gradient and the sparse check (`Optimizer._stepped`, `_check_sparse`); bucketing (`Paths.buckets`); the parts (the
path decided, the state and 0-d hyperparameters gathered for the kernel: `Optimizer._step_bucket`); the structure key
(`_Kernel.key`); the kernel call (`_Kernel.__call__`: its arguments, aot autograd's wrapper, inductor's code); storing
the results (`_put_back`). "The rest" is the step less these: torch's `Optimizer.step` wrapper, the kernel's lookup,
the loops between. Rounds with the clocks and without alternate, so the clocks' own cost shows as the difference.
`python bench/step_pieces.py [threads]`"""
import collections, sys, time
import torch
import optcb, optcb.paths
from optcb.optimizer import Optimizer
from optcb.paths import Paths, _Kernel
from optcb.compare import digits_folder, make_dls, make_learner, DIGITS

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.set_flush_denormal(True)
ps = list(make_learner(make_dls(digits_folder(), DIGITS, device='cpu'), DIGITS, optcb.Adam).model.parameters())
grads = [torch.randn_like(p) * 1e-3 for p in ps]
opt = optcb.Adam(ps, lr=1e-3)
clock, spent = time.perf_counter, collections.Counter()
STAGES = [(Optimizer, '_stepped', 'parameters with a gradient'),
          (Optimizer, '_check_sparse', 'parameters with a gradient'), (Paths, 'buckets', 'bucketing'),
          (Optimizer, '_step_bucket', 'parts'), (_Kernel, 'key', 'structure key'),
          (_Kernel, '__call__', 'kernel call'), (optcb.paths, '_put_back', 'results stored')]
originals = [owner.__dict__[name] for owner, name, _ in STAGES]

def clocked(fn, stage):
    def wrapper(*args, **kwargs):
        t = clock()
        try: return fn(*args, **kwargs)
        finally: spent[stage] += clock() - t
    return wrapper

def clocks(on):
    "Put the clocked stages in place of the engine's functions, or the functions back"
    for (owner, name, stage), f in zip(STAGES, originals):
        if not on: setattr(owner, name, f)
        elif isinstance(f, staticmethod): setattr(owner, name, staticmethod(clocked(f.__func__, stage)))
        else: setattr(owner, name, clocked(f, stage))

def run(n):
    for _ in range(n):
        for p, g in zip(ps, grads): p.grad = g.clone()
        opt.step()

run(5)  # the state, then the kernel
n, rounds, totals = 300, 7, {True: [], False: []}
for _ in range(rounds):
    for on in (False, True):
        clocks(on)
        t = clock(); run(n); totals[on].append((clock() - t) / n)
clocks(False)
step = {on: sorted(v)[rounds // 2] * 1e6 for on, v in totals.items()}
per_step = {k: v / (n * rounds) * 1e6 for k, v in spent.items()}
t = clock()
for _ in range(n):
    for p, g in zip(ps, grads): p.grad = g.clone()
handover = (clock() - t) / n * 1e6
rest = step[True] - handover - sum(per_step.values())
print(f"digits model, {torch.get_num_threads()} thread(s), us per step (median of {rounds} rounds of {n}, with the "
      f"gradients' hand-over, {handover:.0f}): without clocks {step[False]:.0f}, with clocks {step[True]:.0f}")
print('with clocks, mean us per step: ' + ', '.join(f"{k} {v:.1f}" for k, v in per_step.items())
      + f", the rest {rest:.1f}")
