/*
 * Envoy ALS payloads -> flat columns, in one pass over the wire bytes.
 *
 * A protobuf reader specialised to the fields meshloop stores from
 * envoy.service.accesslog.v3.StreamAccessLogsMessage (http_logs / tcp_logs entries,
 * envoy.data.accesslog.v3). Every other field is skipped unread. Output columns are
 * Arrow-layout buffers (int64 values, LSB validity bitmaps, int64 string offsets) that
 * meshloop/accesslog/native.py wraps as pyarrow arrays without copying.
 *
 * Semantics follow protobuf's: the last occurrence of a scalar wins, repeated
 * occurrences of a sub-message merge, a known field number with an unexpected wire
 * type is skipped as an unknown field, strings must be valid UTF-8. Malformed input
 * (truncated or overlong varints, lengths past the end, bad wire types or field
 * numbers, unbalanced groups, invalid UTF-8) stops the decode with the payload index
 * and byte offset; nothing is ever read outside the given buffers.
 *
 * Wire format: https://protobuf.dev/programming-guides/encoding/
 * Messages: https://www.envoyproxy.io/docs/envoy/latest/api-v3/data/accesslog/v3/accesslog.proto
 */
/* String data in mappings grown by mremap (see grow_data), except under AddressSanitizer,
 * which checks malloc'd buffers only. */
#if defined(__SANITIZE_ADDRESS__)
#define ML_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ML_ASAN 1
#endif
#endif
#if defined(__linux__) && !defined(ML_ASAN)
#define ML_MAPPED_DATA 1
#define _GNU_SOURCE /* mremap */
#include <sys/mman.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Numeric columns: int64 words (the Python side picks the Arrow type). */
enum {
    N_KIND, N_PAYLOAD, N_START_NS,
    N_TTL_RX, N_TTF_UP_TX, N_TTL_UP_TX, N_TTF_UP_RX, N_TTL_UP_RX, N_TTF_DOWN_TX, N_TTL_DOWN_TX,
    N_DURATION, N_ACCESS_LOG_TYPE, N_ATTEMPTS, N_FLAGS_MASK, N_TLS_VERSION, N_CIPHER,
    N_PROTOCOL, N_METHOD, N_REQ_HEADERS_BYTES, N_REQ_BODY_BYTES, N_RESPONSE_CODE,
    N_RESP_HEADERS_BYTES, N_RESP_BODY_BYTES, N_TCP_RECEIVED, N_TCP_SENT,
    N_COUNT
};
/* String columns. */
enum {
    S_CLUSTER, S_ROUTE, S_UPSTREAM_FAILURE, S_TERMINATION, S_STREAM_ID, S_SNI, S_SPIFFE,
    S_UPSTREAM_HOST, S_UPSTREAM_LOCAL, S_DOWNSTREAM_REMOTE, S_DOWNSTREAM_LOCAL,
    S_SCHEME, S_AUTHORITY, S_PATH, S_USER_AGENT, S_REFERER, S_FORWARDED_FOR, S_REQUEST_ID,
    S_RESPONSE_DETAILS, S_TRACE_ID, S_SPAN_ID,
    S_COUNT
};

typedef struct {
    int64_t rows;
    int32_t error;            /* ERR_MEMORY: nothing usable; else see the malformed list */
    int64_t error_payload;
    int64_t error_offset;
    /* Malformed payloads, skipped (their rows rolled back) when skip_malformed is set:
     * payload index, byte offset and ERR_* code of each. */
    int64_t malformed;
    int64_t *malformed_payload;
    int64_t *malformed_offset;
    int64_t *malformed_code;
    int64_t *num[N_COUNT];
    uint8_t *num_valid[N_COUNT];
    uint8_t *str_data[S_COUNT];
    int64_t str_bytes[S_COUNT];
    uint8_t *str_valid[S_COUNT];
    uint8_t *str_views[S_COUNT];  /* Arrow string_view: 16 bytes per row, over str_data */
    /* capacities (internal) */
    int64_t cap_rows;
    int64_t cap_data[S_COUNT];
} ml_result;

enum { ERR_NONE, ERR_TRUNCATED, ERR_VARINT, ERR_WIRE_TYPE, ERR_FIELD_NUMBER, ERR_GROUP, ERR_UTF8,
       ERR_DEPTH, ERR_MEMORY };

