"Identities between compositions: they hold only if each callback computes what it claims"
import optcb
from optcb import Optimizer, average_sqr_grad, step_stat, debias, callback
from _util import make_params, clone_params, grad_stream, run, max_errs

def test_adam_without_momentum_is_debiased_rmsprop():
    "Adam with mom=0 is RMSProp whose second moment is bias-corrected — composed here from callbacks"
    @callback(eps=1e-8)
    def debiased_rms_step(p, *, lr, eps, sqr_mom, step, sqr_avg):
        p.addcdiv_(p.grad, (sqr_avg / debias(sqr_mom, 1 - sqr_mom, step)).sqrt().add_(eps), value=-lr)
    ps = make_params(); ref = clone_params(ps)
    adam = optcb.Adam(ps, lr=0.01, mom=0., sqr_mom=0.99, eps=1e-8, wd=0.)
    rms = Optimizer(ref, [average_sqr_grad, step_stat, debiased_rms_step], lr=0.01, sqr_mom=0.99)
    grads = grad_stream(ps, 100)
    run(adam, ps, grads, 100); run(rms, ref, grads, 100)
    perr, serr = max_errs(ps, ref, adam, rms, extra=['grad_avg'])  # with mom=0 Adam's m is the gradient itself
    assert perr < 1e-12 and serr < 1e-12

def test_adamw_without_weight_decay_is_adam():
    for ours, theirs in [(lambda ps: optcb.AdamW(ps, lr=0.01, wd=0.), lambda ps: optcb.Adam(ps, lr=0.01, wd=0., decouple_wd=False)),
                         (lambda ps: optcb.optim.AdamW(ps, lr=0.01, weight_decay=0.), lambda ps: optcb.optim.Adam(ps, lr=0.01))]:
        ps = make_params(); ref = clone_params(ps)
        a, b = ours(ps), theirs(ref)
        grads = grad_stream(ps, 100)
        run(a, ps, grads, 100); run(b, ref, grads, 100)
        assert max_errs(ps, ref, a, b) == (0, 0)

def test_decoupled_and_l2_decay_differ_once_gradients_are_rescaled():
    "Same wd, same data: with SGD the two decays agree, with Adam they do not"
    for make, differ in [(optcb.SGD, False), (optcb.Adam, True)]:
        ps = make_params(); ref = clone_params(ps)
        a, b = make(ps, lr=0.01, wd=0.1, decouple_wd=True), make(ref, lr=0.01, wd=0.1, decouple_wd=False)
        grads = grad_stream(ps, 50)
        run(a, ps, grads, 50); run(b, ref, grads, 50)
        perr, _ = max_errs(ps, ref, a, b)
        assert (perr > 1e-3) == differ, (make, perr)
