"""Compiled kernels (numba) of single-query recall: the sparse row product (item-CF, and the node weights of the
KG and popular routes), the top ``n`` of a candidate list, and for the routes that prune by item groups (KG,
popular) the groups' terms and a merge of their items.

One query touches a few hundred groups and reads a few hundred items; done with numpy, that is dozens of small
array calls per route, each costing more in dispatch than in work. These loops do the same arithmetic, in the
same float order, as the sparse products of the batched path (``tests/test_route_pruning.py`` checks the lists
to the bit):

- :func:`sparse_row_product`: ``w @ B`` for one sparse row, scipy's float32 sums and column order;
- :func:`best_n`: the best ``n`` of a candidate list (score, then lower index), through a heap of ``n``;
- :func:`group_terms`: each reached group's term ``sum_c w[c] * M[g, c]``, float32, summed in the query's node
  order (the order in which scipy's product kernel sums a row);
- :func:`merge_top`: the best ``n`` items of many streams, each stream a group's items in priority order with a
  factor (score = priority × factor), merged with a heap: a group is read only as far as its items can still
  reach the top ``n``; groups reached only through their key node (a popular route's top category) wait in key
  lists by first priority and are opened only when their bound can still reach it.

Scratch arrays (one entry per column or group) are kept per thread (:func:`scratch`) and left cleared by the
kernels, so a query costs what it touches, not the catalog's size. At 1M items what remains is mostly memory
latency: a query's groups, rows and items lie far apart.

Compiled on first use and cached on disk (``cache=True``: next to this file, or numba's user cache directory when
that is read-only); ``nogil`` so threads answering queries run them in parallel.
"""
from __future__ import annotations

import threading

import numpy as np
from numba import njit

_local = threading.local()


def scratch(n: int, dtype) -> np.ndarray:
    """This thread's zeroed scratch array of ``dtype``, at least ``n`` long, for the kernels that take one (an
    accumulator, a flag per column or group, a position per node): they leave it zero again, so every kernel and
    route of a thread shares one array per dtype, and a query costs what it touches, not the catalog's size. A new
    array is written once (``np.full``), so its pages are mapped then rather than on a query's first touch."""
    dtype = np.dtype(dtype)
    arrays = getattr(_local, "arrays", None)
    if arrays is None:
        arrays = _local.arrays = {}
    have = arrays.get(dtype)
    if have is None or len(have) < n:
        have = arrays[dtype] = np.full(n, 0, dtype)
    return have


