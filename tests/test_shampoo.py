"""Shampoo against pytorch-optimizer 4.1.0's Shampoo (Gupta et al.'s, ungrafted) and against a reference written here
from Gupta et al. 2018 (Algorithm 2) with Anil et al. 2020's grafting"""
import io, math
import pytest, torch
import optcb
from _util import params_of, grads_of, run_grads, rel_err

PShampoo = pytest.importorskip('pytorch_optimizer').Shampoo
SHAPES = [(6, 4), (5,), (3, 2, 3), (7, 3)]

@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-13), (torch.float32, 2e-6)], ids=['float64', 'float32'])
def test_ungrafted_shampoo_matches_pytorch_optimizer(dtype, tol):
    """40 steps, every dim preconditioned (vectors too), roots every step: parameters and statistics. The roots are the
    same (both by SVD); the mode products multiply in another order (measured: 2.4e-7 in float32, 1e-15 in float64)"""
    a = params_of(SHAPES, dtype); b = [p.detach().clone().requires_grad_() for p in a]
    gs = grads_of(SHAPES, 40, dtype)
    ours = optcb.Shampoo(a, lr=0.05, graft='none', precondition_1d=True, precondition_frequency=1, eps=1e-6)
    theirs = PShampoo(b, lr=0.05, momentum=0., preconditioning_compute_steps=1, matrix_eps=1e-6)
    run_grads(ours, a, gs); run_grads(theirs, b, gs)
    for p, q in zip(a, b):
        assert rel_err(p, q) <= tol
        for i, L in enumerate(ours.state[p]['precond']):
            assert rel_err(L, theirs.state[q][f'pre_cond_{i}']) <= tol

def reference(shapes, gs, lr, mom, eps, graft, graft_eps, sqr_mom, beta, freq, limit, wd):
    """Shampoo written from the papers, one matrix at a time in float64: Lᵢ from εI; Rᵢ = Lᵢ^(−1/2k) by eigh every `freq`
    steps; P = G ×ᵢ Rᵢ (by unfolding); grafting P·‖A‖/‖P‖; heavy ball; decoupled decay"""
    ps = params_of(SHAPES, torch.float64)
    state = [dict(L={}, R={}, v=torch.zeros(s, dtype=torch.float64), m=torch.zeros(s, dtype=torch.float64))
             for s in shapes]
    for t, step in enumerate(gs, 1):
        for p, g, st in zip(ps, step, state):
            on = [i for i, d in enumerate(g.shape) if d <= limit and g.dim() > 1]
            if graft == 'adagrad': st['v'] += g * g; a = g / (st['v'].sqrt() + graft_eps)
            else:
                st['v'] = sqr_mom * st['v'] + (1 - sqr_mom) * g * g
                a = g / ((st['v'] / (1 - sqr_mom**t)).sqrt() + graft_eps)
            if on:
                x = g.clone()
                for i in on:
                    gi = g.movedim(i, 0).reshape(g.shape[i], -1)
                    L = st['L'].get(i, eps * torch.eye(g.shape[i], dtype=torch.float64))
                    st['L'][i] = L + gi @ gi.T if beta == 1 else beta * L + (1 - beta) * gi @ gi.T
                    if (t - 1) % freq == 0:
                        w, q = torch.linalg.eigh(st['L'][i])
                        st['R'][i] = q @ torch.diag(w ** (-1 / (2 * len(on)))) @ q.T
                for i in on:  # x ×ᵢ Rᵢ: unfold along i, multiply, fold back
                    xi = st['R'][i] @ x.movedim(i, 0).reshape(x.shape[i], -1)
                    x = xi.reshape([x.shape[i]] + [d for j, d in enumerate(x.shape) if j != i]).movedim(0, i)
                a = x * (a.norm() / x.norm())
            st['m'] = mom * st['m'] + a
            with torch.no_grad(): p.mul_(1 - lr * wd).sub_(lr * st['m'])
    return ps

CONFIGS = [dict(), dict(graft='rmsprop'), dict(mom=0.9, wd=0.01), dict(shampoo_beta=0.9, precondition_frequency=3),
           dict(max_precond_dim=5)]

@pytest.mark.parametrize('kw', CONFIGS, ids=lambda kw: ','.join(kw) or 'defaults')
def test_grafted_shampoo_matches_the_papers(kw):
    "30 steps in float64 against the reference above: AdaGrad or RMSProp grafting, momentum, decay, beta, frequency"
    full = {**dict(lr=0.02, mom=0., eps=1e-6, graft='adagrad', graft_eps=1e-8, sqr_mom=0.99, shampoo_beta=1.,
                   precondition_frequency=1, max_precond_dim=8192, wd=0.), **kw}
    gs = grads_of(SHAPES, 30, torch.float64)
    ps = params_of(SHAPES, torch.float64)
    run_grads(optcb.Shampoo(ps, **full), ps, gs)
    ref = reference(SHAPES, gs, full['lr'], full['mom'], full['eps'], full['graft'], full['graft_eps'],
                    full['sqr_mom'], full['shampoo_beta'], full['precondition_frequency'], full['max_precond_dim'],
                    full['wd'])
    for p, q in zip(ps, ref): assert rel_err(p, q) <= 1e-10

def test_checkpoint_resumes_exactly():
    "15 steps, a state_dict through bytes, a new optimizer, 15 more (a refresh every 4): bit for bit with 30 steps"
    gs = grads_of(SHAPES, 30, torch.float32)
    ps, qs = params_of(SHAPES, torch.float32), params_of(SHAPES, torch.float32)
    whole = optcb.Shampoo(ps, mom=0.9, precondition_frequency=4); run_grads(whole, ps, gs)
    first = optcb.Shampoo(qs, mom=0.9, precondition_frequency=4); run_grads(first, qs, gs[:15])
    buf = io.BytesIO(); torch.save(first.state_dict(), buf); buf.seek(0)
    again = optcb.Shampoo(qs, mom=0.9, precondition_frequency=4); again.load_state_dict(torch.load(buf))
    run_grads(again, qs, gs[15:])
    for p, q in zip(ps, qs): assert torch.equal(p, q)

def test_bad_settings_are_refused():
    w = torch.zeros(3, 3, requires_grad=True)
    with pytest.raises(ValueError, match="graft='sgd'"): optcb.Shampoo([w], graft='sgd')
    with pytest.raises(ValueError, match='invalid precondition_frequency=0'): optcb.Shampoo([w], precondition_frequency=0)
    with pytest.raises(ValueError, match='invalid max_precond_dim=0'): optcb.Shampoo([w], max_precond_dim=0)
    z = torch.zeros(3, 3, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(ValueError, match='complex'): optcb.Shampoo([z])
    opt = optcb.Shampoo([w]); w.grad = torch.ones(3, 3); opt.step()
    opt.param_groups[0]['max_precond_dim'] = 2
    with pytest.raises(ValueError, match='cannot change after the first step'): opt.step()
