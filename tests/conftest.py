import os, warnings
# The suite tests the uncompiled paths unless a test asks for compile=True (tests/test_compiled.py): compiling
# every optimizer the suite builds would cost minutes, and the equality tests compare eager paths bit for bit.
os.environ.setdefault('OPTCB_COMPILE', '0')
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
