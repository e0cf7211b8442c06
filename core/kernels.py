"""Compiled CPU kernels (numba) for the per-token loops torch has no fast primitive for.

- `top_k_rows`: the k largest entries of every row of a [rows, n] matrix, for topk dictionaries
  on CPU. `torch.topk` copies each row into (value, index) pairs and partially sorts them; here
  one vectorized pass takes the maxima of 4k groups of entries, which bound the k-th largest
  value from below, and only the few groups that reach the bound are searched (about 2x faster
  than `torch.topk` on a [256, 4608] block).
- `update_records`: the analyzer's per-feature records (statistics, histograms, top-k contexts,
  interval reservoirs; see `core.analysis`), updated from a batch's sparse activations. The
  entries are grouped by feature and each feature's run is O(1) work per entry on that feature's
  arrays, so a batch costs time in proportion to its non-zero activations.
- `update_token_index`: per vocabulary token, the features with the largest activations on it
  (the analyzer's search index: "which features fire most on ` import`").
- `positive_entries`: compressed sparse rows of a dense activation matrix.
- `batch_top_k`: the n largest positive entries of a whole [rows, n] matrix (batch top-k), as
  compressed sparse rows; a histogram of the entries' float bit patterns finds the bucket of the
  n-th largest, so it takes three passes and no sort (torch.topk over the flattened matrix costs
  about 10x more).
- `scatter_add_rows`, `row_dots`: the sparse products of a top-k dictionary's training step
  (`core.sae.sparse`): out[i_e] += c_e * src[j_e], and <a[i_e], b[j_e]>, over (i, j, c) entries.

All kernels are single-threaded, release the GIL and are compiled on first use (the machine code
is cached next to this file, in `__pycache__`, so later processes start at once).
"""

from __future__ import annotations

import numpy as np
from numba import njit

LANES = 16
"""Width of the vectorized max pass of `top_k_rows` (one AVX-512 register of float32)."""


# ----------------------------------------------------------------------------------------------
# Top-k per row


@njit(nogil=True, cache=True)
def _heap_push_down(heap_v, heap_i, k, value, index):
    """Replace the root of the min-heap (heap_v, heap_i) of size k by (value, index)."""
    c = 0
    while True:
        child = 2 * c + 1
        if child >= k:
            break
        if child + 1 < k and heap_v[child + 1] < heap_v[child]:
            child += 1
        if heap_v[child] < value:
            heap_v[c] = heap_v[child]
            heap_i[c] = heap_i[child]
            c = child
        else:
            break
    heap_v[c] = value
    heap_i[c] = index


@njit(nogil=True, cache=True, fastmath=True)
def _group_maxima(row, n_seg, seg_len, out):
    """Maxima of the LANES * n_seg groups of `row`: group (s, l) holds the entries of segment s
    (seg_len entries, a multiple of LANES; the entries after the last segment are in no group)
    whose offset in the segment is l mod LANES. One pass; the LANES running maxima of a segment
    are independent, so it vectorizes (fastmath: a NaN may or may not count as a maximum)."""
    lanes = np.empty(LANES, row.dtype)
    for s in range(n_seg):
        base = s * seg_len
        for lane in range(LANES):
            lanes[lane] = row[base + lane]
        for offset in range(base + LANES, base + seg_len, LANES):
            for lane in range(LANES):
                lanes[lane] = max(lanes[lane], row[offset + lane])
        for lane in range(LANES):
            out[s * LANES + lane] = lanes[lane]


@njit(nogil=True, cache=True)
def _heap_insert(heap_v, heap_i, size, value, index):
    """Add (value, index) to the min-heap heap_v[:size], heap_i[:size]."""
    c = size
    heap_v[c] = value
    heap_i[c] = index
    while c > 0:
        parent = (c - 1) >> 1
        if heap_v[parent] > heap_v[c]:
            heap_v[parent], heap_v[c] = heap_v[c], heap_v[parent]
            heap_i[parent], heap_i[c] = heap_i[c], heap_i[parent]
            c = parent
        else:
            break


@njit(nogil=True, cache=True)
def _offer(heap_v, heap_i, size, k, value, index):
    """Offer (value, index) to the min-heap of the k largest so far (size entries); returns the
    new size. Among equal values the smaller index is kept."""
    if size < k:
        _heap_insert(heap_v, heap_i, size, value, index)
        return size + 1
    if value > heap_v[0] or (value == heap_v[0] and index < heap_i[0]):
        _heap_push_down(heap_v, heap_i, k, value, index)
    return size


