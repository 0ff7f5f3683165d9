"Shared helpers: deterministic gradient streams, a relative-error measure, and the side-by-side runs of the equality tests"
import itertools
from types import SimpleNamespace
import torch
import optcb

# torch.optim's state names -> optcb.optim's: none to map, the torch-signature classes keep torch's names in `state`
TORCH_STATE = {n: {} for n in ('SGD', 'Adam', 'AdamW', 'RMSprop', 'Adagrad', 'Adamax', 'Adadelta', 'RAdam', 'NAdam',
                               'Rprop', 'ASGD', 'Adafactor')}
TORCH_IGNORE = {}  # state of torch's that optcb does not keep (none: RMSprop and Adadelta count steps too)
STEPS = 120
TOL = {torch.float64: 1e-10, torch.float32: 1e-6}

def grid(**axes):
    "Every combination of the keyword values in `axes`, as dicts"
    return [dict(zip(axes, vals)) for vals in itertools.product(*axes.values())]

def three_groups(ps, extra):
    "Three groups: defaults; other hyperparameters (`extra`) on the empty and the intermittent parameters; defaults"
    return [{'params': ps[:2]}, {'params': ps[2:4], **extra}, {'params': ps[4:]}]

def rel_err(a, b):
    "max |a − b| / max |b| (0 for two empty tensors): the error relative to the tensor's scale"
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if b.numel() == 0: return 0.
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()

def make_params(dtype=torch.float64, seed=0, shapes=((4, 3), (5,), (0,), (2, 2), (3,), (6,))):
    "Leaf parameters of several shapes, one of them empty"
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]

def params_for(name, dtype=torch.float64):
    "`make_params` for torch.optim.<name>: without the empty tensor for Adafactor, whose torch step divides by the size"
    return make_params(dtype, shapes=((4, 3), (5,), (2, 3, 4), (2, 2), (3,), (6,))) if name == 'Adafactor' \
        else make_params(dtype)

def paths(opt):
    "The set of paths the optimizer's next step takes (its public `plan()`)"
    return {b.path for b in opt.plan()}

def clone_params(ps): return [p.detach().clone().requires_grad_() for p in ps]

def grad_stream(params, steps, seed=1, skip=((3, 3),), scale=1.0):
    """Per step, a gradient for each parameter: a pull towards zero plus noise, so that errors in the
    parameters feed back into later gradients. `skip=(i, k)` gives parameter i no gradient every k-th step."""
    g = torch.Generator().manual_seed(seed)
    noise = [[torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params] for _ in range(steps)]
    def grads(t, ps):
        out = []
        for i, p in enumerate(ps):
            if any(i == j and t % k == 0 for j, k in skip): out.append(None)
            else: out.append((0.3 * p.detach().double() + scale * noise[t][i]).to(p.dtype))
        return out
    return grads

def run(opt, params, grads, steps):
    for t in range(steps):
        for p, g in zip(params, grads(t, params)): p.grad = None if g is None else g.clone()
        opt.step()

def max_errs(ps1, ps2, opt1, opt2, state_map=None, ignore=(), extra=()):
    """Largest relative error over parameters and over every piece of state; the first optimizer may keep no state the
    reference lacks, but for the names in `extra`"""
    perr = max(rel_err(a, b) for a, b in zip(ps1, ps2))
    serr = 0.
    for a, b in zip(ps1, ps2):
        s1, s2 = opt1.state[a], opt2.state[b]
        mine = {k for k, v in s1.items() if v is not None}
        theirs = {(state_map or {}).get(k, k) for k, v in s2.items() if v is not None}
        assert mine <= theirs | set(extra), f"state {sorted(mine - theirs - set(extra))} that the reference does not keep"
        for k2, v2 in s2.items():
            k1 = (state_map or {}).get(k2, k2)
            if v2 is None or k2 in ignore: continue
            assert k1 in s1, f"state {k1!r} missing (reference has {k2!r})"
            if k2 == 'step': assert int(s1[k1]) == int(v2), (s1[k1], v2); continue
            serr = max(serr, rel_err(s1[k1], v2))
    return perr, serr

def against_torch(name, kw, extra=None, dtype=torch.float64, steps=STEPS, **ours):
    """`optcb.optim.<name>` (with the execution flags `ours`) and torch's for-loop `torch.optim.<name>`, same keywords `kw`,
    three groups, the same gradients for `steps` steps: the largest relative errors, how far the parameters moved, both optimizers"""
    ps = params_for(name, dtype); start, ref = clone_params(ps), clone_params(ps)
    a = getattr(optcb.optim, name)(three_groups(ps, extra or {}), **ours, **kw)
    b = getattr(torch.optim, name)(three_groups(ref, extra or {}), foreach=False, **kw)
    g = grad_stream(ps, steps)
    run(a, ps, g, steps); run(b, ref, g, steps)
    perr, serr = max_errs(ps, ref, a, b, TORCH_STATE[name], ignore=TORCH_IGNORE.get(name, ()))
    return SimpleNamespace(perr=perr, serr=serr, moved=max(rel_err(p, q) for p, q in zip(ps, start)), ours=a, theirs=b, ps=ps, ref=ref)

def torch_optim_db():
    """torch's own optimizer test database (torch.testing._internal.common_optimizers). Importing it freezes the
    torch.backends flags (torch.backends.disable_global_flags, for torch's own test runs): they are thawed again, so
    that later tests may set them (fastai's `set_seed(reproducible=True)` and Lightning's `deterministic=True` do)"""
    import pytest
    pytest.importorskip('expecttest')  # common_optimizers imports it
    from torch.testing._internal.common_optimizers import optim_db
    torch.backends.flags_frozen.__globals__['__allow_nonbracketed_mutation_flag'] = True
    assert not torch.backends.flags_frozen()
    return optim_db

graphs = optcb.paths.kernels_built  # kernels compiled so far, ahead of time or by dynamo

def ahead_of_time(opt) -> bool:
    """Whether every compiled bucket of `opt` ran a kernel built ahead of time (none fell back to dynamo), in each phase
    of a chain that pools (Prodigy's)"""
    return all(ph.kernel_error is None and bool(ph._kernels) and all(ph._kernels.values()) for ph in opt.paths.phases)

import pytest
# Left out of the default `pytest` run (the inner loop), run by `pytest --slow` (CI and the README's test command):
# many-step references over every configuration, compiling, distributed, trainers, docs, benchmarks.
slow = pytest.mark.slow

def sample(cases, *fast):
    "A parametrization's cases, all marked `slow` except those at the indices `fast`: the default run checks those"
    as_param = lambda c: pytest.param(*(c if isinstance(c, tuple) else (c,)), marks=slow)
    return [c if i in fast else as_param(c) for i, c in enumerate(cases)]

def params_of(shapes, dtype, seed=1):
    "Leaf tensors of `shapes`, N(0, 1), that require grad"
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]

def grads_of(shapes, steps, dtype, seed=0):
    "Per step, an N(0, 1) gradient for each of `shapes`"
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(steps)]

def run_grads(opt, ps, gs):
    "Step `opt` once per entry of `gs` (from `grads_of`), each gradient a copy"
    for step in gs:
        for p, g in zip(ps, step): p.grad = g.clone()
        opt.step()
