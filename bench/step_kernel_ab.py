"""One kernel call per step against one per param group, side by side (BENCHMARKS.md, session 10).

The digits default's model with the two param groups a plain PyTorch loop makes (weights with weight decay; biases and
norm weights without, 490 values: under `compile_min_numel`), stepped by: the engine as it is (the step's size decides
whether to compile, and every group's compiled buckets share one kernel call), a subclass that steps group by group as
before (each group's size decides, one call per group: the small group on the uncompiled group path), and torch's
fused AdamW with the same groups. Each contender owns a copy of the parameters and reads the same gradients, handed
over as new tensors each step (the Learner loop); interleaved rounds of 300 steps. With a set of `optcb bench`
(`resnet34`, `transformer`): its shapes, grouped the same way (1-d tensors without weight decay: 17,024 and 40,960
values), rounds of 20 steps. `python bench/step_kernel_ab.py [threads] [set]`"""
import sys
import torch
import optcb, optcb.bench
from _ab import interleaved
from optcb.compare import digits_folder, make_dls, make_learner, DIGITS

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.set_flush_denormal(True)
which = sys.argv[2] if len(sys.argv) > 2 else 'digits'
if which == 'digits':
    base = list(make_learner(make_dls(digits_folder(), DIGITS, device='cpu'), DIGITS, optcb.Adam).model.parameters())
else: base = [torch.randn(s) * 0.1 for s in optcb.bench.param_sets()[which]]
per_round = 300 if which == 'digits' else 20
grads = [torch.randn_like(p) * 1e-3 for p in base]

class PerGroup(optcb.Optimizer):
    "Each param group decided on its own size and stepped by its own kernel call, as before session 10"
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group['params'] if p.grad is not None]
            if not params: continue
            hypers, among, parts = self._hypers(group), sum(p.numel() for p in params), []
            for bucket, states in self.paths.buckets(params, [self.state[p] for p in params]):
                self._step_bucket(bucket, states, hypers, among=among, parts=parts)
            self.paths.run_parts(parts)

def contender(make):
    ps = [p.detach().clone().requires_grad_() for p in base]
    opt = make([{'params': [p for p in ps if p.ndim > 1]}, {'params': [p for p in ps if p.ndim <= 1], 'wd': 0.}])
    def step():
        for p, g in zip(ps, grads): p.grad = g.clone()
        opt.step()
    for _ in range(5): step()
    return step, opt, ps

def per_group(groups):
    opt = optcb.Adam(groups, lr=1e-3)
    opt.__class__ = PerGroup  # optcb.Adam builds an Optimizer; this one steps it group by group
    return opt

def fused(groups):
    for g in groups: g['weight_decay'] = g.pop('wd', 0.01)
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), eps=1e-5, fused=True)

contenders = {'one call per step': contender(lambda g: optcb.Adam(g, lr=1e-3)),
              'one call per group': contender(per_group), 'torch fused': contender(fused)}
opt = contenders['one call per step'][1]
print('one call per step:', [(b.group, b.path) for b in opt.plan()])
print('one call per group:', [(i, opt.paths.decide(g['params'], [opt.state[p] for p in g['params']],
                                                   among=sum(p.numel() for p in g['params']))[0])
                              for i, g in enumerate(opt.param_groups)])
m = {n: s * 1e6 for n, s in interleaved({n: c[0] for n, c in contenders.items()}, 7, per_round).items()}
ps = {n: torch.cat([p.detach().flatten() for p in c[2]]) for n, c in contenders.items()}
diff = ', '.join(f"{n} {(ps[n] - ps['torch fused']).abs().max().item():.2e}" for n in ps if n != 'torch fused')
print(f"{which}, {torch.get_num_threads()} thread(s), us per step (median of 7 interleaved rounds of {per_round}): "
      + ', '.join(f"{n} {v:.0f}" for n, v in m.items()))
step, group, fused = m['one call per step'], m['one call per group'], m['torch fused']
print(f"per step / per group {step / group:.3f}; per step / fused {step / fused:.3f}; per group / fused {group / fused:.3f}"
      f"; largest parameter difference to fused after {5 + 7 * per_round} steps: {diff}")
