"""Where a small model's compiled step spends its time, stage by stage (BENCHMARKS.md, session 11).

The stages of `Optimizer.step` for the digits default (one param group, its one compiled bucket), written out here
with a clock between them and run in the Learner loop (new gradient tensors every step): the parameters with a
gradient and the sparse check; bucketing; the parts (the path decided, the state and 0-d hyperparameters gathered for
the kernel); the structure key; its lookup; the kernel call; storing the results. A copy of the engine's loop, so
that each stage can be timed: if `Optimizer.step` changes, change this with it (the script checks that both end on
the same parameters). `python bench/step_pieces.py [threads]`"""
import collections, sys, time
import torch
import optcb
from optcb.paths import _Kernel
from optcb.compare import digits_folder, make_dls, make_learner, DIGITS

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.set_flush_denormal(True)
base = list(make_learner(make_dls(digits_folder(), DIGITS, device='cpu'), DIGITS, optcb.Adam).model.parameters())
grads = [torch.randn_like(p) * 1e-3 for p in base]
clock, spent = time.perf_counter, collections.Counter()

def staged_step(opt):
    "`opt.step()` for a step whose buckets are all compiled and built, with the time of each stage added to `spent`"
    t0 = clock()
    stepped, among = opt._stepped()
    for params in stepped: opt._check_sparse(params)
    t1 = clock()
    spent['parameters with a gradient'] += t1 - t0
    parts = []
    for group, params in zip(opt.param_groups, stepped):
        hypers = opt._hypers(group)
        buckets = opt.paths.buckets(params, [opt.state[p] for p in params])
        t2 = clock()
        for bucket, states in buckets: opt._step_bucket(bucket, states, hypers, among=among, parts=parts)
        t3 = clock()
        spent['bucketing'] += t2 - t1; spent['parts'] += t3 - t2
        t1 = t3
    triples = [(p.params, p.state, p.hypers) for p in parts]
    key = _Kernel.key(triples)
    t4 = clock()
    kernel = opt.paths._kernels[key]
    t5 = clock()
    outs = kernel(triples)
    t6 = clock()
    for p, out in zip(parts, outs): p.done(out)
    t7 = clock()
    for k, v in (('structure key', t4 - t3), ('lookup', t5 - t4),
                 ('kernel call', t6 - t5), ('results stored', t7 - t6)):
        spent[k] += v

def run(step, n):
    for _ in range(n):
        for p, g in zip(ps, grads): p.grad = g.clone()
        step()

copies = {}
for name in ('optimizer.step', 'staged'):
    ps = [p.detach().clone().requires_grad_() for p in base]
    opt = optcb.Adam(ps, lr=1e-3)
    run(opt.step, 5)
    copies[name] = (ps, opt)
n, rounds, totals = 300, 7, collections.defaultdict(list)
with torch.no_grad():
    for r in range(rounds):
        for name, (ps, opt) in copies.items():
            t = clock()
            run(opt.step if name == 'optimizer.step' else lambda: staged_step(opt), n)
            totals[name].append((clock() - t) / n)
total = {k: sorted(v)[rounds // 2] * 1e6 for k, v in totals.items()}
assert all(torch.equal(a, b) for a, b in zip(*(c[0] for c in copies.values()))), 'the staged step diverged'
print(f"digits model, {torch.get_num_threads()} thread(s), us per step with the gradients' hand-over (median of "
      f"{rounds} rounds of {n}): optimizer.step {total['optimizer.step']:.0f}, staged copy {total['staged']:.0f}")
print('staged, mean us per step: ' + ', '.join(f"{k} {v / (n * rounds) * 1e6:.1f}" for k, v in spent.items()))
