/* otelcost.costing._speedups: the ending hook's planned path in C (optional), and the
 * server path rule (ServerRule, below).
 *
 * Planner(span) does exactly what CostSpanProcessor._price_planned does, reading the same
 * state each call (coster.live, pricing.held, coster._shapes, tally.local ...): True having
 * priced the span (cost.* written into the span's attribute dict, the cost added to this
 * thread's totals, the record tuple queued when a record exporter asks), False having done
 * nothing. Where a value is not of the type the fast path expects (an int time beyond 64
 * bits, a dict subclass, ...) it calls the Python method instead, before touching anything,
 * so the two never differ. EndingHook(span) is CostSpanProcessor._on_ending around it, so
 * the SDK calls C directly. tests/costing/test_planned.py holds both equal to
 * Coster.price, and the pure-Python path stays the reference and the fallback. Forwarder is
 * the processor's on_start and on_end, handing spans to span_processors; QueuePut is
 * BatchPipeline.put.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <math.h>
#ifndef Py_T_OBJECT_EX
#include <structmember.h> /* T_OBJECT_EX, T_PYSSIZET before 3.12 */
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_T_PYSSIZET T_PYSSIZET
#endif

/* The arithmetic must round like Python's floats: every operation in double precision,
 * no fused multiply-add (setup.py passes -ffp-contract=off). x87 extended precision would
 * differ, so such a build fails and the package runs in pure Python. */
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "doubles must be evaluated in double precision"
#endif

/* Attribute names, interned once. */
static PyObject *s_live, *s_held, *s__attributes, *s__dict, *s__shapes, *s_plain, *s_resource,
    *s__resource, *s_kind, *s__kind, *s_reader, *s_keys, *s_memo, *s_by_name, *s__name, *s_binding,
    *s__parent, *s_is_remote, *s_entry_kind, *s__start_time, *s__end_time, *s_flat_nanos,
    *s_cost_duration_ms, *s_cost_amount, *s_local, *s_totals, *s_not_billable,
    *s__queue_records, *s__put_cost, *s_on_start, *s_on_end, *s__shutdown, *s__forward_error,
    *s_cost_source, *s_operation, *s_deploy, *s_currency, *s_region, *s_version,
    *s_trace_id, *s_span_id, *s__context, *s__pricing_in_hook, *s__price_in_place,
    *s__pricing_error, *s__hook_error, *s_get, *s_snapshot, *s_nested, *s_entry_plan,
    *s_nested_plan, *s_path_rule, *s__by_path, *s_next, *s__rules, *s__normalize, *s_service,
    *s_by_path;
static PyObject *int_zero, *int_one;

/* A __slots__ attribute of Named or the naming shape, read at its offset in the object
 * (what its member descriptor does) when the object is of that exact class; any other
 * object, or a class whose attribute is not such a slot, by a normal attribute read. */
typedef struct {
    PyObject *type;
    Py_ssize_t offset; /* -1: read by name */
    PyObject *name;
} Slot;

enum {
    S_PLAIN,
    S_RESOURCE,
    S_KIND,
    S_READER,
    S_KEYS,
    S_MEMO,
    S_BY_NAME,
    S_PATH_RULE,
    S_NEXT,
    S_SERVICE,
    S_BY_PATH,
    SHAPE_SLOTS
};
enum { N_BINDING, N_ENTRY_KIND, N_NOT_BILLABLE, NAMED_SLOTS };

/* Binding's fields, by position (checked against Binding._fields by the caller). */
enum { B_SNAPSHOT, B_NESTED, B_ENTRY_PLAN, B_NESTED_PLAN, B_COUNT };

/* An object whose attributes are read every span: each read where its class keeps it, as a
 * __slots__ member at a fixed offset in the object (the hot attributes of the processor,
 * the coster and the pricing cache are such members), else by name. A member read touches
 * the object and the value; an instance dict lookup touches the dict, its keys, an index
 * line, an entry and the values, all cold in a server between spans. */
#define OWNER_FIELDS 3

typedef struct {
    PyObject *obj;
    int count;
    Slot fields[OWNER_FIELDS];
} Owner;

#define TOTALS_CACHE 8

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *tally;
    Owner of_processor;       /* the processor; reads _queue_records, _put_cost */
    Owner of_coster;          /* live, _shapes, _normalize */
    Owner of_pricing;         /* held */
    PyObject *fallback;       /* CostSpanProcessor._price_planned (the function) */
    PyObject *binding_type;   /* Binding: its fields read by position */
    PyObject *context_type;   /* SpanContext: is_remote read by position */
    PyObject *no_usage;
    PyObject *nanos_per_unit; /* the int NANOS_PER_UNIT */
    long long min_start_ns;
    Py_ssize_t index[B_COUNT];
    PyObject *names[B_COUNT];
    Slot shape_slots[SHAPE_SLOTS];
    Slot named_slots[NAMED_SLOTS];
    /* The last shape lookup: coster._shapes, the key (the attribute names) and the head
     * found. A span whose attribute names are the very same objects, in the same order,
     * finds that head again without building and hashing its key; the shapes dict is held
     * so that a new one is never mistaken for it. */
    PyObject *last_shapes;
    PyObject *last_key;
    PyObject *last_head;
    /* The attributes (span._attributes) of the last span priced here. The SDK hands on_end
     * a ReadableSpan sharing them, right after the hook on the same thread; the on_end
     * Forwarder that finds them here knows the span is priced without looking up
     * cost.source in its attribute dict. Held, so never another span's: a span whose
     * attributes are not these (another thread's came between) is looked up. */
    PyObject *last_priced;
    /* The last threads' totals dicts (tally.local.totals), by thread state id: a thread
     * found here skips two attribute reads of a threading.local, which in a server, cold
     * in the CPU caches, cost more than the rest of the charge. Ids are never reused, so
     * an entry is never another thread's; forget_threads() empties it in a forked child,
     * where the tally starts a new local. */
    uint64_t totals_ids[TOTALS_CACHE];
    PyObject *totals_dicts[TOTALS_CACHE];
    int totals_next;
} Planner;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Planner *planner;
    Owner of_processor; /* the processor; reads _pricing_in_hook */
    PyObject *hooks; /* tuple: the span processors' own _on_ending hooks */
} EndingHook;

static PyTypeObject PlannerType;
static PyTypeObject CellType;
static PyTypeObject EndingHookType;
static PyTypeObject ForwarderType;

/* -- helpers ----------------------------------------------------------------------------- */

/* Python's round(x) for a float: half to even (float.__round__ without ndigits). */
static double
round_half_even(double x)
{
    double rounded = round(x);
    if (fabs(x - rounded) == 0.5) {
        rounded = 2.0 * round(x / 2.0);
    }
    return rounded;
}

/* d.get(key, default): a new reference, NULL on error. */
static PyObject *
mapping_get(PyObject *d, PyObject *key, PyObject *dflt)
{
    if (PyDict_CheckExact(d)) {
        PyObject *found = PyDict_GetItemWithError(d, key);
        if (found == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            found = dflt;
        }
        Py_INCREF(found);
        return found;
    }
    PyObject *get = PyObject_GetAttr(d, s_get);
    if (get == NULL) {
        return NULL;
    }
    PyObject *args[2] = {key, dflt};
    PyObject *found = PyObject_Vectorcall(get, args, 2, NULL);
    Py_DECREF(get);
    return found;
}

static int
mapping_set(PyObject *d, PyObject *key, PyObject *value)
{
    if (PyDict_CheckExact(d)) {
        return PyDict_SetItem(d, key, value);
    }
    return PyObject_SetItem(d, key, value);
}

/* binding.<field>: by position for a Binding itself (what the NamedTuple's property does),
 * by name otherwise. A new reference. */
static PyObject *
binding_field(Planner *self, PyObject *binding, int field)
{
    if ((PyObject *)Py_TYPE(binding) == self->binding_type) {
        PyObject *value = PyTuple_GET_ITEM(binding, self->index[field]);
        Py_INCREF(value);
        return value;
    }
    return PyObject_GetAttr(binding, self->names[field]);
}

static inline PyObject *
slot_get(const Slot *slot, PyObject *obj)
{
    if (slot->offset >= 0 && (PyObject *)Py_TYPE(obj) == slot->type) {
        PyObject *value = *(PyObject **)((char *)obj + slot->offset);
        if (value != NULL) {
            return Py_NewRef(value);
        }
    }
    return PyObject_GetAttr(obj, slot->name);
}

/* Where `name` is a plain object slot of `type`: its offset, else -1. */
static int
slot_init(Slot *slot, PyObject *type, PyObject *name)
{
    slot->type = Py_NewRef(type);
    slot->name = name;
    slot->offset = -1;
    PyObject *descr = PyObject_GetAttr(type, name);
    if (descr == NULL) { /* an instance attribute only: read by name */
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == Py_T_OBJECT_EX) {
            slot->offset = member->offset;
        }
    }
    Py_DECREF(descr);
    return 0;
}

static int
owner_init(Owner *owner, PyObject *obj, PyObject *const *names, int count)
{
    owner->obj = Py_NewRef(obj);
    owner->count = 0;
    for (int i = 0; i < count; i++) {
        if (slot_init(&owner->fields[i], (PyObject *)Py_TYPE(obj), names[i]) < 0) {
            return -1;
        }
        owner->count++;
    }
    return 0;
}

static const Slot *
owner_field(const Owner *owner, PyObject *name)
{
    for (int i = 0; i < owner->count; i++) {
        if (owner->fields[i].name == name) {
            return &owner->fields[i];
        }
    }
    return NULL;
}

/* getattr(owner.obj, name): a new reference, or NULL with an exception. */
static PyObject *
owner_get(const Owner *owner, PyObject *name)
{
    const Slot *field = owner_field(owner, name);
    return field != NULL ? slot_get(field, owner->obj) : PyObject_GetAttr(owner->obj, name);
}

/* The member itself, borrowed and not touched, where the class keeps it at an offset and it
 * is set; else NULL (read it with owner_get). Only for a value used before any Python code
 * can run (an identity or a bool test). */
static PyObject *
owner_peek(const Owner *owner, PyObject *name)
{
    const Slot *field = owner_field(owner, name);
    if (field != NULL && field->offset >= 0 && (PyObject *)Py_TYPE(owner->obj) == field->type) {
        return *(PyObject **)((char *)owner->obj + field->offset);
    }
    return NULL;
}

/* bool(getattr(owner.obj, name)): 1, 0, or -1 with an exception. */
static int
owner_flag(const Owner *owner, PyObject *name)
{
    PyObject *value = owner_peek(owner, name);
    if (value == Py_True) {
        return 1;
    }
    if (value == Py_False) {
        return 0;
    }
    if ((value = owner_get(owner, name)) == NULL) {
        return -1;
    }
    int flag = PyObject_IsTrue(value);
    Py_DECREF(value);
    return flag;
}

