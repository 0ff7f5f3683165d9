"The callback contract is checked when an optimizer is built; bad input names what is wrong and changes nothing"
import copy, pytest, torch
from functools import partial
import optcb
from optcb import Optimizer, average_grad, momentum_step, sgd_step, adam_step
from _util import make_params, grad_stream, run

def test_typo_in_a_hyperparameter_names_it_and_suggests():
    ps = make_params()
    with pytest.raises(TypeError, match=r"unknown hyperparameter 'moms'.*average_grad.*did you mean 'mom'"):
        Optimizer(ps, [average_grad, momentum_step], lr=0.1, moms=0.9)
    with pytest.raises(TypeError, match=r"'sqr_mon'.*param group 1"):
        Optimizer([{'params': ps[:2]}, {'params': ps[2:], 'sqr_mon': 0.9}], [average_grad, momentum_step], lr=0.1)

def test_missing_hyperparameter_or_state_names_the_callback():
    ps = make_params()
    with pytest.raises(TypeError, match=r"callback sgd_step needs 'lr'"):
        Optimizer(ps, [sgd_step])
    with pytest.raises(TypeError, match=r"callback adam_step needs 'grad_avg'.*no earlier callback"):
        Optimizer(ps, [adam_step], lr=0.1, mom=0.9, sqr_mom=0.99, step=1)

def test_defaults_are_found_through_partial():
    opt = Optimizer(make_params(), [partial(average_grad, dampening=True), momentum_step], lr=0.1)
    assert opt.param_groups[0]['mom'] == 0.9 and opt.hypers[0]['mom'] == 0.9
    assert 'dampening' not in opt.param_groups[0]  # bound by the partial: an option, not a hyperparameter

@pytest.mark.parametrize('kw,match', [(dict(lr=-1.), 'invalid lr=-1.0'), (dict(lr=0.1, mom=1.), r'invalid mom=1.0.*\[0, 1\)'),
                                      (dict(lr=0.1, mom=-0.1), 'invalid mom=-0.1'), (dict(lr=0.1, sqr_mom=1.5), 'invalid sqr_mom=1.5'),
                                      (dict(lr=0.1, eps=-1e-8), 'invalid eps=-1e-08'), (dict(lr=0.1, wd=-0.01), 'invalid wd=-0.01'),
                                      (dict(lr=float('nan')), 'lr is NaN')])
def test_out_of_range_values_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        optcb.Adam(make_params(), **kw)

@pytest.mark.parametrize('bad', [None, 'fast', [0.1]])
def test_non_numeric_hyperparameter_is_refused(bad):
    with pytest.raises(TypeError, match='lr'):
        optcb.SGD(make_params(), lr=bad)

def test_torch_style_range_errors():
    ps = make_params()
    with pytest.raises(ValueError, match=r'invalid mom=1.5 \(.*betas\[0\]|invalid mom=1.5'):
        optcb.optim.Adam(ps, betas=(1.5, 0.999))
    with pytest.raises(ValueError, match='Nesterov'):
        optcb.optim.SGD(ps, lr=0.1, nesterov=True)
    for cls in [optcb.optim.Adam, optcb.optim.AdamW, optcb.optim.Adamax, optcb.optim.RAdam, optcb.optim.NAdam]:
        with pytest.raises(ValueError, match=r'betas must be a pair'):
            cls(ps, betas=(0.9,))

def test_set_hyper_checks_values_before_changing_anything():
    opt = optcb.Adam([make_params()[:2], make_params()[2:]], lr=0.1)
    with pytest.raises(ValueError):
        opt.set_hyper('lr', [0.1, -0.1])
    assert [h['lr'] for h in opt.hypers] == [0.1, 0.1]

def test_callback_returning_garbage_is_named():
    def bad(p, *, lr): return 3
    w = torch.zeros(2, requires_grad=True); w.grad = torch.ones(2)
    with pytest.raises(TypeError, match='callback bad returned a int'):
        Optimizer([w], [bad], lr=0.1).step()

