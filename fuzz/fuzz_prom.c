/* nb_prom_parse_line on arbitrary bytes: never reads past the line, never overflows the sample's
 * buffers, and a sample it returns has a valid metric name. */
#include "cli/prom.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nb_prom_sample s;
    /* A copy without a terminator: a read past the end is a sanitizer error. */
    char *line = malloc(size ? size : 1);
    if (!line) return 0;
    if (size) memcpy(line, data, size);
    int rc = nb_prom_parse_line(line, size, &s);
    if (rc == 1) {
        if (!s.name[0] || s.nlabels < 0 || s.nlabels > NB_PROM_MAX_LABELS) abort();
        for (int i = 0; i < s.nlabels; i++)
            if (nb_prom_label(&s, s.label_names[i]) == NULL) abort();
    }
    free(line);
    return 0;
}
