/*
 * dashboard: the read-only web dashboard of fleetgated (docs/dashboard.md).
 *
 *   GET /ui/                      the page (index.html, app.js, style.css,
 *                                 built into the binary from ui/)
 *   GET /api/v1/summary           devices by state and group, certificates,
 *                                 failures in the last hour, open jobs,
 *                                 backends' health
 *   GET /api/v1/expiries?days=90  per day: certificates expiring, renewals
 *                                 scheduled
 *   GET /api/v1/activity?hours=24 per hour: enrolled, renewed, failed
 *   GET /api/v1/audit?limit=20    the last audit records, newest first
 *   GET /api/v1/devices?limit=&after=&group=&state=
 *                                 one page of devices (id order) and the total
 *   GET /api/v1/devices/<id>      what `fleetgate device show --json` gives
 *
 * The API takes "Authorization: Bearer <token>", checked against the
 * SHA-256 in ui.token (`fleetgate ui token`), read at each request so that
 * a new token takes effect at once. The page carries no data and needs no
 * token. Served on the EST listener (HTTPS) when there is one, else on the
 * HTTP side, which the config then requires to be on loopback.
 *
 * Safe to call from any number of threads, each with its own store
 * connection.
 */
#ifndef FG_DASHBOARD_H
#define FG_DASHBOARD_H

#include <event2/http.h>

#include "backend.h"
#include "config.h"
#include "store.h"

struct dashboard;

/* NULL when out of memory. cfg and bs must outlive it. */
struct dashboard *dashboard_new(const struct gw_config *cfg, struct backends *bs);
void dashboard_free(struct dashboard *d);

/* 1 when path (the request's path, without its query) is the
 * dashboard's (/ui, /ui/..., /api/v1/...), after answering req; 0 when
 * it is not (req untouched). */
int dashboard_handle(struct dashboard *d, struct store *st, struct evhttp_request *req, const char *path);

#endif
