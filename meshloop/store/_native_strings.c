/*
 * Arrow string columns -> ClickHouse Native ``String`` column data.
 *
 * In ClickHouse's Native format a String column is each row's length as an unsigned
 * LEB128 varint followed by its bytes
 * (https://clickhouse.com/docs/interfaces/formats/Native). Arrow keeps strings either
 * as ``string_view`` (16-byte views: the length, then the string itself when it fits in
 * 12 bytes, else a 4-byte prefix, a buffer index and an offset) or as 64-bit offsets
 * into one data buffer
 * (https://arrow.apache.org/docs/format/Columnar.html#variable-size-binary-layout).
 * A null row (validity bit clear) is written as the empty string; the caller writes the
 * null map of a Nullable column.
 *
 * Each function writes rows ``offset .. offset + rows - 1`` of one array to ``out`` and
 * returns the number of bytes written; with ``out == NULL`` it only returns the size
 * needed. The caller passes buffers that hold those rows (pyarrow's own): no bounds are
 * checked beyond the views' lengths and offsets, which Arrow guarantees.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int64_t varint_size(uint64_t v) {
    int64_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

static uint8_t *put_varint(uint8_t *out, uint64_t v) {
    while (v >= 0x80) { *out++ = (uint8_t)(v | 0x80); v >>= 7; }
    *out++ = (uint8_t)v;
    return out;
}

static int is_valid(const uint8_t *validity, int64_t row) {
    return !validity || (validity[row >> 3] >> (row & 7)) & 1;
}

int64_t ml_native_string_views(const uint8_t *views, const uint8_t *const *buffers,
                               const uint8_t *validity, int64_t offset, int64_t rows, uint8_t *out) {
    int64_t size = 0;
    uint8_t *p = out;
    for (int64_t row = offset; row < offset + rows; row++) {
        const uint8_t *v = views + 16 * row;
        uint32_t len = 0;
        if (is_valid(validity, row)) memcpy(&len, v, 4);
        if (!out) { size += varint_size(len) + len; continue; }
        p = put_varint(p, len);
        if (len <= 12) {
            if (len) memcpy(p, v + 4, len);
        } else {
            uint32_t buffer, start;
            memcpy(&buffer, v + 8, 4);
            memcpy(&start, v + 12, 4);
            memcpy(p, buffers[buffer] + start, len);
        }
        p += len;
    }
    return out ? (int64_t)(p - out) : size;
}

int64_t ml_native_string_offsets(const int64_t *offsets, const uint8_t *data, const uint8_t *validity,
                                 int64_t offset, int64_t rows, uint8_t *out) {
    int64_t size = 0;
    uint8_t *p = out;
    for (int64_t row = offset; row < offset + rows; row++) {
        uint64_t len = is_valid(validity, row) ? (uint64_t)(offsets[row + 1] - offsets[row]) : 0;
        if (!out) { size += varint_size(len) + (int64_t)len; continue; }
        p = put_varint(p, len);
        if (len) memcpy(p, data + offsets[row], len);
        p += len;
    }
    return out ? (int64_t)(p - out) : size;
}

/*
 * LowCardinality(String): the dictionary and the indexes, as ClickHouse's Native format
 * writes them (SerializationLowCardinality, src/DataTypes/Serializations/
 * SerializationLowCardinality.cpp): UInt64 version 1 (shared dictionaries with
 * additional keys); UInt64 index type (0..2 = UInt8, UInt16, UInt32) | has additional
 * keys (1 << 9) | need to update the dictionary (1 << 10); UInt64 number of keys, the
 * keys as String data (the default value '' first, then the others in first-seen
 * order); UInt64 number of rows, the rows' key indexes. Null rows are ''.
 */
typedef struct {
    const uint8_t *p;
    uint32_t n;
} lc_key_t;

typedef struct {
    lc_key_t *keys;        /* in index order; keys[0] is '' */
    int64_t nkeys, cap_keys;
    int32_t *slots;     /* open addressing: key index + 1, 0 = empty */
    int64_t nslots;
    uint32_t *index;    /* one per row */
    int64_t rows;
    int64_t key_bytes;  /* sum of varint lengths + bytes of the keys */
} ml_lc;

static uint64_t hash_bytes(const uint8_t *p, uint32_t n) {
    uint64_t h = 0xcbf29ce484222325ull ^ n;  /* FNV-1a over 8-byte words, then the tail */
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    h ^= h >> 32;
    return h * 0x9e3779b97f4a7c15ull;
}

void ml_native_lc_free(ml_lc *lc) {
    if (!lc) return;
    free(lc->keys); free(lc->slots); free(lc->index); free(lc);
}

static int lc_grow_slots(ml_lc *lc) {
    int64_t nslots = lc->nslots ? lc->nslots * 2 : 1024;
    int32_t *slots = calloc((size_t)nslots, sizeof *slots);
    if (!slots) return 0;
    for (int64_t k = 0; k < lc->nkeys; k++) {
        uint64_t s = hash_bytes(lc->keys[k].p, lc->keys[k].n) & (uint64_t)(nslots - 1);
        while (slots[s]) s = (s + 1) & (uint64_t)(nslots - 1);
        slots[s] = (int32_t)(k + 1);
    }
    free(lc->slots);
    lc->slots = slots;
    lc->nslots = nslots;
    return 1;
}

