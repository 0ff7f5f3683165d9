"""Gathered tiny parameters copied in every step (now) against skipped while their version counter is unchanged
(before), side by side (BENCHMARKS.md, session 9).

A write through `p.data` bumps no version counter, so the skip stepped stale values after such a write (fastai's WGAN
clips its critic's weights so); this measures what the always-copy costs. 1,000 tensors of 1,000 values, optcb Adam's
default step (gathered, one kernel), with fresh gradient tensors each step (the Learner loop) and with the same
gradients kept (steady state); torch's fused AdamW in the same rounds. Medians of 7 interleaved rounds of 50 steps;
the fresh-gradient figures include the 1,000 clones that stand in for backward, for every contender.
`python bench/gather_params_ab.py [threads]`"""
import sys
import torch
import optcb
from optcb.paths import _Scratch
from _ab import interleaved

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.set_flush_denormal(True)

class SkipParams(_Scratch):
    "The gathered buffers as before: parameters copied in only when their identity, version or storage changed"
    def gather(self, params, states):
        if not self.unchanged('params', params):
            torch._foreach_copy_(self.views['params'], params)
            self.synced('params', params)
        for k, ts in (('grads', [p.grad for p in params]), *((k, [s[k] for s in states]) for k in self.bufs)):
            if not self.unchanged(k, ts):
                torch._foreach_copy_(self.views[k], ts)
                self.synced(k, ts)
    def buffer(self, k): return self.P if k == 'params' else super().buffer(k)
    def scatter(self, k, tensors, views):
        super().scatter(k, tensors, views)
        if k == 'params': self.synced(k, tensors)

torch.manual_seed(0)
grads = [torch.randn(1000) * 1e-3 for _ in range(1000)]
def contender(make):
    ps = [torch.nn.Parameter(torch.randn(1000) * 0.1) for _ in range(1000)]
    return ps, make(ps)
opts = {'copy params (now)': contender(lambda ps: optcb.Adam(ps, lr=1e-3)),
        'skip unchanged (before)': contender(lambda ps: optcb.Adam(ps, lr=1e-3)),
        'torch fused AdamW': contender(lambda ps: torch.optim.AdamW(ps, lr=1e-3, betas=(0.9, 0.99), eps=1e-5,
                                                                    fused=True))}

def stepper(ps, opt, fresh):
    "One step with new gradient tensors, or (`fresh=False`) with the gradients kept from the step before"
    def step():
        if fresh:
            for p, g in zip(ps, grads): p.grad = g.clone()
        opt.step()
    if not fresh:
        for p, g in zip(ps, grads): p.grad = g
    return step

for name, (ps, opt) in opts.items():
    step = stepper(ps, opt, True)
    for _ in range(3): step()  # state created, kernel built
    if 'before' in name:
        for sc in opt.paths._scratch.values(): sc.__class__ = SkipParams
print(f"{torch.get_num_threads()} thread(s), ms per step, medians of 7 interleaved rounds of 50 steps")
for fresh in (True, False):
    steps = {n: stepper(ps, opt, fresh) for n, (ps, opt) in opts.items()}
    m = {n: s * 1e3 for n, s in interleaved(steps, rounds=7, per_round=50).items()}
    now, before, fused = m.values()
    print(f"  {'fresh gradients (Learner loop)' if fresh else 'gradients kept (steady state)':31}"
          + ', '.join(f"{n} {v:.2f}" for n, v in m.items())
          + f"; now/before {now / before:.3f}, before/fused {before / fused:.2f}, now/fused {now / fused:.2f}")
