/* producer._speedups: the producer's per-row hot path, written by hand in C.
 *
 * Why by hand (the project's rule: write by hand only the hot path where a library
 * would cost speed, and say so): in Python + msgspec, a snapshot row cost ~2.2 us to
 * become its document (a msgspec Struct and msgspec.Raw objects built per row only
 * to be encoded, timestamp text rewritten with str.replace, a bytes object per
 * document) and ~0.7 us more to be grouped into an entry (a list of pieces per
 * entry, header lookups, bytes.join), and holding it in the consolidator's snapshot
 * ~0.8 us: 4-5 us of the producer's ~10.5 us per row in bench/producer.py, which
 * made it miss 100,000 rows/s. Here: ~0.6 us for document + entry and ~0.55 us for
 * holding (20,000 FreshMart rows in batches of 2,000, this machine). bench/producer.py,
 * 3 runs each, interleaved on the same box: 9.6-11.1 -> 5.55-7.05 us of producer CPU
 * per row, 67-85k -> 101-128k rows/s. More in producer/documents.py ("C path").
 *
 * The output is exactly that of the Python path, which stays (it runs when this
 * module is not built): tests/unit/producer/test_speedups.py compares both on
 * arbitrary rows. Whatever this code does not handle itself (a value of another
 * type, a timestamp text shorter than 3 characters, a str with lone surrogates, a
 * version outside int64/uint64) goes to the Python path for that row, which then
 * does what it always did, errors included.
 *
 *   DocumentWriter(kinds, prefixes, version_key, fallback)
 *       writer(values, version) -> bytes: one row's JSON document
 *   pack_upserts(writer, rows, version, partitions, cap[, max_entry_bytes, max_doc_bytes,
 *                oversize]) -> [(partition, n, body)]
 *       a snapshot's upsert entries (producer.batches.snapshot_entries); documents
 *       above max_doc_bytes are left out and reported in oversize as (key, size)
 *   hold_snapshot_rows(rows, start, raw, key_index, first_value, snap, seen, room)
 *       the loop of producer.consolidate.Consolidator._take_snapshot_rows
 *   set_libpq, RawResult, RawRow, hold_snapshot_result
 *       a snapshot's rows read straight from libpq's result, never loaded into Python
 *       values (section "Raw results"; producer/results.py)
 *   KeySet()
 *       a set of str keys as their 64-bit hashes (producer.keyset): add, discard,
 *       in, len, clear, update, nbytes. 10.7-21.3 bytes a key (16.8 at 1M keys)
 *       against ~100+ for a set[str]; two keys with the same hash are one key to it
 *       (odds ~n^2/2^65 for n keys: 2.7e-8 at 1M). C API for this file:
 *       keyset_contains, keyset_add, keyset_discard (at the type).
 *
 * CPython 3.11 API only (the project's Python); no other library.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Column kinds, one byte per column (producer.documents._KIND_CODES). */
enum {
    KIND_PLAIN = 'p',
    KIND_NUMBER = 'n',
    KIND_TIMESTAMP = 't',
    KIND_JSON = 'j',
};

/* Writing returns one of these (or -1, an exception set). */
enum {
    FALLBACK = 0, /* not handled here: the Python path does it */
    WRITTEN = 1,
};

/* ======================================================================== */
/* A growable byte buffer                                                   */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buffer;

static int
buffer_grow(Buffer *buf, Py_ssize_t extra)
{
    Py_ssize_t need, cap;
    char *data;
    if (extra > PY_SSIZE_T_MAX - buf->len) {
        PyErr_NoMemory();
        return -1;
    }
    need = buf->len + extra;
    cap = buf->cap ? buf->cap : 1024;
    while (cap < need) {
        cap = cap > PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    }
    data = PyMem_Realloc(buf->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buf->data = data;
    buf->cap = cap;
    return 0;
}

/* Room for extra more bytes: 0, or -1 with MemoryError. */
static inline int
buffer_reserve(Buffer *buf, Py_ssize_t extra)
{
    if (extra <= buf->cap - buf->len) {
        return 0;
    }
    return buffer_grow(buf, extra);
}

/* Callers reserve first. */
static inline void
buffer_put(Buffer *buf, const char *bytes, Py_ssize_t n)
{
    memcpy(buf->data + buf->len, bytes, (size_t)n);
    buf->len += n;
}

#define PUT_LITERAL(buf, literal) buffer_put((buf), (literal), (Py_ssize_t)sizeof(literal) - 1)

static void
buffer_free(Buffer *buf)
{
    PyMem_Free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

static Py_ssize_t
digit_count(Py_ssize_t n)
{
    Py_ssize_t count = 1;
    while (n >= 10) {
        n /= 10;
        count++;
    }
    return count;
}

/* n >= 0 in decimal; callers reserve digit_count(n) bytes. */
static void
put_digits(Buffer *buf, Py_ssize_t n)
{
    Py_ssize_t count = digit_count(n), i;
    for (i = count - 1; i >= 0; i--) {
        buf->data[buf->len + i] = (char)('0' + n % 10);
        n /= 10;
    }
    buf->len += count;
}

/* ======================================================================== */
/* JSON text as msgspec 0.22 writes it                                      */

/* Escapes of a JSON string: '"' and '\\' with a backslash; \b \t \n \f \r short;
 * the other control characters as \u00XX, lowercase hex. Everything else, DEL
 * and non-ASCII included, as is. 0: as is; 'u': \u00XX; else the short escape. */
static char escapes[256];

static void
init_escapes(void)
{
    int c;
    for (c = 0; c < 0x20; c++) {
        escapes[c] = 'u';
    }
    escapes['\b'] = 'b';
    escapes['\t'] = 't';
    escapes['\n'] = 'n';
    escapes['\f'] = 'f';
    escapes['\r'] = 'r';
    escapes['"'] = '"';
    escapes['\\'] = '\\';
}

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Whether any byte of word is below 0x20, '"' or '\\': the classic "has a zero
 * byte" and "has a byte less than n" tests, which can misreport bytes after the
 * first hit but never whether there is one. */
static inline int
word_needs_escape(uint64_t word)
{
    uint64_t quote = word ^ (ONES * '"');
    uint64_t backslash = word ^ (ONES * '\\');
    return ((((word - ONES * 0x20) & ~word) | ((quote - ONES) & ~quote) |
             ((backslash - ONES) & ~backslash)) &
            HIGHS) != 0;
}

/* text (UTF-8) escaped, without the quotes. */
static int
put_escaped(Buffer *buf, const char *text, Py_ssize_t n)
{
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t i, start = 0;
    char *out;
    /* Eight bytes at a time up to the first word with a byte to escape, then byte
     * by byte from that word on. */
    for (i = 0; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, text + i, 8);
        if (word_needs_escape(word)) {
            break;
        }
    }
    for (; i < n; i++) {
        if (escapes[(unsigned char)text[i]]) {
            break;
        }
    }
    if (i == n) { /* the usual case: nothing to escape */
        if (buffer_reserve(buf, n) < 0) {
            return -1;
        }
        buffer_put(buf, text, n);
        return 0;
    }
    if (n > PY_SSIZE_T_MAX / 6) {
        PyErr_NoMemory();
        return -1;
    }
    if (buffer_reserve(buf, 6 * n) < 0) {
        return -1;
    }
    out = buf->data + buf->len;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        char escape = escapes[c];
        if (!escape) {
            continue;
        }
        memcpy(out, text + start, (size_t)(i - start));
        out += i - start;
        start = i + 1;
        *out++ = '\\';
        if (escape == 'u') {
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 0xF];
        }
        else {
            *out++ = escape;
        }
    }
    memcpy(out, text + start, (size_t)(n - start));
    out += n - start;
    buf->len = out - buf->data;
    return 0;
}

/* An int as msgspec writes it, into out (24 bytes): WRITTEN, FALLBACK (not an
 * exact int, or outside int64/uint64, which msgspec refuses) or -1. */