static int
owner_traverse(Owner *owner, visitproc visit, void *arg)
{
    Py_VISIT(owner->obj);
    for (int i = 0; i < owner->count; i++) {
        Py_VISIT(owner->fields[i].type);
    }
    return 0;
}

static void
owner_clear(Owner *owner)
{
    Py_CLEAR(owner->obj);
    for (int i = 0; i < owner->count; i++) {
        owner->fields[i].offset = -1;
        Py_CLEAR(owner->fields[i].type);
    }
    owner->count = 0;
}

/* Call fn() with the current exception as the one being handled (as inside an `except`
 * block: the logger's exc_info sees it), then drop it. 0 on success, -1 if fn raised. */
static int
call_handling(PyObject *fn_owner, PyObject *fn_name)
{
    PyObject *result;
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *previous = PyErr_GetHandledException();
    PyErr_SetHandledException(exc);
    result = PyObject_CallMethodNoArgs(fn_owner, fn_name);
    PyErr_SetHandledException(previous);
    Py_XDECREF(previous);
    Py_XDECREF(exc);
#else
    PyObject *type, *value, *tb, *prev_type, *prev_value, *prev_tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyErr_GetExcInfo(&prev_type, &prev_value, &prev_tb);
    PyErr_SetExcInfo(type, value, tb); /* steals */
    result = PyObject_CallMethodNoArgs(fn_owner, fn_name);
    PyErr_SetExcInfo(prev_type, prev_value, prev_tb); /* steals */
#endif
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* -- the server path rule ---------------------------------------------------------------- */

/* ServerRule(attributes, normalize) is operation._server_rule's rule for the spans a raw path
 * names (a server span without a route: its method and path, the ids made stars). A new
 * id per request makes it the one naming step that runs per span; in Python it is seven
 * frames (the rule, PathNormalizer, _normalize, _sanitize, _path_part, a comprehension).
 * Here the common case: the attribute dict itself, the first path or URL present a
 * printable ASCII string without surrounding blanks, a standard method, and a normalizer
 * without user rules (so only normalize.py's own rules apply). Anything else is the Python
 * rule's (`fallback`); tests/costing/test_operation.py holds the two equal on random paths. */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *fallback;        /* the Python rule */
    PyObject *path_keys;       /* tuple of str */
    PyObject *method_key;      /* str or None */
    PyObject *methods;         /* frozenset: the standard methods */
    PyObject *normalizer_type; /* PathNormalizer */
    PyObject *segment;         /* normalize._cached_segment */
    PyObject *plain_normalizer; /* the last normalizer seen without user rules, or NULL */
    Py_ssize_t max_value;      /* MAX_VALUE_CHARS */
    Py_ssize_t max_operation;  /* MAX_OPERATION_CHARS */
    Py_ssize_t max_segment;    /* normalize._MAX_CACHED_SEGMENT */
} ServerRule;

static PyTypeObject ServerRuleType;

/* Longer paths (past the query) are left to Python; the rest fit plain_operation's buffer. */
#define PLAIN_PATH_MAX 2048

static inline int
ascii_letter(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* f"{method} {normalize(path)}" for normalize.py's _normalize without user rules, for a
 * non-empty printable ASCII path and a method of ASCII letters (nothing to sanitize): any
 * scheme://authority, the query and fragment cut, empty segments dropped, all-digit
 * segments "*", segments without a digit, "@" or "%" kept, the others through `segment`
 * (the memoized per-segment rules) as Python does. A new reference; Py_None where Python
 * must decide (an operation longer than max_operation, which Python cuts); NULL on error. */
static PyObject *
plain_operation(ServerRule *self, PyObject *method, PyObject *path)
{
    char out[PLAIN_PATH_MAX * 2];
    Py_ssize_t size = PyUnicode_GET_LENGTH(method);
    const char *data = (const char *)PyUnicode_1BYTE_DATA(path);
    Py_ssize_t n = PyUnicode_GET_LENGTH(path);
    if (size + 2 > (Py_ssize_t)sizeof(out)) {
        Py_RETURN_NONE;
    }
    memcpy(out, PyUnicode_1BYTE_DATA(method), size);
    out[size++] = ' ';
    Py_ssize_t target = size;
    /* A leading scheme://authority (normalize._AUTHORITY: a letter, at most 30 more scheme
       characters, "://", then anything up to "/", "?" or "#") is dropped. */
    if (ascii_letter(data[0])) {
        Py_ssize_t i = 1;
        while (i < n && i <= 31 &&
               (ascii_letter(data[i]) || (data[i] >= '0' && data[i] <= '9') || data[i] == '+' ||
                data[i] == '.' || data[i] == '-')) {
            i++;
        }
        if (i <= 31 && i + 2 < n && data[i] == ':' && data[i + 1] == '/' && data[i + 2] == '/') {
            for (i += 3; i < n && data[i] != '/' && data[i] != '?' && data[i] != '#'; i++) {
            }
            data += i;
            n -= i;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (data[i] == '?' || data[i] == '#') {
            n = i;
            break;
        }
    }
    if (n > PLAIN_PATH_MAX) {
        Py_RETURN_NONE;
    }
    Py_ssize_t start = 0;
    while (start < n) {
        Py_ssize_t end = start;
        int digits = 0, other = 0, special = 0;
        while (end < n && data[end] != '/') {
            char c = data[end];
            if (c >= '0' && c <= '9') {
                digits = 1;
            }
            else {
                other = 1;
                special |= c == '@' || c == '%';
            }
            end++;
        }
        Py_ssize_t length = end - start;
        if (length > 0) {
            if (size + 1 + length > (Py_ssize_t)sizeof(out)) {
                Py_RETURN_NONE;
            }
            out[size++] = '/';
            if (!other) { /* digits only: an id */
                out[size++] = '*';
            }
            else if (!digits && !special) { /* nothing volatile can be in it */
                memcpy(out + size, data + start, length);
                size += length;
            }
            else if (length > self->max_segment) {
                Py_RETURN_NONE;
            }
            else {
                PyObject *text = PyUnicode_FromStringAndSize(data + start, length);
                if (text == NULL) {
                    return NULL;
                }
                PyObject *done = PyObject_CallOneArg(self->segment, text);
                Py_DECREF(text);
                if (done == NULL) {
                    return NULL;
                }
                Py_ssize_t got = PyUnicode_CheckExact(done) && PyUnicode_IS_ASCII(done)
                                     ? PyUnicode_GET_LENGTH(done)
                                     : -1;
                if (got < 0 || size + got > (Py_ssize_t)sizeof(out)) {
                    Py_DECREF(done);
                    Py_RETURN_NONE;
                }
                memcpy(out + size, PyUnicode_1BYTE_DATA(done), got);
                size += got;
                Py_DECREF(done);
            }
        }
        start = end + 1;
    }
    if (size == target) {
        out[size++] = '/';
    }
    if (size > self->max_operation) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromStringAndSize(out, size);
}

/* A path value the fast path takes: a str of printable ASCII, neither starting nor ending
 * with a blank, at most max_value long (what the Python rule uses unchanged, stripped). */
static int
plain_value(ServerRule *self, PyObject *value)
{
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    const char *data = (const char *)PyUnicode_1BYTE_DATA(value);
    if (n == 0 || n > self->max_value || data[0] == ' ' || data[n - 1] == ' ') {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (data[i] < 0x20 || data[i] > 0x7e) {
            return 0;
        }
    }
    return 1;
}

/* The operation, a new reference; Py_None where the Python rule must decide; NULL on error. */
static PyObject *
server_rule_fast(ServerRule *self, PyObject *attributes, PyObject *normalize)
{
    if (!PyDict_CheckExact(attributes) || (PyObject *)Py_TYPE(normalize) != self->normalizer_type ||
        self->method_key == Py_None) {
        Py_RETURN_NONE;
    }
    if (normalize != self->plain_normalizer) { /* a PathNormalizer's rules are set once */
        PyObject *rules = PyObject_GetAttr(normalize, s__rules);
        if (rules == NULL) {
            return NULL;
        }
        int plain = PyTuple_CheckExact(rules) && PyTuple_GET_SIZE(rules) == 0;
        Py_DECREF(rules);
        if (!plain) {
            Py_RETURN_NONE;
        }
        Py_XSETREF(self->plain_normalizer, Py_NewRef(normalize));
    }
    PyObject *path = NULL; /* borrowed */
    Py_ssize_t keys = PyTuple_GET_SIZE(self->path_keys);
    for (Py_ssize_t i = 0; i < keys && path == NULL; i++) {
        path = PyDict_GetItemWithError(attributes, PyTuple_GET_ITEM(self->path_keys, i));
        if (path == NULL && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (path == NULL || !plain_value(self, path)) {
        Py_RETURN_NONE;
    }
    PyObject *method = PyDict_GetItemWithError(attributes, self->method_key);
    if (method == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (!PyUnicode_CheckExact(method) || !PyUnicode_IS_ASCII(method)) {
        Py_RETURN_NONE;
    }
    int standard = PySet_Contains(self->methods, method);
    if (standard <= 0) {
        return standard < 0 ? NULL : Py_NewRef(Py_None);
    }
    return plain_operation(self, method, path);
}

static PyObject *
server_rule_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ServerRule *self = (ServerRule *)op;
    if (PyVectorcall_NARGS(nargsf) != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "ServerRule takes two arguments: attributes, normalize");
        return NULL;
    }
    PyObject *operation = server_rule_fast(self, args[0], args[1]);
    if (operation != Py_None) {
        return operation;
    }
    Py_DECREF(operation);
    return PyObject_Vectorcall(self->fallback, args, 2, NULL);
}

static PyObject *
server_rule_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *fallback, *path_keys, *method_key, *methods, *normalizer_type, *segment;
    Py_ssize_t max_value, max_operation, max_segment;
    static char *kwlist[] = {"fallback",        "path_keys", "method_key",    "methods",
                             "normalizer_type", "segment",   "max_value",     "max_operation",
                             "max_segment",     NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!OO!O!Onnn:ServerRule", kwlist, &fallback,
                                     &PyTuple_Type, &path_keys, &method_key, &PyFrozenSet_Type,
                                     &methods, &PyType_Type, &normalizer_type, &segment,
                                     &max_value, &max_operation, &max_segment)) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(path_keys); i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(path_keys, i))) {
            PyErr_SetString(PyExc_TypeError, "path_keys must be strings");
            return NULL;
        }
    }
    if (method_key != Py_None && !PyUnicode_CheckExact(method_key)) {
        PyErr_SetString(PyExc_TypeError, "method_key must be a string or None");
        return NULL;
    }
    if (max_segment < 0 || max_segment > PLAIN_PATH_MAX) {
        PyErr_SetString(PyExc_ValueError, "max_segment out of range");
        return NULL;
    }
    ServerRule *self = (ServerRule *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = server_rule_vectorcall;
    self->fallback = Py_NewRef(fallback);
    self->path_keys = Py_NewRef(path_keys);
    self->method_key = Py_NewRef(method_key);
    self->methods = Py_NewRef(methods);
    self->normalizer_type = Py_NewRef(normalizer_type);
    self->segment = Py_NewRef(segment);
    self->max_value = max_value;
    self->max_operation = max_operation;
    self->max_segment = max_segment;
    return (PyObject *)self;
}