def test_group_path_refuses_value_dependent_branches_clearly():
    def clipped(p, *, lr):
        if p.grad.abs().max() > 1: p.grad.clamp_(-1, 1)
        p.add_(p.grad, alpha=-lr)
    w = torch.zeros(2, requires_grad=True); w.grad = torch.ones(2) * 3
    Optimizer([w], [clipped], lr=0.1).step()  # undeclared callbacks take the per-tensor path
    assert torch.equal(w.detach(), torch.full((2,), -0.1))
    with pytest.raises(TypeError, match='truth value.*foreach=False'):
        Optimizer([w], [clipped], lr=0.1, foreach=True).step()

def _trained(make):
    ps = make_params(); opt = make(ps)
    run(opt, ps, grad_stream(ps, 5), 5)
    return ps, opt

@pytest.mark.parametrize('mangle,match', [
    (lambda sd: {**sd, 'param_groups': sd['param_groups'] + [{**sd['param_groups'][0], 'params': []}]}, 'parameter groups'),
    (lambda sd: {**sd, 'param_groups': [{**sd['param_groups'][0], 'params': sd['param_groups'][0]['params'][:-1]}]}, 'has 5 parameters'),
    (lambda sd: {**sd, 'state': {**sd['state'], 0: {**sd['state'][0], 'grad_avg': torch.zeros(7)}}}, 'shape'),
    (lambda sd: {**sd, 'state': {**sd['state'], 0: {**sd['state'][0], 'grad_avg': torch.zeros(3, 4)}}}, r'shape \(3, 4\)'),
    (lambda sd: {**sd, 'state': {**sd['state'], 0: {'exp_avg': torch.zeros(4, 3)}}}, "'exp_avg'"),
    (lambda sd: {**sd, 'param_groups': [{k: v for k, v in sd['param_groups'][0].items() if k != 'sqr_mom'}]}, 'lacks'),
    (lambda sd: {'state': sd['state']}, 'param_groups'),
])
def test_mismatched_state_dict_is_refused_and_changes_nothing(mangle, match):
    ps, opt = _trained(lambda ps: optcb.Adam(ps, lr=0.01))
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(mangle(copy.deepcopy(opt.state_dict())))
    after = opt.state_dict()
    assert after['param_groups'] == before['param_groups']
    for i, s in before['state'].items():
        for k, v in s.items(): assert torch.equal(torch.as_tensor(after['state'][i][k]), torch.as_tensor(v))

def test_state_dict_of_another_optimizer_is_refused():
    ps = make_params()
    torch_sgd = torch.optim.SGD(ps, lr=0.01, momentum=0.9)  # (torch.optim.Adam's loads: tests/test_torch_checkpoints.py)
    run(torch_sgd, ps, grad_stream(ps, 2), 2)
    opt = optcb.optim.Adam(ps, lr=0.01)
    with pytest.raises(ValueError, match="different optimizer, probably torch.optim.SGD"):
        opt.load_state_dict(torch_sgd.state_dict())
    assert len(opt.state) == 0

def test_state_dict_round_trip_continues_identically():
    ps, opt = _trained(lambda ps: optcb.Adam(ps, lr=0.01))
    sd = copy.deepcopy(opt.state_dict())
    ps2 = [p.detach().clone().requires_grad_() for p in ps]
    opt2 = optcb.Adam(ps2, lr=0.01); opt2.load_state_dict(sd)
    grads = grad_stream(ps, 20, seed=7)
    run(opt, ps, grads, 20); run(opt2, ps2, grads, 20)
    assert all(torch.equal(a, b) for a, b in zip(ps, ps2))

def test_fastai_state_dict_loads():
    import fastai.optimizer as fo
    ps = make_params(); ref = [p.detach().clone().requires_grad_() for p in ps]
    fa = fo.Adam(ref, lr=0.01)
    run(fa, ref, grad_stream(ref, 5), 5)
    ours = optcb.Adam(ps, lr=0.01); ours.load_state_dict(fa.state_dict())
    for p, q in zip(ps, ref):
        for k, v in fa.state[q].items(): assert torch.equal(torch.as_tensor(ours.state[p][k]), torch.as_tensor(v))
