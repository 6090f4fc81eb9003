/*
 * signer: the process that alone holds the CA keys (docs/security.md).
 *
 * fleetgated starts it before anything touches the network. The signer
 * loads the private key of every backend whose key the gateway keeps
 * (plugin "local"), drops to an unprivileged user, closes every file but
 * its one socket, and confines itself with a seccomp allowlist: from then
 * on it can read and write that socket, manage memory and draw random
 * numbers, and nothing else. It has no Lua, no plugins, no store.
 *
 * It signs only what passes the issuance boundary it was started with (the
 * profiles and backend settings of the config): leaf certificates within a
 * profile's validity, key usages, extended key usages and name types, never
 * a CA certificate, only serials the daemon reserved write-ahead and never
 * one serial for two different certificates; CRLs and OCSP responses of
 * its CA within their configured lifetimes. Every refusal names its reason.
 *
 * The daemon side (signer_client.c) reaches it through a monitor process
 * that restarts it when it dies.
 */
#ifndef FG_SIGNER_H
#define FG_SIGNER_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"

/* Flags of signer_spawn. */
enum {
	SIGNER_TEST_HOOKS = 1u << 0,    /* honour SIGNER_MSG_TEST_FORBIDDEN (tests only) */
};

/* Fork a signer for cfg. The child loads the keys, confines itself and
 * serves the socket whose other end is *fd (close-on-exec) until that end
 * is closed; it never returns, and keeps no descriptor but its socket and
 * stderr. Call it while the process has one thread (before any other
 * starts). Returns the child's pid, or -1 with err. */
pid_t signer_spawn(const struct gw_config *cfg, unsigned flags, int *fd, char *err, size_t errlen);

/* The directory that holds backend cb's CA key (ca_dir, relative to its
 * state_dir), when cb is one whose key the signer holds. 0, or -1 when the
 * path is too long. */
int signer_key_dir(const struct gw_config *cfg, const struct config_backend *cb, char *out, size_t outlen);

/* 1 when the signer holds backend cb's key (a local CA). */
int signer_holds_key(const struct config_backend *cb);

/* The number of backends whose key a signer for cfg holds. */
size_t signer_key_count(const struct gw_config *cfg);

#ifdef FG_INPROCESS_SIGNER
/* Only in the benchmark comparison build (meson -Dinprocess_signer=true),
 * which puts the CA key back into the daemon: the signer's checks and
 * signatures as function calls. */
struct signer;
struct signer *signer_inprocess_new(const struct gw_config *cfg, char *err, size_t errlen);
int signer_inprocess_call(struct signer *s, const unsigned char *body, size_t len, unsigned char **reply,
			  size_t *replylen);
#endif

#endif
