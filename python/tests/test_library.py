"""The shipped libbpstream.so (the one the extension loads): its dynamic symbol table holds
the bps_ ABI and nothing else, and it finds nothing but itself (RUNPATH $ORIGIN)."""

import os
import shutil
import subprocess
import sys

import pytest

import bpstream._bpstream as extension

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF")

LIBRARY = os.path.join(os.path.dirname(extension.__file__), "libbpstream.so")


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} (binutils) not installed")
    return path


def test_the_extension_loads_the_library_beside_it():
    assert os.path.exists(LIBRARY), LIBRARY
    with open(f"/proc/{os.getpid()}/maps") as maps:
        loaded = {line.split()[-1] for line in maps if line.rstrip().endswith("libbpstream.so")}
    assert loaded == {os.path.realpath(LIBRARY)}, loaded


def test_only_bps_symbols_are_in_the_dynamic_symbol_table():
    # Every defined .dynsym entry, global or not: a LOCAL entry (nm's lowercase letters) is
    # not bound to by other objects, but it still shows, and it is what gold left behind
    # for Swift type metadata reached through the GOT before the library linked with lld.
    out = subprocess.run(
        [tool("nm"), "-D", "--defined-only", LIBRARY], check=True, capture_output=True, text=True
    ).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.strip()]
    others = [name for name in names if not name.startswith("bps_")]
    assert others == [], f"{len(others)} non-bps_ symbols exported: {others}"
    assert "bps_stream_put" in names and "bps_abi_version" in names


def test_runpath_is_origin_only():
    out = subprocess.run(
        [tool("readelf"), "-d", LIBRARY], check=True, capture_output=True, text=True
    ).stdout
    paths = [line.split("[", 1)[1].rstrip("]") for line in out.splitlines()
             if "(RUNPATH)" in line or "(RPATH)" in line]
    assert paths == ["$ORIGIN"], paths
