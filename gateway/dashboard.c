/*
 * dashboard.c: the read-only web dashboard and its JSON API (see
 * dashboard.h and docs/dashboard.md).
 *
 * Every answer is built from the store at request time with aggregated,
 * indexed queries (store.h "the dashboard"), in the same JSON shapes as
 * the CLI's --json (fleet_json.h). Backends' health asks each backend for
 * its CA certificates, which for an upstream CA is a network round trip:
 * it is kept for HEALTH_TTL seconds.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "dashboard.h"
#include "fg_log.h"
#include "fg_util.h"
#include "fleet_json.h"

#define HEALTH_TTL 30             /* seconds the backends' health is kept */
#define TOKEN_FILE_MAX 256

/* ui/ as built into the binary (tools/embed.py) */
extern const char fg_ui_index_html[], fg_ui_app_js[], fg_ui_style_css[];
extern const size_t fg_ui_index_html_len, fg_ui_app_js_len, fg_ui_style_css_len;

struct dashboard {
	const struct gw_config *cfg;
	struct backends *bs;
	pthread_mutex_t lock;         /* guards health and health_at */
	json_t *health;
	int64_t health_at;
};

struct dashboard *dashboard_new(const struct gw_config *cfg, struct backends *bs)
{
	struct dashboard *d = calloc(1, sizeof *d);
	if (d == NULL)
		return NULL;
	d->cfg = cfg;
	d->bs = bs;
	pthread_mutex_init(&d->lock, NULL);
	return d;
}