static int
format_int(PyObject *value, char *out, Py_ssize_t *n)
{
    long long signed_value;
    unsigned long long magnitude;
    int overflow, negative = 0;
    char digits[24];
    Py_ssize_t count = 0;
    if (!PyLong_CheckExact(value)) {
        return FALLBACK;
    }
    signed_value = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (signed_value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow < 0) {
        return FALLBACK;
    }
    if (overflow > 0) {
        magnitude = PyLong_AsUnsignedLongLong(value);
        if (magnitude == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return FALLBACK;
        }
    }
    else if (signed_value < 0) {
        negative = 1;
        magnitude = 0ULL - (unsigned long long)signed_value;
    }
    else {
        magnitude = (unsigned long long)signed_value;
    }
    do {
        digits[count++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    *n = 0;
    if (negative) {
        out[(*n)++] = '-';
    }
    while (count) {
        out[(*n)++] = digits[--count];
    }
    return WRITTEN;
}

/* A str's UTF-8 text: an ASCII str's own data (what PyUnicode_AsUTF8AndSize
 * returns for it too, without the call); NULL with an exception if it has none
 * (lone surrogates). */
static inline const char *
utf8_of(PyObject *str, Py_ssize_t *n)
{
    if (PyUnicode_IS_COMPACT_ASCII(str)) {
        *n = PyUnicode_GET_LENGTH(str);
        return (const char *)PyUnicode_DATA(str);
    }
    return PyUnicode_AsUTF8AndSize(str, n);
}

/* The numeric texts that are no JSON number (producer.documents._NOT_JSON_NUMBERS). */
static int
is_not_json_number(const char *text, Py_ssize_t n)
{
    switch (n) {
    case 3:
        return memcmp(text, "NaN", 3) == 0 || memcmp(text, "inf", 3) == 0;
    case 4:
        return memcmp(text, "-inf", 4) == 0;
    case 8:
        return memcmp(text, "Infinity", 8) == 0;
    case 9:
        return memcmp(text, "-Infinity", 9) == 0;
    default:
        return 0;
    }
}

static int
put_null(Buffer *buf)
{
    if (buffer_reserve(buf, 4) < 0) {
        return -1;
    }
    PUT_LITERAL(buf, "null");
    return WRITTEN;
}

/* A timestamp(tz) column's text as the generated Python does it: null if c[0] is
 * 'i' or '-' (±infinity); else c.replace(' ', 'T', 1), plus ':00' if c[-3] is '+'
 * or '-' (a bare +HH offset), as a JSON string. */
static int
put_timestamp(Buffer *buf, PyObject *value, const char *text, Py_ssize_t n)
{
    Py_ssize_t chars = PyUnicode_GET_LENGTH(value);
    Py_UCS4 first, third_last;
    const char *space;
    if (chars < 1) {
        return FALLBACK; /* c[0] raises IndexError there */
    }
    first = PyUnicode_READ_CHAR(value, 0);
    if (first == 'i' || first == '-') {
        return put_null(buf);
    }
    if (chars < 3) {
        return FALLBACK; /* c[-3] raises IndexError there */
    }
    third_last = PyUnicode_READ_CHAR(value, chars - 3);
    if (buffer_reserve(buf, 1) < 0) {
        return -1;
    }
    PUT_LITERAL(buf, "\"");
    /* ' ' is one byte in UTF-8, never part of a longer sequence */
    space = memchr(text, ' ', (size_t)n);
    if (space != NULL) {
        if (put_escaped(buf, text, space - text) < 0 || buffer_reserve(buf, 1) < 0) {
            return -1;
        }
        PUT_LITERAL(buf, "T");
        n -= space + 1 - text;
        text = space + 1;
    }
    if (put_escaped(buf, text, n) < 0 || buffer_reserve(buf, 4) < 0) {
        return -1;
    }
    if (third_last == '+' || third_last == '-') {
        PUT_LITERAL(buf, ":00");
    }
    PUT_LITERAL(buf, "\"");
    return WRITTEN;
}

/* A value that is not a str, in a plain column: None, bool and int as msgspec
 * writes them; anything else (float, date, ...) is the Python path's. */
static int
put_other(Buffer *buf, PyObject *value)
{
    char digits[24];
    Py_ssize_t n;
    int done;
    if (value == Py_True || value == Py_False) {
        if (buffer_reserve(buf, 5) < 0) {
            return -1;
        }
        if (value == Py_True) {
            PUT_LITERAL(buf, "true");
        }
        else {
            PUT_LITERAL(buf, "false");
        }
        return WRITTEN;
    }
    done = format_int(value, digits, &n);
    if (done != WRITTEN) {
        return done;
    }
    if (buffer_reserve(buf, n) < 0) {
        return -1;
    }
    buffer_put(buf, digits, n);
    return WRITTEN;
}

/* One value of a column of kind: WRITTEN, FALLBACK (what was written is garbage:
 * the caller drops the document) or -1. */
static int
put_value(Buffer *buf, char kind, PyObject *value)
{
    const char *text;
    Py_ssize_t n;
    if (value == Py_None) {
        return put_null(buf);
    }
    if (!PyUnicode_CheckExact(value)) {
        /* other kinds: a Decimal, a datetime, a dict need the Python converters */
        return kind == KIND_PLAIN ? put_other(buf, value) : FALLBACK;
    }
    text = utf8_of(value, &n);
    if (text == NULL) {
        PyErr_Clear(); /* lone surrogates: the Python path raises as it always did */
        return FALLBACK;
    }
    switch (kind) {
    case KIND_NUMBER:
        if (is_not_json_number(text, n)) {
            return put_null(buf);
        }
        /* the numeric text is the JSON number (msgspec.Raw) */
        /* fall through */
    case KIND_JSON:
        if (buffer_reserve(buf, n) < 0) {
            return -1;
        }
        buffer_put(buf, text, n);
        return WRITTEN;
    case KIND_TIMESTAMP:
        return put_timestamp(buf, value, text, n);
    default: /* KIND_PLAIN: a JSON string */
        if (buffer_reserve(buf, 1) < 0) {
            return -1;
        }
        PUT_LITERAL(buf, "\"");
        if (put_escaped(buf, text, n) < 0 || buffer_reserve(buf, 1) < 0) {
            return -1;
        }
        PUT_LITERAL(buf, "\"");
        return WRITTEN;
    }
}

/* ======================================================================== */
/* DocumentWriter                                                           */

/* The open entry of one partition in pack_upserts: its changes so far, each a key
 * header (which ends the previous bulk string), the key, a value header and the
 * document, as producer.batches._Grouper lays them out. */
typedef struct {
    Buffer body;
    Py_ssize_t count;
    Py_ssize_t key_at, key_len, doc_at, doc_len; /* the last change's, in body */
} Group;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t columns;
    char *kinds;            /* one KIND_* per column */
    PyObject *prefixes;     /* tuple of bytes: '{"name":', then ',"name":' */
    PyObject *version_key;  /* bytes: ',"sync_version":' ('{"sync_version":' alone) */
    PyObject *fallback;     /* the Python path: fallback(values, version) -> bytes */
    Buffer scratch;         /* the document being written by a call */
    PyObject *last_version; /* the version whose digits are cached below */
    char version_text[24];
    Py_ssize_t version_len;
    Group *groups; /* pack_upserts' open entries (empty between calls), one per partition */
    Py_ssize_t partitions;
    int packing; /* pack_upserts is running (a fallback calling it again is refused) */
} DocumentWriter;

static PyTypeObject DocumentWriterType;

static void
free_groups(DocumentWriter *writer)
{
    Py_ssize_t p;
    for (p = 0; p < writer->partitions; p++) {
        buffer_free(&writer->groups[p].body);
    }
    PyMem_Free(writer->groups);
    writer->groups = NULL;
    writer->partitions = 0;
}

/* The digits of version into writer->version_text: WRITTEN, FALLBACK or -1. */
static int
cache_version(DocumentWriter *writer, PyObject *version)
{
    int done;
    if (version == writer->last_version) {
        return WRITTEN;
    }
    done = format_int(version, writer->version_text, &writer->version_len);
    if (done == WRITTEN) {
        Py_INCREF(version);
        Py_XSETREF(writer->last_version, version);
    }
    return done;
}

static PyTypeObject RawRowType;
static int write_raw_values(DocumentWriter *writer, Buffer *buf, PyObject *values);

/* Appends the document of values at version to buf: WRITTEN, FALLBACK (buf holds
 * part of a document: the caller truncates it) or -1. values is a tuple, or a RawRow
 * (a row still in libpq's result, see "Raw results" below). */
static int
write_document(DocumentWriter *writer, Buffer *buf, PyObject *values, PyObject *version)
{
    Py_ssize_t i, n;
    int done;
    if (Py_IS_TYPE(values, &RawRowType)) {
        done = cache_version(writer, version);
        if (done != WRITTEN) {
            return done;
        }
        done = write_raw_values(writer, buf, values);
        if (done != WRITTEN) {
            return done;
        }
        goto version;
    }
    if (!PyTuple_CheckExact(values) || PyTuple_GET_SIZE(values) != writer->columns) {
        return FALLBACK;
    }
    done = cache_version(writer, version);
    if (done != WRITTEN) {
        return done;
    }
    for (i = 0; i < writer->columns; i++) {
        PyObject *prefix = PyTuple_GET_ITEM(writer->prefixes, i);
        n = PyBytes_GET_SIZE(prefix);
        if (buffer_reserve(buf, n) < 0) {
            return -1;
        }
        buffer_put(buf, PyBytes_AS_STRING(prefix), n);
        done = put_value(buf, writer->kinds[i], PyTuple_GET_ITEM(values, i));
        if (done != WRITTEN) {
            return done;
        }
    }
version:
    n = PyBytes_GET_SIZE(writer->version_key);
    if (buffer_reserve(buf, n + writer->version_len + 1) < 0) {
        return -1;
    }
    buffer_put(buf, PyBytes_AS_STRING(writer->version_key), n);
    buffer_put(buf, writer->version_text, writer->version_len);
    PUT_LITERAL(buf, "}");
    return WRITTEN;
}

/* New reference to the Python path's document, or NULL. */
static PyObject *
fallback_document(DocumentWriter *writer, PyObject *values, PyObject *version)
{
    PyObject *doc = PyObject_CallFunctionObjArgs(writer->fallback, values, version, NULL);
    if (doc != NULL && !PyBytes_Check(doc)) {
        PyErr_Format(PyExc_TypeError, "fallback returned %.100s, not bytes",
                     Py_TYPE(doc)->tp_name);
        Py_CLEAR(doc);
    }
    return doc;
}

/* False (ValueError set) for a writer whose __init__ did not run, or that the GC
 * cleared. */
static int
writer_ready(DocumentWriter *writer)
{
    if (writer->fallback == NULL || writer->prefixes == NULL || writer->version_key == NULL) {
        PyErr_SetString(PyExc_ValueError, "DocumentWriter not initialized");
        return 0;
    }
    return 1;
}

static PyObject *
writer_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    DocumentWriter *writer = (DocumentWriter *)self;
    int done;
    if (PyVectorcall_NARGS(nargsf) != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "DocumentWriter takes (values, version)");
        return NULL;
    }
    if (!writer_ready(writer)) {
        return NULL;
    }
    writer->scratch.len = 0;
    done = write_document(writer, &writer->scratch, args[0], args[1]);
    if (done < 0) {
        return NULL;
    }
    if (done == FALLBACK) {
        return fallback_document(writer, args[0], args[1]);
    }
    return PyBytes_FromStringAndSize(writer->scratch.data, writer->scratch.len);
}

