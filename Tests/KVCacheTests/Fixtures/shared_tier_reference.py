#!/usr/bin/env python3
"""A plain reference replay of a Mooncake-format trace over N engine nodes sharing a remote tier.

Request i goes to node i mod N. Each node has its own LRU of CAPACITY blocks
(collections.OrderedDict; 0 = unbounded), every block of the request touched in order.
A request's reusable prefix is its leading blocks found in its node's LRU, then, where
that run ends, the leading blocks found in the shared tier (a Python set: unbounded).
The blocks past the reusable prefix are added to the shared tier.
Usage: shared_tier_reference.py TRACE BLOCK_TOKENS NODES CAPACITY
Prints two JSON objects: "remote": false (local tiers only) and "remote": true.
"""
import json
import sys
from collections import OrderedDict


def replay(reqs, nodes, cap, block_tokens, shared):
    caches = [OrderedDict() for _ in range(nodes)]
    out = dict(blocks=0, local_hit_blocks=0, remote_hit_blocks=0, tokens=0, hit_tokens=0)
    for i, r in enumerate(reqs):
        cache, ids = caches[i % nodes], r["hash_ids"]
        local = 0
        while local < len(ids) and ids[local] in cache:
            local += 1
        remote = 0
        if shared is not None:
            while local + remote < len(ids) and ids[local + remote] in shared:
                remote += 1
        for h in ids:
            if h in cache:
                cache.move_to_end(h)
            else:
                cache[h] = True
                if cap and len(cache) > cap:
                    cache.popitem(last=False)
        if shared is not None:
            shared.update(ids[local + remote:])
        out["blocks"] += len(ids)
        out["local_hit_blocks"] += local
        out["remote_hit_blocks"] += remote
        out["tokens"] += r["input_length"]
        out["hit_tokens"] += min((local + remote) * block_tokens, r["input_length"])
    return out


def main():
    with open(sys.argv[1]) as f:
        reqs = [json.loads(line) for line in f if line.strip()]
    block_tokens, nodes, cap = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    for remote in (False, True):
        o = replay(reqs, nodes, cap, block_tokens, set() if remote else None)
        o.update(remote=remote, nodes=nodes, capacity=cap,
                 block_hit_rate=(o["local_hit_blocks"] + o["remote_hit_blocks"]) / o["blocks"] if o["blocks"] else 0)
        print(json.dumps(o))


if __name__ == "__main__":
    main()