static int64_t lc_key(ml_lc *lc, const uint8_t *p, uint32_t n) {
    if (2 * (lc->nkeys + 1) > lc->nslots && !lc_grow_slots(lc)) return -1;
    uint64_t s = hash_bytes(p, n) & (uint64_t)(lc->nslots - 1);
    for (;;) {
        int32_t k = lc->slots[s];
        if (!k) break;
        const lc_key_t *key = &lc->keys[k - 1];
        if (key->n == n && (n == 0 || memcmp(key->p, p, n) == 0)) return k - 1;
        s = (s + 1) & (uint64_t)(lc->nslots - 1);
    }
    if (lc->nkeys == lc->cap_keys) {
        int64_t cap = lc->cap_keys ? lc->cap_keys * 2 : 256;
        lc_key_t *keys = realloc(lc->keys, (size_t)cap * sizeof *keys);
        if (!keys) return -1;
        lc->keys = keys;
        lc->cap_keys = cap;
    }
    lc->keys[lc->nkeys].p = p;
    lc->keys[lc->nkeys].n = n;
    lc->slots[s] = (int32_t)(lc->nkeys + 1);
    lc->key_bytes += varint_size(n) + n;
    return lc->nkeys++;
}

static int index_width(int64_t nkeys) {
    return nkeys <= 0x100 ? 1 : nkeys <= 0x10000 ? 2 : 4;
}

/* Build the dictionary of rows ``offset .. offset + rows - 1`` of a string_view array;
 * NULL when out of memory. The size of the serialization is ml_native_lc_size(). The
 * strings are referenced, not copied: the array must outlive the result. */
ml_lc *ml_native_lc_views(const uint8_t *views, const uint8_t *const *buffers, const uint8_t *validity,
                          int64_t offset, int64_t rows) {
    ml_lc *lc = calloc(1, sizeof *lc);
    if (!lc || !(lc->index = malloc((size_t)(rows > 0 ? rows : 1) * sizeof *lc->index))
        || lc_key(lc, (const uint8_t *)"", 0) != 0) {
        ml_native_lc_free(lc);
        return 0;
    }
    lc->rows = rows;
    const uint8_t *prev = 0;  /* runs of one value (e.g. a stream's reporter) skip the hash */
    uint32_t prev_len = 0;
    int64_t prev_key = 0;
    for (int64_t i = 0; i < rows; i++) {
        int64_t row = offset + i;
        const uint8_t *v = views + 16 * row;
        uint32_t len = 0;
        if (is_valid(validity, row)) memcpy(&len, v, 4);
        const uint8_t *p = v + 4;
        if (len > 12) {
            uint32_t buffer, start;
            memcpy(&buffer, v + 8, 4);
            memcpy(&start, v + 12, 4);
            p = buffers[buffer] + start;
        }
        int64_t k;
        if (prev && len == prev_len && (len == 0 || memcmp(p, prev, len) == 0)) {
            k = prev_key;
        } else {
            k = lc_key(lc, p, len);
            if (k < 0) { ml_native_lc_free(lc); return 0; }
            prev = p; prev_len = len; prev_key = k;
        }
        lc->index[i] = (uint32_t)k;
    }
    return lc;
}

int64_t ml_native_lc_size(const ml_lc *lc) {
    return 8 + 8 + 8 + lc->key_bytes + 8 + lc->rows * index_width(lc->nkeys);
}

static uint8_t *put_u64(uint8_t *out, uint64_t v) {
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(v >> (8 * i));
    return out + 8;
}

/* Write the serialization (ml_native_lc_size() bytes) to ``out``; return its size. */
int64_t ml_native_lc_write(const ml_lc *lc, uint8_t *out) {
    int width = index_width(lc->nkeys);
    uint8_t *p = put_u64(out, 1);
    p = put_u64(p, (uint64_t)(width == 1 ? 0 : width == 2 ? 1 : 2) | (1u << 9) | (1u << 10));
    p = put_u64(p, (uint64_t)lc->nkeys);
    for (int64_t k = 0; k < lc->nkeys; k++) {
        p = put_varint(p, lc->keys[k].n);
        if (lc->keys[k].n) memcpy(p, lc->keys[k].p, lc->keys[k].n);
        p += lc->keys[k].n;
    }
    p = put_u64(p, (uint64_t)lc->rows);
    for (int64_t i = 0; i < lc->rows; i++) {
        uint32_t k = lc->index[i];
        if (width == 1) *p = (uint8_t)k;
        else if (width == 2) { uint16_t w = (uint16_t)k; memcpy(p, &w, 2); }
        else memcpy(p, &k, 4);
        p += width;
    }
    return (int64_t)(p - out);
}
