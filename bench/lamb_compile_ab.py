"""LAMB's (or LARC's) first compiled step and its step time, by how its chain is compiled, side by side (BENCHMARKS.md,
session 11).

Their per-layer norms keep these chains from being elementwise. Until session 11 their compiled buckets ran under
`torch.compile` with dynamic shapes (one graph for the whole bucket); now they take the kernel built ahead of time
(static shapes), as elementwise chains do. On ResNet-34's 110 tensors this compares, each on its own copy of the
parameters with the same gradients:
- `before: under dynamo`: a subclass of `Paths` that runs these chains as before session 11;
- `now`: the engine as it is;
- `group path`: foreach, uncompiled; the reference for the parameters.
With a fresh inductor cache directory (the default; set `$TORCHINDUCTOR_CACHE_DIR` to reuse one) each contender's first
two steps include its cold compile (the contenders' graphs differ, so none warms another's); then interleaved rounds of
5 steps. `python bench/lamb_compile_ab.py [threads] [lamb|larc]`"""
import os, sys, tempfile
if 'TORCHINDUCTOR_CACHE_DIR' not in os.environ: os.environ['TORCHINDUCTOR_CACHE_DIR'] = tempfile.mkdtemp()
import time
import torch
import optcb, optcb.bench
from optcb.paths import Paths, TensorList
from _ab import interleaved

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
torch.set_flush_denormal(True)
which = sys.argv[2] if len(sys.argv) > 2 else 'lamb'
make = {'lamb': optcb.Lamb, 'larc': optcb.Larc}[which]
base = [torch.randn(s) * 0.1 for s in optcb.bench.param_sets()['resnet34']]
grads = [torch.randn_like(p) * 1e-3 for p in base]

class UnderDynamo(Paths):
    "Chains that reduce under torch.compile with dynamic shapes, one graph per bucket, as before session 11"
    def _compiled_run(self, parts):
        return [self.compiled_chain(p.flat)(TensorList(p.params, traced=True), p.state, p.hypers) for p in parts]

def contender(paths=None, compile=True):
    ps = [p.clone().requires_grad_() for p in base]
    opt = make(ps, lr=1e-3, compile=compile)
    if paths: opt.paths.__class__ = paths
    def step():
        for p, g in zip(ps, grads): p.grad = g.clone()
        opt.step()
    t = time.perf_counter()
    step(); step()
    return step, ps, time.perf_counter() - t

contenders = {'before: under dynamo': contender(UnderDynamo), 'now': contender(),
              'group path': contender(compile=False)}
print(f"ResNet-34, {which}, {torch.get_num_threads()} thread(s); first 2 steps (s): "
      + ', '.join(f"{n} {c[2]:.1f}" for n, c in contenders.items()))
m = {n: s * 1e3 for n, s in interleaved({n: c[0] for n, c in contenders.items()}, 7, 5).items()}
ref = torch.cat([p.detach().flatten() for p in contenders['group path'][1]])
print('ms per step (median of 7 interleaved rounds of 5): ' + ', '.join(f"{n} {v:.1f}" for n, v in m.items()))
print('per step / before: ' + ', '.join(f"{n} {v / m['before: under dynamo']:.3f}" for n, v in m.items()
                                        if not n.startswith('before')))
print(f'largest parameter difference to the group path after {2 + 7 * 5} steps: ' + ', '.join(
    f"{n} {(torch.cat([p.detach().flatten() for p in c[1]]) - ref).abs().max().item():.1e}"
    for n, c in contenders.items() if n != 'group path'))