/* ---- reading ----------------------------------------------------------------------- */
typedef struct { const uint8_t *p, *end; const uint8_t *base; int err; } rd;

static uint64_t varint(rd *r) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) { r->err = ERR_TRUNCATED; return 0; }
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << (shift < 64 ? shift : 63);
        if (!(b & 0x80)) return v;
    }
    r->err = ERR_VARINT;
    return 0;
}

typedef struct { const uint8_t *p; int64_t n; } slice;

static slice delimited(rd *r) {
    slice s = {0, 0};
    uint64_t n = varint(r);
    if (r->err) return s;
    if (n > (uint64_t)(r->end - r->p)) { r->err = ERR_TRUNCATED; return s; }
    s.p = r->p; s.n = (int64_t)n; r->p += n;
    return s;
}

static void skip_field(rd *r, uint32_t wire, uint32_t number, int depth);

/* Skip a group's fields up to its END_GROUP (wire type 4) with the same number. */
static void skip_group(rd *r, uint32_t number, int depth) {
    if (depth > 64) { r->err = ERR_DEPTH; return; }
    while (!r->err) {
        if (r->p >= r->end) { r->err = ERR_GROUP; return; }
        uint64_t key = varint(r);
        if (r->err) return;
        uint32_t wire = (uint32_t)(key & 7), n = (uint32_t)(key >> 3);
        if (wire == 4) { if (n != number) r->err = ERR_GROUP; return; }
        skip_field(r, wire, n, depth + 1);
    }
}

static void skip_field(rd *r, uint32_t wire, uint32_t number, int depth) {
    switch (wire) {
    case 0: varint(r); break;
    case 1: if (r->end - r->p < 8) r->err = ERR_TRUNCATED; else r->p += 8; break;
    case 2: delimited(r); break;
    case 3: skip_group(r, number, depth); break;
    case 5: if (r->end - r->p < 4) r->err = ERR_TRUNCATED; else r->p += 4; break;
    case 4: r->err = ERR_GROUP; break;
    default: r->err = ERR_WIRE_TYPE;
    }
}

/* Next field key; 0 at the end of the message. Sets r->err on a bad key. */
static int next_key(rd *r, uint32_t *number, uint32_t *wire) {
    if (r->p >= r->end || r->err) return 0;
    uint64_t key = varint(r);
    if (r->err) return 0;
    *wire = (uint32_t)(key & 7);
    uint64_t n = key >> 3;
    if (n == 0 || n > 536870911u) { r->err = ERR_FIELD_NUMBER; return 0; }
    if (*wire == 6 || *wire == 7) { r->err = ERR_WIRE_TYPE; return 0; }
    *number = (uint32_t)n;
    return 1;
}

static int utf8_valid(const uint8_t *s, int64_t n) {
    int64_t i = 0;
    while (i < n) {
        /* ASCII fast path: 8 bytes at a time. */
        while (i + 8 <= n) {
            uint64_t word;
            memcpy(&word, s + i, 8);
            if (word & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        int len; uint32_t cp;
        if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n) return 0;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)
            || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

static slice text(rd *r) {
    slice s = delimited(r);
    if (!r->err && !utf8_valid(s.p, s.n)) r->err = ERR_UTF8;
    return s;
}

static rd sub(rd *r, slice s) { rd c = {s.p, s.p + s.n, r->base, 0}; return c; }

/* ---- one entry --------------------------------------------------------------------- */
typedef struct { int present; int64_t seconds; int32_t nanos; } duration_t;
typedef struct { int present; slice host; uint32_t port; } address_t;

typedef struct {
    int kind;
    int64_t payload;
    int64_t start_seconds; int32_t start_nanos;
    duration_t dur[8];           /* time_to_* (fields 6..12), then duration (23) */
    address_t addr[4];           /* downstream remote, downstream local, upstream remote, upstream local */
    slice s[S_COUNT];
    slice header[4];             /* traceparent, x-b3-traceid, x-b3-spanid, b3 */
    int header_present[4];
    int64_t access_log_type, attempts, tls_version, protocol, method;
    int cipher_present; uint32_t cipher;
    uint32_t response_code;
    uint64_t req_headers_bytes, req_body_bytes, resp_headers_bytes, resp_body_bytes, tcp_received, tcp_sent;
    uint64_t flags;
} entry_t;

/* Parse the length-delimited sub-message at r with ``call`` (reading ``c_``); a
 * malformed sub-message stops the parent where it broke. */
#define SUBMESSAGE(call) do { \
        slice s_ = delimited(r); \
        if (r->err) return; \
        rd c_ = sub(r, s_); \
        call; \
        if (c_.err) { r->err = c_.err; r->p = c_.p; return; } \
    } while (0)

static void parse_timestamp(rd *r, int64_t *seconds, int32_t *nanos) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 0) *seconds = (int64_t)varint(r);
        else if (n == 2 && w == 0) *nanos = (int32_t)(uint32_t)varint(r);
        else skip_field(r, w, n, 0);
    }
}

