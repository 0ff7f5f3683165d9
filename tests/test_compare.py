"`optcb compare`: the offline digits data, the default run, own-vs-PyTorch matching, and clear errors that leave nothing behind"
import csv, json, math, shutil, warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
import pytest
import optcb.compare as C
from optcb.cli import main
from _util import slow

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

@slow
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

@slow
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

@slow
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

def test_summary_is_the_last_epoch_not_the_best():
    epochs = [dict(epoch=0, train_loss=0.5, valid_loss=0.4, accuracy=0.9, time=1.),
              dict(epoch=1, train_loss=0.6, valid_loss=0.7, accuracy=0.5, time=1.)]
    r = C.summarise('adam', 1e-3, epochs, 2., [1.])
    assert (r['train_loss'], r['valid_loss'], r['accuracy']) == (0.6, 0.7, 0.5)

# -- a user's own folder (issue: compare --path handled the way a careful tool would)
def image_folder(root, n_train=6, n_val=2, classes=('a', 'b'), modes=('L',), size=20, ext='.png'):
    "A small train/val image folder: `n_train`/`n_val` images per class, cycling through PIL `modes`"
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    for split, n in (('train', n_train), ('val', n_val)):
        for j, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                mode = modes[i % len(modes)]
                arr = (rng.random((size + i % 3, size)) * (255 if mode != 'I;16' else 65535) * (0.3 + 0.6 * j)).astype(
                    np.uint16 if mode == 'I;16' else np.uint8)
                im = Image.fromarray(arr) if mode in ('L', 'I;16') else Image.fromarray(arr).convert(mode)
                im.save(root / split / c / f'{i}{ext if mode in ("L", "RGB") else ".png"}')  # JPEG has no alpha, palette, 16 bits
    return root

def quiet(**kw): return dict(dict(quiet=True, print_fn=lambda *a: None, epochs=1, opts='adam'), **kw)

def test_unreadable_images_are_all_named_before_training_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    folder = image_folder(tmp_path / 'mine')
    (folder / 'train' / 'a' / 'broken.png').write_text('not an image')
    (folder / 'val' / 'b' / 'empty.jpg').write_bytes(b'')
    (folder / 'train' / 'b' / 'notes.txt').write_text('ignored: not an image extension')
    monkeypatch.setattr(C, 'train_one', lambda *a, **k: pytest.fail('trained despite bad data'))
    with pytest.raises(ValueError) as e: C.compare(path=folder, out=tmp_path / 'out', **quiet())
    msg = str(e.value)
    assert msg.startswith('2 files in') and 'train/a/broken.png' in msg and 'val/b/empty.jpg' in msg and 'notes.txt' not in msg
    assert not (tmp_path / 'out').exists()
    assert main(['compare', '--path', str(folder), '--out', str(tmp_path / 'out'), '--quiet']) == 2
    err = capsys.readouterr().err
    assert 'cannot be read as images' in err and 'Traceback' not in err

def test_a_folder_too_small_for_the_batch_size_trains_with_a_smaller_one(tmp_path):
    folder = image_folder(tmp_path / 'tiny', n_train=21, n_val=3)  # 42 training images, the protocol's bs is 64
    said = []
    res = C.compare(path=folder, out=tmp_path / 'out', **quiet(print_fn=said.append))
    assert any('42 training images' in s and 'batch size of 8' in s for s in said)
    [r] = res['results']
    assert all(math.isfinite(r[k]) for k in ('train_loss', 'valid_loss')) and len(r['batch_losses']) == 42 // 8

@pytest.mark.parametrize('n_train,n_val,match', [(3, 2, 'only 6 training images'), (6, 0, r'val has class folders without images: b')])
def test_a_folder_that_cannot_train_is_refused(tmp_path, n_train, n_val, match):
    folder = image_folder(tmp_path / 'small', n_train=n_train, n_val=max(n_val, 1))
    if n_val == 0: shutil.rmtree(folder / 'val' / 'b')
    with pytest.raises(ValueError, match=match): C.compare(path=folder, out=tmp_path / 'out', **quiet())

def test_results_are_named_after_the_folder_and_never_replace_another_data_sets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = image_folder(tmp_path / 'flowers', n_train=8, n_val=2)
    C.compare(path=folder, **quiet())
    assert json.loads((tmp_path / 'runs' / 'compare-flowers' / 'results.json').read_text())['data'] == str(folder)
    other = image_folder(tmp_path / 'elsewhere' / 'flowers', n_train=8, n_val=2)  # the same name, other data
    with pytest.raises(ValueError, match='holds the results of data set'):
        C.compare(path=other, out=tmp_path / 'runs' / 'compare-flowers', **quiet())
    assert json.loads((tmp_path / 'runs' / 'compare-flowers' / 'results.json').read_text())['data'] == str(folder)

def test_an_interrupted_run_leaves_the_previous_results(tmp_path, monkeypatch):
    folder = image_folder(tmp_path / 'mine', n_train=8, n_val=2)
    out = tmp_path / 'out'
    C.compare(path=folder, out=out, **quiet())
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    real, calls = C.train_one, []
    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2: raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(C, 'train_one', interrupted)
    with pytest.raises(KeyboardInterrupt): C.compare(path=folder, out=out, **quiet(opts='sgd,adam'))
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['mine', 'out']

def test_mixed_modes_sizes_and_extensions_train(tmp_path):
    folder = image_folder(tmp_path / 'mixed', n_train=8, n_val=2, modes=('L', 'RGB', 'RGBA', 'P', 'I;16'), ext='.jpg')
    image_folder(folder, n_train=2, n_val=1, modes=('RGB',), size=33, ext='.bmp')  # more files, another extension
    [r] = C.compare(path=folder, out=tmp_path / 'out', **quiet())['results']
    assert math.isfinite(r['train_loss']) and len(r['batch_losses']) >= 1

def test_imagenette_without_network_ends_with_a_clear_message(monkeypatch, capsys):
    def offline(*a, **k): raise ConnectionError('no network')
    monkeypatch.setattr(C, 'untar_data', offline)
    assert main(['compare', '--data', 'imagenette', '--epochs', '1']) == 2
    err = capsys.readouterr().err
    assert 'could not download Imagenette' in err and '--data digits' in err and 'Traceback' not in err
