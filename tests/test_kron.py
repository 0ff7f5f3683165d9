"""PSGD-Kron against kron-torch 0.3.3's `Kron` (run eagerly, its damping noise kept out of its step and its triangular
solves in the factors' dtype: the two places it departs from Li's PSGD, see the callbacks' docs) and against a
reference written here from Li 2018 with whole Kronecker products"""
import contextlib, io, math
import pytest, torch
import optcb
from _util import params_of, grads_of, run_grads, rel_err
from optcb.callbacks import _kron_dims, _kron_triangular

K = pytest.importorskip('kron_torch.kron')
SHAPES = [(6, 4), (5,), (3, 2, 3), (7, 3), (1,)]  # kron-torch fails on a 0-d parameter; see the paper's test
SCHEDULE = dict(prob_min=0.1, prob_decay=0.05, prob_flat=10)  # every step for 10, then every 2nd, 3rd, ... 10th

def whole(qs):
    "The Kronecker product of a parameter's factors as one matrix (a diagonal factor as its diagonal matrix)"
    out = torch.ones(1, 1, dtype=qs[0].dtype)
    for q in qs: out = torch.kron(out, q if q.dim() == 2 else torch.diag(q))
    return out

def _fit_as_li(exprA, G, Q):
    "kron-torch's A and conjB with the damping noise added to a copy of G, as in Li's psgd_torch (not in place)"
    V = torch.randn_like(G)
    G = G + torch.finfo(torch.float32).eps ** 0.5 * G.abs().mean() * V
    n = G.dim()
    conjB = V.permute(*range(1, n), 0)
    for i, q in enumerate(Q):
        conjB = conjB / q if q.dim() < 2 else torch.linalg.solve_triangular(
            q, conjB.reshape(-1, conjB.size(-1)), upper=True, left=False).reshape_as(conjB)
        if i < n - 1: conjB = torch.transpose(conjB, i, n - 1)
    return torch.einsum(exprA, *Q, G), conjB

def kron_torch(ps, gs, dtype, as_li=True, lr=0.02, mom=0.9, wd=0.01, **kw):
    "kron-torch's Kron over `gs`, eagerly, never rebalancing (a rescaling that leaves the product unchanged)"
    sched = K.precond_update_prob_schedule(1., SCHEDULE['prob_min'], SCHEDULE['prob_decay'], SCHEDULE['prob_flat'])
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.compiler.set_stance('force_eager'))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # its first step prints the state's size
        if as_li: stack.enter_context(pytest.MonkeyPatch.context()).setattr(K, '_calc_A_and_conjB', _fit_as_li)
        opt = K.Kron(ps, lr=lr, b1=mom, weight_decay=wd, precond_dtype=dtype,
                     preconditioner_update_probability=sched, **kw)
        opt.rng.random = lambda: 1.
        run_grads(opt, ps, gs)
    return opt

THEIR_NAMES = dict(fit_momentum='momentum_into_precond_update')
CONFIGS = [dict(), dict(memory_save_mode='one_diag'), dict(memory_save_mode='smart_one_diag'),
           dict(memory_save_mode='all_diag'), dict(fit_momentum=False), dict(merge_dims=False),
           dict(max_size_triangular=4), dict(min_ndim_triangular=1), dict(precond_lr=0.3, precond_init_scale=2.)]

@pytest.mark.parametrize('kw', CONFIGS, ids=lambda kw: ','.join(f'{k}={v}' for k, v in kw.items()) or 'defaults')
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-13), (torch.float32, 2e-6)], ids=['float64', 'float32'])
def test_kron_matches_kron_torch(kw, dtype, tol):
    """60 steps, the fit skipped more and more often after step 10, the probes from one global seed: parameters,
    momentum and each parameter's whole preconditioner Q₁ ⊗ ⋯ ⊗ Qₖ (the factors differ by the rebalancing).
    Measured: 4e-16 (float64), 2e-7 (float32)"""
    a = params_of(SHAPES, dtype); b = [p.detach().clone().requires_grad_() for p in a]
    gs = grads_of(SHAPES, 60, dtype)
    torch.manual_seed(5)
    ref = kron_torch(b, gs, dtype, **{THEIR_NAMES.get(k, k): v for k, v in kw.items()})
    torch.manual_seed(5)
    ours = optcb.Kron(a, lr=0.02, wd=0.01, seed=None, **SCHEDULE, **kw); run_grads(ours, a, gs)
    for p, q in zip(a, b):
        s, r = ours.state[p], ref.state[q]
        assert rel_err(p, q) <= tol
        assert rel_err(s['grad_avg'], r['momentum_buffer'].view(p.shape)) <= tol
        assert [x.shape for x in s['precond']] == [x.shape for x in r['Q']]
        assert rel_err(whole(s['precond']), whole(r['Q'])) <= 10 * tol

