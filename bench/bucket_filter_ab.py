"""Bucketing 1,000 parameters: `Paths.buckets` as it is (the `_passed` filter written inline) against two alternatives
measured in the session 9 review (BENCHMARKS.md): the filter shared with `_passed` through a method, and a key built
from the state's key and type tuples with `operator.itemgetter` for the numbers. Best of 5 x 30 calls, three rounds.
`python bench/bucket_filter_ab.py`"""
import operator, timeit
import torch
import optcb

torch.set_num_threads(1)
T = torch.Tensor
ps = [torch.nn.Parameter(torch.randn(1000)) for _ in range(1000)]
opt = optcb.Adam(ps, lr=1e-3, compile=False)
for p in ps: p.grad = torch.randn_like(p) * 1e-3
opt.step()
states, read = [opt.state[p] for p in ps], opt.paths.read

def seen(s):  # what `_passed` keeps, as pairs: one place for the rule
    return s.items() if read is None else [(k, v) for k, v in s.items() if k in read or isinstance(v, T)]

def shared():
    buckets = {}
    for p, s in zip(ps, states):
        grad = p.grad
        key = (p.device, p.dtype, None if grad is None else grad.dtype, None,
               *[(k, T) if isinstance(v, T) else (k, v) for k, v in seen(s)])
        b = buckets.setdefault(key, ([], [])); b[0].append(p); b[1].append(s)
    return list(buckets.values())

def itemgetter_keys():
    buckets, plans = {}, {}
    for p, s in zip(ps, states):
        grad = p.grad
        ks, vals = tuple(s), tuple(s.values())
        types = tuple(map(type, vals))
        plan = plans.get((ks, types))
        if plan is None:
            idx = [i for i, (k, t) in enumerate(zip(ks, types)) if (read is None or k in read) and not issubclass(t, T)]
            plan = plans[(ks, types)] = operator.itemgetter(*idx) if idx else (lambda v: ())
        key = (p.device, p.dtype, None if grad is None else grad.dtype, None, ks, types, plan(vals))
        b = buckets.setdefault(key, ([], [])); b[0].append(p); b[1].append(s)
    return list(buckets.values())

variants = {'Paths.buckets (inline)': lambda: opt.paths.buckets(ps, states), 'filter shared': shared,
            'itemgetter key': itemgetter_keys}
assert all(len(f()) == 1 for f in variants.values())  # all put the 1,000 parameters in one bucket
for _ in range(3):
    print(', '.join(f"{n} {min(timeit.repeat(f, number=30, repeat=5)) / 30 * 1e6:.0f} us" for n, f in variants.items()))
