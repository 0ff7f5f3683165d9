import os, warnings
# The suite tests the uncompiled paths unless a test asks for compile=True (tests/test_compiled.py): compiling
# every optimizer the suite builds would cost minutes, and the equality tests compare eager paths bit for bit.
os.environ.setdefault('OPTCB_COMPILE', '0')
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')

def pytest_addoption(parser):
    parser.addoption('--slow', action='store_true',
                     help='also run the tests marked slow (CI and the README run them; the default run leaves them out)')

def _runs_slow(config):
    "--slow, a -m expression (it chooses for itself), or only node ids named (`pytest tests/x.py::test_y` runs it)"
    args = config.args or []
    return (config.getoption('--slow') or bool(config.getoption('markexpr'))
            or (args and all('::' in a for a in args)))

def pytest_collection_modifyitems(config, items):
    if _runs_slow(config): return
    left = [i for i in items if i.get_closest_marker('slow')]
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = [i for i in items if not i.get_closest_marker('slow')]
        config._optcb_slow_left = len(left)

def pytest_terminal_summary(terminalreporter, config):
    n = getattr(config, '_optcb_slow_left', 0)
    if n: terminalreporter.write_line(f'{n} slow tests left out of this run: `pytest --slow` runs them too (CI does)')
