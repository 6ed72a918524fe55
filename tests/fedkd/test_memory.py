"""The launcher's memory watch: summed proportional set sizes of the whole process tree."""

import os
import subprocess
import sys

from fedkd.launch import MemoryWatch, proportional_memory

MIB = 2**20


def test_proportional_memory_counts_live_processes_only():
    own = proportional_memory([os.getpid()])
    assert own > 10 * MIB  # this interpreter, with pytest loaded
    assert proportional_memory([]) == 0
    assert proportional_memory([2**22 + 12345]) == 0  # no such process: nothing, no error


def test_the_watch_sees_a_child_that_holds_memory():
    with MemoryWatch(interval=0.1) as quiet:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(1)"], check=True)
    # 300 MiB, every page touched (an untouched calloc'd page holds no memory)
    hold = "import time; x = bytearray(300 * 2**20); x[::4096] = b'1' * (75 * 1024); time.sleep(1)"
    with MemoryWatch(interval=0.1) as busy:
        subprocess.run([sys.executable, "-c", hold], check=True)
    assert busy.peak >= quiet.peak + 250 * MIB, (quiet.peak, busy.peak)
