/* nb_rt: an API's route table: METHOD + path template -> user data.
 *
 * Templates: literal segments, "{name}" (one whole segment) and a final greedy "{name+}" that
 * takes one or more remaining segments (AWS API Gateway's syntax). Method is an HTTP token in
 * upper case or "ANY". Precedence, AWS's: for a given path the most specific route wins,
 * compared segment by segment from the left: a literal beats "{name}", which beats "{name+}";
 * on equal paths an exact method beats ANY. Two routes conflict (409) when they have the same
 * method and the same shape (same literals, parameters in the same places, whatever their
 * names).
 *
 * Matching works on the raw path (as received, without the query); parameter values are
 * percent-decoded into the match. A path that matches some route's template but none with its
 * method answers NB_RT_METHOD (405) with the allowed methods.
 *
 * Ownership: the table copies the strings it is given; ud is the caller's. A built table is
 * read-only: any number of threads may match against it at once; building it (add) is one
 * thread's job, before it is shared. */
#ifndef NB_ROUTES_H
#define NB_ROUTES_H

#include "base/err.h"

#include <stddef.h>

#define NB_RT_MAX_PARAMS   16
#define NB_RT_MAX_SEGMENTS 64

typedef struct nb_rt nb_rt;

typedef struct nb_rt_param {
    const char *name; /* the table's copy, NUL-terminated */
    char *value;      /* decoded, NUL-terminated, owned by the match (nb_rt_match_clear) */
    size_t value_len;
} nb_rt_param;

typedef struct nb_rt_match {
    void *ud;
    const char *route_key; /* "GET /users/{id}" (the table's copy) */
    int nparams;
    nb_rt_param params[NB_RT_MAX_PARAMS];
    char allow[128]; /* NB_RT_METHOD: "GET, POST" */
} nb_rt_match;

enum { NB_RT_NONE = 0, NB_RT_FOUND = 1, NB_RT_METHOD = 2 };

nb_rt *nb_rt_new(void);
void nb_rt_free(nb_rt *t);
/* 0, or -1 with err: 400 invalid_value (bad method or template: not starting with '/', empty or
 * duplicate parameter names, greedy not last, '{' inside a literal, over the limits) or 409
 * conflict (naming the existing route). */
int nb_rt_add(nb_rt *t, const char *method, const char *path, void *ud, nb_err *err);
/* Validates a template and method without a table (the admin API's check); same errors. */
int nb_rt_check(const char *method, const char *path, nb_err *err);
/* NB_RT_FOUND (m filled), NB_RT_METHOD (m->allow filled) or NB_RT_NONE. A path that is not
 * valid (does not start with '/', bad percent-encoding) is NB_RT_NONE. */
/* (Named lookup, not match: nb_rt_match is the result's type, and C gives typedefs and
 * functions one namespace.) */
int nb_rt_lookup(const nb_rt *t, const char *method, size_t method_len, const char *path,
                 size_t path_len, nb_rt_match *m);
void nb_rt_match_clear(nb_rt_match *m);

#endif
