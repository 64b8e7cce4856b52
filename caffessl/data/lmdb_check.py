"""Validate an LMDB file before it is memory-mapped: a data.mdb shorter than its own meta page says (truncated,
or overwritten by something else) would make the first read past its end kill the process with SIGBUS.

LMDB keeps two meta pages at the start of data.mdb (page header 16 bytes, then MDB_meta: magic 0xBEEFC0DE,
version, address, map size, two MDB_db records whose first holds the page size, last used page, txn id); the
one with the larger txn id is current. The file must hold pages 0..last_pg.
"""
from __future__ import annotations

import os
import struct

from ..errors import DataSourceError

MAGIC = 0xBEEFC0DE
_META = 16              # page header size (64-bit build)


def required_size(path: str, where: str) -> int:
    """The byte size data.mdb must have according to its current meta page; DataSourceError otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(2 * 65536 + 256)
    except OSError as e:
        raise DataSourceError(f"{where}: cannot read LMDB file '{path}' ({e.strerror})") from None
    metas = []
    offsets = [0]
    if len(head) >= _META + 136:
        psize = struct.unpack_from("<I", head, _META + 24)[0]
        offsets.append(psize)
    for off in offsets:
        if len(head) < off + _META + 136:
            continue
        magic, _version = struct.unpack_from("<II", head, off + _META)
        psize = struct.unpack_from("<I", head, off + _META + 24)[0]
        last_pg, txnid = struct.unpack_from("<QQ", head, off + _META + 120)
        if magic == MAGIC and psize >= 512 and psize & (psize - 1) == 0:
            metas.append((txnid, last_pg, psize))
    if not metas:
        raise DataSourceError(f"{where}: '{path}' is not an LMDB data file (no valid meta page)")
    _txn, last_pg, psize = max(metas)
    return (last_pg + 1) * psize


def check_lmdb_file(path: str, where: str) -> int:
    """Refuse a data.mdb shorter than its meta page requires; return the required size."""
    need = required_size(path, where)
    have = os.path.getsize(path)
    if have < need:
        raise DataSourceError(f"{where}: LMDB file '{path}' is truncated or damaged ({have} bytes, its meta page "
                              f"needs {need}); rebuild the database")
    return need


def check_still_whole(path: str, need: int, where: str) -> None:
    """Between batches: the mapped file must not have shrunk under the reader (SIGBUS on the next read)."""
    try:
        have = os.path.getsize(path)
    except OSError as e:
        raise DataSourceError(f"{where}: LMDB file '{path}' disappeared while reading ({e.strerror})") from None
    if have < need:
        raise DataSourceError(f"{where}: LMDB file '{path}' was truncated while training ({have} bytes, it needs "
                              f"{need}); rebuild the database and resume from the last snapshot")
