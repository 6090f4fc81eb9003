/*
 * slot: one certificate slot of the agent: its installed key and
 * certificate, when to renew, the request in flight, and the atomic install
 * with reload hook and rollback.
 *
 * A request in flight is kept on disk before it is sent: the new key in
 * <state_dir>/<slot>.key.new (0600) and "<request id> <kind>" in
 * <state_dir>/<slot>.pending. A retry after a timeout, a crash or a PENDING
 * answer reuses both, so the gateway (which keys jobs by request id) answers
 * with the same certificate, and the certificate always matches a key the
 * agent holds. Both files go once the certificate is installed or the
 * gateway refused for good.
 */
#ifndef FG_SLOT_H
#define FG_SLOT_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "agent_config.h"
#include "facts.h"
#include "fg_bundle.h"
#include "fleetgate.pb-c.h"

/* The installed certificate and key of a slot: 1 when both are there, read
 * and match, 0 when not (nothing installed, or a half-finished install). */
int slot_installed(const struct agent_slot *s, X509 **cert, EVP_PKEY **key);

/* When the certificate is due for renewal: at renew_at of its lifetime,
 * minus a jitter of up to 5% of the lifetime that is fixed per certificate
 * (so repeated runs agree), never later than an hour (or a tenth of the
 * lifetime, if less) before expiry. */
int64_t slot_renew_due(const struct agent_slot *s, X509 *cert);

/* 1 when a request of this slot is in flight (pending files exist). */
int slot_has_pending(const struct agent_config *cfg, const struct agent_slot *s);

struct slot_request {
	char rid[65];
	int renew;
	EVP_PKEY *key;          /* the new key */
	uint8_t *buf;           /* packed Envelope */
	size_t len;
};
void slot_request_clear(struct slot_request *r);

/* Build (or resume) the request for the slot: enroll, or renew when renew
 * is set and a certificate is installed. */
int slot_request_build(const struct agent_config *cfg, const struct agent_slot *s, int renew,
		       const struct fg_bundle *b, const struct agent_facts *f,
		       struct slot_request *r, char *err, size_t errlen);

/* Drop the in-flight request (after a final refusal). */
void slot_request_forget(const struct agent_config *cfg, const struct agent_slot *s);

/* Check the reply's certificate (matches the new key, chains to the
 * anchors) and install key, certificate and chain atomically; run the
 * reload hook; on any failure put the previous files back (and run the hook
 * again). 0, or -1 with err; nothing broken is ever left in place. */
int slot_install(const struct agent_config *cfg, const struct agent_slot *s,
		 const struct slot_request *r, const Fleetgate__CertReply *cr,
		 const char *anchors_pem, char *err, size_t errlen);

/* Run a reload command with /bin/sh -c and FLEETGATE_* in the environment;
 * returns its exit status (0 = success) or -1. */
int slot_run_hook(const struct agent_slot *s, char *err, size_t errlen);

#endif
