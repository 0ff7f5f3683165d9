"""A small model's step against what PyTorch's own compiled optimizer reaches, side by side (BENCHMARKS.md, session 11).

The end-to-end target of issue 11 asks optcb's step on the digits default (14 tensors, 98,970 values, one param group
as fastai's `Learner` makes) to cost no more than torch's fused AdamW. This times, in the Learner loop (new gradient
tensors every step), interleaved rounds of 300 steps:
- optcb's Adam as it is (the step's one ahead-of-time kernel, behind optcb's structure key);
- the same kernel called alone on the same tensors, as the step calls it (`_Kernel.__call__`: its arguments, aot
  autograd's runtime wrapper, inductor's code): what is left of the step is the engine's Python around it;
- torch's fused AdamW (one C++ call);
- torch's foreach AdamW with its step under `torch.compile`, PyTorch's own recipe for a compiled optimizer, whose
  checks between steps are dynamo's guards, evaluated in C++;
- torch's foreach AdamW uncompiled.
Each contender owns a copy of the parameters and reads the same gradients. `python bench/compiled_step_floor.py
[threads]`"""
import sys, time
import torch
import optcb
import optcb.paths
from _ab import interleaved
from optcb.compare import digits_folder, make_dls, make_learner, DIGITS

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.set_flush_denormal(True)
base = list(make_learner(make_dls(digits_folder(), DIGITS, device='cpu'), DIGITS, optcb.Adam).model.parameters())
grads = [torch.randn_like(p) * 1e-3 for p in base]
hypers = dict(lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)

def contender(make, wrap=lambda opt: opt.step):
    ps = [p.detach().clone().requires_grad_() for p in base]
    opt, fns = make(ps), []
    def step():
        for p, g in zip(ps, grads): p.grad = g.clone()
        fns[0]()
    t = time.perf_counter()
    fns.append(opt.step)
    for _ in range(4): step()
    fns[0] = wrap(opt)  # after the first steps: the kernel alone needs a built kernel, and state
    step()
    return step, opt, ps, time.perf_counter() - t

def kernel_alone(opt):
    "A function that calls the kernel of `opt`'s next step as that step calls it, with what it was given"
    calls, call = [], optcb.paths._Kernel.__call__
    def record(kernel, parts):
        calls.append((kernel, parts))
        return call(kernel, parts)
    optcb.paths._Kernel.__call__ = record
    try: opt.step()
    finally: optcb.paths._Kernel.__call__ = call
    (kernel, parts), = calls
    return lambda: kernel(parts)

contenders = {
    'optcb Adam': contender(lambda ps: optcb.Adam(ps, lr=1e-3)),
    'optcb kernel call alone': contender(lambda ps: optcb.Adam(ps, lr=1e-3), kernel_alone),
    'torch fused': contender(lambda ps: torch.optim.AdamW(ps, fused=True, **hypers)),
    'torch compiled step': contender(lambda ps: torch.optim.AdamW(ps, foreach=True, **hypers),
                                     lambda opt: torch.compile(opt.step)),
    'torch foreach': contender(lambda ps: torch.optim.AdamW(ps, foreach=True, **hypers))}
print('first 5 steps (s): ' + ', '.join(f"{n} {c[3]:.1f}" for n, c in contenders.items()))
m = {n: s * 1e6 for n, s in interleaved({n: c[0] for n, c in contenders.items()}, 7, 300).items()}
print(f"digits model, {torch.get_num_threads()} thread(s), us per step (median of 7 interleaved rounds of 300): "
      + ', '.join(f"{n} {v:.0f}" for n, v in m.items()))
fused = m['torch fused']
print('per step / torch fused: ' + ', '.join(f"{n} {v / fused:.3f}" for n, v in m.items() if n != 'torch fused'))
print(f"optcb Adam / torch compiled step {m['optcb Adam'] / m['torch compiled step']:.3f}; the engine's Python "
      f"around its kernel call: {m['optcb Adam'] - m['optcb kernel call alone']:.0f} us per step")
