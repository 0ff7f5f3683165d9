"Drop-in both ways: torch.optim's checkpoints load into optcb.optim and continue exactly, and optcb.optim's into torch.optim"
import copy, pytest, torch
import optcb
from _util import make_params, params_for, clone_params, grad_stream, three_groups, torch_optim_db, rel_err

# the classes mirroring torch.optim (the schedule-free ones follow the schedulefree package: test_schedule_free)
CLASSES = sorted({e.torch.__name__ for e in optcb.REGISTRY.values() if e.torch and hasattr(torch.optim, e.torch.__name__)}
                 | {'AdamW'})
KW = {'SGD': [dict(momentum=0.9, dampening=0.1, weight_decay=0.1), dict(momentum=0.9, nesterov=True)],
      'RMSprop': [dict(momentum=0.9, centered=True), dict(weight_decay=0.1)],
      'Adam': [dict(amsgrad=True, weight_decay=0.1), dict()], 'AdamW': [dict(amsgrad=True), dict()],
      'NAdam': [dict(decoupled_weight_decay=True, weight_decay=0.1), dict()], 'RAdam': [dict(), dict(weight_decay=0.1)]}

def _steps(opt, ps, grads, ts):
    for t in ts:
        for p, g in zip(ps, grads(t, ps)): p.grad = None if g is None else g.clone()
        opt.step()

def _resume(name, kw, first, second, dtype=torch.float64, steps=(15, 15)):
    "`first` runs, saves; `second` loads and continues; torch.optim's uninterrupted run, and torch resuming itself, beside it"
    ps = params_for(name, dtype); ref, own = clone_params(ps), clone_params(ps)
    extra = dict(lr=0.02)
    make = lambda lib, qs: getattr(lib, name)(three_groups(qs, extra), **({'foreach': False} if lib is torch.optim else {}), **kw)
    grads = grad_stream(ps, sum(steps))
    a, r, o = make(first, ps), make(torch.optim, ref), make(torch.optim, own)
    for opt, qs in ((a, ps), (r, ref), (o, own)): _steps(opt, qs, grads, range(steps[0]))
    b, o2 = make(second, ps), make(torch.optim, own)
    b.load_state_dict(copy.deepcopy(torch.load(_saved(a.state_dict()), weights_only=True)))
    o2.load_state_dict(copy.deepcopy(o.state_dict()))
    for opt, qs in ((b, ps), (r, ref), (o2, own)): _steps(opt, qs, grads, range(steps[0], sum(steps)))
    return ps, ref, own, b, r

def _saved(sd):
    import io
    f = io.BytesIO(); torch.save(sd, f); f.seek(0)
    return f

@pytest.mark.parametrize('name', CLASSES)
def test_a_torch_checkpoint_resumes_in_optcb_as_an_uninterrupted_torch_run(name):
    for kw in KW.get(name, [dict()]):
        ps, ref, own, ours, theirs = _resume(name, kw, torch.optim, optcb.optim)
        assert all(torch.equal(p, q) for p, q in zip(ps, ref)), (name, kw)
        for p, q in zip(ps, ref):  # and the state: torch's names in our state dict, the same values
            mine = ours.state_dict()['state']; i = [id(x) for x in ps].index(id(p))
            for k, v in theirs.state[q].items():
                if torch.is_tensor(v): assert torch.equal(torch.as_tensor(mine[i][k], dtype=v.dtype), v), (name, k)

@pytest.mark.parametrize('name', CLASSES)
def test_an_optcb_checkpoint_resumes_in_torch_as_torch_resuming_itself(name):
    "torch's own resume equals its uninterrupted run, except NAdam in float64 (torch casts mu_product to the params' dtype)"
    for kw in KW.get(name, [dict()]):
        ps, ref, own, _, _ = _resume(name, kw, optcb.optim, torch.optim)
        assert all(torch.equal(p, q) for p, q in zip(ps, own)), (name, kw)
        if name != 'NAdam': assert all(torch.equal(p, q) for p, q in zip(ps, ref)), (name, kw)

