#!/usr/bin/env python3
"""A plain reference replay of a Mooncake-format trace over a prefix-block cache.

For each request, blocks are visited in order: a block hits while it is cached and every
earlier block of the request hit; then it is used (moved to most recent, or inserted and
the cache trimmed to capacity). Two eviction policies:
  lru           collections.OrderedDict, evict the oldest block;
  leaves-first  evict the least recently used block that no cached block extends.
Usage: prefix_replay_reference.py TRACE BLOCK_TOKENS CAPACITY [CAPACITY ...]   (0 = unbounded)
Prints one JSON object per capacity and policy.
"""
import heapq
import json
import sys
from collections import OrderedDict


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def replay_lru(reqs, cap, block_tokens):
    cache = OrderedDict()
    blocks = hit_blocks = tokens = hit_tokens = evictions = 0
    for r in reqs:
        hits, intact = 0, True
        for h in r["hash_ids"]:
            if intact and h in cache:
                hits += 1
            else:
                intact = False
            if h in cache:
                cache.move_to_end(h)
            else:
                cache[h] = True
                if cap and len(cache) > cap:
                    cache.popitem(last=False)
                    evictions += 1
        blocks += len(r["hash_ids"])
        hit_blocks += hits
        tokens += r["input_length"]
        hit_tokens += min(hits * block_tokens, r["input_length"])
    return blocks, hit_blocks, tokens, hit_tokens, evictions


def replay_leaves_first(reqs, cap, block_tokens):
    last_use, parent_of, children = {}, {}, {}
    heap, clock = [], 0
    blocks = hit_blocks = tokens = hit_tokens = evictions = 0
    for r in reqs:
        hits, intact, parent = 0, True, None
        for h in r["hash_ids"]:
            if intact and h in last_use:
                hits += 1
            else:
                intact = False
            clock += 1
            if h in last_use:
                last_use[h] = clock
                if children[h] == 0:
                    heapq.heappush(heap, (clock, h))
            else:
                last_use[h], children[h] = clock, 0
                parent_of[h] = parent if parent in last_use else None
                if parent_of[h] is not None:
                    children[parent_of[h]] += 1
                heapq.heappush(heap, (clock, h))
                while cap and len(last_use) > cap and heap:
                    use, v = heapq.heappop(heap)
                    if last_use.get(v) != use or children[v] > 0:
                        continue  # stale, or not a leaf
                    p = parent_of.pop(v)
                    del last_use[v], children[v]
                    evictions += 1
                    if p is not None and p in last_use:
                        children[p] -= 1
                        if children[p] == 0:
                            heapq.heappush(heap, (last_use[p], p))
            parent = h
        blocks += len(r["hash_ids"])
        hit_blocks += hits
        tokens += r["input_length"]
        hit_tokens += min(hits * block_tokens, r["input_length"])
    return blocks, hit_blocks, tokens, hit_tokens, evictions


def main():
    reqs = load(sys.argv[1])
    block_tokens = int(sys.argv[2])
    for cap in map(int, sys.argv[3:]):
        for name, fn in (("lru", replay_lru), ("leaves-first", replay_leaves_first)):
            b, hb, t, ht, ev = fn(reqs, cap, block_tokens)
            print(json.dumps({"policy": name, "capacity": cap, "blocks": b, "hit_blocks": hb, "tokens": t,
                              "hit_tokens": ht, "evictions": ev, "block_hit_rate": hb / b if b else 0}))


if __name__ == "__main__":
    main()
