/*
 * enroll: one gateway worker's request handling.
 *
 * A worker owns its store connection and its policy state and shares the
 * read-only config and the (thread-safe) backends. worker_handle takes one
 * request frame from an authenticated CURVE key and produces the reply frame:
 * enrollment, renewal or check-in, with the write-ahead job protocol
 * described in DESIGN.md (admit durably, then issue, then finish).
 */
#ifndef FG_ENROLL_H
#define FG_ENROLL_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "backend.h"

struct worker;
struct policy;

struct worker *worker_new(const struct gw_config *cfg, struct backends *bs, int index,
			  char *err, size_t errlen);
void worker_free(struct worker *w);

/* Replace the worker's policy with p (taken over) and free the old one.
 * Only the worker's own thread calls it, between requests. */
void worker_set_policy(struct worker *w, struct policy *p);

/* Handle one request. curve_key is the Z85 key from ZAP. On return *reply
 * (malloc'd, caller frees) is the frame to send back, or NULL when the frame
 * is to be dropped without answer. */
/* Ask the backends again about pending jobs whose retry time has come,
 * so that a certificate is ready (stored with the job) even while its
 * device is away. The number of jobs polled, or -1. */
int worker_poll_due(struct worker *w);

void worker_handle(struct worker *w, const char *curve_key, const uint8_t *req, size_t len,
		   uint8_t **reply, size_t *reply_len);

#endif
