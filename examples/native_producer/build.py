"""Builds the example extension tokens.c next to this file (or into a folder given as the
first argument), against the installed bpstream's C API header: no link to libbpstream.

    python examples/native_producer/build.py [OUT_DIR]
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))


def build(out_dir: str = HERE) -> str:
    """Compiles tokens.c; returns the path of the extension module built."""
    import bpstream

    target = os.path.join(out_dir, "tokens" + sysconfig.get_config_var("EXT_SUFFIX"))
    command = [
        os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2", "-Wall", "-Wextra",
        "-I" + sysconfig.get_paths()["include"], "-I" + bpstream.get_include(),
        os.path.join(HERE, "tokens.c"), "-o", target, "-lpthread",
    ]
    subprocess.run(command, check=True)
    return target


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else HERE))