static int
server_rule_traverse(ServerRule *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);
    Py_VISIT(self->path_keys);
    Py_VISIT(self->method_key);
    Py_VISIT(self->methods);
    Py_VISIT(self->normalizer_type);
    Py_VISIT(self->segment);
    Py_VISIT(self->plain_normalizer);
    return 0;
}

static int
server_rule_clear(ServerRule *self)
{
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->path_keys);
    Py_CLEAR(self->method_key);
    Py_CLEAR(self->methods);
    Py_CLEAR(self->normalizer_type);
    Py_CLEAR(self->segment);
    Py_CLEAR(self->plain_normalizer);
    return 0;
}

static void
server_rule_dealloc(ServerRule *self)
{
    PyObject_GC_UnTrack(self);
    server_rule_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ServerRuleType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "otelcost.costing._speedups.ServerRule",
    .tp_doc = PyDoc_STR("ServerRule(fallback, path_keys, ...)(attributes, normalize): "
                        "operation._server_rule's rule in C for common paths."),
    .tp_basicsize = sizeof(ServerRule),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = server_rule_new,
    .tp_dealloc = (destructor)server_rule_dealloc,
    .tp_traverse = (traverseproc)server_rule_traverse,
    .tp_clear = (inquiry)server_rule_clear,
    .tp_vectorcall_offset = offsetof(ServerRule, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* -- the planned path -------------------------------------------------------------------- */

/* Coster._by_path's memo hit with the compiled server rule, no Python frame: the Named of
 * the operation under the shape's own service. A new reference; Py_None for anything else
 * (a miss, no service), which the caller leaves to the memo and then _by_path; NULL on
 * error. */
static PyObject *
by_path_hit(Planner *self, ServerRule *rule, PyObject *shape, PyObject *inner)
{
    /* The service and dict first: a shape whose resource names no service (the span's
     * attributes may) is Python's, and then the rule need not run here. */
    PyObject *found = Py_NewRef(Py_None), *service = NULL, *by_path = NULL, *derived = NULL;
    if ((service = slot_get(&self->shape_slots[S_SERVICE], shape)) == NULL ||
        (by_path = slot_get(&self->shape_slots[S_BY_PATH], shape)) == NULL) {
        goto error;
    }
    if (!PyUnicode_CheckExact(service) || PyUnicode_GET_LENGTH(service) == 0 ||
        !PyDict_CheckExact(by_path)) {
        goto out;
    }
    PyObject *normalize = owner_get(&self->of_coster, s__normalize);
    if (normalize == NULL) {
        goto error;
    }
    derived = server_rule_fast(rule, inner, normalize);
    Py_DECREF(normalize);
    if (derived == NULL) {
        goto error;
    }
    if (derived == Py_None) {
        goto out;
    }
    /* by_path is keyed by the operation alone under the shape's own service */
    PyObject *named = PyDict_GetItemWithError(by_path, derived);
    if (named != NULL) {
        Py_SETREF(found, Py_NewRef(named));
    }
    else if (PyErr_Occurred()) {
        goto error;
    }
out:
    Py_XDECREF(service);
    Py_XDECREF(by_path);
    Py_XDECREF(derived);
    return found;
error:
    Py_CLEAR(found);
    goto out;
}

#define DELEGATE 2

/* -- the totals' cells ------------------------------------------------------------------- */

/* Cell(nanos, spans): a priced total in a pricing thread's totals dict that the planner
 * adds a span into in place, so a span makes no object: a new (nanos, spans) pair per span
 * would be a tuple and two ints made, and the last ones freed. Only the thread that owns
 * the dict writes it, under the GIL, both fields in one step; snapshot() reads a dict's
 * cells as pairs, each read in one step too. Reads as the pair it holds (len 2, [0], [1]),
 * so the Python paths add a span to it as to a pair, storing a pair in its place. */
typedef struct {
    PyObject_HEAD
    long long nanos;
    long long spans;
} Cell;

static PyObject *
cell_make(long long nanos, long long spans)
{
    Cell *cell = PyObject_New(Cell, &CellType);
    if (cell != NULL) {
        cell->nanos = nanos;
        cell->spans = spans;
    }
    return (PyObject *)cell;
}

static PyObject *
cell_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)type;
    long long nanos, spans;
    static char *kwlist[] = {"nanos", "spans", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "LL:Cell", kwlist, &nanos, &spans)) {
        return NULL;
    }
    return cell_make(nanos, spans);
}

/* (nanos, spans), untracked (two ints are never part of a cycle). A new reference. */
static PyObject *
pair_of(long long nanos, long long spans)
{
    PyObject *a = PyLong_FromLongLong(nanos), *b = a ? PyLong_FromLongLong(spans) : NULL;
    PyObject *pair = b ? PyTuple_Pack(2, a, b) : NULL;
    if (pair != NULL) {
        PyObject_GC_UnTrack(pair);
    }
    Py_XDECREF(a);
    Py_XDECREF(b);
    return pair;
}

static Py_ssize_t
cell_length(PyObject *op)
{
    (void)op;
    return 2;
}

static PyObject *
cell_item(PyObject *op, Py_ssize_t i)
{
    Cell *cell = (Cell *)op;
    if (i < 0 || i > 1) {
        PyErr_SetString(PyExc_IndexError, "Cell index out of range");
        return NULL;
    }
    return PyLong_FromLongLong(i == 0 ? cell->nanos : cell->spans);
}

static PyObject *
cell_repr(PyObject *op)
{
    Cell *cell = (Cell *)op;
    return PyUnicode_FromFormat("Cell(nanos=%lld, spans=%lld)", cell->nanos, cell->spans);
}

static PySequenceMethods cell_as_sequence = {
    .sq_length = cell_length,
    .sq_item = cell_item,
};

static PyTypeObject CellType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "otelcost.costing._speedups.Cell",
    .tp_doc = PyDoc_STR("Cell(nanos, spans): a priced total the compiled planner adds into in "
                        "place; reads as the pair (nanos, spans)."),
    .tp_basicsize = sizeof(Cell),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = cell_new,
    .tp_repr = cell_repr,
    .tp_as_sequence = &cell_as_sequence,
};

/* snapshot(totals): a copy of a totals dict with each Cell read as its pair: what harvest
 * and grand totals read, so nothing they keep changes after. */
static PyObject *
snapshot(PyObject *module, PyObject *totals)
{
    (void)module;
    if (!PyDict_CheckExact(totals)) {
        PyErr_SetString(PyExc_TypeError, "snapshot(totals): a dict");
        return NULL;
    }
    PyObject *copy = PyDict_Copy(totals), *key, *value;
    Py_ssize_t pos = 0;
    while (copy != NULL && PyDict_Next(copy, &pos, &key, &value)) {
        if (Py_IS_TYPE(value, &CellType)) {
            /* both fields before anything is allocated: a collection could run Python code,
             * and another thread add a span, between two reads */
            long long nanos = ((Cell *)value)->nanos, spans = ((Cell *)value)->spans;
            PyObject *pair = pair_of(nanos, spans);
            /* a value replaced, no key added: the iteration stays valid */
            if (pair == NULL || PyDict_SetItem(copy, key, pair) < 0) {
                Py_XDECREF(pair);
                Py_CLEAR(copy);
                break;
            }
            Py_DECREF(pair);
        }
    }
    return copy;
}

/* A priced total plus one span of `nanos` as Python adds them, where add_span's 64-bit
 * cell does not apply: (nanos, spans) + (nanos, 1), or (nanos, 1) for `old` None. A new
 * pair, untracked (two ints are never part of a cycle); NULL with an exception. */
static PyObject *
add_to_total(PyObject *old, PyObject *nanos)
{
    PyObject *sum = NULL, *spans = NULL, *pair = NULL;
    if (old == Py_None) {
        sum = Py_NewRef(nanos);
        spans = Py_NewRef(int_one);
    }
    else if (!PyTuple_CheckExact(old) || PyTuple_GET_SIZE(old) != 2) {
        PyErr_SetString(PyExc_TypeError, "a priced total is a (nanos, spans) tuple");
        return NULL;
    }
    else if ((sum = PyNumber_Add(PyTuple_GET_ITEM(old, 0), nanos)) != NULL) {
        spans = PyNumber_Add(PyTuple_GET_ITEM(old, 1), int_one);
    }
    if (sum != NULL && spans != NULL && (pair = PyTuple_Pack(2, sum, spans)) != NULL) {
        PyObject_GC_UnTrack(pair);
    }
    Py_XDECREF(sum);
    Py_XDECREF(spans);
    return pair;
}

/* totals[key] plus one span of `nanos` (*nanos_o NULL: the quick charge's, below 1e7), or
 * of *nanos_o (an int; made from `nanos` where a pair of Python ints needs it): its Cell
 * added to in place; a first span makes one, and so does a pair (a Python path stored it)
 * that fits. Past 64 bits, pairs of Python ints, as Python adds them. 0, or -1 with an
 * exception. */