static int
writer_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"kinds", "prefixes", "version_key", "fallback", NULL};
    DocumentWriter *writer = (DocumentWriter *)self;
    const char *kinds;
    Py_ssize_t kinds_len, i;
    PyObject *prefixes, *version_key, *fallback;
    char *copy;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y#O!O!O:DocumentWriter", names, &kinds,
                                     &kinds_len, &PyTuple_Type, &prefixes, &PyBytes_Type,
                                     &version_key, &fallback)) {
        return -1;
    }
    if (PyTuple_GET_SIZE(prefixes) != kinds_len) {
        PyErr_SetString(PyExc_ValueError, "one prefix per kind");
        return -1;
    }
    for (i = 0; i < kinds_len; i++) {
        char kind = kinds[i];
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(prefixes, i))) {
            PyErr_SetString(PyExc_TypeError, "prefixes must be bytes");
            return -1;
        }
        if (kind != KIND_PLAIN && kind != KIND_NUMBER && kind != KIND_TIMESTAMP &&
            kind != KIND_JSON) {
            PyErr_Format(PyExc_ValueError, "unknown column kind %c", (int)(unsigned char)kind);
            return -1;
        }
    }
    if (!PyBytes_CheckExact(version_key)) {
        PyErr_SetString(PyExc_TypeError, "version_key must be bytes");
        return -1;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return -1;
    }
    copy = PyMem_Malloc(kinds_len ? (size_t)kinds_len : 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(copy, kinds, (size_t)kinds_len);
    PyMem_Free(writer->kinds);
    writer->kinds = copy;
    writer->columns = kinds_len;
    Py_INCREF(prefixes);
    Py_XSETREF(writer->prefixes, prefixes);
    Py_INCREF(version_key);
    Py_XSETREF(writer->version_key, version_key);
    Py_INCREF(fallback);
    Py_XSETREF(writer->fallback, fallback);
    Py_CLEAR(writer->last_version);
    return 0;
}

static PyObject *
writer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    DocumentWriter *writer = (DocumentWriter *)type->tp_alloc(type, 0);
    if (writer != NULL) {
        writer->vectorcall = writer_vectorcall;
    }
    return (PyObject *)writer;
}

static int
writer_traverse(PyObject *self, visitproc visit, void *arg)
{
    DocumentWriter *writer = (DocumentWriter *)self;
    Py_VISIT(writer->fallback); /* a bound method of the DocumentEncoder that owns us */
    return 0;
}

static int
writer_clear(PyObject *self)
{
    DocumentWriter *writer = (DocumentWriter *)self;
    Py_CLEAR(writer->fallback);
    return 0;
}