def test_kron_torch_as_published_steps_along_its_damping_noise():
    """kron-torch adds the fit's damping noise to the momentum in place, so its step moves along it too: 60 float32
    steps apart by more than the float32 comparison's bound and less than the noise's size (√ε₃₂ ≈ 3.5e-4 of the
    mean gradient per update)"""
    a = params_of(SHAPES, torch.float32); b = [p.detach().clone().requires_grad_() for p in a]
    gs = grads_of(SHAPES, 60, torch.float32)
    torch.manual_seed(5); kron_torch(b, gs, torch.float32, as_li=False)
    torch.manual_seed(5); run_grads(optcb.Kron(a, lr=0.02, wd=0.01, seed=None, **SCHEDULE), a, gs)
    gaps = [rel_err(p, q) for p, q in zip(a, b)]
    assert 1e-5 < max(gaps) < 1e-3, gaps

def _bound(a):
    "Li's cheap lower bound of a symmetric matrix's spectral norm: one power iteration from its largest column"
    if not a.abs().max() > 0: return a.new_zeros(())
    x = a[:, (a * a).sum(0).argmax()]
    x = x @ a
    return (a @ (x / x.norm())).norm()

def reference(shapes, gs, lr, mom, wd, precond_lr, prob):
    """PSGD-Kron from Li 2018 in float64 with whole matrices: a parameter is a matrix G with factors Q₁ (rows) and Q₂
    (columns), triangular where the dim is above 1, a 3-D tensor as ∏(all but last)×last; a vector (a scalar as a
    vector of 1) has one diagonal factor (kept as a matrix here). Q = Q₁ ⊗ Q₂ acts on vec(G);
    each fit: A = Q vec(G), B = Q⁻ᵀ vec(V), then each factor Qᵢ ← Qᵢ − μ·T(AᵢAᵢᵀ − BᵢBᵢᵀ)·Qᵢ/‖AᵢAᵢᵀ + BᵢBᵢᵀ‖, T the
    upper triangle (triangular factor) or the diagonal, ‖·‖ the bound above or the max entry; the step
    clip₁.₁(QᵀQ vec(m̂)) + wd·p (matrices)"""
    ps = params_of(shapes, torch.float64)
    mats = [(math.prod(s[:-1]), s[-1]) if len(s) > 1 else (math.prod(s), 1) for s in shapes]
    tri = [[d > 1 for d in m] if len(s) > 1 else [False] for s, m in zip(shapes, mats)]
    Q = [[torch.eye(d, dtype=torch.float64) for d in m[:len(t)]] for m, t in zip(mats, tri)]
    M = [torch.zeros(m, dtype=torch.float64) for m in mats]
    wait = [0] * len(shapes)
    for t, step in enumerate(gs, 1):
        for k, (p, g) in enumerate(zip(ps, step)):
            (r, c), qs = mats[k], Q[k]
            M[k] = mom * M[k] + (1 - mom) * g.reshape(r, c)
            mh = M[k] / (1 - mom**t)
            wait[k] += 1
            if wait[k] >= 1 / prob(t - 1):
                wait[k] = 0
                v = torch.randn(mats[k] if len(shapes[k]) > 1 else shapes[k] or (1,), dtype=torch.float64)
                v = v.reshape(r, c)
                fit = mh + torch.finfo(torch.float32).eps ** 0.5 * mh.abs().mean() * v
                W = torch.kron(*qs) if len(qs) == 2 else qs[0]
                A = (W @ fit.reshape(-1)).reshape(r, c)
                B = (torch.linalg.inv(W).T @ v.reshape(-1)).reshape(r, c)
                new = []
                for q, x, y, triangular in zip(qs, (A, A.T), (B, B.T), tri[k]):
                    e1, e2 = x @ x.T, y @ y.T
                    if triangular: d = torch.triu(e1 - e2) / max(_bound(e1 + e2), 1e-300)
                    else: d = torch.diag(torch.diag(e1 - e2)) / torch.diag(e1 + e2).abs().max()
                    new.append(q - precond_lr * d @ q)
                Q[k] = new
            W = torch.kron(*Q[k]) if len(Q[k]) == 2 else Q[k][0]
            u = (W.T @ W @ mh.reshape(-1)).reshape(p.shape)
            u = u * min(1., 1.1 / (u.square().mean().sqrt().item() + 1e-12))
            if p.dim() >= 2: u = u + wd * p.detach()
            with torch.no_grad(): p.sub_(lr * u)
    return ps

