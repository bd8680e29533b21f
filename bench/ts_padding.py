#!/usr/bin/env python3
"""ts_padding.py FILE: the padding share of an MPEG-TS file in percent, as docs/tvfs.md defines it:
null packets (PID 0x1FFF) and H.264 filler-data NAL units (type 12) in video PES packets (the latter
counted as TS bytes, 188 per 184 of payload). Prints one number, e.g. "1.23"."""
import sys


def filler_bytes(es):
    total, at = 0, es.find(b"\0\0\1")
    while 0 <= at < len(es) - 3:
        nxt = es.find(b"\0\0\1", at + 3)
        if es[at + 3] & 0x1F == 12:
            total += (nxt if nxt >= 0 else len(es)) - at
        at = nxt
    return total


def padding(data):
    null = filler = 0
    video = {}  # PID -> elementary stream bytes of its current H.264 PES packet
    for at in range(0, len(data) - 187, 188):
        p = data[at:at + 188]
        pid = ((p[1] & 0x1F) << 8) | p[2]
        if pid == 0x1FFF:
            null += 188
            continue
        control = (p[3] >> 4) & 3
        offset = 4 + (1 + p[4] if control & 2 else 0)
        if not control & 1 or offset >= 188:
            continue
        payload = p[offset:]
        if p[1] & 0x40:
            if pid in video:
                filler += filler_bytes(video.pop(pid))
            if len(payload) > 9 and payload[:3] == b"\0\0\1" and payload[3] & 0xF0 == 0xE0:
                video[pid] = bytearray(payload[9 + payload[8]:])
        elif pid in video:
            video[pid] += payload
    for es in video.values():
        filler += filler_bytes(es)
    return 100.0 * (null + filler * 188 / 184) / max(len(data), 1)


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        print(f"{padding(f.read()):.2f}")
