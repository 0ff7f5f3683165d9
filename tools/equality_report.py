"""Largest relative errors reached by optcb against torch.optim and fastai over the test grids.

    .venv/bin/python tools/equality_report.py

Runs the cases of tests/test_torch_equality.py and tests/test_fastai_equality.py and prints, per optimizer and
dtype, the largest relative error over parameters and over state (max |a − b| / max |b| per tensor)."""
import sys, warnings
from collections import defaultdict
from pathlib import Path
warnings.filterwarnings('ignore')
sys.path.insert(0, str(Path(__file__).parent.parent / 'tests'))
import torch, fastai.optimizer as fo, optcb
import test_torch_equality as T, test_fastai_equality as F
from _util import make_params, clone_params, grad_stream, run, max_errs, TORCH_STATE

worst = defaultdict(lambda: [0., 0.])
for dtype in [torch.float64, torch.float32]:
    for foreach in [True, False]:
        for name, kw, extra in T.CASES:
            ps = make_params(dtype); ref = clone_params(ps)
            a = getattr(optcb.optim, name)(T.groups(ps, extra), foreach=foreach, **kw)
            b = getattr(torch.optim, name)(T.groups(ref, extra), foreach=False, **kw)
            g = grad_stream(ps, T.STEPS); run(a, ps, g, T.STEPS); run(b, ref, g, T.STEPS)
            e = max_errs(ps, ref, a, b, TORCH_STATE[name], ignore=('step',) if name == 'RMSprop' else ())
            w = worst[('torch.optim', name, str(dtype))]; w[0], w[1] = max(w[0], e[0]), max(w[1], e[1])
        for name, kw in F.CASES:
            kw = {'lr': 0.01, **kw}
            ps = make_params(dtype); ref = clone_params(ps)
            a = getattr(optcb, name)([ps[:3], ps[3:]], foreach=foreach, **kw); b = getattr(fo, name)([ref[:3], ref[3:]], **kw)
            for o in (a, b): o.set_hyper('lr', [kw['lr'] / 2, kw['lr']])
            g = grad_stream(ps, F.STEPS); run(a, ps, g, F.STEPS); run(b, ref, g, F.STEPS)
            e = max_errs(ps, ref, a, b)
            w = worst[('fastai', name, str(dtype))]; w[0], w[1] = max(w[0], e[0]), max(w[1], e[1])
print(f"{'reference':12} {'optimizer':9} {'dtype':14} {'params':>9} {'state':>9}")
for (ref, name, dtype), (p, s) in sorted(worst.items()):
    print(f"{ref:12} {name:9} {dtype:14} {p:9.1e} {s:9.1e}")
