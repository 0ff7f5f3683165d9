"""One kernel call per param group against one per bucket, side by side (BENCHMARKS.md, session 8).

The digits default's Learner (fastai marks biases and norm weights do_wd=False: two buckets in one param group), one
warm-up epoch, then two copies of its optimizer stepped with the same gradients in interleaved rounds of 300 steps: the
engine as it is (the group's buckets in one kernel) and a subclass that steps each bucket on its own, as before.
`python bench/group_kernel_ab.py [threads]`"""
import copy, statistics, sys, time
import torch
import optcb
from optcb.compare import digits_folder, make_dls, make_learner, DIGITS

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.set_flush_denormal(True)
learn = make_learner(make_dls(digits_folder(), DIGITS, device='cpu'), DIGITS, optcb.Adam)
with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 3e-3)

class PerBucket(type(learn.opt)):
    "Each compiled bucket run by its own kernel call (no `parts` to join)"
    def _step_bucket(self, *args, parts=None, **kwargs): return super()._step_bucket(*args, **kwargs)

per_bucket = copy.deepcopy(learn.opt); per_bucket.__class__ = PerBucket
opts = {'one call per group': learn.opt, 'one call per bucket': per_bucket}
params = {n: [p for g in o.param_groups for p in g['params']] for n, o in opts.items()}
grads = [torch.randn_like(p) * 1e-3 for p in params['one call per group']]

def step(n):
    for p, g in zip(params[n], grads): p.grad = g.clone()
    opts[n].step()

for n in opts:
    for _ in range(3): step(n)
times = {n: [] for n in opts}
for _ in range(5):
    for n in opts:
        t = time.perf_counter()
        for _ in range(300): step(n)
        times[n].append((time.perf_counter() - t) / 300 * 1e6)
kernels = ', '.join(f"{n} {len(o.paths._kernels)}" for n, o in opts.items())
print(f"{torch.get_num_threads()} thread(s); kernels: {kernels}")
for n, ts in times.items():
    print(f"{n:22} µs per step (fresh gradients set + step), 5 rounds: {[round(t) for t in ts]}, "
          f"median {statistics.median(ts):.0f}")