static void parse_socket(rd *r, address_t *a) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 2 && w == 2) a->host = text(r);
        else if (n == 3 && w == 0) a->port = (uint32_t)varint(r);
        else if (n == 4 && w == 2) { text(r); a->port = 0; }  /* named_port: oneof with port_value */
        else skip_field(r, w, n, 0);
    }
}

static void parse_address(rd *r, address_t *a) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 2) {
            if (!a->present) { a->present = 1; a->host.p = 0; a->host.n = 0; a->port = 0; }
            SUBMESSAGE(parse_socket(&c_, a));
        } else if ((n == 2 || n == 3) && w == 2) {  /* pipe / envoy_internal_address: oneof */
            delimited(r);
            a->present = 0;
        } else skip_field(r, w, n, 0);
    }
}

/* SubjectAltName { oneof san { string uri = 1; string dns = 2; } }: its uri, if that is
 * the member set last. */
static void parse_san(rd *r, slice *uri) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 2) *uri = text(r);
        else if (n == 2 && w == 2) { text(r); uri->p = 0; uri->n = 0; }
        else skip_field(r, w, n, 0);
    }
}

/* CertificateProperties: the first ``spiffe://`` URI of repeated subject_alt_name = 1. */
static void parse_san_list(rd *r, entry_t *e) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 2) {
            slice uri = {0, 0};
            SUBMESSAGE(parse_san(&c_, &uri));
            if (!e->s[S_SPIFFE].p && uri.n >= 9 && memcmp(uri.p, "spiffe://", 9) == 0) e->s[S_SPIFFE] = uri;
        } else skip_field(r, w, n, 0);
    }
}

static void parse_uint32_value(rd *r, uint32_t *value) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 0) *value = (uint32_t)varint(r);
        else skip_field(r, w, n, 0);
    }
}

static void parse_tls(rd *r, entry_t *e) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 0) e->tls_version = (int32_t)(uint32_t)varint(r);
        else if (n == 2 && w == 2) { e->cipher_present = 1; SUBMESSAGE(parse_uint32_value(&c_, &e->cipher)); }
        else if (n == 3 && w == 2) e->s[S_SNI] = text(r);
        else if (n == 5 && w == 2) SUBMESSAGE(parse_san_list(&c_, e));
        else skip_field(r, w, n, 0);
    }
}

static void parse_flags(rd *r, entry_t *e) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 13 && w == 2) { delimited(r); e->flags |= (uint64_t)1 << 12; }
        else if (n >= 1 && n <= 28 && n != 13 && w == 0) {
            uint64_t v = varint(r);
            if (v) e->flags |= (uint64_t)1 << (n - 1);
            else e->flags &= ~((uint64_t)1 << (n - 1));
        } else skip_field(r, w, n, 0);
    }
}

static void parse_duration(rd *r, duration_t *d) {
    d->present = 1;
    parse_timestamp(r, &d->seconds, &d->nanos);
}

