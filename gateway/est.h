/*
 * est: the EST front-end of fleetgated (RFC 7030, docs/est.md).
 *
 * HTTPS with libevent's evhttp over OpenSSL bufferevents, on threads of
 * its own (as many as the gateway has workers, each with its event_base,
 * all accepting on one socket), serving under /.well-known/est/[<label>/]:
 *
 *   GET  cacerts          the CA certificates of the label's profile backend,
 *                         application/pkcs7-mime (certs-only), base64
 *   GET  csrattrs         application/csrattrs, base64 (RFC 7030 4.5)
 *   POST simpleenroll     application/pkcs10, base64; HTTP Basic, password =
 *                         an enrollment token
 *   POST simplereenroll   the same, authenticated by the TLS client
 *                         certificate being renewed (RFC 7030 4.2.2)
 *
 * A request runs through the same enrollment core as the ZeroMQ path
 * (enroll.h, worker_enroll) with req.protocol = "est", on a worker of the
 * thread's own (its own store connection and policy state, refreshed from
 * the reload generation between requests).
 */
#ifndef FG_EST_H
#define FG_EST_H

#include <stddef.h>
#include "backend.h"
#include "config.h"
#include "policy_reload.h"

struct est;

/* Load the TLS certificate and key, bind cfg->est_listen and start the EST
 * threads. cfg, bs and pr must outlive the handle (pr may be NULL: no hot
 * reload). NULL with err (naming the file or address and what to do). The
 * threads block every signal. */
struct est *est_start(const struct gw_config *cfg, struct backends *bs, struct policy_reload *pr,
		      char *err, size_t errlen);

/* Stop the threads (requests in flight are dropped; their jobs are durable
 * and a retried request finds them), free everything. NULL is a no-op. */
void est_stop(struct est *e);

#endif
