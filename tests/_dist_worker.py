"Worker for tests/test_distributed.py: runs in each of two gloo processes"
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import optcb

STEPS = 20

def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 8, generator=g), torch.randn(32, 1, generator=g)

def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

def train(m, opt, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        opt.step()

def SOAP(params, **kw):
    """SOAP rotating only the dims whose first statistic has full rank: a 16×8 gradient's 8 columns, not its 16 rows
    (a null space, whose basis eigh would choose from the last bits of the gradient)"""
    return optcb.SOAP(params, max_precond_dim=8, **kw)

def Shampoo(params, **kw):
    """Shampoo preconditioning only the dims whose statistic has full rank (SOAP's reason): on a null space L is εI,
    and L^(−1/4)'s slope there, ¼ε^(−5/4), turns the averaged gradient's last bits into different steps"""
    return optcb.Shampoo(params, max_precond_dim=8, **kw)

def Prodigy(params, lr, **kw):
    "Prodigy at lr=1, the multiplier of its estimate, whatever learning rate the runs give the others"
    return optcb.Prodigy(params, **kw)

# optcb.Adam's keywords per run, and the parameters' dtype
OPTIONS = {'fsdp': {}, 'fsdp_state16': dict(state_dtype=torch.bfloat16), 'fsdp_kahan': dict(kahan_sum=True)}
DTYPES = {'fsdp_kahan': torch.bfloat16}

def single_process(out, dtype=torch.float32, build=optcb.Adam, **kw):
    x, y = data(); m = model().to(dtype); x, y = x.to(dtype), y.to(dtype)
    train(m, build(m.parameters(), lr=1e-2, **kw), x, y, STEPS)
    torch.save([p.detach() for p in m.parameters()], out)

def worker(rank, world, port, kind, outdir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        x, y = data(); half = slice(rank * 16, rank * 16 + 16)
        dtype = DTYPES.get(kind, torch.float32); x, y = x.to(dtype), y.to(dtype)
        if kind == 'release':  # refused: DDP and FSDP reduce each gradient after backward hands it over
            m = torch.nn.parallel.DistributedDataParallel(model())
            errors = []
            for build in (lambda: optcb.Adam(m.parameters(), lr=1e-2, release_gradients=True),
                          lambda: optcb.optim.AdamW(m.parameters()).release_gradients()):
                try: build()
                except ValueError as e: errors.append(str(e))
            if rank == 0: torch.save(errors, f'{outdir}/release.pt')
        elif kind in ('ddp', 'soap_ddp', 'prodigy_ddp', 'shampoo_ddp'):
            m = torch.nn.parallel.DistributedDataParallel(model())
            build = dict(soap_ddp=SOAP, prodigy_ddp=Prodigy, shampoo_ddp=Shampoo).get(kind, optcb.Adam)
            train(m, build(m.parameters(), lr=1e-2), x[half], y[half], STEPS)
            if rank == 0: torch.save([p.detach() for p in m.module.parameters()], f'{outdir}/{kind}.pt')
        elif kind in ('soap_fsdp', 'shampoo_fsdp'):  # refused: a shard's statistics are not the matrix's
            from torch.distributed.fsdp import fully_shard
            m = model(); fully_shard(m)
            try: (optcb.SOAP if kind == 'soap_fsdp' else optcb.Shampoo)(m.parameters(), lr=1e-2); error = None
            except ValueError as e: error = str(e)
            if rank == 0: torch.save(error, f'{outdir}/{kind}.pt')
        elif kind == 'prodigy_fsdp':  # the estimate's sums over DTensor shards are the whole parameters' sums
            from torch.distributed.fsdp import fully_shard
            m = model()
            for layer in m:
                if isinstance(layer, torch.nn.Linear): fully_shard(layer)
            fully_shard(m)
            opt = Prodigy(m.parameters(), lr=1e-2)
            train(m, opt, x[half], y[half], STEPS)
            full = [p.full_tensor().detach() for p in m.parameters()]
            if rank == 0: torch.save({'params': full, 'd': opt.param_groups[0]['d']}, f'{outdir}/prodigy_fsdp.pt')
        else:
            from torch.distributed.fsdp import fully_shard
            from torch.distributed.tensor import DTensor
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict, get_model_state_dict, set_model_state_dict
            def build():
                m = model().to(dtype)
                for layer in m:
                    if isinstance(layer, torch.nn.Linear): fully_shard(layer)
                fully_shard(m)
                return m, optcb.Adam(m.parameters(), lr=1e-2, **OPTIONS[kind])
            m, opt = build()
            assert all(isinstance(p, DTensor) for p in m.parameters())
            train(m, opt, x[half], y[half], STEPS - 5)
            assert all(isinstance(v, DTensor) for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))
            dtypes = {v.dtype for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)}
            assert dtypes == {OPTIONS[kind].get('state_dtype', dtype)}, dtypes
            if kind == 'fsdp_kahan': assert all('kahan_comp' in s for s in opt.state.values())
            dcp.save({'model': get_model_state_dict(m), 'optim': get_optimizer_state_dict(m, opt)}, checkpoint_id=f'{outdir}/dcp')
            train(m, opt, x[half], y[half], 5)
            full = [p.full_tensor().detach() for p in m.parameters()]
            m2, opt2 = build()
            sd = {'model': get_model_state_dict(m2), 'optim': get_optimizer_state_dict(m2, opt2)}
            dcp.load(sd, checkpoint_id=f'{outdir}/dcp')
            set_model_state_dict(m2, sd['model']); set_optimizer_state_dict(m2, opt2, sd['optim'])
            assert {v.dtype for s in opt2.state.values() for v in s.values() if isinstance(v, torch.Tensor)} == dtypes
            train(m2, opt2, x[half], y[half], 5)
            resumed = [p.full_tensor().detach() for p in m2.parameters()]
            if rank == 0: torch.save({'full': full, 'resumed': resumed}, f'{outdir}/{kind}.pt')
        dist.barrier()  # both ranks done (results saved) before either leaves
    except BaseException:
        dist.destroy_process_group()
        raise
    # leave without tearing gloo down: its teardown, racing the other process's, can abort one of them (SIGABRT,
    # "terminate called without an active exception") after all the work is done
    os._exit(0)