@pytest.mark.parametrize('name', CLASSES)
def test_state_dict_uses_torchs_names_and_keys(name):
    ps = params_for(name, torch.float32); qs = clone_params(ps)
    ours, theirs = getattr(optcb.optim, name)(ps, lr=0.01), getattr(torch.optim, name)(qs, lr=0.01)
    g = grad_stream(ps, 3, skip=())
    _steps(ours, ps, g, range(3)); _steps(theirs, qs, g, range(3))
    a, b = ours.state_dict(), theirs.state_dict()
    for i in b['state']:
        assert a['state'][i].keys() == b['state'][i].keys(), (a['state'][i].keys(), b['state'][i].keys())
        for k, v in b['state'][i].items():
            assert type(a['state'][i][k]) is type(v) and (not torch.is_tensor(v) or a['state'][i][k].dtype == v.dtype), k
    assert set(a['param_groups'][0]) <= set(b['param_groups'][0])

def test_optcbs_own_older_format_still_loads():
    ps = make_params(); opt = optcb.optim.Adam(ps, lr=0.01)
    _steps(opt, ps, grad_stream(ps, 3, skip=()), range(3))
    sd = opt.state_dict()
    old = {**sd, 'state': {i: {{'exp_avg': 'grad_avg', 'exp_avg_sq': 'sqr_avg'}.get(k, k): int(v) if k == 'step' else v
                                for k, v in s.items()} for i, s in sd['state'].items()}}
    again = optcb.optim.Adam(clone_params(ps), lr=0.01); again.load_state_dict(old)
    assert again.state_dict()['state'][0].keys() == sd['state'][0].keys()

def test_a_foreign_state_dict_is_refused_naming_state_only_and_its_likely_source():
    ps = make_params()
    sgd = torch.optim.SGD(ps, lr=0.1, momentum=0.9)
    _steps(sgd, ps, grad_stream(ps, 2, skip=()), range(2))
    with pytest.raises(ValueError) as e: optcb.optim.Adam(ps).load_state_dict(sgd.state_dict())
    assert 'probably torch.optim.SGD' in str(e.value)
    adam = optcb.optim.Adam(ps); sd = adam.state_dict()  # the right groups, another optimizer's state
    sd['state'] = {i: {'momentum_buffer': torch.zeros_like(p)} for i, p in enumerate(ps)}
    with pytest.raises(ValueError) as e: adam.load_state_dict(sd)
    msg = str(e.value)
    assert "has 'momentum_buffer'" in msg and "['exp_avg', 'exp_avg_sq', 'step']" in msg and 'torch.optim.SGD' in msg
    assert 'dampening' not in msg and 'initial_accumulator' not in msg  # hyperparameters are not state
    adam = optcb.Adam(ps, lr=0.1); _steps(adam, ps, grad_stream(ps, 2, skip=()), range(2))
    with pytest.raises(ValueError, match="probably optcb's .*adam"): optcb.optim.SGD(ps, momentum=0.9).load_state_dict(adam.state_dict())

def _hooked_round_trip(lib, name):
    "Two steps, then state_dict and load_state_dict with one hook of each kind: what each hook saw, and what came out"
    ps = params_for(name, torch.float64)
    kw = {'momentum': 0.9} if name == 'SGD' else {}  # (without momentum torch keeps no state, optcb a None buffer)
    opt = getattr(lib, name)(ps, lr=0.01, **({'foreach': False} if lib is torch.optim else {}), **kw)
    _steps(opt, ps, grad_stream(ps, 2), range(2))
    seen = []
    def pre(o): seen.append('pre'); o.state['marker'] = 1  # a key that is not a parameter, as torch's test adds
    def post(o, sd):
        first = next((s for k, s in sd['state'].items() if k != 'marker'), {})
        seen.append(('post', 'marker' in sd['state'], sorted(first), type(first.get('step')).__name__))
        del sd['state']['marker']; o.state.pop('marker'); return {**sd, 'extra': True}
    def load_pre(o, sd):
        seen.append(('load_pre', sorted(sd), sd['param_groups'][0]['lr']))
        return {**sd, 'param_groups': [{**g, 'lr': 0.5} for g in sd['param_groups']]}
    def load_post(o): seen.append(('load_post', o.param_groups[0]['lr']))
    handles = [opt.register_state_dict_pre_hook(pre), opt.register_state_dict_post_hook(post),
               opt.register_load_state_dict_pre_hook(load_pre), opt.register_load_state_dict_post_hook(load_post)]
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    for h in handles: h.remove()
    opt.state_dict(); opt.load_state_dict(sd)  # removed: they run no more
    return seen, sorted(sd), opt.param_groups[0]['lr']

