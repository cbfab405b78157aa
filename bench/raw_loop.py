#!/usr/bin/env python3
"""The floor nvirtd's cold start is held to: a fresh Python process that reads N domain
XML files and runs libvirt-python's define + create loop, nothing else.

    python bench/raw_loop.py URI DIR [--threads T] [--defines-first]

Prints nothing; its wall time, from process start to exit, is the figure.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import libvirt


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("dir")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--defines-first", action="store_true", help="define every domain, then start every one")
    args = p.parse_args()
    libvirt.registerErrorHandler(lambda *_: None, None)
    xmls = [open(os.path.join(args.dir, f)).read() for f in sorted(os.listdir(args.dir)) if f.endswith(".xml")]
    conns = [libvirt.open(args.uri) for _ in range(min(args.threads, 4))]

    def one(i_xml: tuple[int, str]) -> None:
        i, xml = i_xml
        conns[i % len(conns)].defineXML(xml).create()

    if args.defines_first:
        doms = [conns[i % len(conns)].defineXML(x) for i, x in enumerate(xmls)]
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda d: d.create(), doms))
    elif args.threads == 1:
        for item in enumerate(xmls):
            one(item)
    else:
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(one, enumerate(xmls)))
    sys.exit(0)


if __name__ == "__main__":
    main()
