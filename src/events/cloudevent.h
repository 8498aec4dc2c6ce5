/* nb_ce: CloudEvents 1.0 received over HTTP (binary, structured and batched modes) and made by
 * the platform (../shared/specs/cloudevents.md). Every event comes out in the JSON format's
 * structured form, so a function sees one shape whatever the sender chose.
 *
 * Pure functions of their inputs: no I/O, any thread. Returned json_t are new references owned
 * by the caller; inputs are only read. */
#ifndef NB_CLOUDEVENT_H
#define NB_CLOUDEVENT_H

#include "base/err.h"

#include <jansson.h>
#include <stddef.h>

#define NB_CE_MAX_BODY  (1u << 20) /* request body, any mode */
#define NB_CE_MAX_BATCH 100        /* events in one batch */
#define NB_CE_MAX_NAME  20         /* attribute name length */

/* One request header as received: name in any case, value raw (not NUL-terminated). */
typedef struct nb_ce_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} nb_ce_header;

/* The events of one HTTP request, as a JSON array (empty for an empty batch). The mode follows
 * content_type (NULL = absent):
 * - application/cloudevents-batch+json: body is an array of at most NB_CE_MAX_BATCH events;
 * - application/cloudevents+json: body is one event;
 * - anything else: binary mode. Attributes come from ce-* headers (names case-insensitive,
 *   values unquoted then percent-decoded and required to be UTF-8), content_type becomes
 *   datacontenttype, and a non-empty body becomes data: parsed JSON when the media type is
 *   JSON (ends in "/json" or "+json"), a string when it is a text type ("text/" prefix) and
 *   the bytes are UTF-8, else data_base64 (so no byte is ever lost).
 * Parameters of the content type (charset) are ignored. Each event is validated (see
 * nb_ce_validate) and attributes set to null are dropped, as the format says null = absent.
 * Errors: 400 invalid_value naming the event ("batch[2]: ...") and attribute; 400 invalid_json;
 * 413 payload_too_large over NB_CE_MAX_BODY; 415 bad_request for another cloudevents format
 * (application/cloudevents+xml). NULL with err then. */
json_t *nb_ce_from_http(const char *content_type, const nb_ce_header *headers, size_t nheaders,
                        const char *body, size_t len, nb_err *err);

/* Checks one event in structured form: specversion "1.0"; id, type non-empty strings; source a
 * non-empty URI-reference; datacontenttype and subject non-empty strings; dataschema an
 * absolute URI; time RFC 3339; every other member an extension named [a-z0-9]{1,20} holding a
 * string, boolean or 32-bit integer; not both data and data_base64, which must be base64.
 * Null members count as absent. 0, or -1 with a 400 err naming the attribute. */
int nb_ce_validate(const json_t *event, nb_err *err);

/* A platform-produced event: a fresh UUID when id is NULL, time = now (RFC 3339, ms, UTC),
 * specversion 1.0, datacontenttype application/json, subject omitted when NULL, data (copied)
 * omitted when NULL. source and type must be non-empty (else NULL). */
json_t *nb_ce_make(const char *id, const char *source, const char *type, const char *subject,
                   const json_t *data);

#endif