static int
add_span(PyObject *totals, PyObject *key, long long nanos, PyObject **nanos_o)
{
    PyObject *old = mapping_get(totals, key, Py_None), *sum = NULL;
    if (old == NULL) {
        return -1;
    }
    int overflow = 0;
    if (*nanos_o != NULL) {
        overflow = 1;
        if (PyLong_CheckExact(*nanos_o)) {
            nanos = PyLong_AsLongLongAndOverflow(*nanos_o, &overflow);
        }
    }
    int fits = !overflow && nanos >= 0;
    if (Py_IS_TYPE(old, &CellType)) {
        Cell *cell = (Cell *)old;
        if (fits && cell->nanos <= LLONG_MAX - nanos && cell->spans < LLONG_MAX) {
            cell->nanos += nanos;
            cell->spans += 1;
            Py_DECREF(old);
            return 0;
        }
        Py_SETREF(old, pair_of(cell->nanos, cell->spans));
        if (old == NULL) {
            return -1;
        }
        fits = 0; /* past 64 bits from here on */
    }
    if (fits && old == Py_None) {
        sum = cell_make(nanos, 1);
    }
    else if (fits && PyTuple_CheckExact(old) && PyTuple_GET_SIZE(old) == 2 &&
             PyLong_CheckExact(PyTuple_GET_ITEM(old, 0)) &&
             PyLong_CheckExact(PyTuple_GET_ITEM(old, 1))) {
        int o1 = 0, o2 = 0;
        long long a = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(old, 0), &o1);
        long long n = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(old, 1), &o2);
        if (!o1 && !o2 && a >= 0 && a <= LLONG_MAX - nanos && n >= 0 && n < LLONG_MAX) {
            sum = cell_make(a + nanos, n + 1);
        }
    }
    if (sum == NULL && !PyErr_Occurred()) {
        if (*nanos_o == NULL && (*nanos_o = PyLong_FromLongLong(nanos)) == NULL) {
            Py_DECREF(old);
            return -1;
        }
        sum = add_to_total(old, *nanos_o);
    }
    Py_DECREF(old);
    if (sum == NULL) {
        return -1;
    }
    int stored = mapping_set(totals, key, sum);
    Py_DECREF(sum);
    return stored;
}

/* itemgetter(*keys)(d) for a dict d (exact) and a non-empty tuple of keys: the value of a
 * single key, else a tuple of them; NULL with KeyError for a missing key. A new reference;
 * no Python frame, no call through the itemgetter. */
static PyObject *
read_values(PyObject *keys, PyObject *d)
{
    Py_ssize_t n = PyTuple_GET_SIZE(keys);
    PyObject *values = n == 1 ? NULL : PyTuple_New(n);
    if (n != 1 && values == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyTuple_GET_ITEM(keys, i);
        PyObject *value = PyDict_GetItemWithError(d, key);
        if (value == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetObject(PyExc_KeyError, key);
            }
            Py_XDECREF(values);
            return NULL;
        }
        if (n == 1) {
            return Py_NewRef(value);
        }
        PyTuple_SET_ITEM(values, i, Py_NewRef(value));
    }
    return values;
}

/* This thread's totals dict: tally.local.totals, or tally.totals() on its first span. A
 * new reference, or NULL with an exception. */
static PyObject *
thread_totals(Planner *self)
{
    uint64_t id = PyThreadState_GetID(PyThreadState_Get());
    for (int i = 0; i < TOTALS_CACHE; i++) {
        if (self->totals_ids[i] == id && self->totals_dicts[i] != NULL) {
            return Py_NewRef(self->totals_dicts[i]);
        }
    }
    PyObject *totals = NULL, *local = PyObject_GetAttr(self->tally, s_local);
    if (local != NULL) {
        totals = PyObject_GetAttr(local, s_totals);
        Py_DECREF(local);
    }
    if (totals == NULL) { /* this thread's first span */
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL;
        }
        PyErr_Clear();
        if ((totals = PyObject_CallMethodNoArgs(self->tally, s_totals)) == NULL) {
            return NULL;
        }
    }
    int slot = self->totals_next;
    self->totals_next = (slot + 1) % TOTALS_CACHE;
    self->totals_ids[slot] = id;
    Py_XSETREF(self->totals_dicts[slot], Py_NewRef(totals));
    return totals;
}

static void
forget_threads(Planner *self)
{
    for (int i = 0; i < TOTALS_CACHE; i++) {
        self->totals_ids[i] = 0;
        Py_CLEAR(self->totals_dicts[i]);
    }
}

/* Whether the dict's keys are the items of `names` (a tuple or NULL), the same objects in
 * the same order. */
static int
same_names(PyObject *dict, PyObject *names)
{
    if (names == NULL || PyDict_GET_SIZE(dict) != PyTuple_GET_SIZE(names)) {
        return 0;
    }
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    while (PyDict_Next(dict, &pos, &k, &v)) {
        if (k != PyTuple_GET_ITEM(names, i++)) {
            return 0;
        }
    }
    return 1;
}

/* shapes.get(tuple(inner)): the head of the chain of shapes with these attribute names, a
 * new reference; NULL, with or without an exception. A hit becomes the last lookup. */
static PyObject *
shapes_lookup(Planner *self, PyObject *shapes, PyObject *inner)
{
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    PyObject *key = PyTuple_New(PyDict_GET_SIZE(inner));
    if (key == NULL) {
        return NULL;
    }
    while (PyDict_Next(inner, &pos, &k, &v)) {
        PyTuple_SET_ITEM(key, i++, Py_NewRef(k));
    }
    PyObject *head = PyDict_GetItemWithError(shapes, key);
    if (head != NULL) {
        Py_INCREF(head);
        Py_XSETREF(self->last_shapes, Py_NewRef(shapes));
        Py_XSETREF(self->last_head, Py_NewRef(head));
        Py_XSETREF(self->last_key, key);
        return head;
    }
    Py_DECREF(key);
    return NULL;
}

/* _price_planned(span): 1 priced, 0 nothing done, -1 an exception, DELEGATE: a value
 * outside the fast path's types, nothing done (the caller runs the Python method). */
