"`optcb compare`: the offline digits data, the default run, own-vs-PyTorch matching, and clear errors that leave nothing behind"
import csv, json, warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
import pytest
import optcb.compare as C
from optcb.cli import main

@pytest.fixture(scope='module', autouse=True)
def data_home(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv('OPTCB_DATA', str(tmp_path_factory.mktemp('data')))
    yield
    mp.undo()

def test_digits_folder_has_imagenette_layout():
    root = C.digits_folder()
    assert C.check_image_folder(root) == [str(i) for i in range(10)]
    n_train, n_val = len(list((root / 'train').glob('*/*.png'))), len(list((root / 'val').glob('*/*.png')))
    assert (n_train, n_val) == (1797 - 359, 359)
    assert C.digits_folder() == root  # cached: built once

def test_default_run_meets_its_promise(tmp_path):
    "The README's default: four optimizers, Adam ≥ 0.9 accuracy on the digits validation split, all outputs written"
    res = C.compare(out=tmp_path / 'out', quiet=True, print_fn=lambda *a: None)
    by = {r['optimizer']: r for r in res['results']}
    assert list(by) == ['sgd', 'momentum', 'rmsprop', 'adam']
    assert by['adam']['accuracy'] >= 0.9
    assert by['adam']['valid_loss'] < by['sgd']['valid_loss']  # the classic ranking's first fact
    for f in ['results.json', 'summary.csv', 'epochs.csv', 'losses.png', 'accuracy.png']: assert (tmp_path / 'out' / f).stat().st_size > 0
    saved = json.loads((tmp_path / 'out' / 'results.json').read_text())
    assert [len(r['epochs']) for r in saved['results']] == [3] * 4 and len(saved['results'][0]['batch_losses']) == 3 * 22
    check_outputs_read_back(tmp_path / 'out', res)
    # every optimizer starts from the same weights and sees the same first batch: the same loss before any step
    assert len({r['batch_losses'][0] for r in res['results']}) == 1

def check_outputs_read_back(out, res):
    "results.json, summary.csv and epochs.csv hold what `compare` returned: the last epoch's figures, in their columns"
    saved = json.loads((out / 'results.json').read_text())
    assert saved['results'] == json.loads(json.dumps(res['results']))
    for r in res['results']:  # the summary is the last epoch, not the best
        assert (r['train_loss'], r['valid_loss'], r['accuracy']) == tuple(r['epochs'][-1][k] for k in ('train_loss', 'valid_loss', 'accuracy'))
    summary = list(csv.DictReader(open(out / 'summary.csv')))
    assert [s['optimizer'] for s in summary] == [r['optimizer'] for r in res['results']]
    for s, r in zip(summary, res['results']):
        for k in ('lr', 'train_loss', 'valid_loss', 'accuracy', 'seconds'): assert float(s[k]) == pytest.approx(r[k], rel=1e-12), k
    epochs = list(csv.DictReader(open(out / 'epochs.csv')))
    expected = [(r['optimizer'], e) for r in res['results'] for e in r['epochs']]
    assert len(epochs) == len(expected)
    for row, (name, e) in zip(epochs, expected):
        assert row['optimizer'] == name and int(row['epoch']) == e['epoch']
        for k in ('train_loss', 'valid_loss', 'accuracy', 'time'): assert float(row[k]) == pytest.approx(e[k], rel=1e-12), k

def test_match_makes_optcb_adam_and_torch_adamw_coincide(tmp_path):
    res = C.compare(opts='adam,torch:AdamW', match=True, epochs=1, out=tmp_path, quiet=True, print_fn=lambda *a: None)
    assert res['match']['max_abs_loss_difference']['torch:AdamW'] < 1e-6
    a, b = res['results']
    assert len(a['batch_losses']) == len(b['batch_losses']) == 22

@pytest.mark.parametrize('kw,match', [(dict(opts='sgd,adamm'), "unknown optimizer 'adamm'"),
                                      (dict(opts='torch:Adamm'), "torch.optim has no optimizer class 'Adamm'"),
                                      (dict(lr='fast'), "'fast' is not a number"),
                                      (dict(lr='yogi=1e-3'), "'yogi' is not one of"),
                                      (dict(data='mnist'), "unknown --data 'mnist'")])
def test_bad_arguments_are_named(kw, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        C.compare(out=tmp_path / 'out', quiet=True, print_fn=lambda *a: None, **kw)
    assert not (tmp_path / 'out').exists()

@pytest.mark.parametrize('make,match', [(lambda p: None, 'does not exist'), (lambda p: (p / 'train' / 'a').mkdir(parents=True), "no 'val' folder"),
                                        (lambda p: [(p / s / 'a').mkdir(parents=True) for s in ('train', 'val')], 'without images')])
def test_malformed_data_folder_is_named(make, match, tmp_path):
    folder = tmp_path / 'data'; make(folder)
    with pytest.raises(ValueError, match=match):
        C.compare(path=folder, out=tmp_path / 'out', quiet=True, print_fn=lambda *a: None)
    assert not (tmp_path / 'out').exists()

def test_failure_while_writing_leaves_previous_results_untouched(tmp_path, monkeypatch):
    out = tmp_path / 'out'; out.mkdir(); (out / 'results.json').write_text('previous')
    def broken(*a): raise RuntimeError('disk full')
    monkeypatch.setattr(C, 'plot_results', broken)
    with pytest.raises(RuntimeError, match='disk full'):
        C.compare(opts='sgd', epochs=1, out=out, quiet=True, print_fn=lambda *a: None)
    assert (out / 'results.json').read_text() == 'previous' and sorted(p.name for p in tmp_path.iterdir()) == ['out']

def test_cli_reports_errors_with_exit_status_2(capsys):
    assert main(['compare', '--opts', 'nope']) == 2
    assert "optcb compare: error: unknown optimizer 'nope'" in capsys.readouterr().err
    assert main(['frobnicate']) == 2
