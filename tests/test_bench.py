"Smoke test of `optcb bench`: every contender runs, compares like with like, and the compiled one does not recompile"
import pytest
import optcb.bench as B
from _util import slow

# optimizers with an independent version in torch or fastai to agree with (yogi's reference is in test_yogi.py)
@slow
@pytest.mark.parametrize('opt', ['adam', 'momentum', 'rmsprop', 'adagrad', 'lamb'])
def test_bench_runs_and_contenders_agree(opt, monkeypatch):
    monkeypatch.setenv('OPTCB_COMPILE', '1')
    shapes = [(64, 3, 3, 3), (64,), (300,), (0,), (10, 10)] + [(50,)] * 20 + [(2**18,)]
    res = B.bench_set(shapes, B.contenders(opt, include_torch_compile=False), rounds=3)
    meta = res.pop('_meta')
    assert meta['graphs_compiled_while_timing'] == 0  # an lr changing every round does not recompile optcb's kernel
    assert {'optcb per-tensor', 'optcb group (foreach)', 'optcb default (compiled)'} <= res.keys()
    assert meta['reference'] in res and res[meta['reference']]['ratio_to_fused'] == 1
    loop_ref = res[meta['reference'] + ', Learner loop']  # the Learner loop is compared with fused in that loop
    assert loop_ref['ratio_to_fused'] == 1 and 'optcb default, Learner loop' in res
    for name, r in res.items():
        assert r['median_ms'] > 0 and r['q1_ms'] <= r['median_ms'] <= r['q3_ms']
        if 'yardstick' not in name: assert r['rel_diff_to_first'] < 1e-4, name  # the same algorithm everywhere
    assert any(n.startswith(('torch', 'fastai')) and 'yardstick' not in n for n in res)  # ...as an independent one

def test_bench_cli_rejects_unknown_names(capsys):
    from optcb.cli import main
    assert main(['bench', '--sets', 'tiny']) == 2 and "unknown parameter set 'tiny'" in capsys.readouterr().err
    assert main(['bench', '--opt', 'sophia']) == 2 and "unknown optimizer 'sophia'" in capsys.readouterr().err

def test_an_empty_set_list_times_no_step(monkeypatch):
    "`--sets ''` is no parameter set (the end-to-end epoch alone, with `--e2e`), not the optimizer's default sets"
    timed = []
    monkeypatch.setattr(B, 'bench_set', lambda shapes, builders, **k: timed.append(shapes) or {})
    monkeypatch.setattr(B, 'format_results', lambda res: '')
    assert B.bench(sets='', log=lambda *a: None) == {} and timed == []
    default = list(B.entry('adam').bench_spec().sets)
    assert list(B.bench(sets=None, log=lambda *a: None)) == default and len(timed) == len(default) > 0
