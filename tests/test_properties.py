"Property tests: random shapes, dtypes, group layouts and hyperparameters"
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
import optcb
from _util import grad_stream, run, max_errs

DTYPES = [torch.float32, torch.float64, torch.bfloat16]
shape = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)

@st.composite
def problem(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shapes = draw(st.lists(shape, min_size=1, max_size=6))
    cuts = sorted(draw(st.lists(st.integers(1, len(shapes)), max_size=2, unique=True)))  # group boundaries
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    bounds = [0, *[c for c in cuts if c < len(shapes)], len(shapes)]
    layout = [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
    return dtype, params, layout, seed

def clone(params): return [p.clone().requires_grad_() for p in params]
def groups(ps, layout, per_group): return [{'params': ps[a:b], **h} for (a, b), h in zip(layout, per_group)]

TORCH = {'SGD': dict(lr=st.floats(1e-4, 0.1), momentum=st.sampled_from([0., 0.5, 0.9]), dampening=st.sampled_from([0., 0.3]),
                     weight_decay=st.sampled_from([0., 0.05]), maximize=st.booleans()),
         'RMSprop': dict(lr=st.floats(1e-4, 0.01), alpha=st.floats(0.8, 0.999), momentum=st.sampled_from([0., 0.9]),
                         centered=st.booleans(), weight_decay=st.sampled_from([0., 0.05])),
         'Adam': dict(lr=st.floats(1e-4, 0.1), betas=st.tuples(st.floats(0., 0.95), st.floats(0.9, 0.999)), eps=st.floats(1e-8, 1e-3),
                      weight_decay=st.sampled_from([0., 0.05]), amsgrad=st.booleans(), maximize=st.booleans()),
         'AdamW': dict(lr=st.floats(1e-4, 0.1), weight_decay=st.floats(0., 0.1), amsgrad=st.booleans())}
GROUP_KEYS = {'SGD': ('lr', 'weight_decay'), 'RMSprop': ('lr',), 'Adam': ('lr', 'eps'), 'AdamW': ('lr', 'weight_decay')}

@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), cls=st.sampled_from(sorted(TORCH)))
def test_optcb_optim_equals_torch_optim(data, cls):
    dtype, params, layout, seed = data.draw(problem())
    kw = data.draw(st.fixed_dictionaries(TORCH[cls]))
    per_group = [{k: data.draw(TORCH[cls][k]) for k in GROUP_KEYS[cls]} for _ in layout]
    ps, ref = clone(params), clone(params)
    ours = getattr(optcb.optim, cls)(groups(ps, layout, per_group), foreach=data.draw(st.booleans()), **kw)
    theirs = getattr(torch.optim, cls)(groups(ref, layout, per_group), foreach=False, **kw)
    g = grad_stream(ps, 15, seed=seed, skip=((0, 4),))
    run(ours, ps, g, 15); run(theirs, ref, g, 15)
    for a, b in zip(ps, ref): assert torch.equal(a, b)  # the same kernels in the same order: bit for bit, any dtype

FASTAI = {'SGD': dict(lr=st.floats(1e-4, 0.1), mom=st.sampled_from([0., 0.9]), wd=st.sampled_from([0., 0.05]),
                      decouple_wd=st.booleans(), nesterov=st.booleans()),
          'RMSProp': dict(lr=st.floats(1e-4, 0.01), mom=st.sampled_from([0., 0.9]), sqr_mom=st.floats(0.8, 0.999), centered=st.booleans()),
          'Adam': dict(lr=st.floats(1e-4, 0.1), mom=st.floats(0., 0.95), sqr_mom=st.floats(0.9, 0.999), wd=st.floats(0., 0.1),
                       decouple_wd=st.booleans(), amsgrad=st.booleans()),
          'Yogi': dict(lr=st.floats(1e-4, 0.1), initial_accumulator=st.sampled_from([0., 1e-6]), wd=st.floats(0., 0.1))}

@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), name=st.sampled_from(sorted(FASTAI)))
def test_group_path_equals_per_tensor_path(data, name):
    dtype, params, layout, seed = data.draw(problem())
    kw = data.draw(st.fixed_dictionaries(FASTAI[name]))
    if name == 'SGD' and kw['nesterov'] and kw['mom'] == 0: kw['nesterov'] = False
    ps, ref = clone(params), clone(params)
    fast = getattr(optcb, name)([ps[a:b] for a, b in layout], foreach=True, **kw)
    slow = getattr(optcb, name)([ref[a:b] for a, b in layout], foreach=False, **kw)
    g = grad_stream(ps, 12, seed=seed, skip=((0, 3),))
    run(fast, ps, g, 12); run(slow, ref, g, 12)
    assert max_errs(ps, ref, fast, slow) == (0, 0)
