/* nb_log: structured log lines on stderr.
 *
 *   2026-11-23T10:00:00.123Z INFO  instance: state starting -> idle fn=hello inst=i-3
 *
 * One line per event, a level, the module, a message, then key=value pairs. Thread-safe: each
 * line is formatted into a stack buffer and written with a single write(2). Lines longer than
 * NB_LOG_LINE_MAX are truncated. The level threshold is read once from NIMBUS_LOG_LEVEL
 * (debug|info|warn|error, default info). */
#ifndef NB_LOG_H
#define NB_LOG_H

enum nb_log_level { NB_LOG_DEBUG, NB_LOG_INFO, NB_LOG_WARN, NB_LOG_ERROR };

#define NB_LOG_LINE_MAX 2048

void nb_log_init(void);
int nb_log_enabled(enum nb_log_level level);
void nb_log(enum nb_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define nb_debug(mod, ...)                                                                         \
    (nb_log_enabled(NB_LOG_DEBUG) ? nb_log(NB_LOG_DEBUG, mod, __VA_ARGS__) : (void)0)
#define nb_info(mod, ...)  nb_log(NB_LOG_INFO, mod, __VA_ARGS__)
#define nb_warn(mod, ...)  nb_log(NB_LOG_WARN, mod, __VA_ARGS__)
#define nb_error(mod, ...) nb_log(NB_LOG_ERROR, mod, __VA_ARGS__)

#endif