static void
writer_dealloc(PyObject *self)
{
    DocumentWriter *writer = (DocumentWriter *)self;
    PyObject_GC_UnTrack(self);
    Py_CLEAR(writer->fallback);
    Py_CLEAR(writer->prefixes);
    Py_CLEAR(writer->version_key);
    Py_CLEAR(writer->last_version);
    PyMem_Free(writer->kinds);
    buffer_free(&writer->scratch);
    free_groups(writer);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject DocumentWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "searchsync.producer._speedups.DocumentWriter",
    .tp_basicsize = sizeof(DocumentWriter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "DocumentWriter(kinds, prefixes, version_key, fallback)\n\n"
              "writer(values, version) -> the JSON document of one row (bytes).",
    .tp_new = writer_new,
    .tp_init = writer_init,
    .tp_dealloc = writer_dealloc,
    .tp_traverse = writer_traverse,
    .tp_clear = writer_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(DocumentWriter, vectorcall),
};

/* ======================================================================== */
/* pack_upserts                                                              */

/* crc32 as zlib.crc32 computes it (reflected polynomial 0xEDB88320). */
static uint32_t crc_table[256];

static void
init_crc_table(void)
{
    uint32_t n, c;
    int k;
    for (n = 0; n < 256; n++) {
        c = n;
        for (k = 0; k < 8; k++) {
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[n] = c;
    }
}

static uint32_t
crc32_of(const char *data, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        c = crc_table[(c ^ (unsigned char)data[i]) & 0xFF] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFu;
}

/* A RESP bulk string header "$<n>\r\n"; callers reserve bulk_header_size(n). */
static Py_ssize_t
bulk_header_size(Py_ssize_t n)
{
    return 1 + digit_count(n) + 2;
}

static void
put_bulk_header(Buffer *buf, Py_ssize_t n)
{
    PUT_LITERAL(buf, "$");
    put_digits(buf, n);
    PUT_LITERAL(buf, "\r\n");
}

/* Appends (partition, count, body) to out and empties the group; body is the whole
 * entry (the fields after "XADD <stream> *") exactly as _Grouper.close builds it:
 * a plain u entry for one change, else a b entry. */
static int
close_group(DocumentWriter *writer, PyObject *out, Py_ssize_t partition, const char *ts,
            Py_ssize_t ts_len)
{
    Group *group = &writer->groups[partition];
    Py_ssize_t count = group->count, size;
    PyObject *body, *item;
    Buffer entry;
    int failed;
    if (count == 1) {
        size = 8 + bulk_header_size(ts_len) + ts_len + 26 + bulk_header_size(group->key_len) +
               group->key_len + 11 + bulk_header_size(group->doc_len) + group->doc_len + 2;
    }
    else {
        size = 8 + bulk_header_size(ts_len) + ts_len + 24 +
               bulk_header_size(digit_count(count)) + digit_count(count) + group->body.len + 2;
    }
    body = PyBytes_FromStringAndSize(NULL, size);
    if (body == NULL) {
        return -1;
    }
    entry.data = PyBytes_AS_STRING(body);
    entry.len = 0;
    entry.cap = size;
    PUT_LITERAL(&entry, "$2\r\nts\r\n");
    put_bulk_header(&entry, ts_len);
    buffer_put(&entry, ts, ts_len);
    if (count == 1) {
        PUT_LITERAL(&entry, "\r\n$2\r\nop\r\n$1\r\nu\r\n$3\r\nkey\r\n");
        put_bulk_header(&entry, group->key_len);
        buffer_put(&entry, group->body.data + group->key_at, group->key_len);
        PUT_LITERAL(&entry, "\r\n$3\r\ndoc\r\n");
        put_bulk_header(&entry, group->doc_len);
        buffer_put(&entry, group->body.data + group->doc_at, group->doc_len);
    }
    else {
        PUT_LITERAL(&entry, "\r\n$2\r\nop\r\n$1\r\nb\r\n$1\r\nn\r\n");
        put_bulk_header(&entry, digit_count(count));
        put_digits(&entry, count);
        buffer_put(&entry, group->body.data, group->body.len);
    }
    PUT_LITERAL(&entry, "\r\n");
    group->body.len = 0;
    group->count = 0;
    if (entry.len != size) {
        Py_DECREF(body);
        PyErr_SetString(PyExc_SystemError, "pack_upserts: entry size miscounted");
        return -1;
    }
    item = Py_BuildValue("(nnN)", partition, count, body);
    if (item == NULL) {
        return -1;
    }
    failed = PyList_Append(out, item);
    Py_DECREF(item);
    return failed;
}

/* add_upsert's answer for a document above max_doc_bytes: taken back out of group. */
#define OVERSIZE 2

/* Adds the upsert of key (UTF-8) with the document of values to group: 0, OVERSIZE
 * (the document is longer than max_doc_bytes, 0 = no limit: group is as it was and
 * *doc_size says how long it was), or -1 with an exception set. */
static int
add_upsert(DocumentWriter *writer, Group *group, const char *key, Py_ssize_t key_len,
           PyObject *values, PyObject *version, Py_ssize_t max_doc_bytes, Py_ssize_t *doc_size)
{
    Buffer *body = &group->body;
    Py_ssize_t header_at, doc_at, doc_len, digits, end;
    Py_ssize_t start = body->len, last_key_at = group->key_at, last_key_len = group->key_len;
    Py_ssize_t last_doc_at = group->doc_at, last_doc_len = group->doc_len;
    int done;
    if (buffer_reserve(body, 2 + bulk_header_size(key_len + 2) + 2 + key_len + 8) < 0) {
        return -1;
    }
    PUT_LITERAL(body, "\r\n"); /* ends the previous bulk string */
    put_bulk_header(body, key_len + 2);
    PUT_LITERAL(body, "u:");
    group->key_at = body->len;
    group->key_len = key_len;
    buffer_put(body, key, key_len);
    /* The document is written right after room for its header, "\r\n$NNN\r\n" (a
     * 3-digit length, the usual one), and moved if its length has more or fewer. */
    header_at = body->len;
    body->len += 8;
    doc_at = body->len;
    done = write_document(writer, body, values, version);
    if (done < 0) {
        return -1;
    }
    if (done == FALLBACK) {
        PyObject *doc;
        body->len = doc_at;
        doc = fallback_document(writer, values, version);
        if (doc == NULL) {
            return -1;
        }
        if (buffer_reserve(body, PyBytes_GET_SIZE(doc)) < 0) {
            Py_DECREF(doc);
            return -1;
        }
        buffer_put(body, PyBytes_AS_STRING(doc), PyBytes_GET_SIZE(doc));
        Py_DECREF(doc);
    }
    doc_len = body->len - doc_at;
    if (max_doc_bytes > 0 && doc_len > max_doc_bytes) {
        /* too big for OpenSearch (MAX_DOCUMENT_BYTES): the caller dead-letters it */
        *doc_size = doc_len;
        body->len = start;
        group->key_at = last_key_at;
        group->key_len = last_key_len;
        group->doc_at = last_doc_at;
        group->doc_len = last_doc_len;
        return OVERSIZE;
    }
    digits = digit_count(doc_len);
    if (digits != 3) {
        if (digits > 3 && buffer_reserve(body, digits - 3) < 0) {
            return -1;
        }
        memmove(body->data + doc_at + digits - 3, body->data + doc_at, (size_t)doc_len);
        doc_at += digits - 3;
    }
    end = doc_at + doc_len;
    body->len = header_at;
    PUT_LITERAL(body, "\r\n");
    put_bulk_header(body, doc_len);
    body->len = end;
    group->doc_at = doc_at;
    group->doc_len = doc_len;
    group->count++;
    return 0;
}

/* Appends (key, size) to list: 0, or -1 with an exception set. */
static int
report_oversize(PyObject *list, PyObject *key, Py_ssize_t size)
{
    PyObject *item = Py_BuildValue("(On)", key, size);
    int failed;
    if (item == NULL) {
        return -1;
    }
    failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

/* Limits of one pack_upserts call (0 = none), and where oversized documents go. */
typedef struct {
    Py_ssize_t cap;             /* changes per entry */
    Py_ssize_t max_entry_bytes; /* an entry closes once its body reaches this */
    Py_ssize_t max_doc_bytes;   /* longer documents are not packed but reported */
    PyObject *oversize;         /* list of (key, size) for those, or NULL */
} Limits;

/* The upserts of rows (key -> values) at version, packed into entries of at most
 * limits->cap changes per partition (and closed once they reach
 * limits->max_entry_bytes), appended to out. */
static int
pack_rows(DocumentWriter *writer, PyObject *rows, PyObject *version, Py_ssize_t partitions,
          const Limits *limits, PyObject *out)
{
    Py_ssize_t cap = limits->cap;
    PyObject *key, *values;
    Py_ssize_t position = 0, p, ts_len = writer->version_len;
    char ts[24]; /* the version's digits: a fallback may make the writer cache another */
    int failed = 0;
    memcpy(ts, writer->version_text, sizeof(ts));
    if (partitions != writer->partitions) {
        free_groups(writer);
        writer->groups = PyMem_Calloc((size_t)partitions, sizeof(Group));
        if (writer->groups == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        writer->partitions = partitions;
    }
    while (!failed && PyDict_Next(rows, &position, &key, &values)) {
        const char *key_text;
        Py_ssize_t key_len;
        Py_INCREF(key);
        Py_INCREF(values);
        key_text = PyUnicode_Check(key) ? utf8_of(key, &key_len) : NULL;
        if (key_text == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError, "key %R is not str", key);
            }
            failed = 1;
        }
        else {
            Py_ssize_t doc_size = 0;
            Group *group;
            int added;
            p = (Py_ssize_t)((uint64_t)crc32_of(key_text, key_len) % (uint64_t)partitions);
            group = &writer->groups[p];
            added = add_upsert(writer, group, key_text, key_len, values, version,
                               limits->max_doc_bytes, &doc_size);
            if (added == OVERSIZE) {
                failed = limits->oversize != NULL &&
                         report_oversize(limits->oversize, key, doc_size) < 0;
            }
            else {
                failed = added < 0 ||
                         ((group->count == cap || (limits->max_entry_bytes > 0 &&
                                                   group->body.len >= limits->max_entry_bytes)) &&
                          close_group(writer, out, p, ts, ts_len) < 0);
            }
        }
        Py_DECREF(key);
        Py_DECREF(values);
    }
    for (p = 0; p < partitions; p++) {
        if (!failed && writer->groups[p].count) {
            failed = close_group(writer, out, p, ts, ts_len) < 0;
        }
        writer->groups[p].body.len = 0; /* after a failure: nothing stays open */
        writer->groups[p].count = 0;
    }
    return failed ? -1 : 0;
}

static PyObject *
pack_upserts(PyObject *module, PyObject *args)
{
    DocumentWriter *writer;
    PyObject *rows, *version, *out, *oversize = Py_None;
    Py_ssize_t partitions;
    Limits limits = {0, 0, 0, NULL};
    int done;
    if (!PyArg_ParseTuple(args, "O!O!Onn|nnO:pack_upserts", &DocumentWriterType, &writer,
                          &PyDict_Type, &rows, &version, &partitions, &limits.cap,
                          &limits.max_entry_bytes, &limits.max_doc_bytes, &oversize)) {
        return NULL;
    }
    if (!writer_ready(writer)) {
        return NULL;
    }
    if (partitions < 1 || limits.cap < 1) {
        PyErr_SetString(PyExc_ValueError, "partitions and cap must be at least 1");
        return NULL;
    }
    if (oversize != Py_None && !PyList_Check(oversize)) {
        PyErr_SetString(PyExc_TypeError, "oversize must be a list or None");
        return NULL;
    }
    limits.oversize = oversize == Py_None ? NULL : oversize;
    if (writer->packing) {
        PyErr_SetString(PyExc_RuntimeError, "pack_upserts is already running on this writer");
        return NULL;
    }
    done = cache_version(writer, version);
    if (done != WRITTEN) {
        if (done == FALLBACK) {
            Py_RETURN_NONE; /* the ts is written as msgspec would not: Python path */
        }
        return NULL;
    }
    out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    Py_INCREF(rows);    /* a fallback runs Python code */
    Py_INCREF(writer);
    writer->packing = 1;
    done = pack_rows(writer, rows, version, partitions, &limits, out);
    writer->packing = 0;
    Py_DECREF(writer);
    Py_DECREF(rows);
    if (done < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* ======================================================================== */
/* KeySet                                                                   */

/* A set of str keys that keeps only each key's 64-bit hash, its fingerprint.
 *
 * Why: the producer keeps, for every key of a view (millions), whether it has a
 * live row now, for as long as it runs. A set[str] holds the key objects: ~100+
 * bytes a key (a 16-character key alone is a 65-byte str). Here a key costs one
 * int64 slot of a table kept between 3/8 and 3/4 full: 10.7-21.3 bytes, 16.8 at
 * 1,000,000 keys (2^21 slots, 16 MiB; bench/keyset.py measures it).
 *
 * The price is that two different keys with the same 64-bit hash are one key here:
 * adding the second says it was there, discarding one discards both, and `in` says
 * yes for a key never added. With CPython's SipHash of str (randomized per process),
 * the chance that any two of n keys collide is about n^2/2^65: ~2.7e-8 at 1M keys,
 * ~2.7e-6 at 10M. Hashes are those of PyObject_Hash, so a process and its pure-Python
 * counterpart (producer/keyset.py, a set of hash(key)) hold the same fingerprints.
 *
 * The table: open addressing, linear probing from slot hash & mask (SipHash's low
 * bits are as good as any), a power of two of slots, at least KEYSET_MIN_SLOTS;
 * x2 when an add would pass 3/4 load; back to the minimum on clear(). Deleting
 * shifts the rest of the probe run back (no tombstones), so a set that sees many
 * adds and discards of ever-new keys never fills with dead slots.
 *
 * C API for the code in this file (GIL held; set is a KeySetType instance, checked
 * by the caller with PyObject_TypeCheck):
 *   keyset_contains(set, key) -> 1 (in the set), 0 (not), -1 (TypeError)
 *   keyset_add(set, key)      -> 1 (added), 0 (there already), -1 (TypeError, MemoryError)
 *   keyset_discard(set, key)  -> 1 (removed), 0 (not there), -1 (TypeError)
 * TypeError: key is not an exact str. None of them runs Python code (an exact str's
 * hash is CPython's own, cached in the str after the first time), so a caller may
 * keep borrowed references across them. */

/* The empty slot: -1, the one value that is no hash (PyObject_Hash gives -1 only
 * with an exception set; a hash that would be -1 is made -2), so no fingerprint has
 * to be moved off it, and none merges with another for it. Not 0: hash("") is 0.
 * All bits set: memset 0xFF empties a table. */
#define KEYSET_EMPTY ((int64_t)-1)
#define KEYSET_MIN_SLOTS 8

typedef struct {
    PyObject_HEAD
    int64_t *slots;  /* a fingerprint or KEYSET_EMPTY each; never NULL */
    Py_ssize_t mask; /* number of slots - 1 */
    Py_ssize_t used;
} KeySetObject;

static PyTypeObject KeySetType;

/* key's fingerprint into *fingerprint: 0, or -1 with TypeError. */
static inline int
keyset_fingerprint(PyObject *key, int64_t *fingerprint)
{
    Py_hash_t hash;
    if (!PyUnicode_CheckExact(key)) {
        /* a str subclass may hash (and compare) otherwise: refused, not guessed at */
        PyErr_Format(PyExc_TypeError, "KeySet keys must be str, not %.100s",
                     Py_TYPE(key)->tp_name);
        return -1;
    }
    hash = PyObject_Hash(key);
    if (hash == -1) {
        return -1;
    }
    *fingerprint = (int64_t)hash; /* never KEYSET_EMPTY, see there */
    return 0;
}

/* The slot holding fingerprint, or the empty slot ending its probe run (there is
 * always one: the load stays at most 3/4). */
static inline Py_ssize_t
keyset_slot(const KeySetObject *set, int64_t fingerprint)
{
    Py_ssize_t i = (Py_ssize_t)((uint64_t)fingerprint & (uint64_t)set->mask);
    while (set->slots[i] != fingerprint && set->slots[i] != KEYSET_EMPTY) {
        i = (i + 1) & set->mask;
    }
    return i;
}

/* A new table of slots (a power of two, room for set->used) replacing set's; 0 or
 * -1 with MemoryError (set unchanged). */
static int
keyset_resize(KeySetObject *set, Py_ssize_t slots)
{
    int64_t *old = set->slots, *table;
    Py_ssize_t old_slots = set->mask + 1, i;
    if ((size_t)slots > (size_t)PY_SSIZE_T_MAX / sizeof(int64_t)) {
        PyErr_NoMemory();
        return -1;
    }
    table = PyMem_Malloc((size_t)slots * sizeof(int64_t));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(table, 0xFF, (size_t)slots * sizeof(int64_t)); /* every slot -1: KEYSET_EMPTY */
    set->slots = table;
    set->mask = slots - 1;
    if (old != NULL) {
        for (i = 0; i < old_slots; i++) {
            if (old[i] != KEYSET_EMPTY) {
                table[keyset_slot(set, old[i])] = old[i];
            }
        }
        PyMem_Free(old);
    }
    return 0;
}

/* Room for count fingerprints at a load of at most 3/4: 0, or -1 with MemoryError. */
static int
keyset_reserve(KeySetObject *set, Py_ssize_t count)
{
    Py_ssize_t slots = set->mask + 1;
    if (count <= slots / 4 * 3) {
        return 0;
    }
    while (count > slots / 4 * 3) {
        if (slots > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        slots *= 2;
    }
    return keyset_resize(set, slots);
}

static int
keyset_contains(KeySetObject *set, PyObject *key)
{
    int64_t fingerprint;
    if (keyset_fingerprint(key, &fingerprint) < 0) {
        return -1;
    }
    return set->slots[keyset_slot(set, fingerprint)] == fingerprint;
}

static int
keyset_add(KeySetObject *set, PyObject *key)
{
    int64_t fingerprint;
    Py_ssize_t i;
    if (keyset_fingerprint(key, &fingerprint) < 0) {
        return -1;
    }
    i = keyset_slot(set, fingerprint);
    if (set->slots[i] == fingerprint) {
        return 0;
    }
    /* grows only for a key that is new, so re-adding never costs memory */
    if (set->used + 1 > (set->mask + 1) / 4 * 3) {
        if (keyset_reserve(set, set->used + 1) < 0) {
            return -1;
        }
        i = keyset_slot(set, fingerprint);
    }
    set->slots[i] = fingerprint;
    set->used++;
    return 1;
}

static int
keyset_discard(KeySetObject *set, PyObject *key)
{
    int64_t fingerprint, *slots = set->slots;
    Py_ssize_t hole, next, mask = set->mask;
    if (keyset_fingerprint(key, &fingerprint) < 0) {
        return -1;
    }
    hole = keyset_slot(set, fingerprint);
    if (slots[hole] != fingerprint) {
        return 0;
    }
    /* Backward shift: each later fingerprint of the run whose probe from its home
     * slot passes the hole moves into it, and its slot becomes the hole; one whose
     * home lies after the hole (cyclically, up to its own slot) stays. */
    for (next = (hole + 1) & mask; slots[next] != KEYSET_EMPTY; next = (next + 1) & mask) {
        Py_ssize_t home = (Py_ssize_t)((uint64_t)slots[next] & (uint64_t)mask);
        if (((next - home) & mask) >= ((next - hole) & mask)) {
            slots[hole] = slots[next];
            hole = next;
        }
    }
    slots[hole] = KEYSET_EMPTY;
    set->used--;
    return 1;
}

/* Empties set, handing back all but KEYSET_MIN_SLOTS slots (without the memory for
 * a small new table, it keeps its own). Never fails. */
static void
keyset_clear_table(KeySetObject *set)
{
    int64_t *table = NULL;
    if (set->mask + 1 > KEYSET_MIN_SLOTS) {
        table = PyMem_Malloc(KEYSET_MIN_SLOTS * sizeof(int64_t));
    }
    if (table != NULL) {
        PyMem_Free(set->slots);
        set->slots = table;
        set->mask = KEYSET_MIN_SLOTS - 1;
    }
    memset(set->slots, 0xFF, (size_t)(set->mask + 1) * sizeof(int64_t));
    set->used = 0;
}

static PyObject *
keyset_add_method(PyObject *self, PyObject *key)
{
    int added = keyset_add((KeySetObject *)self, key);
    return added < 0 ? NULL : PyBool_FromLong(added);
}

static PyObject *
keyset_discard_method(PyObject *self, PyObject *key)
{
    int removed = keyset_discard((KeySetObject *)self, key);
    return removed < 0 ? NULL : PyBool_FromLong(removed);
}

static PyObject *
keyset_clear_method(PyObject *self, PyObject *unused)
{
    keyset_clear_table((KeySetObject *)self);
    Py_RETURN_NONE;
}

/* Adds every key of keys; at a key that is not a str, TypeError, the keys before it
 * staying added (as set.update leaves them). */
static PyObject *
keyset_update_method(PyObject *self, PyObject *keys)
{
    KeySetObject *set = (KeySetObject *)self;
    PyObject *key, *value, *iterator;
    Py_ssize_t position = 0, i;
    int failed = 0;
    if (PyDict_CheckExact(keys)) {
        /* A dict's keys are distinct, so the set ends with at least as many: growing
         * to that at once never takes more memory than adding one by one. */
        if (keyset_reserve(set, PyDict_GET_SIZE(keys)) < 0) {
            return NULL;
        }
        while (PyDict_Next(keys, &position, &key, &value)) {
            if (keyset_add(set, key) < 0) {
                return NULL;
            }
        }
        Py_RETURN_NONE;
    }
    if (PyList_CheckExact(keys) || PyTuple_CheckExact(keys)) {
        /* keyset_add runs no Python code: the list cannot change under the loop */
        for (i = 0; i < PySequence_Fast_GET_SIZE(keys); i++) {
            if (keyset_add(set, PySequence_Fast_GET_ITEM(keys, i)) < 0) {
                return NULL;
            }
        }
        Py_RETURN_NONE;
    }
    if (PyDictKeys_Check(keys)) {
        Py_ssize_t size = PyObject_Size(keys);
        if (size < 0 || keyset_reserve(set, size) < 0) {
            return NULL;
        }
    }
    iterator = PyObject_GetIter(keys);
    if (iterator == NULL) {
        return NULL;
    }
    while (!failed && (key = PyIter_Next(iterator)) != NULL) {
        failed = keyset_add(set, key) < 0;
        Py_DECREF(key);
    }
    Py_DECREF(iterator);
    if (failed || PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static Py_ssize_t
keyset_nbytes(KeySetObject *set)
{
    return (set->mask + 1) * (Py_ssize_t)sizeof(int64_t);
}

static PyObject *
keyset_sizeof_method(PyObject *self, PyObject *unused)
{
    return PyLong_FromSsize_t((Py_ssize_t)sizeof(KeySetObject) +
                              keyset_nbytes((KeySetObject *)self));
}

static PyObject *
keyset_get_nbytes(PyObject *self, void *closure)
{
    return PyLong_FromSsize_t(keyset_nbytes((KeySetObject *)self));
}

static int
keyset_sq_contains(PyObject *self, PyObject *key)
{
    return keyset_contains((KeySetObject *)self, key);
}

static Py_ssize_t
keyset_length(PyObject *self)
{
    return ((KeySetObject *)self)->used;
}

static PyObject *
keyset_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *names[] = {NULL};
    KeySetObject *set;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":KeySet", names)) {
        return NULL;
    }
    set = (KeySetObject *)type->tp_alloc(type, 0);
    if (set == NULL) {
        return NULL;
    }
    if (keyset_resize(set, KEYSET_MIN_SLOTS) < 0) {
        Py_DECREF(set);
        return NULL;
    }
    return (PyObject *)set;
}

static void
keyset_dealloc(PyObject *self)
{
    PyMem_Free(((KeySetObject *)self)->slots);
    Py_TYPE(self)->tp_free(self);
}

static PyMethodDef keyset_methods[] = {
    {"add", keyset_add_method, METH_O, "add(key) -> True if key was not in the set"},
    {"discard", keyset_discard_method, METH_O, "discard(key) -> True if key was in the set"},
    {"clear", keyset_clear_method, METH_NOARGS, "clear(): no keys; the table back to its least"},
    {"update", keyset_update_method, METH_O, "update(keys): add every key of an iterable"},
    {"__sizeof__", keyset_sizeof_method, METH_NOARGS, "the object and its table, in bytes"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef keyset_getset[] = {
    {"nbytes", keyset_get_nbytes, NULL, "bytes of the table currently allocated", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods keyset_as_sequence = {
    .sq_length = keyset_length,
    .sq_contains = keyset_sq_contains,
};

static PyTypeObject KeySetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "searchsync.producer._speedups.KeySet",
    .tp_basicsize = sizeof(KeySetObject),
    .tp_flags = Py_TPFLAGS_DEFAULT, /* holds no objects: no GC; final: no subclasses */
    .tp_doc = "KeySet()\n\n"
              "A set of str keys holding only each key's 64-bit hash (11-22 bytes a key).\n"
              "Two keys with the same hash are one key to it (~n^2/2^65 odds for n keys).\n"
              "Keys must be exact str (TypeError otherwise).",
    .tp_new = keyset_new,
    .tp_dealloc = keyset_dealloc,
    .tp_methods = keyset_methods,
    .tp_getset = keyset_getset,
    .tp_as_sequence = &keyset_as_sequence,
};

/* ======================================================================== */
/* hold_snapshot_rows                                                       */

static PyObject *one; /* the int 1 */

/* Python's `a != b`, as a C truth value (-1 on error). */
static int
not_equal(PyObject *a, PyObject *b)
{
    PyObject *result;
    int truth;
    if (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b)) {
        int equal = PyUnicode_Compare(a, b);
        if (equal == -1 && PyErr_Occurred()) {
            return -1;
        }
        return equal != 0;
    }
    result = PyObject_RichCompare(a, b, Py_NE);
    if (result == NULL) {
        return -1;
    }
    truth = PyObject_IsTrue(result);
    Py_DECREF(result);
    return truth;
}

/* OpenSearch ids are at most this many UTF-8 bytes (consumer.bulk.MAX_ID_BYTES). */
#define MAX_ID_BYTES 512

/* Whether key is a str the stream codec and OpenSearch can carry: not empty, at most
 * MAX_ID_BYTES of UTF-8, encodable (no lone surrogates). Anything else leaves the fast
 * path, and producer.rows.parse_rows dead-letters it on its own. */
static int
carriable_key(PyObject *key)
{
    Py_ssize_t size;
    if (!PyUnicode_CheckExact(key) || PyUnicode_GET_LENGTH(key) == 0) {
        return 0;
    }
    if (PyUnicode_IS_ASCII(key)) {
        return PyUnicode_GET_LENGTH(key) <= MAX_ID_BYTES;
    }
    if (PyUnicode_AsUTF8AndSize(key, &size) == NULL) {
        PyErr_Clear();
        return 0;
    }
    return size <= MAX_ID_BYTES;
}

/* Holds rows[start:] in snap (key -> row[first_value:]) and seen while each is a
 * first +1 row of a key at the snapshot's timestamp, that is while
 *   row[0] == raw and row[1] is False and row[2] == 1
 *   and type(row[key_index]) is str and carriable and row[key_index] not in seen;
 * returns the index of the first row that is not, or the index after the row that
 * made len(snap) reach room (the caller hands the snapshot out), or -(i + 1) for a
 * row i that is not a tuple long enough (the Python loop takes over there). seen is a
 * set or a KeySet (compact: producer.keyset); a key carriable_key refuses stops the
 * loop like a key seen before. */
static PyObject *
hold_snapshot_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *rows, *raw, *snap, *seen;
    Py_ssize_t start, key_index, first_value, room, position, width;
    int compact;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "hold_snapshot_rows takes 8 arguments");
        return NULL;
    }
    rows = args[0];
    raw = args[2];
    snap = args[5];
    seen = args[6];
    if (!PyList_CheckExact(rows) || !PyDict_CheckExact(snap) ||
        !(PySet_CheckExact(seen) || PyObject_TypeCheck(seen, &KeySetType))) {
        PyErr_SetString(PyExc_TypeError, "rows, snap, seen must be a list, a dict, a set or KeySet");
        return NULL;
    }
    compact = PyObject_TypeCheck(seen, &KeySetType);
    start = PyLong_AsSsize_t(args[1]);
    key_index = PyLong_AsSsize_t(args[3]);
    first_value = PyLong_AsSsize_t(args[4]);
    room = PyLong_AsSsize_t(args[7]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (start < 0 || key_index < 0 || first_value < 0) {
        PyErr_SetString(PyExc_ValueError, "start, key_index, first_value must be >= 0");
        return NULL;
    }
    width = key_index >= first_value ? key_index + 1 : first_value;
    if (width < 3) {
        width = 3;
    }
    for (position = start; position < PyList_GET_SIZE(rows); position++) {
        PyObject *row = PyList_GET_ITEM(rows, position), *key, *values;
        int differs, found, failed;
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) < width) {
            return PyLong_FromSsize_t(-position - 1);
        }
        Py_INCREF(row); /* comparisons may run Python code */
        differs = not_equal(PyTuple_GET_ITEM(row, 0), raw);
        if (differs == 0 && PyTuple_GET_ITEM(row, 1) != Py_False) {
            differs = 1;
        }
        if (differs == 0) {
            differs = not_equal(PyTuple_GET_ITEM(row, 2), one);
        }
        key = PyTuple_GET_ITEM(row, key_index);
        if (differs == 0 && !carriable_key(key)) {
            differs = 1; /* the general path rejects it (producer.rows) */
        }
        if (differs == 0) {
            found = compact ? keyset_contains((KeySetObject *)seen, key) : PySet_Contains(seen, key);
            differs = found; /* 1: seen (held, or handed out) already; -1: error */
        }
        if (differs != 0) {
            Py_DECREF(row);
            return differs < 0 ? NULL : PyLong_FromSsize_t(position);
        }
        values = PyTuple_GetSlice(row, first_value, PyTuple_GET_SIZE(row));
        failed = values == NULL ||
                 (compact ? keyset_add((KeySetObject *)seen, key) : PySet_Add(seen, key)) < 0 ||
                 PyDict_SetItem(snap, key, values) < 0;
        Py_XDECREF(values);
        Py_DECREF(row);
        if (failed) {
            return NULL;
        }
        if (PyDict_GET_SIZE(snap) >= room) {
            return PyLong_FromSsize_t(position + 1);
        }
    }
    return PyLong_FromSsize_t(position);
}

/* ======================================================================== */
/* Raw results: a snapshot's rows read straight from libpq's PGresult       */
/*
 * Why: psycopg's fetchall builds a tuple and a str (or int, bool) per value, ~1 us
 * a row of the FreshMart view, and the snapshot fast path only slices that tuple,
 * holds it until the document is written, and frees it all again (~0.6 us more;
 * py-spy of bench/producer.py, see producer/results.py). Here such a row is held as
 * a RawRow, the result and a row number, and pack_upserts writes its document from
 * libpq's text; values are loaded (through psycopg, RawResult's load) only for a row
 * that leaves the fast path.
 *
 * libpq is not linked: producer.native passes the addresses of PQgetvalue,
 * PQgetlength, PQgetisnull, PQntuples and PQnfields of the libpq psycopg loaded (set_libpq);
 * until then RawResult refuses to be made.
 *
 *   set_libpq(getvalue, getlength, getisnull, ntuples, nfields)
 *   RawResult(owner, address, first, kinds, load)
 *       the result at address (owner keeps it alive: psycopg's PGresult); the view's
 *       columns are its columns from first on, kinds has one raw kind each (RAW_*);
 *       load(row) -> tuple of that row's view values (psycopg's loaders)
 *   hold_snapshot_result(result, start, raw, key_index, snap, seen, room)
 *       hold_snapshot_rows over the rows of result: snap[key] = RawRow
 *   RawRow: a sequence of the row's view values (loaded once, when first asked for),
 *       equal to and hashing like that tuple; DocumentWriter and pack_upserts write
 *       its document from the text.
 */

/* How a view column's text becomes JSON (producer.documents.raw_kind_of_type). */
enum {
    RAW_STRING = 's',  /* text, varchar, ...: a JSON string */
    RAW_INTEGER = 'i', /* int2, int4, int8: the digits */
    RAW_BOOL = 'b',    /* t / f: true / false */
    RAW_NUMBER = 'n',  /* numeric: the text, null for NaN and infinities */
    RAW_TIMESTAMP = 't',
    RAW_JSON = 'j',
};

typedef char *(*pq_getvalue_fn)(const void *, int, int);
typedef int (*pq_getlength_fn)(const void *, int, int);
typedef int (*pq_getisnull_fn)(const void *, int, int);
typedef int (*pq_ntuples_fn)(const void *);
typedef int (*pq_nfields_fn)(const void *);

static pq_getvalue_fn pq_getvalue;
static pq_getlength_fn pq_getlength;
static pq_getisnull_fn pq_getisnull;
static pq_ntuples_fn pq_ntuples;
static pq_nfields_fn pq_nfields;

static PyObject *
set_libpq(PyObject *module, PyObject *args)
{
    PyObject *getvalue, *getlength, *getisnull, *ntuples, *nfields;
    void *addresses[5];
    int i;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!:set_libpq", &PyLong_Type, &getvalue, &PyLong_Type,
                          &getlength, &PyLong_Type, &getisnull, &PyLong_Type, &ntuples,
                          &PyLong_Type, &nfields)) {
        return NULL;
    }
    addresses[0] = PyLong_AsVoidPtr(getvalue);
    addresses[1] = PyLong_AsVoidPtr(getlength);
    addresses[2] = PyLong_AsVoidPtr(getisnull);
    addresses[3] = PyLong_AsVoidPtr(ntuples);
    addresses[4] = PyLong_AsVoidPtr(nfields);
    if (PyErr_Occurred()) {
        return NULL;
    }
    for (i = 0; i < 5; i++) {
        if (addresses[i] == NULL) {
            PyErr_SetString(PyExc_ValueError, "set_libpq: a NULL address");
            return NULL;
        }
    }
    pq_getvalue = (pq_getvalue_fn)addresses[0];
    pq_getlength = (pq_getlength_fn)addresses[1];
    pq_getisnull = (pq_getisnull_fn)addresses[2];
    pq_ntuples = (pq_ntuples_fn)addresses[3];
    pq_nfields = (pq_nfields_fn)addresses[4];
    Py_RETURN_NONE;
}