@njit(nogil=True, cache=True, fastmath=True)
def _count_at_least(values, m, threshold):
    count = 0
    for i in range(m):
        count += values[i] >= threshold
    return count


@njit(nogil=True, cache=True)
def _top_k_of_row(row, k, out_v, out_i):
    """The k largest entries of `row` by a k-heap over all of it (the exact fallback)."""
    size = 0
    for j in range(row.shape[0]):
        if row[j] >= -np.inf:  # NaN never wins over a number
            size = _offer(out_v, out_i, size, k, row[j], j)
    for j in range(row.shape[0]):
        if size == k:
            break
        if not row[j] >= -np.inf:
            out_v[size] = row[j]
            out_i[size] = j
            size += 1


BISECTION_STEPS = 16
"""Bisection steps of `top_k_rows` towards the k-th largest group maximum (the bound is within
1/65536 of the maxima's range below it)."""


@njit(nogil=True, cache=True)
def top_k_rows(pre, k, out_values, out_indices):
    """The k largest entries of each row of `pre` [rows, n] (k <= n) into out_values / out_indices
    [rows, k], in no particular order. Among equal values the earlier index wins; NaN never wins
    over a number.

    Per row:
    1. the maxima of G = 4k (rounded up to LANES) disjoint groups of entries (`_group_maxima`);
    2. a bound t with at least k of the G maxima >= t, found by bisection: t is a lower bound of
       the row's k-th largest entry (k distinct entries, the maxima, are >= t), and close to the
       k-th largest maximum;
    3. the entries >= t, looked for only in the groups whose maximum reaches t (about k of them)
       and among the entries in no group;
    4. of those m candidates (a few more than k), the k of rank < k, ranks by pairwise comparison.
    Everything but the candidate scan is branch-free, which is what makes it faster than a heap.
    Rows with more than 4k candidates (many ties) or NaN take an exact k-heap over the row instead.
    """
    n_rows, n = pre.shape
    n_seg = (4 * k + LANES - 1) // LANES
    seg_len = (n // (LANES * n_seg)) * LANES
    n_groups = LANES * n_seg
    grouped = n_seg * seg_len  # entries [grouped, n) belong to no group
    maxima = np.empty(n_groups, pre.dtype)
    max_candidates = 4 * k
    cand_v = np.empty(max_candidates, pre.dtype)
    cand_i = np.empty(max_candidates, np.int64)
    for r in range(n_rows):
        row = pre[r]
        if seg_len == 0:  # too short a row for groups
            _top_k_of_row(row, k, out_values[r], out_indices[r])
            continue
        _group_maxima(row, n_seg, seg_len, maxima)
        low = maxima[0]
        high = maxima[0]
        for g in range(1, n_groups):
            low = min(low, maxima[g])
            high = max(high, maxima[g])
        if not (low > -np.inf and high <= np.inf):  # NaN or -inf among the maxima
            _top_k_of_row(row, k, out_values[r], out_indices[r])
            continue
        for _ in range(BISECTION_STEPS):  # invariant: at least k maxima >= low
            middle = low + (high - low) * 0.5
            if _count_at_least(maxima, n_groups, middle) >= k:
                low = middle
            else:
                high = middle
        bound = low
        m = 0
        for g in range(n_groups):
            if maxima[g] >= bound:
                s, lane = g // LANES, g % LANES
                for j in range(s * seg_len + lane, (s + 1) * seg_len, LANES):
                    if row[j] >= bound and m < max_candidates:
                        cand_v[m] = row[j]
                        cand_i[m] = j
                        m += 1
        for j in range(grouped, n):
            if row[j] >= bound and m < max_candidates:
                cand_v[m] = row[j]
                cand_i[m] = j
                m += 1
        if m >= max_candidates or m < k:  # too many candidates to rank (or NaN in the row)
            _top_k_of_row(row, k, out_values[r], out_indices[r])
            continue
        o = 0
        for a in range(m):  # rank = number of candidates ahead of a
            va, ia = cand_v[a], cand_i[a]
            rank = 0
            for b in range(m):
                rank += (cand_v[b] > va) | ((cand_v[b] == va) & (cand_i[b] < ia))
            if rank < k:
                out_values[r, o] = va
                out_indices[r, o] = ia
                o += 1


@njit(nogil=True, cache=True)
def positive_entries(dense, row_ptr, features, values):
    """Compressed sparse rows of the positive entries of `dense` [rows, n]: row_ptr [rows + 1] is
    filled and the number of entries returned; features / values need room for all of them."""
    n_rows, n = dense.shape
    m = 0
    row_ptr[0] = 0
    for r in range(n_rows):
        for j in range(n):
            x = dense[r, j]
            if x > 0:
                features[m] = j
                values[m] = x
                m += 1
        row_ptr[r + 1] = m
    return m


BATCH_TOP_K_SAMPLE = 65536
"""Entries `batch_top_k` samples to bound the value of the n-th largest from below."""


@njit(nogil=True, cache=True)
def batch_top_k(bits, n_keep, rows, columns, kept_bits):
    """The n_keep largest positive entries of a float matrix [rows, n], given as its bit patterns
    `bits` (the matrix viewed as int32 for float32, int64 for float64: for positive floats the
    order of the bit patterns is the order of the values, and every non-positive float has a
    bit pattern <= 0). Writes their rows, columns and bit patterns in row-major order into
    `rows`, `columns`, `kept_bits` [>= n_keep]; returns how many were kept (fewer than n_keep when
    fewer entries are positive). Among equal values the earlier (row-major) entries are kept.

    1. a lower bound of the n_keep-th largest: an order statistic of an evenly strided sample,
       a few standard deviations below the expected rank (lowered until at least n_keep entries
       reach it; in the end every positive entry does);
    2. the entries >= the bound (a few more than n_keep), collected in row-major order;
    3. the exact n_keep-th largest among them by partition, then the entries above it and the
       first ones equal to it.
    Two passes over the matrix and no sort: about 10x faster than torch.topk over the flattened
    matrix, and exact whatever the data (a bad sample only costs another counting pass)."""
    n_rows, n = bits.shape
    total = n_rows * n
    flat = bits.reshape(total)
    size = min(total, BATCH_TOP_K_SAMPLE)
    stride = total // size
    while stride > 1 and _gcd(stride, n) != 1:  # never sample one column only
        stride -= 1
    sample = np.empty(size, flat.dtype)
    for i in range(size):
        sample[i] = flat[i * stride]
    expected = n_keep * size / total
    rank = int(expected + 6.0 * np.sqrt(expected) + 16.0)
    while True:
        bound = 1  # the smallest positive bit pattern
        if rank < size:
            bound = max(np.partition(sample, size - rank)[size - rank], 1)
        count = _count_at_least(flat, total, bound)
        if count >= n_keep or bound == 1:
            break
        rank *= 4
    candidates = np.empty(count, np.int64)
    candidate_bits = np.empty(count, flat.dtype)
    m = 0
    for i in range(total):
        if flat[i] >= bound:
            candidates[m] = i
            candidate_bits[m] = flat[i]
            m += 1
    threshold = bound
    ties = count  # entries equal to the threshold still to keep
    if count > n_keep:
        threshold = np.partition(candidate_bits, count - n_keep)[count - n_keep]
        ties = n_keep - _count_at_least(candidate_bits, count, threshold + 1)
    kept = 0
    for c in range(count):
        b = candidate_bits[c]
        if b > threshold or (b == threshold and ties > 0):
            if b == threshold:
                ties -= 1
            rows[kept] = candidates[c] // n
            columns[kept] = candidates[c] - rows[kept] * n
            kept_bits[kept] = b
            kept += 1
    return kept


@njit(nogil=True, cache=True)
def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


@njit(nogil=True, cache=True, fastmath=True)
def scatter_add_rows(out, out_rows, coef, src, src_rows, lo, hi):
    """out[out_rows[e]] += coef[e] * src[src_rows[e]] for the entries e with lo <= out_rows[e] < hi
    (threads given disjoint ranges of out's rows can run at once)."""
    d = out.shape[1]
    for e in range(out_rows.shape[0]):
        i = out_rows[e]
        if i < lo or i >= hi:
            continue
        o = out[i]
        s = src[src_rows[e]]
        c = coef[e]
        for j in range(d):
            o[j] += c * s[j]


@njit(nogil=True, cache=True, fastmath=True)
def row_dots(out, a, a_rows, b, b_rows, lo, hi):
    """out[e] = <a[a_rows[e]], b[b_rows[e]]> for the entries lo <= e < hi."""
    d = a.shape[1]
    for e in range(lo, hi):
        x = a[a_rows[e]]
        y = b[b_rows[e]]
        acc = x[0] * y[0]
        for j in range(1, d):
            acc += x[j] * y[j]
        out[e] = acc


@njit(nogil=True, cache=True, fastmath=True)
def project_out_rows(g, w, lo, hi):
    """g[i] -= <g[i], w[i]> / |w[i]|^2 * w[i] for the rows lo <= i < hi: one pass over both, each
    row's two dots and its update while the row is in cache."""
    d = w.shape[1]
    for i in range(lo, hi):
        gi = g[i]
        wi = w[i]
        gw = 0.0
        ww = 0.0
        for j in range(d):
            gw += gi[j] * wi[j]
            ww += wi[j] * wi[j]
        p = gw / max(ww, 1e-24)
        for j in range(d):
            gi[j] -= p * wi[j]


# ----------------------------------------------------------------------------------------------
# Feature records


@njit(nogil=True, cache=True)
def random_key(seed, ordinal, feature, d_sae):
    """A uniform 64-bit key for (analyzed token `ordinal`, `feature`): splitmix64 of their index.
    It depends on the token's place in the analysis only, not on how tokens are batched."""
    z = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(ordinal) * np.uint64(d_sae) + np.uint64(feature)
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(nogil=True, cache=True)
def interval_of(value, max_act, n_intervals):
    """Interval i of (0, max_act] split in n_intervals equal parts: (i * max / n, (i + 1) * max / n]."""
    i = int(np.ceil(np.float64(value) * n_intervals / np.float64(max_act))) - 1
    return min(max(i, 0), n_intervals - 1)


@njit(nogil=True, cache=True)
def _interval_members(f, g, iv_key, iv_group):
    """Of feature f's interval slots: how many hold interval g, which of those has the largest key
    (-1 if none), and the first free slot (-1 if none)."""
    count = 0
    largest = -1
    free = -1
    for s in range(iv_group.shape[1]):
        gs = iv_group[f, s]
        if gs == g:
            count += 1
            if largest < 0 or iv_key[f, s] > iv_key[f, largest]:
                largest = s
        elif gs < 0 and free < 0:
            free = s
    return count, largest, free


@njit(nogil=True, cache=True)
def _interval_threshold(f, g, iv_key, iv_group, capacity):
    """The key a candidate must stay below to enter interval g of feature f: the largest kept key
    when the interval is full, 2**64 - 1 (anything enters) while it has room."""
    count, largest, _ = _interval_members(f, g, iv_key, iv_group)
    return iv_key[f, largest] if count >= capacity else np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(nogil=True, cache=True)
def _regroup(f, iv_value, iv_key, iv_group, iv_pending, max_act, n_intervals, capacity):
    """After feature f's maximum grew: move its kept interval samples to the intervals the new
    maximum gives them, and evict from every over-full interval its largest keys."""
    for s in range(iv_group.shape[1]):
        if iv_group[f, s] >= 0:
            iv_group[f, s] = interval_of(iv_value[f, s], max_act[f], n_intervals)
    for g in range(n_intervals):
        count, largest, _ = _interval_members(f, g, iv_key, iv_group)
        while count > capacity:
            iv_group[f, largest] = -1
            iv_pending[f, largest] = -1
            count, largest, _ = _interval_members(f, g, iv_key, iv_group)


@njit(nogil=True, cache=True)
def _entries_by_feature(mask, row_ptr, features, values, d_sae):
    """The positive entries at analyzed positions, grouped by feature and in token order within
    a feature (a counting sort): (entry indices, their positions, their analyzed-token ordinals
    relative to the batch, start of each feature's run [d_sae + 1], positions analyzed)."""
    seq = mask.shape[1]
    n_pos = mask.shape[0] * seq
    ordinal_of = np.empty(n_pos, np.int64)
    starts = np.zeros(d_sae + 1, np.int64)
    n_analyzed = 0
    for p in range(n_pos):
        ordinal_of[p] = n_analyzed
        if mask[p // seq, p % seq]:
            n_analyzed += 1
            for e in range(row_ptr[p], row_ptr[p + 1]):
                if values[e] > 0:
                    starts[features[e] + 1] += 1
    for f in range(d_sae):
        starts[f + 1] += starts[f]
    n = starts[d_sae]
    entry = np.empty(n, np.int64)
    position = np.empty(n, np.int64)
    fill = starts[:d_sae].copy()
    for p in range(n_pos):
        if mask[p // seq, p % seq]:
            for e in range(row_ptr[p], row_ptr[p + 1]):
                if values[e] > 0:
                    f = features[e]
                    entry[fill[f]] = e
                    position[fill[f]] = p
                    fill[f] += 1
    return entry, position, ordinal_of, starts, n_analyzed


@njit(nogil=True, cache=True)
def _smallest_slot(slot_values, row):
    """The first slot of slot_values[row] holding its smallest value (the one a larger value replaces)."""
    lowest = 0
    for s in range(1, slot_values.shape[1]):
        if slot_values[row, s] < slot_values[row, lowest]:
            lowest = s
    return lowest


@njit(nogil=True, cache=True)
def update_records(tokens, mask, row_ptr, features, values, first_ordinal, seed,
                   act_count, act_sum, max_act, fine_hist, hist_low, hist_per_decade,
                   top_value, top_count, top_min_slot, top_pending, top_tokens, top_acts, top_max_pos,
                   iv_value, iv_key, iv_group, iv_pending, iv_tokens, iv_acts, iv_max_pos,
                   n_intervals, capacity, context_left, context_right):
    """Add one batch of sparse activations to the records of every feature.

    mask [batch, seq] marks the analyzed positions; (row_ptr, features, values) are the
    activations of position p = b * seq + s in entries row_ptr[p]:row_ptr[p + 1]; entries <= 0 are
    ignored. `first_ordinal` is the number of tokens analyzed before this batch.

    Features are independent, so the entries are grouped by feature (keeping token order) and each
    feature's run is processed with its arrays in cache; the result is the same as processing
    every entry in token order.

    A candidate that enters a slot only records its batch position in top_pending / iv_pending;
    the windows (tokens [window], acts [window], max_pos) of the slots taken are cut at the end of
    the batch, so a slot taken over twice in one batch is cut once. Returns the number of positions
    analyzed.
    """
    d_sae, top_k = top_value.shape
    n_bins = fine_hist.shape[1]
    entry, position, ordinal_of, starts, n_analyzed = _entries_by_feature(mask, row_ptr, features, values, d_sae)
    touched_top = np.empty((len(entry), 2), np.int64)
    touched_iv = np.empty((len(entry), 2), np.int64)
    thresholds = np.empty(n_intervals, np.uint64)
    n_top = 0
    n_iv = 0
    for f in range(d_sae):
        if starts[f] == starts[f + 1]:
            continue
        for g in range(n_intervals):
            thresholds[g] = _interval_threshold(f, g, iv_key, iv_group, capacity)
        for r in range(starts[f], starts[f + 1]):
            v = values[entry[r]]
            p = position[r]
            act_count[f] += 1
            act_sum[f] += v
            b = int(np.floor((np.log10(np.float64(v)) - hist_low) * hist_per_decade))
            fine_hist[f, min(max(b, 0), n_bins - 1)] += 1

            # Top-k contexts: the top_k largest activations (earlier ones win ties).
            c = top_count[f]
            slot = -1
            if c < top_k:
                slot = c
                top_count[f] = c + 1
            elif v > top_value[f, top_min_slot[f]]:
                slot = top_min_slot[f]
            if slot >= 0:
                top_value[f, slot] = v
                top_pending[f, slot] = p
                touched_top[n_top, 0] = f
                touched_top[n_top, 1] = slot
                n_top += 1
                if top_count[f] == top_k:
                    top_min_slot[f] = _smallest_slot(top_value, f)

            # Interval samples: per interval, the `capacity` occurrences with the smallest random keys.
            if v > max_act[f]:
                max_act[f] = v
                _regroup(f, iv_value, iv_key, iv_group, iv_pending, max_act, n_intervals, capacity)
                for g in range(n_intervals):
                    thresholds[g] = _interval_threshold(f, g, iv_key, iv_group, capacity)
            g = interval_of(v, max_act[f], n_intervals)
            key = random_key(seed, first_ordinal + ordinal_of[p], f, d_sae)
            if key >= thresholds[g]:
                continue
            count, largest, free = _interval_members(f, g, iv_key, iv_group)
            # A group with room leaves a free slot (groups hold at most `capacity`); a full one
            # gives up its largest key, which this key beats.
            slot = free if count < capacity else largest
            iv_value[f, slot] = v
            iv_key[f, slot] = key
            iv_group[f, slot] = g
            iv_pending[f, slot] = p
            touched_iv[n_iv, 0] = f
            touched_iv[n_iv, 1] = slot
            n_iv += 1
            thresholds[g] = _interval_threshold(f, g, iv_key, iv_group, capacity)
    _cut_windows(touched_top, n_top, top_pending, tokens, values, entry, position, starts,
                 context_left, context_right, top_tokens, top_acts, top_max_pos)
    _cut_windows(touched_iv, n_iv, iv_pending, tokens, values, entry, position, starts,
                 context_left, context_right, iv_tokens, iv_acts, iv_max_pos)
    return n_analyzed


@njit(nogil=True, cache=True)
def _cut_windows(touched, n_touched, pending, tokens, values, entry, position, starts,
                 context_left, context_right, out_tokens, out_acts, out_max_pos):
    """Copy the context window of every pending slot in touched[:n_touched] out of the batch:
    token ids (-1 past the window's end), the slot's feature's activation on each token (0 where
    a position is not analyzed or the feature is off) and the activating token's place in the
    window. The feature's activations are read from its run of (position-sorted) entries."""
    seq = tokens.shape[1]
    window = out_tokens.shape[2]
    for t in range(n_touched):
        f = touched[t, 0]
        s = touched[t, 1]
        p = pending[f, s]
        if p < 0:  # evicted, or already cut
            continue
        pending[f, s] = -1
        b = p // seq
        pos = p % seq
        start = max(pos - context_left, 0)
        end = min(pos + context_right + 1, seq)
        for w in range(window):
            q = start + w
            out_tokens[f, s, w] = tokens[b, q] if q < end else -1
            out_acts[f, s, w] = 0.0
        first = b * seq + start
        # The first entry of f at or after `first` (runs are sorted by position), then the window.
        lo, hi = starts[f], starts[f + 1]
        while lo < hi:
            mid = (lo + hi) // 2
            if position[mid] < first:
                lo = mid + 1
            else:
                hi = mid
        while lo < starts[f + 1] and position[lo] < b * seq + end:
            out_acts[f, s, position[lo] - first] = values[entry[lo]]
            lo += 1
        out_max_pos[f, s] = pos - start


# ----------------------------------------------------------------------------------------------
# Token index


@njit(nogil=True, cache=True)
def update_token_index(tokens, mask, row_ptr, features, values, occurrences, index_features, index_values,
                       index_fill, index_min_slot):
    """Add one batch to the per-token index: for every vocabulary token t, the (at most n) features
    with the largest maximum activation on t so far, as index_features[t, :index_fill[t]] (-1 in
    unused slots) with their maxima in index_values (n = index_features.shape[1]). occurrences[t]
    counts the analyzed positions holding t.

    tokens [batch, seq] and mask [batch, seq] (the analyzed positions) with the activations of
    position p = b * seq + s in entries row_ptr[p]:row_ptr[p + 1] (entries <= 0 ignored), as in
    `update_records`. A full slot list is only scanned when an activation beats its smallest value
    (index_min_slot[t]), so frequent tokens cost one comparison per entry; the memory is
    vocab x n whatever the number of tokens.
    """
    seq = mask.shape[1]
    n_slots = index_features.shape[1]
    for p in range(mask.shape[0] * seq):
        if not mask[p // seq, p % seq]:
            continue
        t = tokens[p // seq, p % seq]
        occurrences[t] += 1
        for e in range(row_ptr[p], row_ptr[p + 1]):
            v = values[e]
            if not v > 0:
                continue
            fill = index_fill[t]
            if fill == n_slots and v <= index_values[t, index_min_slot[t]]:
                continue  # a full list whose smallest value is not beaten: f is absent or has v already
            f = features[e]
            slot = -1
            for s in range(fill):
                if index_features[t, s] == f:
                    slot = s
                    break
            if slot >= 0:
                if v <= index_values[t, slot]:
                    continue
            elif fill < n_slots:
                slot = fill
                index_fill[t] = fill + 1
                index_features[t, slot] = f
            else:
                slot = index_min_slot[t]
                index_features[t, slot] = f
            index_values[t, slot] = v
            if index_fill[t] == n_slots:
                index_min_slot[t] = _smallest_slot(index_values, t)
