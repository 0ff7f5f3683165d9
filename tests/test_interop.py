"optcb optimizers in torch's ecosystem and through fastai's optimizer API"
import pytest, torch
import optcb
from _util import make_params, clone_params, grad_stream, max_errs

def _with_scheduler(opt, sched, ps, steps=40):
    grads, lrs = grad_stream(ps, steps), []
    for t in range(steps):
        for p, g in zip(ps, grads(t, ps)): p.grad = None if g is None else g.clone()
        lrs.append(opt.param_groups[0]['lr']); opt.step(); sched.step()
    return lrs

@pytest.mark.parametrize('make_sched', [lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5),
                                        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=40)])
def test_torch_schedulers_drive_the_steps(make_sched):
    "Same trajectory as torch.optim under the same scheduler: the lr (and OneCycle's beta1) the steps use is the scheduled one"
    ps = make_params(); ref = clone_params(ps)
    ours, theirs = optcb.optim.Adam(ps, lr=0.01), torch.optim.Adam(ref, lr=0.01, foreach=False)
    lr1 = _with_scheduler(ours, make_sched(ours), ps); lr2 = _with_scheduler(theirs, make_sched(theirs), ref)
    assert lr1 == lr2 and len(set(lr1)) > 1
    perr, serr = max_errs(ps, ref, ours, theirs)  # optcb.optim keeps torch's names in `state`
    assert perr < 1e-12 and serr < 1e-12

def test_scheduler_on_fastai_style_optimizer_changes_the_update():
    "A StepLR on optcb.SGD: each step moves the parameter by exactly the scheduled lr times the gradient"
    w = torch.zeros(1, requires_grad=True)
    opt = optcb.SGD([w], lr=0.1); sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    moves = []
    for _ in range(4):
        before = w.item(); w.grad = torch.ones(1); opt.step(); sched.step(); moves.append(before - w.item())
    assert moves == pytest.approx([0.1, 0.1, 0.01, 0.01])

def test_step_with_closure_returns_the_loss_and_computes_gradients():
    w = torch.tensor([2.0], requires_grad=True)
    opt = optcb.SGD([w], lr=0.25)
    def closure():
        opt.zero_grad(); loss = (w ** 2).sum(); loss.backward(); return loss
    loss = opt.step(closure)
    assert loss.item() == 4.0 and w.item() == pytest.approx(2 - 0.25 * 4)

def test_zero_grad_sets_to_none():
    ps = make_params(); opt = optcb.Adam(ps, lr=0.1)
    for p in ps: p.grad = torch.ones_like(p)
    opt.zero_grad()
    assert all(p.grad is None for p in ps)

def test_fastai_api_set_hyper_slices_and_hypers_view():
    ps = make_params()
    opt = optcb.Adam([ps[:2], ps[2:4], ps[4:]], lr=1e-3)
    opt.set_hyper('lr', slice(1e-4, 1e-2))
    assert [g['lr'] for g in opt.param_groups] == pytest.approx([1e-4, 1e-3, 1e-2])
    opt.set_hyper('lr', slice(1e-2))
    assert [g['lr'] for g in opt.param_groups] == pytest.approx([1e-3, 1e-3, 1e-2])
    opt.set_hypers(mom=0.8, wd=[0., 0.1, 0.2])
    assert [h['mom'] for h in opt.hypers] == [0.8] * 3 and [g['wd'] for g in opt.param_groups] == [0., 0.1, 0.2]
    opt.hypers[1]['sqr_mom'] = 0.9
    assert opt.param_groups[1]['sqr_mom'] == 0.9 and len(opt.param_lists) == 3

def test_fastai_api_on_torch_names():
    "set_hyper('mom') on a torch-signature Adam writes betas[0], which is what fit_one_cycle needs"
    opt = optcb.optim.Adam(make_params(), lr=1e-3)
    opt.set_hyper('mom', 0.85)
    assert opt.param_groups[0]['betas'] == (0.85, 0.999) and opt.hypers[0]['mom'] == 0.85

def test_freeze_unfreeze_and_clear_state_keep_fastai_flags():
    ps = make_params()
    opt = optcb.Adam([ps[:2], ps[2:4], ps[4:]], lr=1e-3)
    opt.state[ps[0]]['force_train'] = True; opt.state[ps[1]]['do_wd'] = False
    opt.freeze()
    assert [p.requires_grad for p in ps] == [True, False, False, False, True, True]
    opt.freeze_to(1)
    assert [p.requires_grad for p in ps] == [True, False, True, True, True, True]
    opt.unfreeze(); assert all(p.requires_grad for p in ps)
    for p in ps: p.grad = torch.ones_like(p)
    opt.step(); assert opt.state[ps[2]]['step'] == 1
    opt.clear_state()
    assert opt.state[ps[0]] == {'force_train': True} and opt.state[ps[1]] == {'do_wd': False} and opt.state[ps[2]] == {}

def test_do_wd_false_leaves_a_parameter_undecayed():
    w, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    opt = optcb.SGD([w, b], lr=0.1, wd=0.5)
    opt.state[b]['do_wd'] = False
    w.grad = torch.zeros(3); b.grad = torch.zeros(3); opt.step()
    assert torch.allclose(w, torch.full((3,), 0.95)) and torch.equal(b.detach(), torch.ones(3))
