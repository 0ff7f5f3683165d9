"DDP and FSDP2 (DTensor parameters) with optcb.Adam (and SOAP): two gloo processes on CPU against one process on the whole batch"
import socket, pytest, torch
import torch.multiprocessing as mp
import _dist_worker as W
from _util import slow

pytestmark = [slow, pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed is not available')]

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def spawn(kind, outdir):
    mp.start_processes(W.worker, args=(2, free_port(), kind, str(outdir)), nprocs=2, join=True, start_method='spawn')

@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp('ref') / 'single.pt'
    W.single_process(out)
    return torch.load(out)

@pytest.mark.timeout(180)
def test_ddp_equals_single_process_on_the_combined_batch(tmp_path, reference):
    spawn('ddp', tmp_path)
    for a, b in zip(torch.load(tmp_path / 'ddp.pt'), reference): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

@pytest.mark.timeout(180)
def test_fsdp2_runs_on_dtensors_equals_ddp_and_resumes_from_dcp(tmp_path, reference):
    spawn('fsdp', tmp_path)
    res = torch.load(tmp_path / 'fsdp.pt')
    for a, b in zip(res['full'], reference): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(res['resumed'], res['full']): assert torch.equal(a, b)  # resumed from the checkpoint: bit for bit

@pytest.mark.timeout(180)
def test_fsdp2_with_bfloat16_state_equals_one_process_and_resumes_from_dcp(tmp_path):
    "state_dtype on DTensor parameters: sharded bfloat16 state, the single-process run's parameters, an exact resume"
    W.single_process(tmp_path / 'single16.pt', state_dtype=torch.bfloat16)
    spawn('fsdp_state16', tmp_path)
    res = torch.load(tmp_path / 'fsdp_state16.pt')
    for a, b in zip(res['full'], torch.load(tmp_path / 'single16.pt')): torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(res['resumed'], res['full']): assert torch.equal(a, b)

@pytest.mark.timeout(180)
def test_fsdp2_with_kahan_summation_on_bfloat16_parameters_equals_one_process_and_resumes(tmp_path):
    "bfloat16 parameters sharded by FSDP2, Kahan-compensated: sharded compensation, the single-process run, exact resume"
    W.single_process(tmp_path / 'kahan.pt', dtype=torch.bfloat16, kahan_sum=True)
    spawn('fsdp_kahan', tmp_path)
    res, single = torch.load(tmp_path / 'fsdp_kahan.pt'), torch.load(tmp_path / 'kahan.pt')
    assert all(p.dtype == torch.bfloat16 for p in res['full'])
    for a, b in zip(res['full'], single): torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-2)
    for a, b in zip(res['resumed'], res['full']): assert torch.equal(a, b)

@pytest.mark.timeout(180)
@pytest.mark.parametrize('name,rtol,atol', [('SOAP', 1e-5, 5e-5), ('Shampoo', 1e-4, 1e-5)])  # measured: 1.1e-5, 3.9e-6
def test_matrix_statistics_under_ddp_equal_one_process_and_are_refused_on_fsdp2_shards(tmp_path, name, rtol, atol):
    "SOAP's and Shampoo's statistics of an all-reduced gradient are one process's; of a DTensor shard, not the matrix's"
    kind = name.lower()
    W.single_process(tmp_path / f'{kind}.pt', build=getattr(W, name))
    spawn(f'{kind}_ddp', tmp_path)
    for a, b in zip(torch.load(tmp_path / f'{kind}_ddp.pt'), torch.load(tmp_path / f'{kind}.pt')):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)  # float32 rounding of the averaged gradient, via eigh/SVD
    spawn(f'{kind}_fsdp', tmp_path)
    assert f'{name} on DTensor parameters (FSDP2)' in torch.load(tmp_path / f'{kind}_fsdp.pt')

@pytest.mark.timeout(180)
def test_prodigy_under_ddp_and_fsdp2_equals_one_process(tmp_path):
    """Prodigy's estimate pools sums over every parameter: under DDP each process holds all of them, under FSDP2 a
    shard of each, whose sums DTensor completes; both give one process's parameters and estimate"""
    W.single_process(tmp_path / 'prodigy.pt', build=W.Prodigy)
    one = torch.load(tmp_path / 'prodigy.pt')
    spawn('prodigy_ddp', tmp_path)
    ddp = torch.load(tmp_path / 'prodigy_ddp.pt')
    for a, b in zip(ddp, one):  # the gradient's average rounds differently (measured: 5.5e-6 at most, d ≈ 0.034)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    spawn('prodigy_fsdp', tmp_path)
    sharded = torch.load(tmp_path / 'prodigy_fsdp.pt')
    for a, b in zip(sharded['params'], one):  # measured: 8.9e-7 at most
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    moved = max((a - b).abs().max().item() for a, b in zip(one, W.model().parameters()))
    assert sharded['d'] > 1e-3 and moved > 0.1  # the estimate grew and the parameters moved: not a trivial equality

@pytest.mark.timeout(180)
def test_gradient_release_is_refused_in_a_process_group(tmp_path):
    "Each gradient would be stepped before DDP/FSDP reduce it: refused at construction and by release_gradients()"
    spawn('release', tmp_path)
    errors = torch.load(tmp_path / 'release.pt')
    assert len(errors) == 2 and all('before DDP or FSDP reduce it' in e and 'of 2 processes' in e for e in errors)