void dashboard_free(struct dashboard *d)
{
	if (d == NULL)
		return;
	json_decref(d->health);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

/* ---- replies ---- */

static void send_body(struct evhttp_request *req, int code, const char *reason, const char *ctype,
		      const char *cache, const void *data, size_t len)
{
	struct evbuffer *b = evbuffer_new();
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);

	if (b == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	evhttp_add_header(hdr, "Content-Type", ctype);
	evhttp_add_header(hdr, "Cache-Control", cache);
	evhttp_add_header(hdr, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(hdr, "Referrer-Policy", "no-referrer");
	evhttp_add_header(hdr, "X-Frame-Options", "DENY");
	evhttp_add_header(hdr, "Content-Security-Policy",
			  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
			  "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
	if (len > 0 && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
		evbuffer_add(b, data, len);
	evhttp_send_reply(req, code, reason, b);
	evbuffer_free(b);
}

/* A JSON answer; j is consumed. */
static void send_json(struct evhttp_request *req, int code, const char *reason, json_t *j)
{
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (text == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	send_body(req, code, reason, "application/json", "no-store", text, strlen(text));
	free(text);
}

/* An API error: {"error": message}, the message saying what to do. */
static void __attribute__((format(printf, 4, 5)))
send_error(struct evhttp_request *req, int code, const char *reason, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	send_json(req, code, reason, json_pack("{s:s}", "error", msg));
}

/* ---- authentication ---- */

/* 1 when the request carries the bearer token whose SHA-256 is in
 * ui.token; else 0, after answering 401. */
static int authorized(struct dashboard *d, struct evhttp_request *req)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	char err[512] = "", want[65], got[65];
	char *file = NULL;
	size_t len = 0;
	int ok = 0;

	if (fg_read_file(d->cfg->ui_token_path, TOKEN_FILE_MAX, &file, &len, err, sizeof err) != 0) {
		fg_warn("ui", NULL, "dashboard API refused: no token: %s", err);
		evhttp_add_header(out, "WWW-Authenticate", "Bearer realm=\"fleetgate\"");
		send_error(req, 401, "Unauthorized",
			   "the dashboard has no token yet: run `fleetgate ui token --state DIR` on the gateway");
		return 0;
	}
	/* the file: 64 hex digits and a newline */
	unsigned char raw[32];
	if (len >= 64)
		memcpy(want, file, 64);
	want[64] = '\0';
	if (len >= 64 && (len == 64 || file[64] == '\n') && fg_unhex(want, raw, sizeof raw) == 32) {
		if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
			const char *tok = h + 7;
			tok += strspn(tok, " ");
			fg_sha256_hex(tok, strcspn(tok, " \t"), got);
			ok = CRYPTO_memcmp(got, want, 64) == 0;
		}
	} else {
		fg_warn("ui", NULL, "dashboard API refused: %s does not hold a token hash; make a new one "
				   "with `fleetgate ui token`", d->cfg->ui_token_path);
	}
	OPENSSL_cleanse(file, len);
	free(file);
	if (!ok) {
		evhttp_add_header(out, "WWW-Authenticate", h == NULL ? "Bearer realm=\"fleetgate\""
					       : "Bearer realm=\"fleetgate\", error=\"invalid_token\"");
		send_error(req, 401, "Unauthorized",
			   h == NULL ? "the dashboard API needs \"Authorization: Bearer TOKEN\" (the token from "
				       "`fleetgate ui token`)"
				     : "the bearer token is not the dashboard's; make a new one with `fleetgate ui token`");
	}
	return ok;
}

/* ---- query parameters ---- */

/* The value of a query parameter as a number in [lo, hi] (dflt when
 * absent): 0, or -1 after answering 400. */
static int query_long(struct evhttp_request *req, const struct evkeyvalq *q, const char *name, long dflt,
		      long lo, long hi, long *out)
{
	const char *v = evhttp_find_header(q, name);
	char *end;
	if (v == NULL) {
		*out = dflt;
		return 0;
	}
	errno = 0;
	*out = strtol(v, &end, 10);
	if (errno || end == v || *end || *out < lo || *out > hi) {
		send_error(req, 400, "Bad Request", "%s must be a whole number from %ld to %ld, not '%.64s'", name,
			   lo, hi, v);
		return -1;
	}
	return 0;
}

/* ---- the API ---- */

static void api_summary(struct dashboard *d, struct store *st, struct evhttp_request *req)
{
	char err[1024] = "", ts[32];
	int64_t now = fg_now();
	json_t *j = fj_summary(st, now, err, sizeof err), *health;

	if (j == NULL) {
		fg_err("ui", NULL, "summary: %s", err);
		send_error(req, 500, "Internal Server Error", "the store could not be read: %s", err);
		return;
	}
	pthread_mutex_lock(&d->lock);
	if (d->health == NULL || now - d->health_at >= HEALTH_TTL || now < d->health_at) {
		json_t *bl = json_array();
		for (size_t i = 0; bl != NULL && i < d->cfg->nbackends; i++) {
			const struct config_backend *cb = &d->cfg->backends[i];
			struct backend *b = backends_find(d->bs, cb->name);
			json_array_append_new(bl, fj_backend_health(d->cfg, cb, b, "not loaded in this gateway"));
		}
		if (bl != NULL) {
			json_decref(d->health);
			d->health = bl;
			d->health_at = now;
		}
	}
	health = json_deep_copy(d->health);
	pthread_mutex_unlock(&d->lock);
	json_object_set_new(j, "backends", health ? health : json_array());
	json_object_set_new(j, "generated", json_string(fg_time_iso(now, ts, sizeof ts)));
	send_json(req, 200, "OK", j);
}

struct days {
	int64_t from;
	long n;
	double *renewals;
	long *expiring;
};

static int add_hour(void *arg, int64_t hour, double renewals, long expiring)
{
	struct days *k = arg;
	long i = (long)((hour - k->from) / 86400);
	if (i >= 0 && i < k->n) {
		k->renewals[i] += renewals;
		k->expiring[i] += expiring;
	}
	return 0;
}

static void api_expiries(struct store *st, struct evhttp_request *req, const struct evkeyvalq *q)
{
	char err[1024] = "", day[32];
	struct days k;
	long n;

	if (query_long(req, q, "days", 90, 1, 366, &n) != 0)
		return;
	int64_t now = fg_now();
	k.from = now - now % 86400;
	k.n = n;
	k.renewals = calloc((size_t)n, sizeof *k.renewals);
	k.expiring = calloc((size_t)n, sizeof *k.expiring);
	json_t *arr = json_array();
	if (k.renewals == NULL || k.expiring == NULL || arr == NULL) {
		send_error(req, 500, "Internal Server Error", "out of memory");
		goto out;
	}
	if (store_renewal_load(st, k.from, n * 24, add_hour, &k, err, sizeof err) != 0) {
		fg_err("ui", NULL, "expiries: %s", err);
		send_error(req, 500, "Internal Server Error", "the store could not be read: %s", err);
		goto out;
	}
	for (long i = 0; i < n; i++) {
		fg_time_iso(k.from + i * 86400, day, sizeof day);
		day[10] = '\0';
		/* a window spreads its renewal over its hours: a day's sum is a
		 * fraction; the plot shows whole renewals */
		json_array_append_new(arr, json_pack("{s:s, s:I, s:f}", "day", day, "expiring",
						     (json_int_t)k.expiring[i], "renewals",
						     (double)(long)(k.renewals[i] * 10 + 0.5) / 10));
	}
	send_json(req, 200, "OK", json_pack("{s:s, s:o}", "from", fg_time_iso(k.from, day, sizeof day), "days", arr));
	arr = NULL;
out:
	json_decref(arr);
	free(k.renewals);
	free(k.expiring);
}

struct hours {
	int64_t since;
	long n;
	long (*c)[3];             /* enrolled, renewed, failed */
};

static int add_activity(void *arg, int64_t hour, const char *kind, long count)
{
	struct hours *k = arg;
	long i = (long)((hour - k->since) / 3600);
	if (i < 0 || i >= k->n)
		return 0;
	if (strcmp(kind, "cert.issue") == 0)
		k->c[i][0] += count;
	else if (strcmp(kind, "cert.renew") == 0)
		k->c[i][1] += count;
	else if (fj_is_failure(kind))
		k->c[i][2] += count;
	return 0;
}

static void api_activity(struct store *st, struct evhttp_request *req, const struct evkeyvalq *q)
{
	char err[1024] = "", ts[32];
	struct hours k;
	long n;

	if (query_long(req, q, "hours", 24, 1, 24 * 31, &n) != 0)
		return;
	int64_t now = fg_now();
	k.since = now - now % 3600 - (n - 1) * 3600;
	k.n = n;
	k.c = calloc((size_t)n, sizeof *k.c);
	json_t *arr = json_array();
	if (k.c == NULL || arr == NULL) {
		send_error(req, 500, "Internal Server Error", "out of memory");
		goto out;
	}
	if (store_audit_hourly(st, k.since, add_activity, &k, err, sizeof err) != 0) {
		fg_err("ui", NULL, "activity: %s", err);
		send_error(req, 500, "Internal Server Error", "the store could not be read: %s", err);
		goto out;
	}
	for (long i = 0; i < n; i++)
		json_array_append_new(arr, json_pack("{s:s, s:I, s:I, s:I}", "hour",
						     fg_time_iso(k.since + i * 3600, ts, sizeof ts), "enrolled",
						     (json_int_t)k.c[i][0], "renewed", (json_int_t)k.c[i][1],
						     "failed", (json_int_t)k.c[i][2]));
	send_json(req, 200, "OK", json_pack("{s:o}", "hours", arr));
	arr = NULL;
out:
	json_decref(arr);
	free(k.c);
}

static int collect_audit(void *arg, const struct store_audit_rec *a)
{
	/* store_audit_list gives the newest `limit` oldest first: the API
	 * lists newest first */
	return json_array_insert_new(arg, 0, fj_audit(a)) != 0;
}

static void api_audit(struct store *st, struct evhttp_request *req, const struct evkeyvalq *q)
{
	char err[1024] = "";
	long n;
	if (query_long(req, q, "limit", 20, 1, 500, &n) != 0)
		return;
	json_t *arr = json_array();
	if (arr == NULL || store_audit_list(st, NULL, 0, n, 1, collect_audit, arr, err, sizeof err) != 0) {
		json_decref(arr);
		fg_err("ui", NULL, "audit: %s", err);
		send_error(req, 500, "Internal Server Error", "the store could not be read: %s", err);
		return;
	}
	send_json(req, 200, "OK", json_pack("{s:o}", "records", arr));
}

struct page {
	json_t *arr;
	char last[40];
};

static int collect_device(void *arg, const struct store_device *dv)
{
	struct page *p = arg;
	fg_strlcpy(p->last, dv->id, sizeof p->last);
	return json_array_append_new(p->arr, fj_device(dv)) != 0;
}

static void api_devices(struct store *st, struct evhttp_request *req, const struct evkeyvalq *q)
{
	char err[1024] = "";
	const char *group = evhttp_find_header(q, "group"), *after = evhttp_find_header(q, "after");
	const char *sname = evhttp_find_header(q, "state");
	struct page p = { json_array(), "" };
	long n, total = 0;
	int state = -1;

	if (query_long(req, q, "limit", 50, 1, 500, &n) != 0)
		goto out;
	if (sname != NULL && *sname) {
		for (state = 0; state < DEVICE_STATE_MAX && strcmp(store_device_state_name(state), sname) != 0; state++)
			;
		if (state == DEVICE_STATE_MAX) {
			send_error(req, 400, "Bad Request",
				   "state must be active, revoked, retired or registered, not '%.32s'", sname);
			goto out;
		}
	}
	if (p.arr == NULL) {
		send_error(req, 500, "Internal Server Error", "out of memory");
		goto out;
	}
	if (store_device_page(st, group && *group ? group : NULL, state, after, n, collect_device, &p, &total,
			      err, sizeof err) != 0) {
		fg_err("ui", NULL, "devices: %s", err);
		send_error(req, 500, "Internal Server Error", "the store could not be read: %s", err);
		goto out;
	}
	long got = (long)json_array_size(p.arr);
	send_json(req, 200, "OK", json_pack("{s:O, s:I, s:o}", "devices", p.arr, "total", (json_int_t)total,
					    "next_after", got == n && got > 0 ? json_string(p.last) : json_null()));
out:
	json_decref(p.arr);
}

static void api_device(struct store *st, struct evhttp_request *req, const char *enc_id)
{
	char err[1024] = "";
	json_t *doc = NULL;
	char *id = evhttp_uridecode(enc_id, 0, NULL);

	if (id == NULL || *id == '\0' || strlen(id) >= 40) {
		send_error(req, 404, "Not Found", "no such device; /api/v1/devices lists the ids");
		free(id);
		return;
	}
	int r = fj_device_doc(st, id, fg_now(), &doc, err, sizeof err);
	if (r < 0) {
		fg_err("ui", NULL, "device %s: %s", id, err);
		send_error(req, 500, "Internal Server Error", "the store could not be read: %s", err);
	} else if (r == 0) {
		send_error(req, 404, "Not Found", "no device %s; /api/v1/devices lists the ids", id);
	} else {
		send_json(req, 200, "OK", doc);
	}
	free(id);
}

/* ---- dispatch ---- */

static void serve_static(struct evhttp_request *req, const char *name)
{
	static const struct {
		const char *name, *ctype;
		const char *data;
		const size_t *len;
	} files[] = {
		{ "", "text/html; charset=utf-8", fg_ui_index_html, &fg_ui_index_html_len },
		{ "index.html", "text/html; charset=utf-8", fg_ui_index_html, &fg_ui_index_html_len },
		{ "app.js", "text/javascript; charset=utf-8", fg_ui_app_js, &fg_ui_app_js_len },
		{ "style.css", "text/css; charset=utf-8", fg_ui_style_css, &fg_ui_style_css_len },
	};
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
		if (strcmp(name, files[i].name) == 0) {
			send_body(req, 200, "OK", files[i].ctype, "no-cache", files[i].data, *files[i].len);
			return;
		}
	send_body(req, 404, "Not Found", "text/plain; charset=utf-8", "no-store",
		  "no such file; the dashboard is at /ui/\n", 39);
}

int dashboard_handle(struct dashboard *d, struct store *st, struct evhttp_request *req, const char *path)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	int is_ui = strcmp(path, "/ui") == 0 || strncmp(path, "/ui/", 4) == 0;
	int is_api = strncmp(path, "/api/v1/", 8) == 0 || strcmp(path, "/api/v1") == 0;

	if (!is_ui && !is_api)
		return 0;
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		send_error(req, 405, "Method Not Allowed", "the dashboard is read-only: %s takes GET", path);
		return 1;
	}
	if (strcmp(path, "/ui") == 0) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Location", "/ui/");
		send_body(req, 301, "Moved Permanently", "text/plain; charset=utf-8", "no-cache", "/ui/\n", 5);
		return 1;
	}
	if (is_ui) {
		serve_static(req, path + 4);
		return 1;
	}
	if (!authorized(d, req))
		return 1;
	struct evkeyvalq q;
	const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
	const char *query = u ? evhttp_uri_get_query(u) : NULL;
	TAILQ_INIT(&q);
	if (query != NULL && evhttp_parse_query_str(query, &q) != 0) {
		send_error(req, 400, "Bad Request", "the query string is malformed");
		return 1;
	}
	const char *r = path[7] == '/' ? path + 8 : "";
	if (strcmp(r, "summary") == 0)
		api_summary(d, st, req);
	else if (strcmp(r, "expiries") == 0)
		api_expiries(st, req, &q);
	else if (strcmp(r, "activity") == 0)
		api_activity(st, req, &q);
	else if (strcmp(r, "audit") == 0)
		api_audit(st, req, &q);
	else if (strcmp(r, "devices") == 0)
		api_devices(st, req, &q);
	else if (strncmp(r, "devices/", 8) == 0)
		api_device(st, req, r + 8);
	else
		send_error(req, 404, "Not Found",
			   "no such API resource %s; the API serves /api/v1/summary, expiries, activity, audit, "
			   "devices and devices/<id> (docs/dashboard.md)", path);
	evhttp_clear_headers(&q);
	return 1;
}