typedef struct {
    PyObject_HEAD
    PyObject *owner; /* keeps res alive */
    const void *res;
    int ntuples;
    int first;          /* the result's column of the first view column */
    Py_ssize_t columns; /* view columns */
    PyObject *kinds;    /* bytes, one RAW_* a view column */
    PyObject *load;     /* load(row) -> tuple of the view values */
} RawResult;

typedef struct {
    PyObject_HEAD
    RawResult *result;
    int row;
    PyObject *values; /* the loaded tuple, once asked for */
} RawRow;

static PyTypeObject RawResultType;

static int
raw_result_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    RawResult *result = (RawResult *)self;
    PyObject *owner, *address, *kinds, *load;
    int first;
    Py_ssize_t i;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "RawResult takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OO!iO!O:RawResult", &owner, &PyLong_Type, &address, &first,
                          &PyBytes_Type, &kinds, &load)) {
        return -1;
    }
    if (pq_getvalue == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RawResult: set_libpq was not called");
        return -1;
    }
    if (result->owner != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RawResult: already initialized");
        return -1;
    }
    result->res = PyLong_AsVoidPtr(address);
    if (result->res == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "RawResult: a NULL result");
        }
        return -1;
    }
    if (first < 0 || !PyCallable_Check(load)) {
        PyErr_SetString(PyExc_ValueError, "RawResult: first must be >= 0, load callable");
        return -1;
    }
    for (i = 0; i < PyBytes_GET_SIZE(kinds); i++) {
        if (!strchr("sibntj", PyBytes_AS_STRING(kinds)[i]) || PyBytes_AS_STRING(kinds)[i] == 0) {
            PyErr_Format(PyExc_ValueError, "RawResult: unknown kind %R", kinds);
            return -1;
        }
    }
    if ((Py_ssize_t)first + PyBytes_GET_SIZE(kinds) != pq_nfields(result->res)) {
        PyErr_Format(PyExc_ValueError, "RawResult: %d + %zd columns, the result has %d", first,
                     PyBytes_GET_SIZE(kinds), pq_nfields(result->res));
        return -1;
    }
    result->ntuples = pq_ntuples(result->res);
    result->first = first;
    result->columns = PyBytes_GET_SIZE(kinds);
    Py_INCREF(owner);
    result->owner = owner;
    Py_INCREF(kinds);
    result->kinds = kinds;
    Py_INCREF(load);
    result->load = load;
    return 0;
}