static void parse_common(rd *r, entry_t *e) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (w == 2 && (n == 2 || n == 3 || n == 13 || n == 14)) {
            int i = n == 2 ? 0 : n == 3 ? 1 : n == 13 ? 2 : 3;
            SUBMESSAGE(parse_address(&c_, &e->addr[i]));
        } else if (n == 4 && w == 2) SUBMESSAGE(parse_tls(&c_, e));
        else if (n == 5 && w == 2) SUBMESSAGE(parse_timestamp(&c_, &e->start_seconds, &e->start_nanos));
        else if (n >= 6 && n <= 12 && w == 2) SUBMESSAGE(parse_duration(&c_, &e->dur[n - 6]));
        else if (n == 23 && w == 2) SUBMESSAGE(parse_duration(&c_, &e->dur[7]));
        else if (n == 15 && w == 2) e->s[S_CLUSTER] = text(r);
        else if (n == 16 && w == 2) SUBMESSAGE(parse_flags(&c_, e));
        else if (n == 18 && w == 2) e->s[S_UPSTREAM_FAILURE] = text(r);
        else if (n == 19 && w == 2) e->s[S_ROUTE] = text(r);
        else if (n == 24 && w == 0) e->attempts = (uint32_t)varint(r);
        else if (n == 25 && w == 2) e->s[S_TERMINATION] = text(r);
        else if (n == 26 && w == 2) e->s[S_STREAM_ID] = text(r);
        else if (n == 33 && w == 0) e->access_log_type = (int32_t)(uint32_t)varint(r);
        else skip_field(r, w, n, 0);
    }
}

static const struct { const char *name; int64_t len; } HEADERS[4] = {
    {"traceparent", 11}, {"x-b3-traceid", 12}, {"x-b3-spanid", 11}, {"b3", 2},
};

static void parse_header(rd *r, entry_t *e) {
    slice key = {0, 0}, value = {0, 0};
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 2) key = text(r);
        else if (n == 2 && w == 2) value = text(r);
        else skip_field(r, w, n, 0);
    }
    if (r->err) return;
    for (int i = 0; i < 4; i++) {
        if (key.n == HEADERS[i].len && memcmp(key.p, HEADERS[i].name, (size_t)key.n) == 0) {
            e->header_present[i] = 1;
            e->header[i] = value;
        }
    }
}

static void parse_request(rd *r, entry_t *e) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 0) e->method = (int32_t)(uint32_t)varint(r);
        else if (n == 2 && w == 2) e->s[S_SCHEME] = text(r);
        else if (n == 3 && w == 2) e->s[S_AUTHORITY] = text(r);
        else if (n == 5 && w == 2) e->s[S_PATH] = text(r);
        else if (n == 6 && w == 2) e->s[S_USER_AGENT] = text(r);
        else if (n == 7 && w == 2) e->s[S_REFERER] = text(r);
        else if (n == 8 && w == 2) e->s[S_FORWARDED_FOR] = text(r);
        else if (n == 9 && w == 2) e->s[S_REQUEST_ID] = text(r);
        else if (n == 11 && w == 0) e->req_headers_bytes = varint(r);
        else if (n == 12 && w == 0) e->req_body_bytes = varint(r);
        else if (n == 13 && w == 2) SUBMESSAGE(parse_header(&c_, e));
        else skip_field(r, w, n, 0);
    }
}

static void parse_response(rd *r, entry_t *e) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 2) SUBMESSAGE(parse_uint32_value(&c_, &e->response_code));
        else if (n == 2 && w == 0) e->resp_headers_bytes = varint(r);
        else if (n == 3 && w == 0) e->resp_body_bytes = varint(r);
        else if (n == 6 && w == 2) e->s[S_RESPONSE_DETAILS] = text(r);
        else skip_field(r, w, n, 0);
    }
}

static void parse_connection(rd *r, entry_t *e) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 0) e->tcp_received = varint(r);
        else if (n == 2 && w == 0) e->tcp_sent = varint(r);
        else skip_field(r, w, n, 0);
    }
}

static void parse_entry(rd *r, entry_t *e) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 2) SUBMESSAGE(parse_common(&c_, e));
        else if (e->kind == 0 && n == 2 && w == 0) e->protocol = (int32_t)(uint32_t)varint(r);
        else if (e->kind == 0 && n == 3 && w == 2) SUBMESSAGE(parse_request(&c_, e));
        else if (e->kind == 0 && n == 4 && w == 2) SUBMESSAGE(parse_response(&c_, e));
        else if (e->kind == 1 && n == 2 && w == 2) SUBMESSAGE(parse_connection(&c_, e));
        else skip_field(r, w, n, 0);
    }
}

