/* nb_pat: content filters for events, EventBridge event patterns and SNS filter policies.
 *
 * A pattern is a JSON object mirroring the event: keys name fields, nested objects reach into
 * nested objects of the event, and each leaf is an array of matchers. The event matches when
 * every key matches (AND); a leaf matches when any of its matchers does (OR). Matchers:
 *   "s" 5 true null               exact value (numbers compared numerically: 5 matches 5.0)
 *   {"prefix": "s"}               string starts with s
 *   {"suffix": "s"}               string ends with s
 *   {"equals-ignore-case": "s"}   string equal to s, ASCII case folded
 *   {"anything-but": v | [v...] | {"prefix": "s"} | {"suffix": "s"}}
 *                                 a present scalar that is none of the values (or, for the
 *                                 object forms, a string without that prefix / suffix)
 *   {"numeric": [">", 0, "<=", 5]} a number within one or two bounds (= < <= > >=; with two,
 *                                 a lower bound then an upper one)
 *   {"exists": true | false}      the field is present (any value) / absent
 * When the event's field is an array, the leaf matches when any element does, and a nested
 * pattern matches when any object element satisfies all of it. Only exists sees objects.
 *
 * A filter policy (SNS) is the flat form over message attributes: attribute -> array of the
 * same matchers, matched against an object whose values are strings. Numbers travel as
 * strings there, so a number literal or a numeric matcher matches a string that is wholly a
 * JSON-style number ("10", "-2.5e3"), never one that merely starts like one ("10 apples").
 *
 * Limits: NB_PAT_MAX_BYTES of pattern text, NB_PAT_MAX_DEPTH levels of keys, NB_PAT_MAX_MATCHERS
 * matchers in all (each value of an anything-but list counts). Compile errors are 400
 * invalid_value (invalid_json for unparsable text) naming the path, e.g.
 * "pattern: detail.state[1]: unknown operator \"prefx\"".
 *
 * Ownership and threads: a compiled nb_pat is immutable and owns all its memory (nothing points
 * into the text it was compiled from); any number of threads may match with it at once. Matching
 * only reads the event and allocates nothing. */
#ifndef NB_PATTERN_H
#define NB_PATTERN_H

#include "base/err.h"

#include <jansson.h>
#include <stddef.h>

#define NB_PAT_MAX_BYTES    8192
#define NB_PAT_MAX_DEPTH    10
#define NB_PAT_MAX_MATCHERS 100

typedef struct nb_pat nb_pat;

/* Compiles an event pattern from json[0..len) (no NUL needed). NULL with err on error. An empty
 * top-level object is allowed and matches every event. */
nb_pat *nb_pat_compile(const char *json, size_t len, nb_err *err);

/* Compiles an SNS filter policy: like a pattern but flat (a nested object is an error). */
nb_pat *nb_pat_compile_filter_policy(const char *json, size_t len, nb_err *err);

/* 1 when the event matches, else 0. A non-object event has no fields (only exists:false
 * leaves can match it). Works with either kind of compiled pattern. */
int nb_pat_match(const nb_pat *p, const json_t *event);

/* 1 when the message attributes match, else 0: like nb_pat_match, except that string values
 * that are wholly numbers also match number literals and numeric matchers. */
int nb_pat_match_attrs(const nb_pat *p, const json_t *attrs);

void nb_pat_free(nb_pat *p);

#endif
