#include "base/log.h"

#include "base/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static enum nb_log_level threshold = NB_LOG_INFO;
static const char *names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

void nb_log_init(void)
{
    const char *v = getenv("NIMBUS_LOG_LEVEL");
    if (!v) return;
    for (int i = 0; i < 4; i++)
        if (strncasecmp(v, names[i], strlen(v)) == 0) threshold = (enum nb_log_level)i;
}

int nb_log_enabled(enum nb_log_level level)
{
    return level >= threshold;
}

void nb_log(enum nb_log_level level, const char *module, const char *fmt, ...)
{
    if (level < threshold) return;
    char line[NB_LOG_LINE_MAX];
    char ts[32];
    nb_time_iso8601(nb_now_ms(), ts, sizeof ts);
    int n = snprintf(line, sizeof line, "%s %s %s: ", ts, names[level], module);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof line - 1) n = (int)sizeof line - 2;
    line[n++] = '\n';
    /* One write(2) per line so lines from different threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