static int
raw_result_traverse(PyObject *self, visitproc visit, void *arg)
{
    RawResult *result = (RawResult *)self;
    Py_VISIT(result->owner);
    Py_VISIT(result->load);
    return 0;
}

static int
raw_result_clear(PyObject *self)
{
    RawResult *result = (RawResult *)self;
    /* res stays: rows of this result are only read while it is alive (owner) */
    Py_CLEAR(result->load);
    return 0;
}

static void
raw_result_dealloc(PyObject *self)
{
    RawResult *result = (RawResult *)self;
    PyObject_GC_UnTrack(self);
    Py_CLEAR(result->load);
    Py_CLEAR(result->kinds);
    Py_CLEAR(result->owner);
    Py_TYPE(self)->tp_free(self);
}

static Py_ssize_t
raw_result_length(PyObject *self)
{
    return ((RawResult *)self)->ntuples;
}

static PySequenceMethods raw_result_as_sequence = {
    .sq_length = raw_result_length,
};

static PyTypeObject RawResultType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "searchsync.producer._speedups.RawResult",
    .tp_basicsize = sizeof(RawResult),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "RawResult(owner, address, first, kinds, load)\n\n"
              "A libpq result whose rows hold_snapshot_result holds as RawRows.",
    .tp_new = PyType_GenericNew,
    .tp_init = raw_result_init,
    .tp_traverse = raw_result_traverse,
    .tp_clear = raw_result_clear,
    .tp_dealloc = raw_result_dealloc,
    .tp_as_sequence = &raw_result_as_sequence,
};

