"""Bad input to the torch-signature classes: every construction case of torch's own tests raises what torch raises,
with the message torch's tests look for"""
import copy, re, warnings, pytest, torch
import optcb
from _util import torch_optim_db

CLASSES = sorted({e.torch.__name__ for e in optcb.REGISTRY.values() if e.torch and hasattr(torch.optim, e.torch.__name__)}
                 | {'AdamW', 'LBFGS'})  # (the schedule-free classes follow the schedulefree package: test_schedule_free)

def construction_cases(name):
    info = next(i for i in torch_optim_db() if i.optim_cls.__name__ == name)
    return [e for e in info.optim_error_inputs_func(device='cpu', dtype=torch.float32)
            if e.error_on.name == 'CONSTRUCTION_ERROR']

def outcome(cls, case):
    "What building `cls` on the case's input raises, or the warning of the expected category it emits, or None"
    oi = case.optimizer_error_input
    params = oi.params if isinstance(oi.params, torch.Tensor) else copy.deepcopy(oi.params)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        try: cls(params, **copy.deepcopy(oi.kwargs))
        except Exception as e: return e
    return next((w.message for w in seen if isinstance(w.message, case.error_type)), None)

@pytest.mark.parametrize('name', CLASSES)
def test_construction_errors_are_torchs(name):
    cases = construction_cases(name)
    assert cases, name
    for case in cases:
        theirs, ours = outcome(getattr(torch.optim, name), case), outcome(getattr(optcb.optim, name), case)
        assert isinstance(theirs, case.error_type), (case.optimizer_error_input.desc, theirs)  # torch's own claim
        assert isinstance(ours, case.error_type), (case.optimizer_error_input.desc, case.error_type, ours)
        assert re.search(case.error_regex, str(ours)), (case.optimizer_error_input.desc, case.error_regex, ours)

def test_the_cases_cover_what_used_to_differ():
    "A single tensor, named and unnamed parameters mixed, betas mixing a float and a tensor: all among the cases"
    descs = {c.optimizer_error_input.desc for n in CLASSES for c in construction_cases(n)}
    assert {'invalid param type', 'all optimizer params should be with/without names',
            'betas must be either both floats or both Tensors'} <= descs
    assert sum(len(construction_cases(n)) for n in CLASSES) >= 80

@pytest.mark.parametrize('build', [lambda ps: optcb.optim.AdamW(ps), lambda ps: optcb.optim.SGD(ps, lr=0.1),
                                   lambda ps: optcb.Adam(ps, lr=1e-3), lambda ps: optcb.Lamb(ps, lr=1e-3)])
def test_a_bare_set_of_params_warns_on_every_torch(build):
    "torch 2.15 warns (FutureWarning) that a set's order changes between runs; optcb warns so whatever the torch"
    ps = {torch.nn.Parameter(torch.randn(3)) for _ in range(4)}
    with pytest.warns(FutureWarning, match='ordered collections'): opt = build(ps)
    assert len(opt.param_groups[0]['params']) == 4
    with warnings.catch_warnings():
        warnings.simplefilter('error', FutureWarning)
        build(sorted(ps, key=id))  # a list: no warning
