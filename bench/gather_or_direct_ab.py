"""Tiny tensors gathered into one buffer, or each stepped in its own loop of the kernel, side by side (BENCHMARKS.md,
session 10).

`n` tensors of `size` values (default 1,000 of 1,000, `optcb bench`'s small set), fresh gradient tensors every step
(the Learner loop): torch's fused AdamW, optcb's default (tiny tensors gathered: copied into one buffer each for
parameters, gradients and state, stepped, copied back) and optcb with gathering off (`gather_max_numel = 0`: a loop per
tensor in one kernel, nothing copied). Prints the first three steps' time (the kernel's build: inductor's cache keys
on the thread count, so the first run at each count compiles cold) and the median of 7 interleaved rounds of 20 steps.
`python bench/gather_or_direct_ab.py threads [n size]`"""
import sys, time
import torch
import optcb
from _ab import interleaved

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.set_flush_denormal(True)
n, size = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (1000, 1000)
base = [torch.randn(size) * 0.1 for _ in range(n)]
grads = [torch.randn(size) * 1e-3 for _ in range(n)]

def contender(kind):
    ps = [b.clone().requires_grad_() for b in base]
    if kind == 'torch fused': opt = torch.optim.AdamW(ps, lr=1e-3, fused=True)
    else:
        opt = optcb.Adam(ps, lr=1e-3)
        if kind == 'direct': opt.paths.gather_max_numel = 0
    def step():
        for p, g in zip(ps, grads): p.grad = g.clone()
        opt.step()
    t = time.perf_counter()
    for _ in range(3): step()
    print(f"{kind}: first 3 steps {time.perf_counter() - t:.1f} s")
    return step

steps = {k: contender(k) for k in ('torch fused', 'gathered', 'direct')}
m = {k: s * 1e3 for k, s in interleaved(steps, rounds=7, per_round=20).items()}
print(f"{n} x {size}, {torch.get_num_threads()} thread(s), ms per step: "
      + ', '.join(f"{k} {v:.2f}" for k, v in m.items())
      + f"; gathered / fused {m['gathered'] / m['torch fused']:.2f}, direct / fused {m['direct'] / m['torch fused']:.2f}"
      + f", direct / gathered {m['direct'] / m['gathered']:.2f}")
