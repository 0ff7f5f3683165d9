"""How a 0-d operand is hoisted out of the fused loop, side by side (BENCHMARKS.md, session 9).

`torch.stack((x, x)).amax()` (before) against `x.expand(2).amax()` (now): both are the value itself, computed once in
a loop of its own, but the stack is one more buffer and two views that every kernel call allocates per scalar. Two
copies of the digits default's model, one optimizer each, kernels built with each form; then interleaved rounds of 300
steps with the same fresh gradients. `python bench/hoist_ab.py [threads]`"""
import copy, sys
import torch
import optcb
from _ab import interleaved
import optcb.tensorlist as tl
from optcb.compare import digits_folder, make_dls, make_learner, DIGITS

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.set_flush_denormal(True)
learn = make_learner(make_dls(digits_folder(), DIGITS, device='cpu'), DIGITS, optcb.Adam)
with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 3e-3)
forms = {'stack': lambda x: torch.stack((x, x)).amax() if isinstance(x, torch.Tensor) and x.dim() == 0 else x,
         'expand': tl._hoist}

def contender(hoist):
    "An optimizer over a copy of the model, its kernel traced (on its third step) with `hoist`"
    tl._hoist = hoist
    ps = list(copy.deepcopy(learn.model).parameters())
    opt = optcb.Adam([{'params': [p for p in ps if p.ndim > 1]}, {'params': [p for p in ps if p.ndim <= 1], 'wd': 0.}],
                     lr=1e-3)
    grads = [torch.randn_like(p) * 1e-3 for p in ps]
    def step():
        for p, g in zip(ps, grads): p.grad = g.clone()
        opt.step()
    for _ in range(5): step()
    return step

steps = {n: contender(h) for n, h in forms.items()}
m = {n: s * 1e6 for n, s in interleaved(steps, rounds=7, per_round=300).items()}
print(f"{torch.get_num_threads()} thread(s), us per step (median of 7 interleaved rounds of 300): "
      + ', '.join(f"{n} {v:.0f}" for n, v in m.items()) + f"; expand/stack {m['expand'] / m['stack']:.3f}")