def test_kron_matches_the_paper():
    """40 float64 steps with a fixed probability of 1/3 (a fit every 3rd step), a 0-d parameter too, against the
    reference above: parameters within 1e-12 (measured: 3e-15)"""
    shapes = [(6, 4), (5,), (3, 2, 3), (7, 3), ()]
    gs = grads_of(shapes, 40, torch.float64)
    torch.manual_seed(3)
    ref = reference(shapes, gs, lr=0.02, mom=0.9, wd=0.01, precond_lr=0.1, prob=lambda n: 1 / 3)
    ps = params_of(shapes, torch.float64)
    torch.manual_seed(3)
    run_grads(optcb.Kron(ps, lr=0.02, wd=0.01, seed=None, prob_max=1 / 3, prob_min=1 / 3), ps, gs)
    for p, q in zip(ps, ref): assert rel_err(p, q) <= 1e-12

def test_dims_and_factors_follow_kron_torch():
    "The merge and the choice of factors, as kron-torch's `_init_Q_exprs` makes them"
    assert _kron_dims((64, 3, 3, 3), True) == [576, 3] and _kron_dims((2, 3, 40), True) == [6, 40]
    assert _kron_dims((), True) == [1] and _kron_dims((4, 5, 6), False) == [4, 5, 6]
    assert _kron_triangular([576, 3], 8192, 2, None) == [True, True]
    assert _kron_triangular([576, 3], 512, 2, None) == [False, True]
    assert _kron_triangular([5, 5], 8192, 2, 'one_diag') == [True, False]
    assert _kron_triangular([5, 5], 8192, 2, 'smart_one_diag') == [True, True]
    assert _kron_triangular([5, 1], 8192, 2, None) == [True, False] and _kron_triangular([5], 8192, 2, None) == [False]
    for shape in [(6, 4), (3, 2, 3), (5,)]:
        for mode in optcb.callbacks.KRON_MODES:
            p = torch.zeros(shape, requires_grad=True)
            torch.manual_seed(0)
            with contextlib.redirect_stdout(io.StringIO()):
                Q, _ = K._init_Q_exprs(p.reshape(_kron_dims(shape, True)), 1., 8192, 2, mode)
            assert _kron_triangular(_kron_dims(shape, True), 8192, 2, mode) == [q.dim() == 2 for q in Q]

def test_a_seed_repeats_a_run_and_a_checkpoint_resumes_exactly():
    """The default `seed=0`: two runs are equal whatever torch's generator did between them, another seed is not;
    20 steps, a state_dict through bytes, a new optimizer, 20 more: bit for bit with 40 steps"""
    gs = grads_of(SHAPES, 40, torch.float32)
    ps, qs, rs, ss = (params_of(SHAPES, torch.float32) for _ in range(4))
    run_grads(optcb.Kron(ps, lr=0.02, **SCHEDULE), ps, gs)
    torch.randn(7)
    run_grads(optcb.Kron(qs, lr=0.02, **SCHEDULE), qs, gs)
    run_grads(optcb.Kron(ss, lr=0.02, seed=1, **SCHEDULE), ss, gs)
    assert all(torch.equal(p, q) for p, q in zip(ps, qs)) and not all(torch.equal(p, s) for p, s in zip(ps, ss))
    first = optcb.Kron(rs, lr=0.02, **SCHEDULE); run_grads(first, rs, gs[:20])
    buf = io.BytesIO(); torch.save(first.state_dict(), buf); buf.seek(0)
    again = optcb.Kron(rs, lr=0.02, **SCHEDULE); again.load_state_dict(torch.load(buf))
    run_grads(again, rs, gs[20:])
    assert all(torch.equal(p, r) for p, r in zip(ps, rs))

def test_bad_settings_are_refused():
    w = torch.zeros(3, 3, requires_grad=True)
    with pytest.raises(ValueError, match="memory_save_mode='half'"): optcb.Kron([w], memory_save_mode='half')
    with pytest.raises(TypeError, match="seed='a'"): optcb.Kron([w], seed='a')
    with pytest.raises(ValueError, match='invalid precond_lr=0'): optcb.Kron([w], precond_lr=0)
    with pytest.raises(ValueError, match='invalid prob_min=0'): optcb.Kron([w], prob_min=0)
    with pytest.raises(ValueError, match='invalid max_size_triangular=0'): optcb.Kron([w], max_size_triangular=0)
    z = torch.zeros(3, 3, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(ValueError, match='complex'): optcb.Kron([z])
    opt = optcb.Kron([w]); w.grad = torch.ones(3, 3); opt.step()
    opt.param_groups[0]['max_size_triangular'] = 2
    with pytest.raises(ValueError, match='cannot change after the first step'): opt.step()
