/* fuzz_est: the EST backend half (fuzz_est_backend.c), a translation unit of
 * its own because it compiles plugins/est/est.c in, whose names clash with
 * the front-end's. */
#ifndef FUZZ_EST_H
#define FUZZ_EST_H

#include <stddef.h>
#include <stdint.h>

int fuzz_est_backend_init(void);
/* ctype: the Content-Type of the answer; body: the answer. */
void fuzz_est_backend(const char *ctype, const uint8_t *body, size_t n);

#endif
