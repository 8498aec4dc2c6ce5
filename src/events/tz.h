/* nb_tz: time zones from the system tz database, read by us rather than through libc.
 *
 * libc's zone support (TZ + tzset + localtime) is process-global: one zone at a time, and
 * changing it races with every other thread. Schedules each name their own zone, so nb_tz
 * parses TZif files (RFC 8536, v1 to v4) itself: the 64-bit transition table, the local time
 * types, and the POSIX TZ footer that gives the rule for instants after the last transition.
 *
 * Ownership and threads: nb_tz_load/nb_tz_parse return a zone the caller frees with
 * nb_tz_free. A loaded zone is immutable, so any number of threads may query it at once.
 *
 * Policy for local wall-clock times that do not map to exactly one instant (nb_tz_local_to_utc):
 * - in a gap (the clock jumps forward, e.g. 02:30 on a spring-forward night) the time is
 *   shifted forward by the length of the gap (02:30 -> 03:30 new time), as cron
 *   implementations and EventBridge do: the job runs late rather than not at all;
 * - in an overlap (the clock falls back and a time happens twice) the first occurrence wins.
 *
 * Leap-second ("right/") zones are refused: their transition times are not POSIX seconds. */
#ifndef NB_TZ_H
#define NB_TZ_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

#define NB_TZ_DIR      "/usr/share/zoneinfo"
#define NB_TZ_NAME_MAX 128
#define NB_TZ_FILE_MAX (256u * 1024) /* real zones are under 4 KiB */

typedef struct nb_tz nb_tz;

/* Loads zone `name` ("Europe/Berlin", "UTC") from NB_TZ_DIR. "UTC" needs no file. A name with
 * "..", a leading '/', an empty component or characters outside [A-Za-z0-9_+-/] is refused
 * (400 invalid_value), as is an unknown zone. */
nb_tz *nb_tz_load(const char *name, nb_err *err);
/* Parses a TZif image from memory (the loader's back end; tests and the fuzzer use it). The
 * zone's name is `name` (copied, truncated to NB_TZ_NAME_MAX). */
nb_tz *nb_tz_parse(const void *data, size_t len, const char *name, nb_err *err);
void nb_tz_free(nb_tz *tz);

const char *nb_tz_name(const nb_tz *tz);
/* Seconds east of UTC in effect at the instant (Unix seconds). tz NULL means UTC. */
int nb_tz_offset(const nb_tz *tz, int64_t utc_s);
/* The smallest and largest offsets the zone ever uses (bounds for searches). */
void nb_tz_offset_range(const nb_tz *tz, int *min_off, int *max_off);
/* The instant of local wall-clock time y-mo-d h:mi:s in the zone, with the gap and overlap
 * policy above. Fields are not range-checked beyond what the arithmetic needs: day 32 is the
 * 1st of the next month. tz NULL means UTC. */
int64_t nb_tz_local_to_utc(const nb_tz *tz, int y, int mo, int d, int h, int mi, int s);

/* Calendar helpers (proleptic Gregorian, UTC), shared with nb_cron. */
int64_t nb_tz_days_from_civil(int64_t y, int mo, int d);
void nb_tz_civil_from_days(int64_t days, int64_t *y, int *mo, int *d);
int nb_tz_days_in_month(int64_t y, int mo);

#endif