/* The row's loaded values (borrowed), loading them on first use; NULL on error. */
static PyObject *
raw_row_values(RawRow *row)
{
    PyObject *values;
    if (row->values != NULL) {
        return row->values;
    }
    if (row->result->load == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RawRow: its result was cleared");
        return NULL;
    }
    values = PyObject_CallFunction(row->result->load, "i", row->row);
    if (values == NULL) {
        return NULL;
    }
    if (!PyTuple_CheckExact(values) || PyTuple_GET_SIZE(values) != row->result->columns) {
        PyErr_Format(PyExc_TypeError, "RawRow: load returned %R, not a tuple of %zd values",
                     values, row->result->columns);
        Py_DECREF(values);
        return NULL;
    }
    row->values = values;
    return values;
}

static Py_ssize_t
raw_row_length(PyObject *self)
{
    return ((RawRow *)self)->result->columns;
}

static PyObject *
raw_row_item(PyObject *self, Py_ssize_t i)
{
    PyObject *values;
    if (i < 0 || i >= ((RawRow *)self)->result->columns) {
        PyErr_SetString(PyExc_IndexError, "RawRow index out of range");
        return NULL;
    }
    values = raw_row_values((RawRow *)self);
    if (values == NULL) {
        return NULL;
    }
    return Py_NewRef(PyTuple_GET_ITEM(values, i));
}

static PyObject *
raw_row_richcompare(PyObject *self, PyObject *other, int op)
{
    PyObject *mine = raw_row_values((RawRow *)self), *theirs = other;
    if (mine == NULL) {
        return NULL;
    }
    if (Py_IS_TYPE(other, &RawRowType)) {
        theirs = raw_row_values((RawRow *)other);
        if (theirs == NULL) {
            return NULL;
        }
    }
    return PyObject_RichCompare(mine, theirs, op);
}

static Py_hash_t
raw_row_hash(PyObject *self)
{
    PyObject *values = raw_row_values((RawRow *)self);
    return values == NULL ? -1 : PyObject_Hash(values);
}

static PyObject *
raw_row_repr(PyObject *self)
{
    PyObject *values = raw_row_values((RawRow *)self);
    return values == NULL ? NULL : PyUnicode_FromFormat("RawRow(%R)", values);
}

static void
raw_row_dealloc(PyObject *self)
{
    RawRow *row = (RawRow *)self;
    Py_CLEAR(row->values);
    Py_CLEAR(row->result);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *
raw_row_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyErr_SetString(PyExc_TypeError, "RawRows are made by hold_snapshot_result");
    return NULL;
}

static PySequenceMethods raw_row_as_sequence = {
    .sq_length = raw_row_length,
    .sq_item = raw_row_item,
};

static PyTypeObject RawRowType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "searchsync.producer._speedups.RawRow",
    .tp_basicsize = sizeof(RawRow),
    /* no GC: it holds its result (which holds no RawRow) and loaded values */
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A row of a RawResult: a sequence of its view values, loaded when first "
              "asked for.",
    .tp_new = raw_row_new,
    .tp_dealloc = raw_row_dealloc,
    .tp_repr = raw_row_repr,
    .tp_hash = raw_row_hash,
    .tp_richcompare = raw_row_richcompare,
    .tp_as_sequence = &raw_row_as_sequence,
};

/* A timestamp(tz) text as put_timestamp writes it (ASCII only: put_timestamp reads
 * c[-3] by character, which is the byte only there). */
