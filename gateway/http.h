/*
 * http: the HTTP side of fleetgated (docs/http.md).
 *
 * libevent's evhttp on a thread and event_base of its own, with a store
 * connection of its own, serving:
 *
 *   GET  /healthz                 200 "ok" when the store answers, else 503
 *   GET  /metrics                 Prometheus text: stats.h counters and gauges
 *                                 computed from the store at scrape time
 *   GET  /ca/<backend>.crt        the backend's CA certificates, PEM
 *   GET  /crl/<backend>.crl       the backend's published CRL, DER
 *   POST /ocsp                    OCSP (RFC 6960), application/ocsp-request
 *   GET  /ocsp/<base64 request>   OCSP by GET (RFC 6960 appendix A.1)
 *
 * A timer on the same thread keeps the published CRLs fresh (crl.h). Plain
 * HTTP: CRLs and OCSP answers are signed, the rest is public or local.
 */
#ifndef FG_HTTP_H
#define FG_HTTP_H

#include <stddef.h>
#include "backend.h"
#include "config.h"

struct http;

/* Bind cfg->http_listen and start the HTTP thread. cfg and bs must outlive
 * the handle. NULL with err (naming the address and what to do) when it
 * cannot listen. The thread blocks every signal: the main thread's
 * signalfd gets them. */
struct http *http_start(const struct gw_config *cfg, struct backends *bs, char *err, size_t errlen);

/* Stop the thread (requests in flight are dropped), free everything.
 * NULL is a no-op. */
void http_stop(struct http *h);

#endif
