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

/* How long a reload hook may run before it is killed (and counts as failed). */
#define SLOT_HOOK_TIMEOUT 120

/* The installed certificate and key of a slot: 1 when both are there, read
 * and match, 0 when not (nothing installed, or a half-finished install).
 * When 1, *cert and *key (if non-NULL) get new references the caller frees. */
int slot_installed(const struct agent_slot *s, X509 **cert, EVP_PKEY **key);

/* When the certificate is due for renewal (Unix seconds): at renew_at of
 * its lifetime, minus a jitter of up to 5% of the lifetime that is fixed per
 * certificate (derived from its serial, so repeated runs agree and a fleet
 * spreads out), never later than an hour (or a tenth of the lifetime, if
 * less) before expiry. 0 when the certificate cannot be read. */
int64_t slot_renew_due(const struct agent_slot *s, X509 *cert);

/* What a slot needs now. */
enum slot_action {
	SLOT_VALID,      /* certificate installed and not yet due */
	SLOT_ENROLL,     /* nothing usable installed, or expired: enroll */
	SLOT_RENEW,      /* due (or forced): renew with proof of possession */
	SLOT_RESUME,     /* a request is in flight on disk: send it again */
	SLOT_ACTION_MAX
};

/* Decide for slot s at time now (force: renew even if not due). *due and
 * *not_after (may be NULL) get the installed certificate's renewal time and
 * expiry, or 0 when none is installed. */
/* A renewal window from a check-in answer for s's installed certificate
 * (serial_hex): kept when it names that certificate and differs from the
 * one kept. 1 kept (the schedule changed), 0 nothing to do. */
int slot_window_update(const struct agent_config *cfg, const struct agent_slot *s,
		       const char *serial_hex, int64_t start, int64_t end, const char *rid);
enum slot_action slot_decide(const struct agent_config *cfg, const struct agent_slot *s,
			     int64_t now, int force, int64_t *due, int64_t *not_after);

/* 1 when a request of this slot is in flight (pending files exist). */
int slot_has_pending(const struct agent_config *cfg, const struct agent_slot *s);

struct slot_request {
	char rid[65];           /* request id, reused on every retry */
	int renew;              /* 1 renewal, 0 enrollment */
	EVP_PKEY *key;          /* the new key (owned) */
	int resubmits;          /* CSRs rebuilt from a gateway template */
	uint8_t *buf;           /* packed Envelope (owned) */
	size_t len;
};
/* Free what r owns and zero it; safe on a zeroed or cleared r. */
void slot_request_clear(struct slot_request *r);

/* Build (or resume, when pending files exist) the request for slot s: an
 * enrollment, or a renewal when renew is set and a certificate is installed.
 * A fresh request generates the key and writes the pending files before it
 * returns. 0, or -1 with err (r is then empty). */
int slot_request_build(const struct agent_config *cfg, const struct agent_slot *s, int renew,
		       const struct fg_bundle *b, const struct agent_facts *f,
		       struct slot_request *r, char *err, size_t errlen);

/* Rebuild r's CSR (same key, same request id) from the template the
 * gateway sent with STATUS_RESUBMIT, and re-pack the request. 0, or -1. */
int slot_request_resubmit(const struct agent_config *cfg, const struct agent_slot *s,
			  const struct fg_bundle *b, const struct agent_facts *f,
			  struct slot_request *r, const Fleetgate__CsrTemplate *tpl, char *err,
			  size_t errlen);

/* Re-pack r with the ACME challenge tokens this device serves
 * (challenges_ready), the acknowledgement the gateway waits for. 0 or -1. */
int slot_request_set_ready(struct slot_request *r, char *const *tokens, size_t n);

/* The CA made the key (EST serverkeygen): decrypt the reply's
 * encrypted_key (CMS EnvelopedData of a PKCS#8 key, encrypted to r's
 * request key) and make it r->key, for slot_install. The request key stays
 * in the pending state, so a retried request id decrypts the same stored
 * reply again. 0, or -1 with err (r unchanged). */
int slot_request_take_server_key(struct slot_request *r, const Fleetgate__CertReply *cr, char *err,
				 size_t errlen);

/* Drop the in-flight request (after a final refusal). */
void slot_request_forget(const struct agent_config *cfg, const struct agent_slot *s);

/*
 * Check the reply's certificate (it matches the new key and chains to the
 * anchors; else nothing is touched), keep the installed files as
 * <path>.prev, install key (slot mode and owner), certificate and chain
 * (0644) atomically, and run the reload hook. When a write or the hook
 * fails, the previous files are put back atomically and the hook runs again.
 * On success the pending files go. 0, or -1 with err.
 */
int slot_install(const struct agent_config *cfg, const struct agent_slot *s,
		 const struct slot_request *r, const Fleetgate__CertReply *cr,
		 const char *anchors_pem, char *err, size_t errlen);

/* Runs slot s's reload command; slot_run_hook's contract, with a context. */
typedef int (*slot_hook_fn)(void *arg, const struct agent_slot *s, int timeout_s, char *err,
			    size_t errlen);

/* slot_install, with the reload command (and its rerun after a rollback)
 * run through hook(hook_arg, ...) rather than in this process: the
 * sandboxed agent passes hookproc_run (hookproc.h). hook NULL is
 * slot_install. */
int slot_install_hooked(const struct agent_config *cfg, const struct agent_slot *s,
			const struct slot_request *r, const Fleetgate__CertReply *cr,
			const char *anchors_pem, slot_hook_fn hook, void *hook_arg, char *err,
			size_t errlen);

/* Run the slot's reload command (if any) with /bin/sh -c, FLEETGATE_SLOT,
 * FLEETGATE_CERT, FLEETGATE_KEY and FLEETGATE_CHAIN in its environment and
 * default signal handling, in its own process group; killed after
 * timeout_s seconds. 0 when it exits 0, else -1 with err saying how it
 * ended. */
int slot_run_hook(const struct agent_slot *s, int timeout_s, char *err, size_t errlen);

#endif
