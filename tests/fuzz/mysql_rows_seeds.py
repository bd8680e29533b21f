#!/usr/bin/env python3
"""Seeds for the mysql_rows fuzz target from a real binlog file: one seed per ROWS event, paired
with the TABLE_MAP event it refers to (u16 length | table map body | kind | row images).
Usage: mysql_rows_seeds.py BINLOG OUTDIR"""
import hashlib, os, struct, sys

data = open(sys.argv[1], "rb").read()
out = sys.argv[2]
assert data[:4] == b"\xfebin", "not a binlog"
at, checksum, maps = 4, 0, {}
while at + 19 <= len(data):
    size = struct.unpack_from("<I", data, at + 9)[0]
    kind = data[at + 4]
    event = data[at:at + size]
    if kind == 15:  # format description: the checksum algorithm is the byte before the CRC
        checksum = 4 if event[-5] == 1 else 0
    body = event[19:len(event) - (checksum if kind != 15 else 0)]
    if kind == 19:
        maps[int.from_bytes(body[:6], "little")] = body
    elif kind in (23, 24, 25, 30, 31, 32, 166, 167, 168, 169, 170, 171):
        table = maps.get(int.from_bytes(body[:6], "little"))
        rows = body[8:]
        if kind in (30, 31, 32, 169, 170, 171):
            rows = body[8 + struct.unpack_from("<H", body, 8)[0]:]
        if kind >= 166:
            # The fuzz target takes plain row images: inflate MariaDB's compressed ones here.
            import zlib
            columns = rows[0]  # the test tables have fewer than 251 columns
            plain = 1 + (columns + 7) // 8 * (2 if kind in (167, 170) else 1)
            header = rows[plain]
            rows = rows[:plain] + zlib.decompress(rows[plain + 1 + (header & 7):])
        op = {23: 0, 30: 0, 166: 0, 169: 0, 24: 1, 31: 1, 167: 1, 170: 1}.get(kind, 2)
        if table is not None and len(table) < 65536:
            seed = struct.pack("<H", len(table)) + table + bytes([op]) + rows
            name = hashlib.sha1(seed).hexdigest()[:16]
            open(os.path.join(out, name), "wb").write(seed)
    at += size
