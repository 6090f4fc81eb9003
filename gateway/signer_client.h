/*
 * signer_client: the daemon's side of the signer process (signer.h).
 *
 * signer_client_start forks a small monitor process before the daemon
 * starts any thread or touches the network. The monitor keeps the
 * privileges fleetgated was started with (so that it can start a signer
 * that reads the CA key again), holds no key and no network socket, and
 * does one thing: it starts a signer, hands the daemon its socket over a
 * control socket (SCM_RIGHTS), waits for it to die, and starts the next
 * one with backoff. When signers keep dying (or fail at start with a
 * configuration problem) the monitor gives up and exits; the daemon then
 * says so and stops with a non-zero status. Both the monitor and the
 * signer die with the daemon (PR_SET_PDEATHSIG).
 *
 * Requests go one at a time over the current socket (a mutex); a request
 * while the signer is down fails at once with "unavailable", which the
 * callers treat as a transient error (the job stays and is retried).
 */
#ifndef FG_SIGNER_CLIENT_H
#define FG_SIGNER_CLIENT_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"

struct signer_client;

/* Start the monitor and wait (up to 10 s) for the first signer; no thread
 * is started (signer_client_watch does that). flags are signer_spawn's.
 * NULL with err on failure. */
struct signer_client *signer_client_start(const struct gw_config *cfg, unsigned flags, char *err,
					  size_t errlen);

/* Start the thread that takes over the signers the monitor starts after
 * the first (call once the daemon is confined). 0, or -1 with err. */
int signer_client_watch(struct signer_client *sc, char *err, size_t errlen);

/* Close the control socket: the monitor and the signer exit. NULL is a no-op. */
void signer_client_free(struct signer_client *sc);

/* Have backend's key sign in (kind: enum fg_sign_kind). With
 * reserve_serial set, the serial is announced as recorded write-ahead in
 * the same message. Returns 0 with *out (malloc'd), 1 when the signer
 * refused (err has its reason), -1 when it cannot answer now. Thread-safe. */
int signer_client_sign(struct signer_client *sc, const char *backend, int kind, const char *profile,
		       const char *reserve_serial, const unsigned char *in, size_t len, unsigned char **out,
		       size_t *outlen, char *err, size_t errlen);

/* signer_client_sign with the client as a void *, for backend_sign_fn. */
int signer_client_sign_cb(void *sc, const char *backend, int kind, const char *profile, const char *reserve_serial,
			  const unsigned char *in, size_t len, unsigned char **out, size_t *outlen, char *err,
			  size_t errlen);

/* Send one raw message of type with body (tests of the protocol) and wait
 * for the reply body (malloc'd) when want_reply. 0, or -1 with err. */
int signer_client_raw(struct signer_client *sc, unsigned type, const void *body, size_t len, int want_reply,
		      unsigned char **reply, size_t *replylen, char *err, size_t errlen);

/* The pids of the current signer (0 while there is none) and of the monitor. */
pid_t signer_client_pid(struct signer_client *sc);
pid_t signer_client_monitor_pid(const struct signer_client *sc);

/* 1 once the monitor has given up (the daemon must stop, non-zero). */
int signer_client_failed(struct signer_client *sc);

#endif