/* ---- columns ----------------------------------------------------------------------- */
static int grow(void **p, int64_t bytes) {
    void *q = realloc(*p, (size_t)(bytes > 0 ? bytes : 1));
    if (!q) return 0;
    *p = q;
    return 1;
}

static int reserve_rows(ml_result *out, int64_t rows) {
    if (rows <= out->cap_rows) return 1;
    int64_t cap = out->cap_rows ? out->cap_rows : 1024;
    while (cap < rows) cap *= 2;
    int64_t old_bits = (out->cap_rows + 7) / 8, bits = (cap + 7) / 8;
    for (int i = 0; i < N_COUNT; i++) {
        if (!grow((void **)&out->num[i], cap * 8) || !grow((void **)&out->num_valid[i], bits)) return 0;
        memset(out->num_valid[i] + old_bits, 0, (size_t)(bits - old_bits));
    }
    for (int i = 0; i < S_COUNT; i++) {
        if (!grow((void **)&out->str_views[i], cap * 16) || !grow((void **)&out->str_valid[i], bits)) return 0;
        memset(out->str_valid[i] + old_bits, 0, (size_t)(bits - old_bits));
    }
    out->cap_rows = cap;
    return 1;
}

/* String data lives in its own mapping on Linux, grown with mremap: the kernel moves
 * page-table entries instead of copying. With realloc, glibc's dynamic mmap threshold
 * (raised by every freed batch, up to 32 MiB) soon puts these buffers on the heap, where
 * growing copies them. Measured (decode_columns, 100k entries, in process): 26.3k page
 * faults and 0.121-0.134 s with realloc, 23.2k and 0.110-0.114 s with mremap. */
static int grow_data(uint8_t **p, int64_t old_cap, int64_t cap) {
#ifdef ML_MAPPED_DATA
    void *q = *p ? mremap(*p, (size_t)old_cap, (size_t)cap, MREMAP_MAYMOVE)
                 : mmap(0, (size_t)cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED) return 0;
    *p = q;
    return 1;
#else
    (void)old_cap;
    return grow((void **)p, cap);
#endif
}

static void free_data(uint8_t *p, int64_t cap) {
#ifdef ML_MAPPED_DATA
    if (p) munmap(p, (size_t)cap);
#else
    (void)cap;
    free(p);
#endif
}

static int reserve_data(ml_result *out, int col, int64_t extra) {
    int64_t need = out->str_bytes[col] + extra;
    if (need <= out->cap_data[col]) return 1;
    if (need > (int64_t)UINT32_MAX) return 0;  /* a view's offset is 32 bits */
    int64_t cap = out->cap_data[col] ? out->cap_data[col] : 16 * out->cap_rows + 4096;
    while (cap < need) cap *= 2;
    if (!grow_data(&out->str_data[col], out->cap_data[col], cap)) return 0;
    out->cap_data[col] = cap;
    return 1;
}

static void set_num(ml_result *out, int col, int64_t row, int64_t value, int valid) {
    out->num[col][row] = value;
    if (valid) out->num_valid[col][row >> 3] |= (uint8_t)(1u << (row & 7));
}

/* Row ``row`` of string column ``col`` as an Arrow string_view: the length, then the
 * string itself if it fits in 12 bytes (zero-padded), else its first 4 bytes, buffer 0
 * and its offset in str_data, where it is appended
 * (https://arrow.apache.org/docs/format/Columnar.html#variable-size-binary-view-layout).
 * Views hold offsets, not pointers: str_data may move as it grows. */
static int put_view(ml_result *out, int col, int64_t row, const uint8_t *p, int64_t n) {
    uint8_t *v = out->str_views[col] + 16 * row;
    uint32_t len = (uint32_t)n;
    memset(v, 0, 16);
    memcpy(v, &len, 4);
    if (n <= 12) {
        if (n) memcpy(v + 4, p, (size_t)n);
        return 1;
    }
    if (!reserve_data(out, col, n)) return 0;
    uint32_t offset = (uint32_t)out->str_bytes[col];
    memcpy(out->str_data[col] + offset, p, (size_t)n);
    memcpy(v + 4, p, 4);
    memcpy(v + 12, &offset, 4);  /* bytes 8..11: buffer index 0 */
    out->str_bytes[col] += n;
    return 1;
}