@pytest.mark.parametrize('name', CLASSES)
def test_state_dict_hooks_run_as_torchs_do(name):
    "Pre hooks before saving, post hooks on the saved dict (torch's names), load hooks around loading, as torch runs them"
    ours, theirs = _hooked_round_trip(optcb.optim, name), _hooked_round_trip(torch.optim, name)
    assert ours == theirs
    assert theirs[0][0] == 'pre' and theirs[1] == ['extra', 'param_groups', 'state'] and theirs[2] == 0.01

def _older_flags(name):
    "The flags torch added to `name` over releases, which its own test deletes from a checkpoint before loading it"
    return next(o.not_og_supported_flags for o in torch_optim_db() if o.optim_cls.__name__ == name)

@pytest.mark.parametrize('name', CLASSES)
def test_a_checkpoint_from_an_older_torch_loads_with_the_flags_defaults(name):
    """Its groups lack the flags added since (as optim_db says): optcb fills them as torch does and resumes exactly as
    from the whole checkpoint"""
    qs = params_for(name, torch.float64); grads = grad_stream(qs, 10)
    saver = getattr(torch.optim, name)(qs, lr=0.01, foreach=False)
    _steps(saver, qs, grads, range(5))
    whole = copy.deepcopy(saver.state_dict()); old = copy.deepcopy(whole)
    for g in old['param_groups']:
        for k in _older_flags(name): g.pop(k, None)
    ps, ref, own = clone_params(qs), clone_params(qs), clone_params(qs)
    ours, theirs = getattr(optcb.optim, name)(ps, lr=0.01), getattr(torch.optim, name)(ref, lr=0.01, foreach=False)
    complete = getattr(optcb.optim, name)(own, lr=0.01)
    ours.load_state_dict(copy.deepcopy(old)); theirs.load_state_dict(copy.deepcopy(old))
    complete.load_state_dict(whole)
    shared = set(ours.param_groups[0]) & set(theirs.param_groups[0]) - {'params'}
    assert {k: ours.param_groups[0][k] for k in shared} == {k: theirs.param_groups[0][k] for k in shared}
    _steps(ours, ps, grads, range(5, 10)); _steps(complete, own, grads, range(5, 10))
    assert all(torch.equal(p, q) for p, q in zip(ps, own)), name

def test_an_older_checkpoint_steps_as_torch_reads_it_even_where_built_otherwise():
    """torch reads a group saved without `maximize` as maximize=False, whatever the optimizer was built with; so does
    optcb, whose chain is chosen per group: both descend after loading, step for step"""
    qs = make_params(); grads = grad_stream(qs, 8)
    saver = torch.optim.Adam(qs, lr=0.01, maximize=True, foreach=False)
    _steps(saver, qs, grads, range(3))
    sd = copy.deepcopy(saver.state_dict())
    for g in sd['param_groups']: del g['maximize']
    ps, ref = clone_params(qs), clone_params(qs)
    ours, theirs = optcb.optim.Adam(ps, lr=0.01, maximize=True), torch.optim.Adam(ref, lr=0.01, maximize=True, foreach=False)
    ours.load_state_dict(copy.deepcopy(sd)); theirs.load_state_dict(copy.deepcopy(sd))
    assert ours.param_groups[0]['maximize'] is theirs.param_groups[0]['maximize'] is False
    _steps(ours, ps, grads, range(3, 8)); _steps(theirs, ref, grads, range(3, 8))
    assert max(rel_err(a, b) for a, b in zip(ps, ref)) < 1e-12
    assert 'maximize' not in [cb.name for cb in ours._chain_of(ours.param_groups[0])]
