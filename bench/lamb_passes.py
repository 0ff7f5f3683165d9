"""How LAMB's step splits into passes over memory on this CPU, against Adam's one pass (BENCHMARKS.md, session 8).

One tensor of 8M float32 values, each variant compiled by torch.compile, timed interleaved; prints the median time of
each and its ratio to Adam's fused loop. `python bench/lamb_passes.py [threads]`"""
import statistics, sys, time
import torch

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.set_flush_denormal(True)
N, lr, mom, sqr_mom, eps, step = 8 * 2**20, 1e-3, 0.9, 0.99, 1e-6, 10
p, g, m = (torch.randn(N) * s for s in (0.1, 1e-3, 1e-3))
v, u = torch.rand(N) * 1e-6, torch.empty(N)

def moments(g, m, v):
    m.lerp_(g, 1 - mom); v.mul_(sqr_mom).addcmul_(g, g, value=1 - sqr_mom)

def update(m, v): return (m / (1 - mom**step)).div_((v / (1 - sqr_mom**step)).sqrt_().add_(eps))

def trust(r1, r2): return torch.where((r1 == 0) | (r2 == 0), 1., torch.clamp(r1 / r2, max=10.))

def adam(p, g, m, v):
    moments(g, m, v); p.add_(update(m, v), alpha=-lr)

def lamb(p, g, m, v):  # as optcb's lamb_step: inductor plans the passes
    moments(g, m, v); upd = update(m, v)
    p.add_(upd.mul_(trust(p.norm(), upd.norm())), alpha=-lr)

def moments_and_update(g, m, v, u):  # pass 1 of the split: u written out
    moments(g, m, v); u.copy_(update(m, v))

def apply(p, u, r1, r2): p.add_(u * trust(r1, r2), alpha=-lr)

def moments_and_sum(g, m, v):  # one loop that updates the moments and reduces ‖u‖²
    moments(g, m, v); upd = update(m, v); return (upd * upd).sum()

c_adam, c_lamb, c_mu, c_apply, c_sum = map(torch.compile, (adam, lamb, moments_and_update, apply, moments_and_sum))
norm = torch.linalg.vector_norm

def split():  # elementwise loops compiled, the two norms by ATen
    c_mu(g, m, v, u); c_apply(p, u, norm(p), norm(u))

variants = {'adam (one pass)': lambda: c_adam(p, g, m, v), 'lamb (inductor)': lambda: c_lamb(p, g, m, v),
            'lamb split (2 loops + 2 ATen norms)': split,
            '  loop: moments + write u': lambda: c_mu(g, m, v, u),
            '  loop: moments + reduce |u|^2': lambda: c_sum(g, m, v),
            '  loop: p -= lr*trust*u': lambda: c_apply(p, u, *norms),
            '  ATen norm of one tensor': lambda: norm(p)}
norms = (norm(p), norm(u))
for f in variants.values(): f(); f()
times = {k: [] for k in variants}
for _ in range(7):
    for k, f in variants.items():
        t = time.perf_counter(); f(); times[k].append(time.perf_counter() - t)
base = statistics.median(times['adam (one pass)'])
print(f"{N:,} float32 values, {torch.get_num_threads()} thread(s), median of 7 interleaved runs")
for k, ts in times.items():
    print(f"{k:38} {statistics.median(ts) * 1e3:7.2f} ms  {statistics.median(ts) / base:5.2f}x adam")
