"SOAP against pytorch-optimizer 4.1.0's SOAP and against a reference written here from Vyas et al. 2024 (matrices)"
import io, math
import pytest, torch
import optcb
from _util import params_of, grads_of, run_grads, rel_err
from optcb.callbacks import _soap_dims

PSOAP = pytest.importorskip('pytorch_optimizer').SOAP
SHAPES = [(6, 4), (5,), (3, 2, 3, 3), (7, 3)]
CONFIGS = [dict(), dict(precondition_1d=True, max_precond_dim=5), dict(normalize_grads=True), dict(wd=0.),
           dict(correct_bias=False), dict(shampoo_beta=0.8, precondition_frequency=1)]

def theirs(ps, lr=3e-3, mom=0.9, sqr_mom=0.95, wd=0.01, precondition_frequency=3, max_precond_dim=10000,
           precondition_1d=False, normalize_grads=False, correct_bias=True, shampoo_beta=None):
    "pytorch-optimizer's SOAP with every hyperparameter given (its defaults differ from the authors' in places)"
    return PSOAP(ps, lr=lr, betas=(mom, sqr_mom), shampoo_beta=shampoo_beta, weight_decay=wd, eps=1e-8,
                 precondition_frequency=precondition_frequency, max_precondition_dim=max_precond_dim,
                 merge_dims=False, precondition_1d=precondition_1d, correct_bias=correct_bias,
                 normalize_gradient=normalize_grads)

def ours(ps, **kw):
    return optcb.SOAP(ps, **{'lr': 3e-3, 'mom': 0.9, 'sqr_mom': 0.95, 'precondition_frequency': 3, **kw})

@pytest.mark.parametrize('kw', CONFIGS, ids=lambda kw: ','.join(kw) or 'defaults')
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64], ids=['float32', 'float64'])
def test_soap_matches_pytorch_optimizer(kw, dtype):
    """60 steps, the bases refreshed every 3 (or every step): parameters, both moments, the statistics and the bases.
    float32 is bit for bit; in float64 pytorch-optimizer runs its QR in float32 (ours in the parameter's dtype)"""
    a = params_of(SHAPES, dtype); b = [p.detach().clone().requires_grad_() for p in a]
    gs = grads_of(SHAPES, 60, dtype)
    opt, ref = ours(a, **kw), theirs(b, **kw)
    run_grads(opt, a, gs); run_grads(ref, b, gs)
    tol = 0. if dtype == torch.float32 else 1e-6
    for p, q in zip(a, b):
        s, r = opt.state[p], ref.state[q]
        assert rel_err(p, q) <= tol and rel_err(s['grad_avg'], r['exp_avg']) <= tol and rel_err(s['sqr_avg'], r['exp_avg_sq']) <= tol
        for mine, their in zip(s['precond'], r['GG']):
            assert (mine is None) == (len(their) == 0)
            if mine is not None: assert rel_err(mine, their) <= tol
        for mine, their in zip(s['basis'], r['Q']):
            if mine is not None: assert rel_err(mine, their) <= tol

def test_merged_dims_are_soap_on_the_merged_shape():
    "merge_dims: a 3×2×3×3 kernel with max_precond_dim=8 is rotated as 6×3×3, bit for bit with SOAP on that shape"
    assert _soap_dims((3, 2, 3, 3), 8, True, False) == ([6, 3, 3], [True, True, True])
    a = params_of([(3, 2, 3, 3)], torch.float32); b = [a[0].detach().reshape(6, 3, 3).clone().requires_grad_()]
    gs = grads_of([(3, 2, 3, 3)], 30, torch.float32)
    opt, ref = ours(a, merge_dims=True, max_precond_dim=8), theirs(b, max_precond_dim=8)
    run_grads(opt, a, gs); run_grads(ref, b, [[g.reshape(6, 3, 3)] for (g,) in gs])
    assert torch.equal(a[0].detach().reshape(6, 3, 3), b[0].detach())

def test_dims_follow_the_authors_merge_rule():
    assert _soap_dims((64, 64, 3, 3), 10000, True, False) == ([4096, 9], [True, True])
    assert _soap_dims((10, 20), 10000, True, False) == ([200], [True])  # pytorch-optimizer 4.1.0 makes this [1]
    assert _soap_dims((20000, 10), 10000, False, False) == ([20000, 10], [False, True])
    assert _soap_dims((300,), 10000, True, False) == ([300], [False])
    assert _soap_dims((300,), 10000, False, True) == ([300], [True])

def power_iteration(M, Q):
    "One power iteration of Q towards M's eigenvectors, its columns in the order of the estimated eigenvalues"
    order = torch.argsort(torch.diag(Q.T @ M @ Q), descending=True)
    return torch.linalg.qr((M @ Q)[:, order])[0], order