static int
plan_span(Planner *self, PyObject *span)
{
    int result = -1;
    PyObject *live = NULL, *held = NULL, *attrs = NULL, *inner = NULL, *shapes = NULL,
             *shape = NULL, *a = NULL, *b = NULL, *c = NULL, *values = NULL, *named = NULL,
             *binding = NULL, *snapshot = NULL, *parent = NULL, *entry = NULL, *plan = NULL,
             *start_o = NULL, *end_o = NULL, *duration = NULL, *nanos_o = NULL,
             *totals = NULL, *amount = NULL, *old = NULL, *sum = NULL, *record = NULL;

    live = owner_get(&self->of_coster, s_live);
    if (live == NULL) {
        goto done;
    }
    if (!PyTuple_CheckExact(live) || PyTuple_GET_SIZE(live) != 3) {
        result = DELEGATE;
        goto done;
    }
    PyObject *live_held = PyTuple_GET_ITEM(live, 0);
    PyObject *snap = PyTuple_GET_ITEM(live, 1);
    PyObject *stale_o = PyTuple_GET_ITEM(live, 2);
    PyObject *held_now = owner_peek(&self->of_pricing, s_held); /* compared, not touched */
    if (held_now == NULL) {
        if ((held = owner_get(&self->of_pricing, s_held)) == NULL) {
            goto done;
        }
        held_now = held;
    }
    if (held_now != live_held) {
        result = 0;
        goto done;
    }
    attrs = PyObject_GetAttr(span, s__attributes);
    if (attrs == NULL) {
        goto done;
    }
    inner = PyObject_GetAttr(attrs, s__dict);
    if (inner == NULL) {
        goto done;
    }
    shapes = owner_get(&self->of_coster, s__shapes);
    if (shapes == NULL) {
        goto done;
    }
    if (!PyDict_CheckExact(inner) || !PyDict_CheckExact(shapes)) {
        result = DELEGATE;
        goto done;
    }
    /* The shape of the span's resource and kind, by identity: the head of the chain of
       shapes with these attribute names, or one further on (another provider's resource,
       another kind); none yet, and Python makes it. */
    if ((b = PyObject_GetAttr(span, s__resource)) == NULL ||
        (c = PyObject_GetAttr(span, s__kind)) == NULL) {
        goto done;
    }
    int cached = shapes == self->last_shapes && same_names(inner, self->last_key);
    if (cached) {
        shape = Py_NewRef(self->last_head);
    }
    else {
    lookup:
        shape = shapes_lookup(self, shapes, inner);
        if (shape == NULL) {
            result = PyErr_Occurred() ? -1 : 0;
            goto done;
        }
    }
    for (;;) {
        int same;
        if ((a = slot_get(&self->shape_slots[S_RESOURCE], shape)) == NULL) {
            goto done;
        }
        same = a == b;
        Py_CLEAR(a);
        if (same) {
            if ((a = slot_get(&self->shape_slots[S_KIND], shape)) == NULL) {
                goto done;
            }
            same = a == c;
            Py_CLEAR(a);
            if (same) {
                break;
            }
        }
        if ((a = slot_get(&self->shape_slots[S_NEXT], shape)) == NULL) {
            goto done;
        }
        Py_SETREF(shape, a);
        a = NULL;
        if (shape == Py_None) {
            Py_CLEAR(shape);
            if (cached) { /* a head made since: look the names up again */
                cached = 0;
                goto lookup;
            }
            result = 0;
            goto done;
        }
    }
    Py_CLEAR(b);
    Py_CLEAR(c);
    /* shape.plain */
    {
        int t;
        a = slot_get(&self->shape_slots[S_PLAIN], shape);
        if (a == NULL || (t = PyObject_IsTrue(a)) < 0) {
            goto done;
        }
        Py_CLEAR(a);
        if (!t) {
            result = 0;
            goto done;
        }
    }
    /* The naming memo: any Exception (an unhashable value) leaves the span to Python. */
    {
        /* A shape a raw path names (a server span without a route): its naming values hold
         * the path, new with each id, so memo and by_name miss but for repeated paths. The
         * operation its rule gives, found in by_path, is the Named they would hold (Python's
         * _by_path fills both from it), so by_path is tried first: a new id then costs no
         * values tuple and no probe of either dict. */
        a = slot_get(&self->shape_slots[S_PATH_RULE], shape);
        if (a == NULL) {
            goto memo_failed;
        }
        if (Py_IS_TYPE(a, &ServerRuleType)) {
            named = by_path_hit(self, (ServerRule *)a, shape, inner);
            if (named == NULL) {
                goto memo_failed;
            }
            if (named != Py_None) {
                Py_CLEAR(a);
                goto memo_done;
            }
            Py_CLEAR(named); /* by_path_hit said nothing: Python's _by_path decides below */
        }
        Py_CLEAR(a);
        /* shape.reader(inner): itemgetter(*shape.keys), read here without the call */
        a = slot_get(&self->shape_slots[S_KEYS], shape);
        if (a == NULL) {
            goto memo_failed;
        }
        if (PyTuple_CheckExact(a) && PyTuple_GET_SIZE(a) > 0) {
            values = read_values(a, inner);
        }
        else {
            Py_SETREF(a, slot_get(&self->shape_slots[S_READER], shape));
            values = a == NULL ? NULL : PyObject_CallOneArg(a, inner);
        }
        Py_CLEAR(a);
        if (values == NULL) {
            goto memo_failed;
        }
        a = slot_get(&self->shape_slots[S_MEMO], shape);
        if (a == NULL) {
            goto memo_failed;
        }
        named = mapping_get(a, values, Py_None);
        Py_CLEAR(a);
        if (named == NULL) {
            goto memo_failed;
        }
        if (named == Py_None) { /* named after the span's name (the fallback rule) */
            Py_CLEAR(named);
            a = slot_get(&self->shape_slots[S_BY_NAME], shape);
            if (a == NULL) {
                goto memo_failed;
            }
            b = PyObject_GetAttr(span, s__name);
            if (b == NULL) {
                goto memo_failed;
            }
            PyObject *by_key = PyTuple_Pack(2, b, values);
            if (by_key == NULL) {
                goto memo_failed;
            }
            named = mapping_get(a, by_key, Py_None);
            Py_DECREF(by_key);
            Py_CLEAR(a);
            Py_CLEAR(b);
            if (named == NULL) {
                goto memo_failed;
            }
        }
        if (named == Py_None) { /* a raw path or URL names it: its rule's operation
                                  * (a compiled ServerRule was tried above) */
            a = slot_get(&self->shape_slots[S_PATH_RULE], shape);
            if (a == NULL) {
                goto memo_failed;
            }
            if (a == Py_None) {
                result = 0;
                goto done;
            }
            b = PyObject_GetAttr(span, s__kind);
            if (b == NULL) {
                goto memo_failed;
            }
            PyObject *by_path = PyObject_GetAttr(self->of_coster.obj, s__by_path);
            if (by_path == NULL) {
                goto memo_failed;
            }
            PyObject *path_args[5] = {a, b, inner, shape, values};
            Py_SETREF(named, PyObject_Vectorcall(by_path, path_args, 5, NULL));
            Py_DECREF(by_path);
            Py_CLEAR(a);
            Py_CLEAR(b);
            if (named == NULL) {
                goto memo_failed;
            }
        }
        goto memo_done;
    memo_failed:
        if (PyErr_ExceptionMatches(PyExc_Exception)) {
            PyErr_Clear();
            result = 0;
        }
        goto done;
    memo_done:;
    }
    if (named == Py_None) {
        result = 0;
        goto done;
    }
    binding = slot_get(&self->named_slots[N_BINDING], named);
    if (binding == NULL) {
        goto done;
    }
    snapshot = binding_field(self, binding, B_SNAPSHOT);
    if (snapshot == NULL) {
        goto done;
    }
    if (snapshot != snap) {
        result = 0;
        goto done;
    }
    parent = PyObject_GetAttr(span, s__parent);
    if (parent == NULL) {
        goto done;
    }
    /* entry = named.entry_kind or parent is None or parent.is_remote (the object itself:
     * it goes into the record) */
    int is_entry;
    {
        entry = slot_get(&self->named_slots[N_ENTRY_KIND], named);
        if (entry == NULL || (is_entry = PyObject_IsTrue(entry)) < 0) {
            goto done;
        }
        if (!is_entry) {
            Py_CLEAR(entry);
            if (parent == Py_None) {
                entry = Py_NewRef(Py_True);
            }
            else if ((PyObject *)Py_TYPE(parent) == self->context_type &&
                     PyTuple_GET_SIZE(parent) > 2) {
                entry = Py_NewRef(PyTuple_GET_ITEM(parent, 2)); /* the property's self[2] */
            }
            else if ((entry = PyObject_GetAttr(parent, s_is_remote)) == NULL) {
                goto done;
            }
            if ((is_entry = PyObject_IsTrue(entry)) < 0) {
                goto done;
            }
        }
    }
    plan = binding_field(self, binding, is_entry ? B_ENTRY_PLAN : B_NESTED_PLAN);
    if (plan == NULL || (start_o = PyObject_GetAttr(span, s__start_time)) == NULL ||
        (end_o = PyObject_GetAttr(span, s__end_time)) == NULL) {
        goto done;
    }
    if (plan == Py_None) {
        result = 0;
        goto done;
    }
    /* _MIN_START_NS < start <= end <= stale_ns, in 64-bit ints */
    long long start, end, stale = 0;
    int overflow = 0, stale_overflow = 0;
    if (!PyLong_CheckExact(start_o) || !PyLong_CheckExact(end_o) || !PyLong_CheckExact(stale_o)) {
        result = DELEGATE;
        goto done;
    }
    start = PyLong_AsLongLongAndOverflow(start_o, &overflow);
    if (!overflow) {
        end = PyLong_AsLongLongAndOverflow(end_o, &overflow);
    }
    if (overflow) {
        result = DELEGATE;
        goto done;
    }
    stale = PyLong_AsLongLongAndOverflow(stale_o, &stale_overflow);
    if (!(self->min_start_ns < start && start <= end &&
          (stale_overflow > 0 || (stale_overflow == 0 && end <= stale)))) {
        result = 0;
        goto done;
    }
    /* attributes, per_request, per_ms, price = plan */
    if (!PyTuple_CheckExact(plan) || PyTuple_GET_SIZE(plan) != 4) {
        result = DELEGATE;
        goto done;
    }
    PyObject *plan_attributes = PyTuple_GET_ITEM(plan, 0);
    PyObject *per_request_o = PyTuple_GET_ITEM(plan, 1);
    PyObject *per_ms_o = PyTuple_GET_ITEM(plan, 2);
    PyObject *price = PyTuple_GET_ITEM(plan, 3);
    if (!PyDict_CheckExact(plan_attributes)) {
        result = DELEGATE;
        goto done;
    }
    /* (end - start) / 1e6: the int difference (below 2**63: both are positive int64) to the
     * nearest double, as Python converts an int for a float division, then one division. */
    double duration_ms = (double)(end - start) / 1e6;
    long long nanos = 0;
    int billable;
    if (price == Py_None) {
        billable = 0;
    }
    else {
        if (!PyFloat_CheckExact(per_request_o) || !PyFloat_CheckExact(per_ms_o)) {
            result = DELEGATE;
            goto done;
        }
        /* price.flat_nanos(duration_ms), inline: its quick case, else the call */
        double scaled = (PyFloat_AS_DOUBLE(per_request_o) +
                         PyFloat_AS_DOUBLE(per_ms_o) * duration_ms) *
                        1e9;
        int quick = 0;
        if (0.0 <= scaled && scaled < 1e7) {
            double rounded = round_half_even(scaled);
            double off = scaled - rounded;
            if (-0.499998 < off && off < 0.499998) {
                quick = 1;
                nanos = (long long)rounded;
            }
        }
        if (!quick) {
            duration = PyFloat_FromDouble(duration_ms);
            if (duration == NULL) {
                goto done;
            }
            nanos_o = PyObject_CallMethodOneArg(price, s_flat_nanos, duration);
            if (nanos_o == NULL) {
                goto done;
            }
        }
        billable = 1;
    }
    /* The writes: cost.* into the span, then the totals, then the record. */
    if (PyDict_Update(inner, plan_attributes) < 0) {
        goto done;
    }
    if (duration == NULL && (duration = PyFloat_FromDouble(duration_ms)) == NULL) {
        goto done;
    }
    if (PyDict_SetItem(inner, s_cost_duration_ms, duration) < 0) {
        goto done;
    }
    if ((totals = thread_totals(self)) == NULL) {
        goto done;
    }
    if (billable) {
        if (nanos_o == NULL) {
            /* nanos / NANOS_PER_UNIT: both exact doubles, so one correctly rounded division
             * (what int true division gives) */
            amount = PyFloat_FromDouble((double)nanos / 1e9);
            if (amount == NULL) {
                goto done;
            }
        }
        else if ((amount = PyNumber_TrueDivide(nanos_o, self->nanos_per_unit)) == NULL) {
            goto done;
        }
        if (PyDict_SetItem(inner, s_cost_amount, amount) < 0) {
            goto done;
        }
        if (add_span(totals, named, nanos, &nanos_o) < 0) {
            goto done;
        }
    }
    else {
        nanos_o = Py_NewRef(int_zero);
        a = slot_get(&self->named_slots[N_NOT_BILLABLE], named);
        if (a == NULL || (old = mapping_get(totals, a, int_zero)) == NULL ||
            (sum = PyNumber_Add(old, int_one)) == NULL || mapping_set(totals, a, sum) < 0) {
            goto done;
        }
        Py_CLEAR(a);
    }
    {
        int queue = owner_flag(&self->of_processor, s__queue_records);
        if (queue < 0) {
            goto done;
        }
        if (queue && nanos_o == NULL && (nanos_o = PyLong_FromLongLong(nanos)) == NULL) {
            goto done;
        }
        if (queue) {
            PyObject *record_binding = binding;
            if (!is_entry) {
                b = binding_field(self, binding, B_NESTED);
                if (b == NULL) {
                    goto done;
                }
                if (b != Py_None) {
                    record_binding = b;
                }
            }
            PyObject *put = owner_get(&self->of_processor, s__put_cost);
            if (put == NULL) {
                goto done;
            }
            PyObject *timestamp = PyLong_FromLongLong(end / 1000000); /* end > 0: floor */
            /* The span's own context, not a new (trace_id, span_id) pair: every container
             * allocated brings the next young collection nearer, tracked or not (one per
             * span was 7% more of them in the bench's WSGI app in one process), and the
             * context is alive while the span waits in the user's BatchSpanProcessor. */
            PyObject *context = timestamp ? PyObject_GetAttr(span, s__context) : NULL;
            if (context != NULL) {
                record = PyTuple_Pack(10, named, record_binding, nanos_o, duration, timestamp,
                                      self->no_usage, Py_None, entry,
                                      billable ? Py_True : Py_False, context);
            }
            Py_XDECREF(timestamp);
            Py_XDECREF(context);
            if (record == NULL) {
                Py_DECREF(put);
                goto done;
            }
            /* Nothing it holds can refer back to it, so it is never part of a cycle; untracked,
             * the collections it lives through while queued skip it. */
            PyObject_GC_UnTrack(record);
            PyObject *queued = PyObject_CallOneArg(put, record);
            Py_DECREF(put);
            if (queued == NULL) {
                goto done;
            }
            Py_DECREF(queued);
        }
    }
    Py_XSETREF(self->last_priced, Py_NewRef(attrs));
    result = 1;
done:
    Py_XDECREF(live);
    Py_XDECREF(held);
    Py_XDECREF(attrs);
    Py_XDECREF(inner);
    Py_XDECREF(shapes);
    Py_XDECREF(shape);
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(c);
    Py_XDECREF(values);
    Py_XDECREF(named);
    Py_XDECREF(binding);
    Py_XDECREF(snapshot);
    Py_XDECREF(parent);
    Py_XDECREF(entry);
    Py_XDECREF(plan);
    Py_XDECREF(start_o);
    Py_XDECREF(end_o);
    Py_XDECREF(duration);
    Py_XDECREF(nanos_o);
    Py_XDECREF(totals);
    Py_XDECREF(amount);
    Py_XDECREF(old);
    Py_XDECREF(sum);
    Py_XDECREF(record);
    return result;
}

