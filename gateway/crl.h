/*
 * crl: publishing the CRLs of backends whose plugin makes them (make_crl,
 * the local CA), for the gateway's HTTP side and the CLI.
 *
 * A backend's CRL lists every certificate the store has revoked for it and
 * is written durably and atomically to <state>/crl/<backend>.crl (DER),
 * where fleetgated serves it as /crl/<backend>.crl. It is remade on each
 * revocation (by whoever revokes: `fleetgate device revoke`) and by
 * fleetgated's HTTP thread when less than half of its validity is left or
 * when the store knows a revocation the file does not list.
 */
#ifndef FG_CRL_H
#define FG_CRL_H

#include <stddef.h>
#include <stdint.h>
#include "backend.h"
#include "config.h"
#include "store.h"

/* <state>/crl/<backend>.crl into out. 0, or -1 when too long. */
int crl_path(const struct gw_config *cfg, const char *backend, char *out, size_t outlen);

/* What a published CRL says about itself. */
struct crl_info {
	int64_t this_update;       /* Unix seconds */
	int64_t next_update;       /* Unix seconds; 0 when the CRL has none */
	long entries;              /* revoked certificates listed */
	char number[48];           /* cRLNumber in decimal, "" when absent */
};

/* Read the published CRL of backend: 1 with out filled, 0 when none is
 * published, -1 with err when the file is unreadable or not a CRL. */
int crl_read_info(const struct gw_config *cfg, const char *backend, struct crl_info *out,
		  char *err, size_t errlen);

/* Make backend b's CRL from st's revocations and publish it. 0 (out, when
 * not NULL, describes it), 1 when the backend makes no CRL (its plugin
 * has no make_crl), -1 with err. */
int crl_publish(const struct gw_config *cfg, struct backend *b, struct store *st, int64_t now,
		struct crl_info *out, char *err, size_t errlen);

/* For every configured backend that makes CRLs: publish when force is set,
 * when none is published, when less than half of its validity is left, or
 * when the store has more revocations than it lists. Returns how many were
 * published, or -1 with err naming the first failure (the others are still
 * tried). */
int crl_refresh(const struct gw_config *cfg, struct backends *bs, struct store *st, int64_t now,
		int force, char *err, size_t errlen);

/* 1 when a CRL published with info should be remade at now (half of its
 * validity gone, or past nextUpdate, or its thisUpdate more than five
 * minutes ahead of now: the clock went back), else 0. */
int crl_due(const struct crl_info *info, int64_t now);

#endif