def soap_reference(x, gs, lr, mom, sqr_mom, eps, wd, freq):
    """SOAP for one matrix as the paper writes it (Algorithm 3, the first moment in the parameter's space), float64:
    L ← β·L + (1−β)·GGᵀ, R ← β·R + (1−β)·GᵀG after each update, Q_L, Q_R their eigenvectors by eigh on the first
    step (which updates nothing), then every `freq` steps one power iteration Q ← qr(L·Q) with the columns sorted by
    the estimated eigenvalues diag(QᵀLQ), v's rows and columns permuted with them; G' = Q_Lᵀ·G·Q_R, v in that space,
    N = Q_L·(Q_Lᵀ·m·Q_R / (√v + eps))·Q_Rᵀ, x ← x − lr·√(1−β₂ᵗ)/(1−β₁ᵗ)·N, x ← x·(1 − lr·wd)"""
    x, (rows, cols) = x.clone(), x.shape
    L, R = torch.zeros(rows, rows, dtype=x.dtype), torch.zeros(cols, cols, dtype=x.dtype)
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    for k, g in enumerate(gs, start=1):
        if k == 1:
            L, R = (1 - sqr_mom) * g @ g.T, (1 - sqr_mom) * g.T @ g
            QL, QR = (torch.linalg.eigh(M)[1].flip(1) for M in (L, R))
            continue
        t = k - 1
        m = mom * m + (1 - mom) * g
        v = sqr_mom * v + (1 - sqr_mom) * (QL.T @ g @ QR) ** 2
        n = QL @ ((QL.T @ m @ QR) / (v.sqrt() + eps)) @ QR.T
        x = (x - lr * math.sqrt(1 - sqr_mom ** t) / (1 - mom ** t) * n) * (1 - lr * wd)
        L, R = sqr_mom * L + (1 - sqr_mom) * g @ g.T, sqr_mom * R + (1 - sqr_mom) * g.T @ g
        if t % freq == 0:
            (QL, il), (QR, ir) = power_iteration(L, QL), power_iteration(R, QR)
            v = v[il][:, ir]
    return x, m, v

# square matrices: the first statistics G·Gᵀ and Gᵀ·G then have full rank (generically), so their eigenvectors are
# determined up to sign; a non-square matrix's smaller side leaves a null space whose basis eigh chooses freely (the
# comparison with pytorch-optimizer, which makes the same eigh call on the same matrix, covers those)
@pytest.mark.parametrize('shape', [(5, 5), (3, 3)])
@pytest.mark.parametrize('freq', [1, 3])
def test_soap_matches_the_paper(shape, freq):
    a = params_of([shape], torch.float64)
    gs = grads_of([shape], 80, torch.float64)
    opt = ours(a, lr=1e-2, wd=0.05, precondition_frequency=freq)
    x, m, v = soap_reference(a[0].detach(), [g for (g,) in gs], 1e-2, 0.9, 0.95, 1e-8, 0.05, freq)
    run_grads(opt, a, gs)
    s = opt.state[a[0]]
    assert rel_err(a[0].detach(), x) < 1e-10 and rel_err(s['grad_avg'], m) < 1e-10 and rel_err(s['sqr_avg'], v) < 1e-10

def test_a_vector_is_adam_in_its_own_space():
    "Without precondition_1d a vector is not rotated: Adam with eps outside the bias correction, its first step skipped"
    a = params_of([(9,)], torch.float64); gs = grads_of([(9,)], 30, torch.float64)
    run_grads(ours(a, wd=0.), a, gs)
    x, m, v = params_of([(9,)], torch.float64)[0].detach(), 0., 0.
    for t, (g,) in enumerate(gs[1:], start=1):
        m, v = 0.9 * m + 0.1 * g, 0.95 * v + 0.05 * g * g
        x = x - 3e-3 * math.sqrt(1 - 0.95 ** t) / (1 - 0.9 ** t) * m / (v.sqrt() + 1e-8)
    assert rel_err(a[0].detach(), x) < 1e-12

def test_a_checkpoint_resumes_exactly_between_refreshes():
    a = params_of(SHAPES, torch.float32); gs = grads_of(SHAPES, 20, torch.float32)
    opt = ours(a); run_grads(opt, a, gs[:7])  # the bases were refreshed at step 4 and 7
    buf = io.BytesIO(); torch.save(opt.state_dict(), buf); buf.seek(0)
    b = [p.detach().clone().requires_grad_() for p in a]
    again = ours(b); again.load_state_dict(torch.load(buf, weights_only=True))
    run_grads(opt, a, gs[7:]); run_grads(again, b, gs[7:])
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert all(torch.equal(x, y) for x, y in zip(opt.state[a[0]]['basis'], again.state[b[0]]['basis']))

@pytest.mark.parametrize('bad,word', [(dict(max_precond_dim=0), 'max_precond_dim'),
                                      (dict(precondition_frequency=0), 'precondition_frequency'),
                                      (dict(shampoo_beta=1.), 'shampoo_beta'), (dict(mom=1.), 'mom')])
def test_a_bad_setting_is_refused_when_built(bad, word):
    with pytest.raises(ValueError, match=word): ours(params_of([(3, 2)], torch.float32), **bad)

def test_sparse_and_complex_parameters_are_refused_before_anything_changes():
    w = torch.nn.Parameter(torch.randn(4, 3)); opt = ours([w]); before = w.detach().clone()
    w.grad = torch.randn(4, 3).to_sparse()
    with pytest.raises(RuntimeError, match='sparse'): opt.step()
    assert torch.equal(w.detach(), before) and not opt.state[w]
    with pytest.raises(ValueError, match='complex'): ours([torch.nn.Parameter(torch.randn(3, 3, dtype=torch.cfloat))])

def test_changing_the_dims_after_the_first_step_is_a_clear_error():
    w = torch.nn.Parameter(torch.randn(4, 3)); opt = ours([w])
    w.grad = torch.randn(4, 3); opt.step()
    opt.set_hyper('max_precond_dim', 3)
    w.grad = torch.randn(4, 3)
    with pytest.raises(ValueError, match='max_precond_dim, merge_dims and precondition_1d cannot change'): opt.step()