/* plan_span, with the Python method run where it delegates: 1, 0 or -1. */
static int
plan_or_delegate(Planner *self, PyObject *span)
{
    int done = plan_span(self, span);
    if (done != DELEGATE) {
        return done;
    }
    PyObject *args[2] = {self->of_processor.obj, span};
    PyObject *priced = PyObject_Vectorcall(self->fallback, args, 2, NULL);
    if (priced == NULL) {
        return -1;
    }
    done = PyObject_IsTrue(priced);
    Py_DECREF(priced);
    return done;
}

static PyObject *
planner_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Planner *self = (Planner *)op;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "Planner takes one argument: the span");
        return NULL;
    }
    int done = plan_span(self, args[0]);
    if (done == DELEGATE) {
        PyObject *fargs[2] = {self->of_processor.obj, args[0]};
        return PyObject_Vectorcall(self->fallback, fargs, 2, NULL);
    }
    if (done < 0) {
        return NULL;
    }
    return Py_NewRef(done ? Py_True : Py_False);
}

static PyObject *
planner_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *processor, *coster, *pricing, *tally, *fallback, *binding_type, *fields,
        *context_type, *no_usage, *nanos_per_unit, *shape_type, *named_type;
    long long min_start_ns;
    static char *kwlist[] = {"processor",  "coster",         "pricing",      "tally",
                             "fallback",   "binding_type",   "binding_fields",
                             "context_type", "no_usage",     "nanos_per_unit",
                             "min_start_ns", "shape_type",   "named_type",   NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOO!OOO!LO!O!:Planner", kwlist,
                                     &processor, &coster, &pricing, &tally, &fallback,
                                     &binding_type, &PyTuple_Type, &fields, &context_type,
                                     &no_usage, &PyLong_Type, &nanos_per_unit,
                                     &min_start_ns, &PyType_Type, &shape_type,
                                     &PyType_Type, &named_type)) {
        return NULL;
    }
    if (!PyType_Check(binding_type) || !PyType_IsSubtype((PyTypeObject *)binding_type,
                                                         &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "binding_type must be a tuple subclass");
        return NULL;
    }
    if (PyTuple_GET_SIZE(fields) != B_COUNT) {
        PyErr_SetString(PyExc_ValueError,
                        "binding_fields: the positions of snapshot, nested, entry_plan and "
                        "nested_plan");
        return NULL;
    }
    Planner *self = (Planner *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = planner_vectorcall;
    self->names[B_SNAPSHOT] = s_snapshot;
    self->names[B_NESTED] = s_nested;
    self->names[B_ENTRY_PLAN] = s_entry_plan;
    self->names[B_NESTED_PLAN] = s_nested_plan;
    for (int i = 0; i < B_COUNT; i++) {
        Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(fields, i));
        if (index < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "binding_fields must be positions");
            }
            Py_DECREF(self);
            return NULL;
        }
        self->index[i] = index;
    }
    self->tally = Py_NewRef(tally);
    self->fallback = Py_NewRef(fallback);
    self->binding_type = Py_NewRef(binding_type);
    self->context_type = Py_NewRef(context_type);
    self->no_usage = Py_NewRef(no_usage);
    self->nanos_per_unit = Py_NewRef(nanos_per_unit);
    self->min_start_ns = min_start_ns;
    PyObject *processor_names[] = {s__queue_records, s__put_cost};
    PyObject *coster_names[] = {s_live, s__shapes, s__normalize};
    if (owner_init(&self->of_processor, processor, processor_names, 2) < 0 ||
        owner_init(&self->of_coster, coster, coster_names, 3) < 0 ||
        owner_init(&self->of_pricing, pricing, &s_held, 1) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    PyObject *shape_names[SHAPE_SLOTS] = {s_plain,   s_resource, s_kind,      s_reader,
                                          s_keys,    s_memo,     s_by_name,   s_path_rule,
                                          s_next,    s_service,  s_by_path};
    PyObject *named_names[NAMED_SLOTS] = {s_binding, s_entry_kind, s_not_billable};
    for (int i = 0; i < SHAPE_SLOTS; i++) {
        if (slot_init(&self->shape_slots[i], shape_type, shape_names[i]) < 0) {
            Py_DECREF(self);
            return NULL;
        }
    }
    for (int i = 0; i < NAMED_SLOTS; i++) {
        if (slot_init(&self->named_slots[i], named_type, named_names[i]) < 0) {
            Py_DECREF(self);
            return NULL;
        }
    }
    return (PyObject *)self;
}

static int
planner_traverse(Planner *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tally);
    if (owner_traverse(&self->of_processor, visit, arg) < 0 ||
        owner_traverse(&self->of_coster, visit, arg) < 0 ||
        owner_traverse(&self->of_pricing, visit, arg) < 0) {
        return -1;
    }
    Py_VISIT(self->fallback);
    Py_VISIT(self->binding_type);
    Py_VISIT(self->context_type);
    Py_VISIT(self->no_usage);
    Py_VISIT(self->nanos_per_unit);
    Py_VISIT(self->last_shapes);
    Py_VISIT(self->last_key);
    Py_VISIT(self->last_head);
    Py_VISIT(self->last_priced);
    for (int i = 0; i < TOTALS_CACHE; i++) {
        Py_VISIT(self->totals_dicts[i]);
    }
    for (int i = 0; i < SHAPE_SLOTS; i++) {
        Py_VISIT(self->shape_slots[i].type);
    }
    for (int i = 0; i < NAMED_SLOTS; i++) {
        Py_VISIT(self->named_slots[i].type);
    }
    return 0;
}

static int
planner_clear(Planner *self)
{
    Py_CLEAR(self->tally);
    owner_clear(&self->of_processor);
    owner_clear(&self->of_coster);
    owner_clear(&self->of_pricing);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->binding_type);
    Py_CLEAR(self->context_type);
    Py_CLEAR(self->no_usage);
    Py_CLEAR(self->nanos_per_unit);
    Py_CLEAR(self->last_shapes);
    Py_CLEAR(self->last_key);
    Py_CLEAR(self->last_head);
    Py_CLEAR(self->last_priced);
    forget_threads(self);
    for (int i = 0; i < SHAPE_SLOTS; i++) {
        self->shape_slots[i].offset = -1;
        Py_CLEAR(self->shape_slots[i].type);
    }
    for (int i = 0; i < NAMED_SLOTS; i++) {
        self->named_slots[i].offset = -1;
        Py_CLEAR(self->named_slots[i].type);
    }
    return 0;
}

