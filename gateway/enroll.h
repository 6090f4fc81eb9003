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

/* The worker's store connection (borrowed), for a front-end on the
 * worker's thread that must look something up before the request. */
struct store *worker_store(struct worker *w);

/* Replace the worker's policy with p (taken over) and free the old one.
 * Only the worker's own thread calls it, between requests. */
void worker_set_policy(struct worker *w, struct policy *p);

/* Ask the backends again about pending jobs whose retry time has come,
 * so that a certificate is ready (stored with the job) even while its
 * device is away. The number of jobs polled, or -1. */
int worker_poll_due(struct worker *w);

/* Handle one request. curve_key is the Z85 key from ZAP. On return *reply
 * (malloc'd, caller frees) is the frame to send back, or NULL when the frame
 * is to be dropped without answer. */
void worker_handle(struct worker *w, const char *curve_key, const uint8_t *req, size_t len,
		   uint8_t **reply, size_t *reply_len);

/*
 * One enrollment or renewal, whichever front-end it came through: the
 * ZeroMQ path fills it from an EnrollRequest/RenewRequest and its ZAP key,
 * the EST front-end (est.h) from an HTTPS request. Both then run the same
 * code: job lookup by (key, request id), device and token admission,
 * policy, clamping, durable job, issue, store.
 */
struct Fleetgate__Facts;
struct enroll_req {
	const char *protocol;          /* req.protocol in the policy: "zmq", "est" */
	const char *key;               /* the identity: a Z85 CURVE key from ZAP, or an
					  "est:" identity (docs/est.md); 40 characters */
	const char *request_id;        /* with key, the job's key: a retry finds its job */
	int renew;                     /* 1: renewal of cur_cert */
	const char *slot;              /* the certificate slot (EST: the label) */
	const uint8_t *csr;            /* DER PKCS#10 */
	size_t csr_len;
	const char *token;             /* enrollment token, or NULL */
	int token_required;            /* enrollment needs a token even for a known key
					  (EST: the key is only the CSR's public key) */
	const struct Fleetgate__Facts *facts; /* NULL when the protocol has none */
	const uint8_t *cur_cert;       /* renewal: the certificate being renewed, DER */
	size_t cur_cert_len;
	const uint8_t *pop;            /* renewal: signature by cur_cert's key over
					  (request id, CSR); NULL when pop_by_tls */
	size_t pop_len;
	int pop_by_tls;                /* renewal: cur_cert's key was proven in the TLS
					  handshake (EST client certificate) */
	const char *profile;           /* profile when the policy names none, or NULL
					  for "default" (EST: the label's profile) */
};

/* Enroll or renew as r says. The reply frame (an Envelope with a CertReply
 * or ErrorReply, the same bytes a retry gets back from the job) lands in
 * *reply (malloc'd, caller frees; NULL when out of memory). Counted for
 * /metrics like a ZeroMQ request. */
void worker_enroll(struct worker *w, const struct enroll_req *r, uint8_t **reply,
		   size_t *reply_len);

#endif
