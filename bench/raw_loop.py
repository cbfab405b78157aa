#!/usr/bin/env python3
"""The floors nvirtd's cold start is held to, as fresh Python processes reading N domain
XML files:

- plain: libvirt-python's define + create loop, nothing else (the issue's baseline);
- --guarantees: the calls nvirtd's guarantees cost a new domain and nothing else: define,
  the read-back its fingerprint is taken from, create, then (once every domain runs, as
  nvirtd orders them) the fingerprint's setMetadata and setAutostart: 5 RPCs, not 2, with
  libvirt's event loop running and every lifecycle event delivered to Python, as nvirtd
  learns state from them. No validation, no rendering, no asyncio: what any
  implementation keeping these guarantees must pay.

    python bench/raw_loop.py URI DIR [--threads T] [--defines-first] [--guarantees]

Prints nothing; its wall time, from process start to exit, is the figure.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import libvirt

# nvirtd's (daemon/core/ownership.py), not imported: the floor pays for no import of nvirtd's
NAMESPACE, PREFIX = "https://nvirtd.dev/xmlns/1", "nvirtd"


def define_and_start(conn: libvirt.virConnect, xml: str) -> tuple[libvirt.virDomain, str]:
    dom = conn.defineXML(xml)
    digest = hashlib.sha256(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode()).hexdigest()[:32]
    dom.create()
    return dom, digest


def record(dom_digest: tuple[libvirt.virDomain, str]) -> None:
    dom, digest = dom_digest
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, f'<owner fingerprint="{digest}"/>', PREFIX, NAMESPACE,
                    libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    dom.setAutostart(1)


def listen_for_events(conns: list[libvirt.virConnect]) -> None:
    """Every lifecycle event reaches Python, as nvirtd's do (what it does with them is not the floor's)."""
    for conn in conns:
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lambda *_: None, None)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("dir")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--defines-first", action="store_true", help="define every domain, then start every one")
    p.add_argument("--guarantees", action="store_true", help="the 5 calls and the events nvirtd's guarantees cost")
    args = p.parse_args()
    libvirt.registerErrorHandler(lambda *_: None, None)
    if args.guarantees:
        libvirt.virEventRegisterDefaultImpl()  # before the connections open, as nvirtd does
        threading.Thread(target=lambda: [libvirt.virEventRunDefaultImpl() for _ in iter(int, 1)],
                         daemon=True).start()
    xmls = [open(os.path.join(args.dir, f)).read() for f in sorted(os.listdir(args.dir)) if f.endswith(".xml")]
    conns = [libvirt.open(args.uri) for _ in range(min(args.threads, 4))]
    if args.guarantees:
        listen_for_events(conns[:1])

    def one(i_xml: tuple[int, str]) -> None:
        i, xml = i_xml
        conns[i % len(conns)].defineXML(xml).create()

    if args.guarantees:  # as nvirtd orders them: the records after the starts
        with ThreadPoolExecutor(args.threads) as pool:
            started = list(pool.map(lambda i_xml: define_and_start(conns[i_xml[0] % len(conns)], i_xml[1]),
                                    enumerate(xmls)))
            list(pool.map(record, started))
    elif args.defines_first:
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