static void
planner_dealloc(Planner *self)
{
    PyObject_GC_UnTrack(self);
    planner_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
planner_forget_threads(PyObject *op, PyObject *Py_UNUSED(arg))
{
    forget_threads((Planner *)op);
    Py_RETURN_NONE;
}

static PyMethodDef planner_methods[] = {
    {"forget_threads", planner_forget_threads, METH_NOARGS,
     PyDoc_STR("Forget the threads' totals dicts it keeps (a forked child's tally has new "
               "ones).")},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "otelcost.costing._speedups.Planner",
    .tp_doc = PyDoc_STR("Planner(processor, ...)(span) -> bool: "
                        "CostSpanProcessor._price_planned in C."),
    .tp_basicsize = sizeof(Planner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = planner_new,
    .tp_methods = planner_methods,
    .tp_dealloc = (destructor)planner_dealloc,
    .tp_traverse = (traverseproc)planner_traverse,
    .tp_clear = (inquiry)planner_clear,
    .tp_vectorcall_offset = offsetof(Planner, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* -- the ending hook --------------------------------------------------------------------- */

static PyObject *
hook_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    EndingHook *self = (EndingHook *)op;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "EndingHook takes one argument: the span");
        return NULL;
    }
    PyObject *span = args[0];
    int pricing = owner_flag(&self->of_processor, s__pricing_in_hook);
    if (pricing < 0) {
        return NULL;
    }
    if (pricing) {
        int done = plan_or_delegate(self->planner, span);
        if (done == 0) {
            PyObject *r = PyObject_CallMethodOneArg(self->of_processor.obj, s__price_in_place, span);
            if (r == NULL) {
                done = -1;
            }
            else {
                Py_DECREF(r);
            }
        }
        if (done < 0) {
            if (!PyErr_ExceptionMatches(PyExc_Exception) ||
                call_handling(self->of_processor.obj, s__pricing_error) < 0) {
                return NULL;
            }
        }
    }
    Py_ssize_t n = PyTuple_GET_SIZE(self->hooks);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyObject_CallOneArg(PyTuple_GET_ITEM(self->hooks, i), span);
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception) ||
                call_handling(self->of_processor.obj, s__hook_error) < 0) {
                return NULL;
            }
        }
        else {
            Py_DECREF(r);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
hook_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *planner, *processor, *hooks;
    static char *kwlist[] = {"planner", "processor", "hooks", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OO!:EndingHook", kwlist, &PlannerType,
                                     &planner, &processor, &PyTuple_Type, &hooks)) {
        return NULL;
    }
    EndingHook *self = (EndingHook *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = hook_vectorcall;
    self->planner = (Planner *)Py_NewRef(planner);
    self->hooks = Py_NewRef(hooks);
    if (owner_init(&self->of_processor, processor, &s__pricing_in_hook, 1) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
hook_traverse(EndingHook *self, visitproc visit, void *arg)
{
    Py_VISIT(self->planner);
    Py_VISIT(self->hooks);
    return owner_traverse(&self->of_processor, visit, arg);
}

static int
hook_clear(EndingHook *self)
{
    Py_CLEAR(self->planner);
    Py_CLEAR(self->hooks);
    owner_clear(&self->of_processor);
    return 0;
}

static void
hook_dealloc(EndingHook *self)
{
    PyObject_GC_UnTrack(self);
    hook_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject EndingHookType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "otelcost.costing._speedups.EndingHook",
    .tp_doc = PyDoc_STR("EndingHook(planner, processor, hooks)(span): "
                        "CostSpanProcessor._on_ending in C."),
    .tp_basicsize = sizeof(EndingHook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = hook_new,
    .tp_dealloc = (destructor)hook_dealloc,
    .tp_traverse = (traverseproc)hook_traverse,
    .tp_clear = (inquiry)hook_clear,
    .tp_vectorcall_offset = offsetof(EndingHook, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* -- forwarding to span_processors ------------------------------------------------------- */

/* Forwarder(processor, processors, python_on_end, planner=None): on the ending-hook path,
 * the processor's on_start (python_on_end None) or on_end, forwarding to `processors` as
 * CostSpanProcessor.on_start and .on_end do, without a Python frame of otelcost's own per
 * span. on_end leaves to the Python method every span it would do more than forward (after
 * shutdown, or one the ending hook did not price). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Owner of_processor;   /* the processor; reads _shutdown */
    PyObject *processors; /* a tuple */
    PyObject *python_on_end;
    PyObject *planner;    /* on_end: the Planner whose last_priced it reads, or None */
} Forwarder;

/* Call `method` on every processor with (args, kwnames); an Exception is counted by the
 * processor's `on_error` method, anything else propagates. 0, or -1 with an exception. */
static int
forward_all(Forwarder *self, PyObject *method, PyObject *on_error, PyObject *const *args,
            Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t n = PyTuple_GET_SIZE(self->processors);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *stack[8];
    if (n == 0) {
        return 0;
    }
    if (1 + nargs + nkw > 8) {
        PyErr_SetString(PyExc_TypeError, "too many arguments");
        return -1;
    }
    for (Py_ssize_t j = 0; j < nargs + nkw; j++) {
        stack[1 + j] = args[j];
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        stack[0] = PyTuple_GET_ITEM(self->processors, i);
        PyObject *r = PyObject_VectorcallMethod(method, stack, (size_t)(1 + nargs), kwnames);
        if (r != NULL) {
            Py_DECREF(r);
        }
        else if (!PyErr_ExceptionMatches(PyExc_Exception) ||
                 call_handling(self->of_processor.obj, on_error) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Whether the ending hook priced the span: its attributes the planner's last priced, or
 * "cost.source" in span._attributes._dict (1), not (0), or a span the fast path leaves
 * alone (DELEGATE: not the SDK's attributes); -1 only for an exception that is not an
 * Exception. */
static int
priced_in_hook(PyObject *planner, PyObject *span)
{
    int found = DELEGATE;
    PyObject *inner = NULL, *attrs = PyObject_GetAttr(span, s__attributes);
    if (attrs != NULL && Py_IS_TYPE(planner, &PlannerType) &&
        attrs == ((Planner *)planner)->last_priced) {
        found = 1;
    }
    else if (attrs != NULL && (inner = PyObject_GetAttr(attrs, s__dict)) != NULL &&
             PyDict_CheckExact(inner)) {
        found = PyDict_Contains(inner, s_cost_source);
    }
    Py_XDECREF(attrs);
    Py_XDECREF(inner);
    if (PyErr_Occurred()) { /* a hand-made span: the Python method decides */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1;
        }
        PyErr_Clear();
        return DELEGATE;
    }
    return found;
}

static PyObject *
forwarder_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Forwarder *self = (Forwarder *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (self->python_on_end == Py_None) { /* on_start(span, parent_context=None) */
        if (forward_all(self, s_on_start, s__hook_error, args, nargs, kwnames) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (nargs != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "on_end takes one argument: the span");
        return NULL;
    }
    int closed = owner_flag(&self->of_processor, s__shutdown);
    if (closed < 0) {
        return NULL;
    }
    int priced = closed ? 0 : priced_in_hook(self->planner, args[0]);
    if (priced < 0) {
        return NULL;
    }
    if (priced != 1) {
        PyObject *call[2] = {self->of_processor.obj, args[0]};
        return PyObject_Vectorcall(self->python_on_end, call, 2, NULL);
    }
    if (forward_all(self, s_on_end, s__forward_error, args, 1, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
forwarder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *processor, *processors, *python_on_end, *planner = Py_None;
    static char *kwlist[] = {"processor", "processors", "python_on_end", "planner", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!O|O:Forwarder", kwlist, &processor,
                                     &PyTuple_Type, &processors, &python_on_end, &planner)) {
        return NULL;
    }
    if (planner != Py_None && !Py_IS_TYPE(planner, &PlannerType)) {
        PyErr_SetString(PyExc_TypeError, "Forwarder: planner must be a Planner or None");
        return NULL;
    }
    Forwarder *self = (Forwarder *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = forwarder_vectorcall;
    self->processors = Py_NewRef(processors);
    self->python_on_end = Py_NewRef(python_on_end);
    self->planner = Py_NewRef(planner);
    if (owner_init(&self->of_processor, processor, &s__shutdown, 1) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
forwarder_traverse(Forwarder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->processors);
    Py_VISIT(self->python_on_end);
    Py_VISIT(self->planner);
    return owner_traverse(&self->of_processor, visit, arg);
}

static int
forwarder_clear(Forwarder *self)
{
    Py_CLEAR(self->processors);
    Py_CLEAR(self->python_on_end);
    Py_CLEAR(self->planner);
    owner_clear(&self->of_processor);
    return 0;
}

static void
forwarder_dealloc(Forwarder *self)
{
    PyObject_GC_UnTrack(self);
    forwarder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ForwarderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "otelcost.costing._speedups.Forwarder",
    .tp_doc = PyDoc_STR("Forwarder(processor, processors, python_on_end, planner=None): "
                        "CostSpanProcessor's on_start (python_on_end None) or on_end on the "
                        "ending-hook path, in C."),
    .tp_basicsize = sizeof(Forwarder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = forwarder_new,
    .tp_dealloc = (destructor)forwarder_dealloc,
    .tp_traverse = (traverseproc)forwarder_traverse,
    .tp_clear = (inquiry)forwarder_clear,
    .tp_vectorcall_offset = offsetof(Forwarder, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* -- BatchPipeline.put ------------------------------------------------------------------- */

/* BatchPipeline.put without a Python frame: queue the item unless the queue holds
 * `capacity` items (0 once shut down), calling wake() when it reaches a batch; else
 * drop(1). True if queued. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *queue; /* a deque */
    PyObject *append; /* queue.append */
    PyObject *wake;
    PyObject *drop;
    Py_ssize_t capacity;
    Py_ssize_t batch;
} QueuePut;

static PyObject *
queue_put_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    QueuePut *self = (QueuePut *)op;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "QueuePut takes one argument: the item");
        return NULL;
    }
    Py_ssize_t n = PyObject_Size(self->queue);
    if (n < 0) {
        return NULL;
    }
    PyObject *r;
    if (n < self->capacity) {
        if ((r = PyObject_CallOneArg(self->append, args[0])) == NULL) {
            return NULL;
        }
        Py_DECREF(r);
        if (n == self->batch) {
            if ((r = PyObject_CallNoArgs(self->wake)) == NULL) {
                return NULL;
            }
            Py_DECREF(r);
        }
        Py_RETURN_TRUE;
    }
    if ((r = PyObject_CallOneArg(self->drop, int_one)) == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *
queue_put_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *queue, *wake, *drop;
    Py_ssize_t capacity, batch;
    static char *kwlist[] = {"queue", "capacity", "batch", "wake", "drop", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnnOO:QueuePut", kwlist, &queue, &capacity,
                                     &batch, &wake, &drop)) {
        return NULL;
    }
    PyObject *append = PyObject_GetAttrString(queue, "append");
    if (append == NULL) {
        return NULL;
    }
    QueuePut *self = (QueuePut *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(append);
        return NULL;
    }
    self->vectorcall = queue_put_vectorcall;
    self->queue = Py_NewRef(queue);
    self->append = append;
    self->wake = Py_NewRef(wake);
    self->drop = Py_NewRef(drop);
    self->capacity = capacity;
    self->batch = batch;
    return (PyObject *)self;
}

static int
queue_put_traverse(QueuePut *self, visitproc visit, void *arg)
{
    Py_VISIT(self->queue);
    Py_VISIT(self->append);
    Py_VISIT(self->wake);
    Py_VISIT(self->drop);
    return 0;
}

static int
queue_put_clear(QueuePut *self)
{
    Py_CLEAR(self->queue);
    Py_CLEAR(self->append);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->drop);
    return 0;
}

static void
queue_put_dealloc(QueuePut *self)
{
    PyObject_GC_UnTrack(self);
    queue_put_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef queue_put_members[] = {
    {"capacity", Py_T_PYSSIZET, offsetof(QueuePut, capacity), 0,
     PyDoc_STR("Items the queue may hold (0: refuse every item).")},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject QueuePutType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "otelcost.costing._speedups.QueuePut",
    .tp_doc = PyDoc_STR("QueuePut(queue, capacity, batch, wake, drop)(item) -> bool: "
                        "BatchPipeline.put in C."),
    .tp_basicsize = sizeof(QueuePut),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = queue_put_new,
    .tp_members = queue_put_members,
    .tp_dealloc = (destructor)queue_put_dealloc,
    .tp_traverse = (traverseproc)queue_put_traverse,
    .tp_clear = (inquiry)queue_put_clear,
    .tp_vectorcall_offset = offsetof(QueuePut, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* -- InMemoryCostExporter's rows --------------------------------------------------------- */

/* Add `by` to counts[index] (a list of ints). */
static int
list_add(PyObject *counts, Py_ssize_t index, PyObject *by)
{
    PyObject *sum = PyNumber_Add(PyList_GET_ITEM(counts, index), by);
    if (sum == NULL) {
        return -1;
    }
    return PyList_SetItem(counts, index, sum);
}

/* memory_rows(costs, totals, SpanContext): otelcost.exporters.memory._python_rows in C. The
 * costs' rows of plain values, ROW_WIDTH each, one after another in one tuple: one object
 * allocated per batch, not one per span (every container allocated counts towards the
 * collector's next young collection, untracked or not). The tuple is left untracked when
 * it holds nothing tracked (a full collection never walks it); and every cost is added to
 * totals[(service, operation)], a list [spans, errors, nanos]. Consecutive costs of one
 * Named share one lookup. */
#define ROW_WIDTH 15
static PyObject *
memory_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyDict_CheckExact(args[1]) || !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "memory_rows(costs, totals: dict, context_type)");
        return NULL;
    }
    PyObject *totals = args[1];
    PyObject *context_type = args[2];
    PyObject *seq = PySequence_Fast(args[0], "costs must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *rows = PyTuple_New(n * ROW_WIDTH);
    int plain = 1;
    /* The last Named and Binding seen, and what was read from them (borrowed from them:
     * the costs hold both alive until the end). */
    PyObject *last_named = NULL, *last_binding = NULL, *counts = NULL;
    PyObject *named_values = NULL, *snap_values = NULL; /* (service, operation, v, env) */
    PyObject *trace_id = NULL, *span_id = NULL;
    if (rows == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *cost = items[i];
        if (!PyTuple_Check(cost) || PyTuple_GET_SIZE(cost) != 10) { /* or a SpanCost */
            PyErr_SetString(PyExc_TypeError, "a cost is a tuple of 10");
            goto error;
        }
        PyObject *named = PyTuple_GET_ITEM(cost, 0), *binding = PyTuple_GET_ITEM(cost, 1);
        PyObject *nanos = PyTuple_GET_ITEM(cost, 2), *usage = PyTuple_GET_ITEM(cost, 5);
        PyObject *error = PyTuple_GET_ITEM(cost, 6), *ctx = PyTuple_GET_ITEM(cost, 9);
        if (named != last_named) {
            PyObject *service = NULL, *operation = NULL, *deploy = NULL, *key = NULL;
            Py_CLEAR(named_values);
            if ((service = PyObject_GetAttr(named, s_service)) != NULL &&
                (operation = PyObject_GetAttr(named, s_operation)) != NULL &&
                (deploy = PyObject_GetAttr(named, s_deploy)) != NULL) {
                if (!PyTuple_CheckExact(deploy) || PyTuple_GET_SIZE(deploy) != 2) {
                    PyErr_SetString(PyExc_TypeError, "Named.deploy is a pair");
                }
                else {
                    named_values = PyTuple_Pack(4, service, operation,
                                                PyTuple_GET_ITEM(deploy, 0),
                                                PyTuple_GET_ITEM(deploy, 1));
                    key = PyTuple_Pack(2, service, operation);
                }
            }
            Py_XDECREF(service);
            Py_XDECREF(operation);
            Py_XDECREF(deploy);
            if (named_values == NULL || key == NULL) {
                Py_XDECREF(key);
                goto error;
            }
            counts = PyDict_GetItemWithError(totals, key); /* borrowed: totals keeps it */
            if (counts == NULL && !PyErr_Occurred()) {
                counts = Py_BuildValue("[iii]", 0, 0, 0);
                if (counts != NULL) {
                    int set = PyDict_SetItem(totals, key, counts);
                    Py_DECREF(counts);
                    if (set < 0) {
                        counts = NULL;
                    }
                }
            }
            Py_DECREF(key);
            if (counts == NULL) {
                goto error;
            }
            if (!PyList_CheckExact(counts) || PyList_GET_SIZE(counts) != 3) {
                PyErr_SetString(PyExc_TypeError, "a total is a list of 3");
                goto error;
            }
            last_named = named;
        }
        if (binding != last_binding) {
            PyObject *snap = PyObject_GetAttr(binding, s_snapshot);
            Py_CLEAR(snap_values);
            if (snap != NULL) {
                PyObject *currency = PyObject_GetAttr(snap, s_currency);
                PyObject *region = currency ? PyObject_GetAttr(snap, s_region) : NULL;
                PyObject *version = region ? PyObject_GetAttr(snap, s_version) : NULL;
                if (version != NULL) {
                    snap_values = PyTuple_Pack(3, currency, region, version);
                }
                Py_XDECREF(currency);
                Py_XDECREF(region);
                Py_XDECREF(version);
                Py_DECREF(snap);
            }
            if (snap_values == NULL) {
                goto error;
            }
            last_binding = binding;
        }
        /* The compiled planner's (trace_id, span_id) and the SDK's SpanContext start with
         * the ids; another span context has them as attributes (stream._costs.span_ids). */
        if ((PyTuple_CheckExact(ctx) || (PyObject *)Py_TYPE(ctx) == context_type) &&
            PyTuple_GET_SIZE(ctx) >= 2) {
            trace_id = Py_NewRef(PyTuple_GET_ITEM(ctx, 0));
            span_id = Py_NewRef(PyTuple_GET_ITEM(ctx, 1));
        }
        else if ((trace_id = PyObject_GetAttr(ctx, s_trace_id)) == NULL ||
                 (span_id = PyObject_GetAttr(ctx, s_span_id)) == NULL) {
            goto error;
        }
        int has_usage = PyObject_IsTrue(usage);
        if (has_usage < 0) {
            goto error;
        }
        PyObject *values[ROW_WIDTH] = {
            trace_id,
            span_id,
            PyTuple_GET_ITEM(named_values, 0),
            PyTuple_GET_ITEM(named_values, 1),
            nanos,
            PyTuple_GET_ITEM(snap_values, 0),
            PyTuple_GET_ITEM(cost, 3), /* duration_ms */
            PyTuple_GET_ITEM(cost, 4), /* end_ms */
            PyTuple_GET_ITEM(snap_values, 1),
            PyTuple_GET_ITEM(snap_values, 2),
            has_usage ? usage : Py_None,
            error,
            PyTuple_GET_ITEM(cost, 7), /* entry */
            PyTuple_GET_ITEM(named_values, 2),
            PyTuple_GET_ITEM(named_values, 3),
        };
        for (int j = 0; j < ROW_WIDTH; j++) {
            PyObject *v = values[j];
            if (PyObject_IS_GC(v) && PyObject_GC_IsTracked(v)) {
                plain = 0;
            }
            PyTuple_SET_ITEM(rows, i * ROW_WIDTH + j, Py_NewRef(v));
        }
        Py_CLEAR(trace_id);
        Py_CLEAR(span_id);
        if (list_add(counts, 0, int_one) < 0 ||
            (error != Py_None && list_add(counts, 1, int_one) < 0) ||
            list_add(counts, 2, nanos) < 0) {
            goto error;
        }
    }
    Py_DECREF(seq);
    Py_XDECREF(named_values);
    Py_XDECREF(snap_values);
    if (plain) {
        PyObject_GC_UnTrack(rows);
    }
    return rows;
error:
    Py_DECREF(seq);
    Py_XDECREF(rows);
    Py_XDECREF(named_values);
    Py_XDECREF(snap_values);
    Py_XDECREF(trace_id);
    Py_XDECREF(span_id);
    return NULL;
}

static PyMethodDef speedups_methods[] = {
    {"snapshot", snapshot, METH_O,
     PyDoc_STR("snapshot(totals): a copy of a totals dict, each Cell read as its pair.")},
    {"memory_rows", (PyCFunction)(void (*)(void))memory_rows, METH_FASTCALL,
     PyDoc_STR("memory_rows(costs, totals, context_type): InMemoryCostExporter's rows of the "
               "costs in one flat tuple, their totals added.")},
    {NULL, NULL, 0, NULL},
};

/* -- the module -------------------------------------------------------------------------- */

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "otelcost.costing._speedups",
    .m_doc = PyDoc_STR("The ending hook's planned path and the server path rule in C "
                       "(optional; see otelcost.costing.processor and .operation)."),
    .m_size = -1,
    .m_methods = speedups_methods,
};

#define INTERN(var, text)                                                                  \
    if ((var = PyUnicode_InternFromString(text)) == NULL) {                                \
        return NULL;                                                                       \
    }

PyMODINIT_FUNC
PyInit__speedups(void)
{
    INTERN(s_live, "live");
    INTERN(s_held, "held");
    INTERN(s__attributes, "_attributes");
    INTERN(s__dict, "_dict");
    INTERN(s__shapes, "_shapes");
    INTERN(s_plain, "plain");
    INTERN(s_resource, "resource");
    INTERN(s__resource, "_resource");
    INTERN(s_kind, "kind");
    INTERN(s__kind, "_kind");
    INTERN(s_reader, "reader");
    INTERN(s_keys, "keys");
    INTERN(s_memo, "memo");
    INTERN(s_by_name, "by_name");
    INTERN(s__name, "_name");
    INTERN(s_binding, "binding");
    INTERN(s__parent, "_parent");
    INTERN(s_is_remote, "is_remote");
    INTERN(s_entry_kind, "entry_kind");
    INTERN(s__start_time, "_start_time");
    INTERN(s__end_time, "_end_time");
    INTERN(s_flat_nanos, "flat_nanos");
    INTERN(s_cost_duration_ms, "cost.duration_ms");
    INTERN(s_cost_amount, "cost.amount");
    INTERN(s_local, "local");
    INTERN(s_totals, "totals");
    INTERN(s_not_billable, "not_billable");
    INTERN(s__queue_records, "_queue_records");
    INTERN(s__put_cost, "_put_cost");
    INTERN(s__context, "_context");
    INTERN(s__pricing_in_hook, "_pricing_in_hook");
    INTERN(s__price_in_place, "_price_in_place");
    INTERN(s__pricing_error, "_pricing_error");
    INTERN(s__hook_error, "_hook_error");
    INTERN(s_get, "get");
    INTERN(s_snapshot, "snapshot");
    INTERN(s_nested, "nested");
    INTERN(s_entry_plan, "entry_plan");
    INTERN(s_nested_plan, "nested_plan");
    INTERN(s_path_rule, "path_rule");
    INTERN(s_next, "next");
    INTERN(s__by_path, "_by_path");
    INTERN(s__rules, "_rules");
    INTERN(s__normalize, "_normalize");
    INTERN(s_service, "service");
    INTERN(s_by_path, "by_path");
    INTERN(s_on_start, "on_start");
    INTERN(s_on_end, "on_end");
    INTERN(s__shutdown, "_shutdown");
    INTERN(s__forward_error, "_forward_error");
    INTERN(s_cost_source, "cost.source");
    INTERN(s_operation, "operation");
    INTERN(s_deploy, "deploy");
    INTERN(s_currency, "currency");
    INTERN(s_region, "region");
    INTERN(s_version, "version");
    INTERN(s_trace_id, "trace_id");
    INTERN(s_span_id, "span_id");
    if ((int_zero = PyLong_FromLong(0)) == NULL || (int_one = PyLong_FromLong(1)) == NULL) {
        return NULL;
    }
    if (PyType_Ready(&PlannerType) < 0 || PyType_Ready(&EndingHookType) < 0 ||
        PyType_Ready(&ForwarderType) < 0 || PyType_Ready(&QueuePutType) < 0 ||
        PyType_Ready(&ServerRuleType) < 0 || PyType_Ready(&CellType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Planner", (PyObject *)&PlannerType) < 0 ||
        PyModule_AddObjectRef(module, "EndingHook", (PyObject *)&EndingHookType) < 0 ||
        PyModule_AddObjectRef(module, "Forwarder", (PyObject *)&ForwarderType) < 0 ||
        PyModule_AddObjectRef(module, "QueuePut", (PyObject *)&QueuePutType) < 0 ||
        PyModule_AddObjectRef(module, "ServerRule", (PyObject *)&ServerRuleType) < 0 ||
        PyModule_AddObjectRef(module, "Cell", (PyObject *)&CellType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
