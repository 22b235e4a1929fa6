#!/usr/bin/env python3
"""A hostile client for bench/frontend_cost.sh: floods `shardwise serve` with expensive junk
until killed — ZeroMQ frames just under the frame limit (a deeply nested one, a wide array of
numbers under an unknown key, duplicate keys) and the same bodies as HTTP POSTs — so that the
benchmark beside it shows how far one abusive client moves everyone else's latency.

Usage: abusive_client.py --zmq tcp://HOST:PORT --http http://HOST:PORT [--mb 15]
                         [--interval S]   (seconds between junk messages per endpoint; 0: flood)
"""
import argparse
import http.client
import threading
import time
import urllib.parse

import zmq


def bodies(mb):
    n = mb << 20
    deep = '{"v": 1, "type": "generate", "x": ' + "[" * (n // 2 - 64) + "]" * (n // 2 - 64) + "}"
    wide_items = ",".join(["123456789"] * (n // 10 - 16))
    wide = '{"v": 1, "type": "generate", "junk": [' + wide_items + '], "prompt_ids": [1]}'
    dup = '{"v": 1, "type": "ping", ' + ", ".join(['"k": 1'] * (n // 8 - 16)) + "}"
    return [b.encode() for b in (deep, wide, dup)]


def zmq_flood(endpoint, payloads, counts, interval):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 10)
    sock.connect(endpoint)
    i = 0
    while True:
        sock.send(payloads[i % len(payloads)])
        i += 1
        counts["zmq"] += 1
        try:  # drain the error replies
            while True:
                sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            pass
        time.sleep(interval)


def http_flood(base, payloads, counts, interval):
    u = urllib.parse.urlparse(base)
    i = 0
    while True:
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            c.request("POST", "/v1/completions", body=payloads[i % len(payloads)],
                      headers={"Content-Type": "application/json"})
            c.getresponse().read()
            c.close()
        except OSError:
            pass
        i += 1
        counts["http"] += 1
        time.sleep(interval)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zmq")
    ap.add_argument("--http")
    ap.add_argument("--mb", type=int, default=15)
    ap.add_argument("--interval", type=float, default=0.0)
    a = ap.parse_args()
    payloads = bodies(a.mb)
    counts = {"zmq": 0, "http": 0}
    threads = []
    if a.zmq:
        threads.append(threading.Thread(target=zmq_flood, args=(a.zmq, payloads, counts, a.interval),
                                        daemon=True))
    if a.http:
        threads.append(threading.Thread(target=http_flood, args=(a.http, payloads, counts, a.interval),
                                        daemon=True))
    for t in threads:
        t.start()
    start = time.time()
    try:
        while True:
            time.sleep(5)
            print(f"abusive_client: {counts} frames/bodies in {time.time() - start:.0f} s",
                  flush=True)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