static int put_str(ml_result *out, int col, int64_t row, const uint8_t *p, int64_t n, int valid) {
    if (!put_view(out, col, row, p, n)) return 0;
    if (valid) out->str_valid[col][row >> 3] |= (uint8_t)(1u << (row & 7));
    return 1;
}

/* "ip:port", "[ip6]:port", or "" when there is no socket address. */
static int put_address(ml_result *out, int col, int64_t row, const address_t *a) {
    if (!a->present) return put_str(out, col, row, 0, 0, 1);
    char port[16];
    int np = 0;
    uint32_t v = a->port;
    char rev[16];
    do { rev[np++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (int i = 0; i < np; i++) port[i] = rev[np - 1 - i];
    int bracket = a->host.n && memchr(a->host.p, ':', (size_t)a->host.n) != 0;
    int64_t n = a->host.n + np + 1 + (bracket ? 2 : 0);
    uint8_t local[128], *text = n <= (int64_t)sizeof local ? local : malloc((size_t)n);
    if (!text) return 0;
    uint8_t *d = text;
    if (bracket) *d++ = '[';
    if (a->host.n) { memcpy(d, a->host.p, (size_t)a->host.n); d += a->host.n; }
    if (bracket) *d++ = ']';
    *d++ = ':';
    memcpy(d, port, (size_t)np);
    int ok = put_str(out, col, row, text, n, 1);
    if (text != local) free(text);
    return ok;
}

/* ---- trace context (meshloop/accesslog/tracecontext.py has the rules) ------------ */
/* Lower-case hex digits (what the trace-context rules accept). */
static const uint8_t HEX[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
};

static int is_hex(const uint8_t *p, int64_t n) {
    uint8_t ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= HEX[p[i]];
    return ok;
}

static int all_zero(const uint8_t *p, int64_t n) {
    for (int64_t i = 0; i < n; i++) if (p[i] != '0') return 0;
    return 1;
}

/* The rest of a header after a matched prefix of length k: nothing, or '-' + anything. */
static int tail_ok(slice h, int64_t k) { return h.n == k || (h.n > k && h.p[k] == '-'); }

typedef struct { const uint8_t *trace; int64_t trace_n; const uint8_t *span; int64_t span_n; } ids_t;

/* (trace id, span id) from the logged headers: W3C traceparent, then x-b3-traceid (+
 * x-b3-spanid), then the single b3 header; a trace id of 16 hex digits is left-padded
 * with zeros by the caller (trace_n == 16), an all-zero trace id is no trace id. */
static ids_t trace_context(const entry_t *e) {
    ids_t none = {0, 0, 0, 0};
    if (e->header_present[0]) {
        slice h = e->header[0];
        if (h.n >= 55 && is_hex(h.p, 2) && h.p[2] == '-' && is_hex(h.p + 3, 32) && h.p[35] == '-'
            && is_hex(h.p + 36, 16) && h.p[52] == '-' && is_hex(h.p + 53, 2) && tail_ok(h, 55)
            && !all_zero(h.p + 3, 32)) {
            ids_t ids = {h.p + 3, 32, h.p + 36, 16};
            return ids;
        }
    }
    if (e->header_present[1]) {
        slice t = e->header[1];
        if ((t.n == 16 || t.n == 32) && is_hex(t.p, t.n) && !all_zero(t.p, t.n)) {
            slice sp = e->header[2];
            int span_ok = e->header_present[2] && sp.n == 16 && is_hex(sp.p, 16);
            ids_t ids = {t.p, t.n, span_ok ? sp.p : 0, span_ok ? 16 : 0};
            return ids;
        }
    }
    if (e->header_present[3]) {
        slice h = e->header[3];
        int64_t k = 0;
        if (h.n >= 17 && is_hex(h.p, 16) && h.p[16] == '-') k = 16;
        else if (h.n >= 33 && is_hex(h.p, 32) && h.p[32] == '-') k = 32;
        if (k && h.n >= k + 17 && is_hex(h.p + k + 1, 16) && tail_ok(h, k + 17) && !all_zero(h.p, k)) {
            ids_t ids = {h.p, k, h.p + k + 1, 16};
            return ids;
        }
    }
    return none;
}

static int put_trace(ml_result *out, int64_t row, const entry_t *e) {
    ids_t ids = trace_context(e);
    uint8_t trace[32];
    int64_t pad = ids.trace_n == 16 ? 16 : 0;  /* a 64-bit B3 trace id, left-padded */
    memset(trace, '0', (size_t)pad);
    if (ids.trace_n) memcpy(trace + pad, ids.trace, (size_t)ids.trace_n);
    if (!put_str(out, S_TRACE_ID, row, trace, pad + ids.trace_n, 1)) return 0;
    return put_str(out, S_SPAN_ID, row, ids.span, ids.span_n, 1);
}

/* seconds * 1e9 + nanos, exactly, clamped to [lo, hi]. */
static int64_t nanos_of(int64_t seconds, int32_t nanos, int64_t lo, int64_t hi) {
    __int128 v = (__int128)seconds * 1000000000 + nanos;
    return v < lo ? lo : v > hi ? hi : (int64_t)v;
}

static int emit(ml_result *out, const entry_t *e) {
    int64_t row = out->rows;
    if (!reserve_rows(out, row + 1)) return 0;
    set_num(out, N_KIND, row, e->kind, 1);
    set_num(out, N_PAYLOAD, row, e->payload, 1);
    set_num(out, N_START_NS, row, nanos_of(e->start_seconds, e->start_nanos, INT64_MIN, INT64_MAX), 1);
    for (int i = 0; i < 7; i++) {
        const duration_t *d = &e->dur[i];
        set_num(out, N_TTL_RX + i, row, d->present ? nanos_of(d->seconds, d->nanos, 0, INT64_MAX) : 0, d->present);
    }
    /* Duration: duration, else time_to_last_downstream_tx_byte, else 0. */
    const duration_t *d = e->dur[7].present ? &e->dur[7] : &e->dur[6];
    set_num(out, N_DURATION, row, d->present ? nanos_of(d->seconds, d->nanos, 0, INT64_MAX) : 0, 1);
    set_num(out, N_ACCESS_LOG_TYPE, row, e->access_log_type, 1);
    set_num(out, N_ATTEMPTS, row, e->attempts, 1);
    set_num(out, N_FLAGS_MASK, row, (int64_t)e->flags, 1);
    set_num(out, N_TLS_VERSION, row, e->tls_version, 1);
    set_num(out, N_CIPHER, row, e->cipher, e->cipher_present);
    set_num(out, N_PROTOCOL, row, e->protocol, 1);
    set_num(out, N_METHOD, row, e->method, 1);
    set_num(out, N_REQ_HEADERS_BYTES, row, (int64_t)e->req_headers_bytes, 1);
    set_num(out, N_REQ_BODY_BYTES, row, (int64_t)e->req_body_bytes, 1);
    set_num(out, N_RESPONSE_CODE, row, e->response_code, 1);
    set_num(out, N_RESP_HEADERS_BYTES, row, (int64_t)e->resp_headers_bytes, 1);
    set_num(out, N_RESP_BODY_BYTES, row, (int64_t)e->resp_body_bytes, 1);
    set_num(out, N_TCP_RECEIVED, row, (int64_t)e->tcp_received, 1);
    set_num(out, N_TCP_SENT, row, (int64_t)e->tcp_sent, 1);
    for (int i = 0; i < S_COUNT; i++) {
        int ok;
        if (i >= S_UPSTREAM_HOST && i <= S_DOWNSTREAM_LOCAL) {
            static const int which[4] = {2, 3, 0, 1};  /* column order -> addr[] index */
            ok = put_address(out, i, row, &e->addr[which[i - S_UPSTREAM_HOST]]);
        } else if (i == S_TRACE_ID) {
            ok = put_trace(out, row, e);
            i++;  /* put_trace wrote S_SPAN_ID too */
        } else {
            ok = put_str(out, i, row, e->s[i].p, e->s[i].n, 1);
        }
        if (!ok) return 0;
    }
    out->rows = row + 1;
    return 1;
}

static void parse_entries(rd *r, ml_result *out, int kind, int64_t payload) {
    uint32_t n, w;
    while (next_key(r, &n, &w)) {
        if (n == 1 && w == 2) {
            entry_t e;
            memset(&e, 0, sizeof e);
            e.kind = kind;
            e.payload = payload;
            SUBMESSAGE(parse_entry(&c_, &e));
            if (!emit(out, &e)) { r->err = ERR_MEMORY; return; }
        } else skip_field(r, w, n, 0);
    }
}

void ml_als_free(ml_result *out);

/* Undo the rows emitted since ``rows``: a payload that turned out malformed. */
static void rollback(ml_result *out, int64_t rows, const int64_t *str_bytes) {
    for (int64_t row = rows; row < out->rows; row++) {
        uint8_t mask = (uint8_t)~(1u << (row & 7));
        for (int c = 0; c < N_COUNT; c++) out->num_valid[c][row >> 3] &= mask;
        for (int c = 0; c < S_COUNT; c++) out->str_valid[c][row >> 3] &= mask;
    }
    for (int c = 0; c < S_COUNT; c++) out->str_bytes[c] = str_bytes[c];
    out->rows = rows;
}

static int note_malformed(ml_result *out, int64_t payload, int64_t offset, int code) {
    int64_t n = out->malformed;
    if ((n & (n - 1)) == 0) {  /* 0, 1, 2, 4, ...: grow to the next power of two */
        int64_t cap = n ? 2 * n : 1;
        if (!grow((void **)&out->malformed_payload, cap * 8) || !grow((void **)&out->malformed_offset, cap * 8)
            || !grow((void **)&out->malformed_code, cap * 8)) return 0;
    }
    out->malformed_payload[n] = payload;
    out->malformed_offset[n] = offset;
    out->malformed_code[n] = code;
    out->malformed = n + 1;
    return 1;
}

/* Decode ``count`` payloads. Returns a result to free with ml_als_free (NULL only when
 * out of memory before anything could be allocated). A malformed payload stops the
 * decode (``error`` and ``error_payload`` name it; the rows must be ignored) unless
 * ``skip_malformed``: then its rows are rolled back, it is listed in ``malformed`` and
 * the decode goes on — one pass whatever the number of bad payloads. */
ml_result *ml_als_decode(const uint8_t *const *payloads, const int64_t *lengths, int64_t count,
                         int32_t skip_malformed) {
    ml_result *out = calloc(1, sizeof *out);
    int64_t total = 0;
    for (int64_t i = 0; i < count; i++) total += lengths[i];
    /* Start near the final sizes (a realistic entry is 300-1000 bytes): little regrowing. */
    if (!out || !reserve_rows(out, total / 512 + 1)) { ml_als_free(out); return 0; }
    for (int64_t i = 0; i < count && !out->error; i++) {
        rd r = {payloads[i], payloads[i] + lengths[i], payloads[i], 0};
        int64_t rows = out->rows, str_bytes[S_COUNT];
        memcpy(str_bytes, out->str_bytes, sizeof str_bytes);
        uint32_t n, w;
        while (next_key(&r, &n, &w)) {
            if ((n == 2 || n == 3) && w == 2) {
                slice s = delimited(&r);
                if (r.err) break;
                rd c = sub(&r, s);
                parse_entries(&c, out, n == 2 ? 0 : 1, i);
                if (c.err) { r.err = c.err; r.p = c.p; break; }
            } else skip_field(&r, w, n, 0);
        }
        if (!r.err) continue;
        if (skip_malformed && r.err != ERR_MEMORY) {
            rollback(out, rows, str_bytes);
            if (note_malformed(out, i, r.p - r.base, r.err)) continue;
            r.err = ERR_MEMORY;
        }
        out->error = r.err;
        out->error_payload = i;
        out->error_offset = r.p - r.base;
    }
    return out;
}

void ml_als_free(ml_result *out) {
    if (!out) return;
    for (int i = 0; i < N_COUNT; i++) { free(out->num[i]); free(out->num_valid[i]); }
    for (int i = 0; i < S_COUNT; i++) {
        free_data(out->str_data[i], out->cap_data[i]); free(out->str_valid[i]); free(out->str_views[i]);
    }
    free(out->malformed_payload); free(out->malformed_offset); free(out->malformed_code);
    free(out);
}

int64_t ml_als_columns(int64_t *numeric, int64_t *strings) {
    *numeric = N_COUNT;
    *strings = S_COUNT;
    return (int64_t)sizeof(ml_result);
}
