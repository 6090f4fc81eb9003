/*
 * fleet_json.h: the fleet as JSON, one shape for the CLI's --json output
 * and the dashboard's API (docs/dashboard.md). Every builder returns a new
 * reference (NULL when out of memory); times are ISO 8601 UTC strings.
 */
#ifndef FG_FLEET_JSON_H
#define FG_FLEET_JSON_H

#include <stdint.h>

#include <jansson.h>

#include "backend.h"
#include "config.h"
#include "store.h"

/* Audit kinds that count as failures (status, the dashboard's activity). */
extern const char *const fj_failure_kinds[];
/* 1 when kind is one of fj_failure_kinds. */
int fj_is_failure(const char *kind);

/* A device as `device list --json` shows it. */
json_t *fj_device(const struct store_device *d);
/* A certificate as `cert list --json` shows it, with its renewal window
 * ("renew_window": {start, end}) when it has one. */
json_t *fj_cert(const struct store_cert *c, int64_t now);
json_t *fj_command(const struct store_command *c);
/* An audit record; detail parsed into an object. */
json_t *fj_audit(const struct store_audit_rec *a);

/* The document of `device show --json`: the device, its certificates, its
 * commands and its last 50 audit records. 1 with *out set, 0 no such
 * device, -1 with err. */
int fj_device_doc(struct store *st, const char *id, int64_t now, json_t **out, char *err,
		  size_t errlen);

/* The store's half of `status --json`: devices by state, groups,
 * certificates, failures in the last hour, open jobs. NULL with err. */
json_t *fj_summary(struct store *st, int64_t now, char *err, size_t errlen);

/* The health of backend cb, opened as b (NULL: open_err says why it could
 * not be): asked for its CA certificates, with its published CRL when it
 * makes one. {"name", "plugin", "ok", "ca", "ca_not_after", "crl"} or
 * {"name", "plugin", "ok": false, "error"}. */
json_t *fj_backend_health(const struct gw_config *cfg, const struct config_backend *cb,
			  struct backend *b, const char *open_err);

#endif