def stream_table(ptr: np.ndarray, items: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """One row per stream ``items[ptr[g]:ptr[g + 1]]`` for :func:`merge_top`: start, stop, first item, and the
    first item's priority as float64 bits (exact for int64 counts below 2**53 and for float32), int64."""
    start, stop = ptr[:-1], ptr[1:]
    first = np.minimum(start, max(len(items) - 1, 0))
    table = np.empty((len(start), 4), np.int64)
    table[:, 0], table[:, 1] = start, stop
    table[:, 2] = items[first] if len(items) else -1
    table[:, 3] = (priority[first].astype(np.float64) if len(items) else np.zeros(len(start))).view(np.int64)
    return table


@njit(cache=True, nogil=True)
def _entries(ptr, rows):  # pragma: no cover
    """Entries in ``rows`` of a CSR with row pointers ``ptr``."""
    count = 0
    for r in rows:
        count += ptr[r + 1] - ptr[r]
    return count


@njit(cache=True, nogil=True)
def _touch(ptr, index, rows, mark):  # pragma: no cover
    """The distinct columns of ``rows`` of a CSR (``ptr``, ``index``), in the order first seen; marks them."""
    seen = np.empty(_entries(ptr, rows), np.int64)
    m = 0
    for r in rows:
        for e in range(ptr[r], ptr[r + 1]):
            m = _mark_new(index[e], mark, seen, m)
    return seen[:m]


@njit(cache=True, nogil=True)
def _mark_new(j, mark, seen, m):  # pragma: no cover
    """Marks ``j`` and appends it to ``seen[:m]`` unless marked already; the new length."""
    if mark[j]:
        return m
    mark[j] = True
    seen[m] = j
    return m + 1


@njit(cache=True, nogil=True)
def group_terms(touch_ptr, touch_groups, pair_ptr, pair_nodes, pair_groups, pair_reach, node_ptr, node_groups,
                node_weights, ptr, group_nodes, group_weights, nodes, weights, reach, acc, mark,
                node_pos):  # pragma: no cover
    """Groups that a CSR nodes × groups ``(touch_ptr, touch_groups)`` lists under one of the nodes ``reach``, or that
    the pairs of a node of ``pair_reach`` list under another of ``nodes`` (:attr:`ItemGroups.keyed`), ascending, and
    their terms for node weights ``(nodes, weights)`` (float32, summed in the order of ``nodes``), zero terms
    dropped. The touch CSR is the groups' nodes × groups CSR (``node_ptr``, ``node_groups``, ``node_weights``) or
    a part of it (:attr:`ItemGroups.keyed`: each group under its nodes but its key). The
    groups' weights come twice: as that nodes × groups CSR and as a groups × nodes one (``ptr``, ``group_nodes``,
    ``group_weights``); the kernel reads whichever touches fewer entries (node by node when ``reach`` is all of
    ``nodes`` and the rows are short; group by group when it is a few nodes of many groups, e.g. a query's brands
    among its categories). ``acc`` (float32) and ``mark`` (bool), one per group, and ``node_pos`` (one per node)
    are scratch space, zero on entry and on return."""
    touched = _touch(touch_ptr, touch_groups, reach, mark)
    if len(pair_reach):
        touched = np.concatenate((touched, _touch_pairs(pair_ptr, pair_nodes, pair_groups, pair_reach, nodes, mark)))
    touched = np.sort(touched)
    if _entries(node_ptr, nodes) <= _entries(ptr, touched):
        for i in range(len(nodes)):
            c = nodes[i]
            w = weights[i]
            for e in range(node_ptr[c], node_ptr[c + 1]):
                g = node_groups[e]
                if mark[g]:
                    acc[g] += w * node_weights[e]
    else:
        _set_positions(node_pos, nodes, 1)
        width = 0
        for g in touched:
            width = max(width, ptr[g + 1] - ptr[g])
        at = np.empty(width, np.int64)
        for g in touched:
            acc[g] = _group_term(ptr, group_nodes, group_weights, g, weights, node_pos, at)
        _set_positions(node_pos, nodes, 0)
    return _drain(touched, acc, mark)


@njit(cache=True, nogil=True)
def _touch_pairs(pair_ptr, pair_nodes, pair_groups, keys, nodes, mark):  # pragma: no cover
    """The groups not yet marked whose key is one of ``keys`` and that hold another of ``nodes`` (pairs: per key,
    the other nodes of its groups ascending, beside the group); marks them."""
    count = 0
    for k in keys:
        count += pair_ptr[k + 1] - pair_ptr[k]
    seen = np.empty(count, np.int64)
    m = 0
    for k in keys:
        lo, hi = pair_ptr[k], pair_ptr[k + 1]
        if lo == hi:
            continue
        row = pair_nodes[lo:hi]
        for c in nodes:
            if c == k:
                continue
            for e in range(lo + np.searchsorted(row, c), lo + np.searchsorted(row, c, side="right")):
                m = _mark_new(pair_groups[e], mark, seen, m)
    return seen[:m]


@njit(cache=True, nogil=True)
def _set_positions(node_pos, nodes, on):  # pragma: no cover
    """``node_pos[nodes[i]] = i + 1`` (``on``), or back to 0."""
    for i in range(len(nodes)):
        node_pos[nodes[i]] = (i + 1) * on


@njit(cache=True, nogil=True)
def _group_term(ptr, group_nodes, group_weights, g, weights, node_pos, at):  # pragma: no cover
    """Group ``g``'s term: its weights (``group_weights[ptr[g]:ptr[g + 1]]``) times the query's ``weights`` of its
    nodes (``node_pos``: a node's place in the query, 1-based; 0: not in it), float32, summed in the query's node
    order (as a sparse product sums them); ``at`` is scratch of the group's width."""
    k = 0
    for e in range(ptr[g], ptr[g + 1]):  # the group's nodes among the query's, in the query's order
        p = node_pos[group_nodes[e]]
        if p > 0:
            t = k
            while t > 0 and node_pos[group_nodes[at[t - 1]]] > p:
                at[t] = at[t - 1]
                t -= 1
            at[t] = e
            k += 1
    term = np.float32(0)
    for t in range(k):
        e = at[t]
        term += weights[node_pos[group_nodes[e]] - 1] * group_weights[e]
    return term


@njit(cache=True, nogil=True)
def _drain(keys, acc, mark):  # pragma: no cover
    """``(keys, acc[keys])`` for the keys whose sum is not 0, in the order given; clears ``acc`` and ``mark`` there."""
    out_k = np.empty(len(keys), np.int64)
    out_s = np.empty(len(keys), acc.dtype)
    k = 0
    for j in keys:
        if acc[j] != 0:
            out_k[k] = j
            out_s[k] = acc[j]
            k += 1
        acc[j] = 0
        mark[j] = False
    return out_k[:k], out_s[:k]


@njit(cache=True, nogil=True)
def _contains(sorted_values, x):  # pragma: no cover
    i = np.searchsorted(sorted_values, x)
    return i < len(sorted_values) and sorted_values[i] == x


@njit(cache=True, nogil=True)
def _better(s_a, i_a, s_b, i_b):  # pragma: no cover
    return s_a > s_b or (s_a == s_b and i_a < i_b)


@njit(cache=True, nogil=True)
def _sift_down(hs, hj, hk, size, at, worst):  # pragma: no cover
    """Sift entry ``at`` down a heap of ``(score, item, stream)`` whose top is the best entry (higher score; ties:
    lower item), or with ``worst`` the worst one."""
    while True:
        top = at
        for c in (2 * at + 1, 2 * at + 2):
            if c < size and (_better(hs[top], hj[top], hs[c], hj[c]) if worst
                             else _better(hs[c], hj[c], hs[top], hj[top])):
                top = c
        if top == at:
            return
        _swap(hs, hj, hk, at, top)
        at = top


@njit(cache=True, nogil=True)
def _swap(hs, hj, hk, a, b):  # pragma: no cover
    hs[a], hs[b] = hs[b], hs[a]
    hj[a], hj[b] = hj[b], hj[a]
    hk[a], hk[b] = hk[b], hk[a]


@njit(cache=True, nogil=True)
def _score(fac, priority, single):  # pragma: no cover
    if single:
        return np.float64(np.float32(np.float32(fac) * np.float32(priority)))
    return np.float64(priority) * fac


@njit(cache=True, nogil=True)
def _sift_up(hs, hj, hk, at, worst):  # pragma: no cover
    """Sift entry ``at`` up a heap of ``(score, item, stream)`` whose top is the best entry, or with ``worst`` the
    worst one."""
    while at > 0:
        up = (at - 1) // 2
        if not (_better(hs[up], hj[up], hs[at], hj[at]) if worst else _better(hs[at], hj[at], hs[up], hj[up])):
            return
        _swap(hs, hj, hk, at, up)
        at = up


@njit(cache=True, nogil=True)
def _list_bound(weight, wsuf, head, base, single):  # pragma: no cover
    """The most any group of a key list can score from its entry on: the query's weight of the key times the
    list's largest weight from there (``wsuf``), rounded as a term is, plus ``base``, times the entry's first
    priority (rounding is monotone, so no group of the rest of the list scores more)."""
    return _score(np.float64(np.float32(np.float32(weight) * wsuf)) + base, head, single)


@njit(cache=True, nogil=True)
def merge_top(items0, priority0, table0, groups0, factor0, keyed0, items1, priority1, table1, groups1, factor1, skip1,
              single, skip_group, exclude, n):  # pragma: no cover
    """The best ``n`` items (score descending, ties: lower index) of the groups ``groups0`` of source 0 and
    ``groups1`` of source 1. Group ``g`` of a source ``(items, priority, table, groups, factor)`` is the stream
    ``items[table[g, 0]:table[g, 1]]`` in priority order (highest first, ``priority`` beside ``items``), scoring
    ``priority * factor[k]`` for ``g = groups[k]`` (float64; rounded to float32 as a float32 product when
    ``single``). Items in ``exclude`` (sorted) are left out, and with ``skip1`` the items of source 1 whose group
    ``skip_group[item]`` is one of source 0's; so are scores <= 0. Items tied with the ``n``-th score are all read,
    then the ties are broken by index. Returns ``(items, scores)``, scores float64.

    ``keyed0`` (:meth:`ItemGroups.lazy`) adds source 0's groups reached only through their key node, read lazily:
    ``groups0`` are then the groups reached through another node (with their terms), and each query node's key
    list (:attr:`ItemGroups.keyed`: the groups whose key it is, by first priority) is one more stream, of upper
    bounds; a group of it is opened (term ``weight * key weight``, factor ``term + base``) only when its bound
    comes to the top, i.e. when it may still reach the top ``n``. Weights must not be negative.

    The streams are merged with a heap; an item is checked against ``exclude`` and the skipped groups only when it
    comes out of it, so a group costs one look at its first item unless that item reaches the top. That look
    reads one row of ``table`` (:attr:`ItemGroups.table`: start, stop, first item, its priority as float64 bits),
    one cache line per group rather than one in each of four arrays."""
    key_ptr, key_groups, key_head, key_w, key_wsuf, group_key, group_key_w, nodes, weights, base, node_pos = keyed0
    G0 = len(groups0)
    G = G0 + len(groups1)
    S = G
    for c in nodes:  # a stream per key list, and one per group it may open
        if key_ptr[c] < key_ptr[c + 1]:
            S += 1 + key_ptr[c + 1] - key_ptr[c]
    pos = np.empty(S, np.int64)  # each stream's item in the heap (key lists: entry), and its end
    stop = np.empty(S, np.int64)
    fac = np.empty(S, np.float64)  # key lists: the query's weight of the key
    kind = np.empty(S, np.int8)  # 0: source 0's items, 1: source 1's, 2: a key list
    hs = np.empty(S, np.float64)  # the heap: each live stream's next score (key lists: bound), item and stream
    hj = np.empty(S, np.int64)
    hk = np.empty(S, np.int64)
    size = 0
    for s in range(G):
        if s < G0:
            row, fac[s], kind[s] = table0[groups0[s]], factor0[s], 0
        else:
            row, fac[s], kind[s] = table1[groups1[s - G0]], factor1[s - G0], 1
        pos[s], stop[s] = row[0], row[1]
        if row[0] < row[1]:
            score = _score(fac[s], row[3:4].view(np.float64)[0], single)
            if score > 0:
                hs[size], hj[size], hk[size] = score, row[2], s
                size += 1
    streams = G
    _set_positions(node_pos, nodes, 1)
    for i in range(len(nodes)):
        lo, hi = key_ptr[nodes[i]], key_ptr[nodes[i] + 1]
        if lo < hi:
            s = streams
            streams += 1
            pos[s], stop[s], fac[s], kind[s] = lo, hi, weights[i], 2
            score = _list_bound(fac[s], key_wsuf[lo], key_head[lo], base, single)
            if score > 0:
                hs[size], hj[size], hk[size] = score, -1, s
                size += 1
    for at in range(size // 2 - 1, -1, -1):
        _sift_down(hs, hj, hk, size, at, False)
    cap = 2 * n + 16
    out_j = np.empty(cap, np.int64)
    out_s = np.empty(cap, np.float64)
    cnt = 0
    kth = 0.0
    while size > 0:
        score, j, s = hs[0], hj[0], hk[0]
        if cnt >= n and score < kth:
            break
        at = pos[s]
        pos[s] += 1  # the stream's next entry takes its place (scores only fall along a stream: <= 0 ends it)
        if kind[s] == 2:  # a key list's bound: open its group, unless reached through another node
            g = key_groups[at]
            score = 0.0
            if at + 1 < stop[s]:
                score = _list_bound(fac[s], key_wsuf[at + 1], key_head[at + 1], base, single)
            size = _replace_top(hs, hj, hk, size, score, -1)
            term = np.float32(np.float32(fac[s]) * key_w[at])
            row = table0[g]
            if term != 0 and row[0] < row[1] and not _contains(groups0, g):
                t = streams
                streams += 1
                pos[t], stop[t], fac[t], kind[t] = row[0], row[1], np.float64(term) + base, 0
                score = _score(fac[t], row[3:4].view(np.float64)[0], single)
                if score > 0:
                    hs[size], hj[size], hk[size] = score, row[2], t
                    size += 1
                    _sift_up(hs, hj, hk, size - 1, False)
            continue
        left_out = _contains(exclude, j) or (skip1 and kind[s] == 1 and skip_group[j] >= 0 and _reached(
            skip_group[j], groups0, group_key, group_key_w, weights, node_pos))
        if not left_out:
            if cnt == cap:
                cap *= 2
                grown_j = np.empty(cap, np.int64)
                grown_s = np.empty(cap, np.float64)
                grown_j[:cnt] = out_j[:cnt]
                grown_s[:cnt] = out_s[:cnt]
                out_j, out_s = grown_j, grown_s
            out_j[cnt], out_s[cnt] = j, score
            cnt += 1
            if cnt == n:
                kth = score
        at += 1
        score = 0.0
        if at < stop[s]:
            if kind[s] == 0:
                j, score = items0[at], _score(fac[s], priority0[at], single)
            else:
                j, score = items1[at], _score(fac[s], priority1[at], single)
        size = _replace_top(hs, hj, hk, size, score, j)
    _set_positions(node_pos, nodes, 0)
    return _best_first(out_j[:cnt], out_s[:cnt], n)


@njit(cache=True, nogil=True)
def _best_first(ids, scores, n):  # pragma: no cover
    """The first ``n`` of ``(ids, scores)`` by score descending, ties: lower id."""
    order = np.argsort(ids, kind="mergesort")
    order = order[np.argsort(-scores[order], kind="mergesort")][:n]
    return ids[order], scores[order]


@njit(cache=True, nogil=True)
def _replace_top(hs, hj, hk, size, score, j):  # pragma: no cover
    """The heap's top stream goes on with ``(score, j)``, or leaves the heap when ``score`` <= 0; the new size."""
    if score > 0:
        hs[0], hj[0] = score, j
    else:
        size -= 1
        hs[0], hj[0], hk[0] = hs[size], hj[size], hk[size]
    _sift_down(hs, hj, hk, size, 0, False)
    return size


@njit(cache=True, nogil=True)
def _reached(g, groups0, group_key, group_key_w, weights, node_pos):  # pragma: no cover
    """Whether source 0 of :func:`merge_top` holds group ``g`` with a term that is not 0: one of ``groups0``, or
    a group reached through its key node alone."""
    if _contains(groups0, g):
        return True
    if not len(group_key) or group_key[g] < 0:
        return False
    p = node_pos[group_key[g]]
    return p > 0 and np.float32(weights[p - 1] * group_key_w[g]) != 0


@njit(cache=True, nogil=True)
def sparse_row_product(indptr, indices, data, cols, vals, acc, mark):  # pragma: no cover
    """``w @ B`` for one sparse row ``w`` (``cols``, ``vals`` in ``w``'s stored order) and a CSR ``B``
    (``indptr``, ``indices``, ``data``), as scipy's product kernel computes it: each column summed from 0 in the
    order of the products, columns given last-first-seen first, zero sums dropped. ``acc`` / ``mark``: scratch, one
    per column of ``B``, zero / False on entry and on return."""
    seen = _touch(indptr, indices, cols, mark)
    for i in range(len(cols)):
        c = cols[i]
        w = vals[i]
        for e in range(indptr[c], indptr[c + 1]):
            acc[indices[e]] += w * data[e]
    return _drain(seen[::-1], acc, mark)  # last-first-seen first


@njit(cache=True, nogil=True)
def best_n(ids, scores, exclude, n):  # pragma: no cover
    """The best ``n`` entries ``(ids[i], scores[i])`` (score descending, ties: lower id), positive scores only,
    ids in ``exclude`` (sorted) left out: a heap of the ``n`` best so far, whose worst most entries fail to pass.
    Returns ``(ids, scores)`` best first, scores float64."""
    hs = np.empty(max(n, 0), np.float64)
    hj = np.empty(max(n, 0), np.int64)
    hk = np.empty(max(n, 0), np.int64)  # the heap's third array, unused here
    size = 0
    for i in range(len(ids)):
        s = np.float64(scores[i])
        j = np.int64(ids[i])
        if s <= 0 or n <= 0:
            continue
        if size == n and not _better(s, j, hs[0], hj[0]):
            continue
        if _contains(exclude, j):
            continue
        if size < n:
            hs[size], hj[size] = s, j
            size += 1
            _sift_up(hs, hj, hk, size - 1, True)
        else:
            hs[0], hj[0] = s, j
            _sift_down(hs, hj, hk, size, 0, True)
    return _best_first(hj[:size], hs[:size], size)


@njit(cache=True, nogil=True)
def pair_overlaps(indptr, indices, a, b, mark):  # pragma: no cover
    """For each pair ``(a[p], b[p])`` of rows of a CSR whose rows are sorted (``indptr``, ``indices``): how many
    columns the two rows share (users who bought both items). Per distinct ``a``, its columns are marked once in
    ``mark`` (scratch, one per column, False on entry and on return) and each partner row is scanned, or, when the
    partner row is much longer, the marked row's columns are searched in it instead. (Merging the two sorted rows
    pair by pair costs far more: an item explained is often a best-seller, read again for every pair.)"""
    out = np.zeros(len(a), np.int64)
    order = np.argsort(a, kind="mergesort")
    p = 0
    while p < len(order):
        v = a[order[p]]
        lo, hi = indptr[v], indptr[v + 1]
        for e in range(lo, hi):
            mark[indices[e]] = True
        q = p
        while q < len(order) and a[order[q]] == v:
            w = b[order[q]]
            blo, bhi = indptr[w], indptr[w + 1]
            count = 0
            if (hi - lo) * 16 < bhi - blo:  # a short row against a long one: binary searches
                row = indices[blo:bhi]
                for e in range(lo, hi):
                    i = np.searchsorted(row, indices[e])
                    if i < len(row) and row[i] == indices[e]:
                        count += 1
            else:
                for e in range(blo, bhi):
                    if mark[indices[e]]:
                        count += 1
            out[order[q]] = count
            q += 1
        for e in range(lo, hi):
            mark[indices[e]] = False
        p = q
    return out
