/* nb_prom: a reader of the Prometheus text exposition format, enough for `nimbus top` to read
 * the daemon's /metrics: one sample line as its metric name, labels and value.
 *
 * Pure: no I/O, no allocation; the sample is filled in place (names and values copied into its
 * fixed buffers, escapes \\ \" \n undone). Any thread. */
#ifndef NB_PROM_H
#define NB_PROM_H

#include <stddef.h>

#define NB_PROM_MAX_LABELS 8
#define NB_PROM_NAME_MAX   128
#define NB_PROM_VALUE_MAX  256

typedef struct nb_prom_sample {
    char name[NB_PROM_NAME_MAX];
    int nlabels;
    char label_names[NB_PROM_MAX_LABELS][NB_PROM_NAME_MAX];
    char label_values[NB_PROM_MAX_LABELS][NB_PROM_VALUE_MAX];
    double value; /* NaN, +Inf and -Inf as the text says */
} nb_prom_sample;

/* Parses one line (without its newline). 1: a sample; 0: nothing to read (blank, # HELP,
 * # TYPE, any comment); -1: not a sample line (malformed, or over the sample's limits). A
 * timestamp after the value is accepted and ignored. */
int nb_prom_parse_line(const char *line, size_t len, nb_prom_sample *out);

/* The value of label name, or NULL. */
const char *nb_prom_label(const nb_prom_sample *s, const char *name);

#endif