static int
put_raw_timestamp(Buffer *buf, const char *text, Py_ssize_t n)
{
    const char *space;
    Py_ssize_t i;
    if (n < 1) {
        return FALLBACK;
    }
    if (text[0] == 'i' || text[0] == '-') {
        return put_null(buf);
    }
    if (n < 3) {
        return FALLBACK;
    }
    for (i = 0; i < n; i++) {
        if ((unsigned char)text[i] >= 0x80) {
            return FALLBACK;
        }
    }
    if (buffer_reserve(buf, n + 6) < 0) {
        return -1;
    }
    PUT_LITERAL(buf, "\"");
    space = memchr(text, ' ', (size_t)n);
    if (space != NULL) {
        if (put_escaped(buf, text, space - text) < 0 || buffer_reserve(buf, 1) < 0) {
            return -1;
        }
        PUT_LITERAL(buf, "T");
    }
    else {
        space = text - 1;
    }
    if (put_escaped(buf, space + 1, n - (space + 1 - text)) < 0 || buffer_reserve(buf, 4) < 0) {
        return -1;
    }
    if (text[n - 3] == '+' || text[n - 3] == '-') {
        PUT_LITERAL(buf, ":00");
    }
    PUT_LITERAL(buf, "\"");
    return WRITTEN;
}

/* One value's text (libpq's, n bytes) of a column of raw kind: WRITTEN, FALLBACK or -1,
 * what put_value writes for the value psycopg loads from it. */
static int
put_raw_value(Buffer *buf, char kind, const char *text, Py_ssize_t n)
{
    switch (kind) {
    case RAW_BOOL:
        if (n == 1 && (text[0] == 't' || text[0] == 'f')) {
            if (buffer_reserve(buf, 5) < 0) {
                return -1;
            }
            if (text[0] == 't') {
                PUT_LITERAL(buf, "true");
            }
            else {
                PUT_LITERAL(buf, "false");
            }
            return WRITTEN;
        }
        return FALLBACK;
    case RAW_NUMBER:
        if (is_not_json_number(text, n)) {
            return put_null(buf);
        }
        /* fall through */
    case RAW_INTEGER:
    case RAW_JSON:
        if (n == 0) {
            return FALLBACK; /* no JSON value (not text libpq gives for these types) */
        }
        if (buffer_reserve(buf, n) < 0) {
            return -1;
        }
        buffer_put(buf, text, n);
        return WRITTEN;
    case RAW_TIMESTAMP:
        return put_raw_timestamp(buf, text, n);
    default: /* RAW_STRING */
        if (buffer_reserve(buf, 1) < 0) {
            return -1;
        }
        PUT_LITERAL(buf, "\"");
        if (put_escaped(buf, text, n) < 0 || buffer_reserve(buf, 1) < 0) {
            return -1;
        }
        PUT_LITERAL(buf, "\"");
        return WRITTEN;
    }
}

/* The view values of a RawRow as write_document writes a tuple's, without the
 * version: WRITTEN, FALLBACK or -1. */
static int
write_raw_values(DocumentWriter *writer, Buffer *buf, PyObject *values)
{
    RawRow *row = (RawRow *)values;
    RawResult *result = row->result;
    const char *kinds = PyBytes_AS_STRING(result->kinds);
    Py_ssize_t i, n;
    int done, column;
    if (result->columns != writer->columns || result->load == NULL) {
        return FALLBACK;
    }
    for (i = 0; i < writer->columns; i++) {
        PyObject *prefix = PyTuple_GET_ITEM(writer->prefixes, i);
        n = PyBytes_GET_SIZE(prefix);
        if (buffer_reserve(buf, n) < 0) {
            return -1;
        }
        buffer_put(buf, PyBytes_AS_STRING(prefix), n);
        column = result->first + (int)i;
        if (pq_getisnull(result->res, row->row, column)) {
            done = put_null(buf);
        }
        else {
            done = put_raw_value(buf, kinds[i], pq_getvalue(result->res, row->row, column),
                                 pq_getlength(result->res, row->row, column));
        }
        if (done != WRITTEN) {
            return done;
        }
    }
    return WRITTEN;
}

/* Whether column of row holds exactly text (n bytes, not NULL). */
static inline int
raw_equals(const RawResult *result, int row, int column, const char *text, Py_ssize_t n)
{
    return !pq_getisnull(result->res, row, column) &&
           pq_getlength(result->res, row, column) == n &&
           memcmp(pq_getvalue(result->res, row, column), text, (size_t)n) == 0;
}

/* hold_snapshot_rows over the rows of a RawResult: holds rows start.. in snap (key ->
 * RawRow) and seen while each is a first +1 row of a key at the snapshot's
 * timestamp, that is while its texts are
 *   mz_timestamp == raw (bytes), mz_progressed == "f", mz_diff == "1",
 *   the key (column key_index) not NULL, valid UTF-8, carriable and not in seen;
 * returns the index of the first row that is not, or the index after the row that
 * made len(snap) reach room. */
static PyObject *
hold_snapshot_result(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    RawResult *result;
    PyObject *raw, *snap, *seen;
    Py_ssize_t start, key_index, room, raw_len;
    const char *raw_text;
    int position, compact;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "hold_snapshot_result takes 7 arguments");
        return NULL;
    }
    if (!Py_IS_TYPE(args[0], &RawResultType) || !PyBytes_CheckExact(args[2]) ||
        !PyDict_CheckExact(args[4]) ||
        !(PySet_CheckExact(args[5]) || PyObject_TypeCheck(args[5], &KeySetType))) {
        PyErr_SetString(PyExc_TypeError,
                        "hold_snapshot_result takes a RawResult, bytes, a dict, a set or KeySet");
        return NULL;
    }
    result = (RawResult *)args[0];
    raw = args[2];
    snap = args[4];
    seen = args[5];
    compact = PyObject_TypeCheck(seen, &KeySetType);
    start = PyLong_AsSsize_t(args[1]);
    key_index = PyLong_AsSsize_t(args[3]);
    room = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (start < 0 || start > result->ntuples || key_index < 3 ||
        key_index >= result->first + result->columns || result->first < 3 ||
        result->load == NULL) {
        PyErr_SetString(PyExc_ValueError, "hold_snapshot_result: start or key_index out of range");
        return NULL;
    }
    raw_text = PyBytes_AS_STRING(raw);
    raw_len = PyBytes_GET_SIZE(raw);
    for (position = (int)start; position < result->ntuples; position++) {
        const char *key_text;
        PyObject *key;
        RawRow *row;
        int found, failed;
        if (!raw_equals(result, position, 0, raw_text, raw_len) ||
            !raw_equals(result, position, 1, "f", 1) || !raw_equals(result, position, 2, "1", 1) ||
            pq_getisnull(result->res, position, (int)key_index)) {
            break;
        }
        key_text = pq_getvalue(result->res, position, (int)key_index);
        key = PyUnicode_DecodeUTF8(key_text, pq_getlength(result->res, position, (int)key_index),
                                   NULL);
        if (key == NULL) {
            PyErr_Clear(); /* psycopg's loader raises for it on the general path */
            break;
        }
        if (!carriable_key(key)) {
            Py_DECREF(key);
            break;
        }
        found = compact ? keyset_contains((KeySetObject *)seen, key) : PySet_Contains(seen, key);
        if (found != 0) {
            Py_DECREF(key);
            if (found < 0) {
                return NULL;
            }
            break;
        }
        row = PyObject_New(RawRow, &RawRowType);
        if (row == NULL) {
            Py_DECREF(key);
            return NULL;
        }
        Py_INCREF(result);
        row->result = result;
        row->row = position;
        row->values = NULL;
        failed = (compact ? keyset_add((KeySetObject *)seen, key) : PySet_Add(seen, key)) < 0 ||
                 PyDict_SetItem(snap, key, (PyObject *)row) < 0;
        Py_DECREF(row);
        Py_DECREF(key);
        if (failed) {
            return NULL;
        }
        if (PyDict_GET_SIZE(snap) >= room) {
            return PyLong_FromLong(position + 1);
        }
    }
    return PyLong_FromLong(position);
}

/* ======================================================================== */
/* The module                                                               */

static PyMethodDef methods[] = {
    {"pack_upserts", pack_upserts, METH_VARARGS,
     "pack_upserts(writer, rows, version, partitions, cap, max_entry_bytes=0, "
     "max_doc_bytes=0, oversize=None) -> [(partition, count, body)] or None"},
    {"hold_snapshot_rows", (PyCFunction)(void (*)(void))hold_snapshot_rows, METH_FASTCALL,
     "hold_snapshot_rows(rows, start, raw, key_index, first_value, snap, seen, room) -> int "
     "(seen: a set or a KeySet)"},
    {"hold_snapshot_result", (PyCFunction)(void (*)(void))hold_snapshot_result, METH_FASTCALL,
     "hold_snapshot_result(result, start, raw, key_index, snap, seen, room) -> int "
     "(hold_snapshot_rows over a RawResult's rows)"},
    {"set_libpq", set_libpq, METH_VARARGS,
     "set_libpq(getvalue, getlength, getisnull, ntuples, nfields): libpq's functions, by "
     "address"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "searchsync.producer._speedups",
    .m_doc = "The producer's per-row hot path in C (see producer/_speedups.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module;
    init_escapes();
    init_crc_table();
    if (one == NULL) {
        one = PyLong_FromLong(1);
        if (one == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&DocumentWriterType) < 0) {
        return NULL;
    }
    module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&DocumentWriterType);
    if (PyModule_AddObject(module, "DocumentWriter", (PyObject *)&DocumentWriterType) < 0) {
        Py_DECREF(&DocumentWriterType);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddType(module, &KeySetType) < 0 ||
        PyModule_AddType(module, &RawResultType) < 0 ||
        PyModule_AddType(module, &RawRowType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
