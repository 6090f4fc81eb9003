/*
 * challenge: the agent's side of ACME http-01 (RFC 8555 8.3) for names
 * that resolve to this device. When the gateway answers a request with
 * STATUS_PENDING and challenges, the agent serves each key authorization
 * at /.well-known/acme-challenge/<token>:
 *  - on acme_http01_listen (HOST:PORT), with a small HTTP server of its
 *    own (libevent's evhttp on a thread), started for the request and
 *    stopped when it ends; and/or
 *  - as files <acme_webroot>/.well-known/acme-challenge/<token> (0644)
 *    for a web server that already serves the name, removed when the
 *    request ends.
 * It then sends the same request again with the tokens it serves
 * (challenges_ready), which is what lets the gateway answer the CA.
 */
#ifndef FG_AGENT_CHALLENGE_H
#define FG_AGENT_CHALLENGE_H

#include <stddef.h>

#include "agent_config.h"
#include "fleetgate.pb-c.h"

struct chal_server;

/* A responder with nothing served. NULL when out of memory. */
struct chal_server *chal_new(void);

/* Frees c after chal_stop; c may be NULL. */
void chal_free(struct chal_server *c);

/*
 * Serve the http-01 challenges ch[0..n) as cfg says (listener, webroot or
 * both). Challenges already served are left alone. Returns the number of
 * tokens newly served (0: nothing new), or -1 with err (nothing
 * configured to serve them with, a malformed challenge, the address in
 * use, an unwritable webroot).
 */
int chal_serve(struct chal_server *c, const struct agent_config *cfg, const char *rid,
	       Fleetgate__Challenge *const *ch, size_t n, char *err, size_t errlen);

/* The tokens served now (borrowed, valid until the next call). */
char *const *chal_tokens(const struct chal_server *c, size_t *n);

/* The request ended: stop the listener, remove the files, forget the
 * tokens. Safe to call when nothing is served. */
void chal_stop(struct chal_server *c);

#endif
