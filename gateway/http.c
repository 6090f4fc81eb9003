/*
 * http.c: the HTTP side of fleetgated (see http.h).
 *
 * Everything below runs on the HTTP thread except http_start (setup, in the
 * caller, so that a bind failure stops the daemon before it serves) and
 * http_stop (event_base_loopexit, safe across threads with libevent's
 * pthreads locking, then join). Handlers answer from what is at hand: the
 * thread's own store connection, the backends (cacerts, make_crl and
 * ocsp_respond may be called from any thread) and the published CRL files.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>

#include "crl.h"
#include "dashboard.h"
#include "fg_log.h"
#include "fg_util.h"
#include "http.h"
#include "stats.h"
#include "store.h"

#define HTTP_MAX_BODY 16384       /* an OCSP request is a few hundred bytes */
#define HTTP_MAX_HEADERS 16384
#define HTTP_TIMEOUT 10           /* seconds a connection may idle mid-request */
#define CRL_TICK 1                /* seconds between looks at the CRL schedule */
#define CRL_STORE_CHECK 30        /* ticks between looks for revocations a CRL lacks */
#define CRL_RETRY 30              /* seconds before retrying a CRL that failed */

struct crl_sched {
	char backend[64];
	struct crl_info info;         /* of the published file, valid when have */
	int have;
	struct timespec mtime;        /* of the file when info was read */
	off_t size;
	int64_t retry_at;             /* after a failure, not before */
};

struct http {
	const struct gw_config *cfg;
	struct backends *bs;
	struct store *st;             /* the HTTP thread's own connection */
	struct event_base *base;
	struct evhttp *http;
	struct event *timer;
	struct dashboard *dash;       /* ui.enabled and no EST listener: the dashboard */
	struct crl_sched *crls;       /* one per backend that makes CRLs */
	size_t ncrls;
	unsigned ticks;
	pthread_t thread;
	int started;
};

/* ---- replies ---- */

static void reply(struct evhttp_request *req, int code, const char *reason, const char *ctype,
		  const void *data, size_t len)
{
	struct evbuffer *b = evbuffer_new();
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);

	if (b == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	evhttp_add_header(hdr, "Content-Type", ctype);
	if (len > 0 && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
		evbuffer_add(b, data, len);
	evhttp_send_reply(req, code, reason, b);
	evbuffer_free(b);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof msg - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof msg - 2)
		n = (int)sizeof msg - 2;
	msg[n++] = '\n';
	reply(req, code, reason, "text/plain; charset=utf-8", msg, (size_t)n);
}

/* The backend named by a path tail "<name><suffix>", or NULL. */
static struct backend *backend_of(struct http *h, const char *tail, const char *suffix, char *name,
				  size_t namelen)
{
	size_t tl = strlen(tail), sl = strlen(suffix);

	if (tl <= sl || tl - sl >= namelen || strcmp(tail + tl - sl, suffix) != 0)
		return NULL;
	memcpy(name, tail, tl - sl);
	name[tl - sl] = '\0';
	return backends_find(h->bs, name);
}

/* ---- /healthz and /metrics ---- */

static void on_healthz(struct http *h, struct evhttp_request *req)
{
	char err[512] = "";

	if (store_ping(h->st, err, sizeof err) != 0) {
		fg_warn("http", NULL, "healthz: %s", err);
		reply_text(req, 503, "Service Unavailable", "store unavailable: %s", err);
		return;
	}
	reply_text(req, 200, "OK", "ok");
}

/* The gauges computed at scrape time from the store and the CRL files. */
static void metrics_gauges(struct http *h, FILE *f)
{
	static const char *const within[STORE_EXPIRY_BUCKETS] = { "1d", "7d", "30d", "90d" };
	struct store_summary s;
	char err[512];
	int64_t now = fg_now();
	int ok = store_fleet_summary(h->st, now, &s, err, sizeof err) == 0;

	fprintf(f, "# HELP fleetgate_store_up Whether the store answered this scrape.\n"
		   "# TYPE fleetgate_store_up gauge\nfleetgate_store_up %d\n", ok);
	unsigned long batches = 0, items = 0;
	store_group_commit_stats(&batches, &items);
	fprintf(f, "# HELP fleetgate_store_commits_total Group commits of enrollment writes (one fsync each).\n"
		   "# TYPE fleetgate_store_commits_total counter\nfleetgate_store_commits_total %lu\n"
		   "# HELP fleetgate_store_commit_writes_total Write transactions those commits held; divided by commits, the batch size.\n"
		   "# TYPE fleetgate_store_commit_writes_total counter\nfleetgate_store_commit_writes_total %lu\n",
		batches, items);
	if (!ok) {
		fg_warn("http", NULL, "metrics: %s", err);
	} else {
		fprintf(f, "# HELP fleetgate_devices Devices by state.\n# TYPE fleetgate_devices gauge\n");
		for (int i = 0; i < DEVICE_STATE_MAX; i++)
			fprintf(f, "fleetgate_devices{state=\"%s\"} %ld\n", store_device_state_name(i),
				s.devices[i]);
		fprintf(f, "# HELP fleetgate_certificates Certificates by status.\n"
			   "# TYPE fleetgate_certificates gauge\n"
			   "fleetgate_certificates{status=\"valid\"} %ld\n"
			   "fleetgate_certificates{status=\"revoked\"} %ld\n"
			   "fleetgate_certificates{status=\"expired\"} %ld\n",
			s.certs_valid, s.certs_revoked, s.certs_expired);
		fprintf(f, "# HELP fleetgate_certificates_expiring Valid (not revoked, not expired) certificates expiring within a time.\n"
			   "# TYPE fleetgate_certificates_expiring gauge\n");
		for (int i = 0; i < STORE_EXPIRY_BUCKETS; i++)
			fprintf(f, "fleetgate_certificates_expiring{within=\"%s\"} %ld\n", within[i],
				s.expiring[i]);
		fprintf(f, "# HELP fleetgate_jobs_open Enrollment jobs not finished: the queue.\n"
			   "# TYPE fleetgate_jobs_open gauge\n"
			   "fleetgate_jobs_open{state=\"admitted\"} %ld\n"
			   "fleetgate_jobs_open{state=\"pending\"} %ld\n",
			s.jobs_admitted, s.jobs_pending);
	}
	if (h->ncrls > 0)
		fprintf(f, "# HELP fleetgate_crl_next_update_timestamp_seconds nextUpdate of each published CRL.\n"
			   "# TYPE fleetgate_crl_next_update_timestamp_seconds gauge\n");
	for (size_t i = 0; i < h->ncrls; i++)
		if (h->crls[i].have)
			fprintf(f, "fleetgate_crl_next_update_timestamp_seconds{backend=\"%s\"} %lld\n",
				h->crls[i].backend, (long long)h->crls[i].info.next_update);
}

static void on_metrics(struct http *h, struct evhttp_request *req)
{
	char *counters = stats_prometheus(), *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (counters == NULL || f == NULL) {
		if (f != NULL)
			fclose(f);
		free(text);
		free(counters);
		reply_text(req, 500, "Internal Server Error", "out of memory");
		return;
	}
	fputs(counters, f);
	metrics_gauges(h, f);
	if (fclose(f) != 0) {
		free(text);
		free(counters);
		reply_text(req, 500, "Internal Server Error", "out of memory");
		return;
	}
	reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len);
	free(text);
	free(counters);
}

/* ---- /ca and /crl ---- */

static void on_ca(struct http *h, struct evhttp_request *req, const char *tail)
{
	char name[64], err[512] = "";
	struct backend *b = backend_of(h, tail, ".crt", name, sizeof name);
	struct fg_cert_list cl;
	char *pem = NULL;
	size_t len = 0;
	FILE *f;

	memset(&cl, 0, sizeof cl);
	if (b == NULL) {
		reply_text(req, 404, "Not Found", "no backend named by %s; use /ca/<backend>.crt with a backend of fleetgated.conf",
			   tail);
		return;
	}
	if (b->ops->cacerts == NULL || b->ops->cacerts(b->state, &cl, err, sizeof err) != 0) {
		fg_warn("http", NULL, "backend %s: CA certificates: %s", b->name, err);
		reply_text(req, 502, "Bad Gateway", "backend %s gave no CA certificates: %s", b->name,
			   err[0] ? err : "it offers none");
		return;
	}
	if ((f = open_memstream(&pem, &len)) != NULL) {
		for (size_t i = 0; i < cl.n; i++) {
			const unsigned char *p = cl.der[i];
			X509 *x = d2i_X509(NULL, &p, (long)cl.len[i]);
			if (x != NULL)
				PEM_write_X509(f, x);
			X509_free(x);
		}
		fclose(f);
	}
	fg_cert_list_clear(&cl);
	if (pem == NULL || len == 0)
		reply_text(req, 502, "Bad Gateway", "backend %s's CA certificates cannot be encoded", b->name);
	else
		reply(req, 200, "OK", "application/x-pem-file", pem, len);
	free(pem);
}

static void on_crl(struct http *h, struct evhttp_request *req, const char *tail)
{
	char name[64], path[PATH_MAX], err[512] = "";
	struct backend *b = backend_of(h, tail, ".crl", name, sizeof name);
	char *data = NULL;
	size_t len = 0;
	struct stat sb;

	if (b == NULL) {
		reply_text(req, 404, "Not Found", "no backend named by %s; use /crl/<backend>.crl with a backend of fleetgated.conf",
			   tail);
		return;
	}
	if (b->ops->make_crl == NULL) {
		reply_text(req, 404, "Not Found", "backend %s (plugin %s) does not publish its CRL here; ask its CA",
			   b->name, b->ops->name);
		return;
	}
	if (crl_path(h->cfg, b->name, path, sizeof path) != 0 || stat(path, &sb) != 0) {
		reply_text(req, 503, "Service Unavailable", "backend %s's CRL is not published yet; retry in a minute",
			   b->name);
		return;
	}
	if (fg_read_file(path, 64 * 1024 * 1024, &data, &len, err, sizeof err) != 0) {
		fg_err("http", NULL, "%s", err);
		reply_text(req, 500, "Internal Server Error", "backend %s's CRL cannot be read", b->name);
		return;
	}
	reply(req, 200, "OK", "application/pkix-crl", data, len);
	free(data);
}

/* ---- OCSP ---- */

struct ocsp_ctx {
	struct http *h;
	const char *backend;
};

/* fg_cert_status_fn over the store's certificates table. */
static int ocsp_status(void *arg, const char *serial_hex, struct fg_cert_status *out)
{
	struct ocsp_ctx *c = arg;
	char err[512];
	int revoked = 0;
	int64_t at = 0;
	int r = store_cert_status(c->h->st, c->backend, serial_hex, &revoked, &at, err, sizeof err);

	if (r < 0) {
		fg_err("http", NULL, "OCSP: %s", err);
		return -1;
	}
	out->state = r == 0 ? FG_CERT_UNKNOWN : revoked ? FG_CERT_REVOKED : FG_CERT_GOOD;
	out->revoked_at = at;
	return 0;
}

static void ocsp_reply_status(struct evhttp_request *req, int status)
{
	OCSP_RESPONSE *r = OCSP_response_create(status, NULL);
	unsigned char *der = NULL;
	int n = r ? i2d_OCSP_RESPONSE(r, &der) : -1;

	if (n > 0)
		reply(req, 200, "OK", "application/ocsp-response", der, (size_t)n);
	else
		reply_text(req, 500, "Internal Server Error", "cannot encode an OCSP response");
	OPENSSL_free(der);
	OCSP_RESPONSE_free(r);
}

/* Ask each backend that answers OCSP in turn; the first whose CA the
 * request names answers. None: "unauthorized" (RFC 6960 2.3). */
static void ocsp_answer(struct http *h, struct evhttp_request *req, const unsigned char *der,
			size_t len)
{
	for (size_t i = 0; i < h->cfg->nbackends; i++) {
		struct backend *b = backends_find(h->bs, h->cfg->backends[i].name);
		struct ocsp_ctx c = { h, b ? b->name : "" };
		unsigned char *resp = NULL;
		size_t rlen = 0;
		char err[512] = "";

		if (b == NULL || b->ops->ocsp_respond == NULL)
			continue;
		int r = b->ops->ocsp_respond(b->state, der, len, ocsp_status, &c, fg_now(), &resp, &rlen,
					     err, sizeof err);
		if (r == FG_OCSP_NOT_MINE)
			continue;
		if (r != FG_OCSP_ANSWERED || resp == NULL) {
			fg_err("http", NULL, "OCSP: backend %s: %s", b->name, err[0] ? err : "no answer");
			free(resp);
			ocsp_reply_status(req, OCSP_RESPONSE_STATUS_INTERNALERROR);
			return;
		}
		reply(req, 200, "OK", "application/ocsp-response", resp, rlen);
		free(resp);
		return;
	}
	ocsp_reply_status(req, OCSP_RESPONSE_STATUS_UNAUTHORIZED);
}

/* Decode the GET form: percent-decoding, then base64 in either alphabet
 * (RFC 4648 4 or 5), padding optional. A malloc'd buffer, or NULL. */
static unsigned char *ocsp_get_decode(const char *enc, size_t *outlen)
{
	size_t dlen = 0, n = 0;
	char *dec = evhttp_uridecode(enc, 0, &dlen);
	char *b64 = NULL;
	unsigned char *out = NULL;
	int k;

	if (dec == NULL || dlen == 0 || dlen > 4 * HTTP_MAX_BODY)
		goto out;
	if ((b64 = malloc(dlen + 4)) == NULL)
		goto out;
	for (size_t i = 0; i < dlen; i++) {
		char ch = dec[i];
		if (ch == '-')
			ch = '+';
		else if (ch == '_')
			ch = '/';
		else if (ch == '=' || ch == '\r' || ch == '\n' || ch == ' ')
			continue;
		b64[n++] = ch;
	}
	size_t pad = (4 - n % 4) % 4;
	if (pad == 3 || n == 0)
		goto out;
	memset(b64 + n, '=', pad);
	n += pad;
	b64[n] = '\0';
	if ((out = malloc(n / 4 * 3)) == NULL)
		goto out;
	k = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)n);
	if (k < 0 || (size_t)k < pad) {
		free(out);
		out = NULL;
		goto out;
	}
	*outlen = (size_t)k - pad;
out:
	free(dec);
	free(b64);
	return out;
}

static void on_ocsp(struct http *h, struct evhttp_request *req, const char *tail)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

	if (cmd == EVHTTP_REQ_POST && (tail[0] == '\0' || strcmp(tail, "/") == 0)) {
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		size_t len = evbuffer_get_length(in);
		const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
		if (ct != NULL && strncasecmp(ct, "application/ocsp-request", 24) != 0) {
			reply_text(req, 415, "Unsupported Media Type", "an OCSP request is application/ocsp-request, not %s",
				   ct);
			return;
		}
		unsigned char *body = len > 0 ? evbuffer_pullup(in, (ssize_t)len) : NULL;
		if (body == NULL) {
			ocsp_reply_status(req, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
			return;
		}
		ocsp_answer(h, req, body, len);
		return;
	}
	if ((cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD) && tail[0] == '/' && tail[1] != '\0') {
		size_t len = 0;
		unsigned char *der = ocsp_get_decode(tail + 1, &len);
		if (der == NULL) {
			ocsp_reply_status(req, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
			return;
		}
		ocsp_answer(h, req, der, len);
		free(der);
		return;
	}
	reply_text(req, 405, "Method Not Allowed", "OCSP takes POST /ocsp (application/ocsp-request) or GET /ocsp/<base64 request>");
}

/* ---- ACME http-01 (RFC 8555 8.3) ---- */

/* GET /.well-known/acme-challenge/<token>: the key authorization an ACME
 * backend published for the token, as application/octet-stream. */
static void on_acme_challenge(struct http *h, struct evhttp_request *req, const char *token)
{
	char ka[256];

	if (!backends_http01_get(h->bs, token, ka, sizeof ka)) {
		fg_debug("http", NULL, "http-01: no answer published for token %s", token);
		reply_text(req, 404, "Not Found", "no ACME http-01 challenge is pending for this token");
		return;
	}
	fg_info("http", NULL, "http-01: answered token %s", token);
	reply(req, 200, "OK", "application/octet-stream", ka, strlen(ka));
}

/* ---- dispatch ---- */

static void on_request(struct evhttp_request *req, void *arg)
{
	struct http *h = arg;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	const char *uri = evhttp_request_get_uri(req);
	char path[8192];

	/* The raw request-target without its query: the OCSP GET form keeps
	 * its percent-encoding and slashes for ocsp_get_decode. */
	size_t n = strcspn(uri, "?#");
	if (n >= sizeof path || uri[0] != '/') {
		reply_text(req, 414, "URI Too Long", "request target too long or not a path");
		return;
	}
	memcpy(path, uri, n);
	path[n] = '\0';
	fg_debug("http", NULL, "%s %s", cmd == EVHTTP_REQ_POST ? "POST" : cmd == EVHTTP_REQ_HEAD ? "HEAD" : "GET",
		 path);
	if (strcmp(path, "/ocsp") == 0 || strncmp(path, "/ocsp/", 6) == 0) {
		on_ocsp(h, req, path + 5);
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD && h->dash != NULL &&
	    dashboard_handle(h->dash, h->st, req, path))
		return;
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		reply_text(req, 405, "Method Not Allowed", "%s takes GET only", path);
		return;
	}
	if (h->dash != NULL && dashboard_handle(h->dash, h->st, req, path))
		return;
	if (strcmp(path, "/healthz") == 0)
		on_healthz(h, req);
	else if (strcmp(path, "/metrics") == 0)
		on_metrics(h, req);
	else if (strncmp(path, "/ca/", 4) == 0)
		on_ca(h, req, path + 4);
	else if (strncmp(path, "/crl/", 5) == 0)
		on_crl(h, req, path + 5);
	else if (strncmp(path, "/.well-known/acme-challenge/", 28) == 0)
		on_acme_challenge(h, req, path + 28);
	else
		reply_text(req, 404, "Not Found",
			   "no such path %s; fleetgated serves /healthz, /metrics, /ca/<backend>.crt, /crl/<backend>.crl, /ocsp and /.well-known/acme-challenge/<token>%s",
			   path, h->dash ? ", and the dashboard at /ui/" : "");
}

/* ---- the CRL timer ---- */

/* Keep each CRL fresh: re-read a file someone else replaced (the CLI
 * publishes on revocation), remake it when half its validity is gone, and
 * every CRL_STORE_CHECK ticks when the store has revocations it lacks. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;
	int64_t now = fg_now();
	int store_check = h->ticks++ % CRL_STORE_CHECK == 0;

	for (size_t i = 0; i < h->ncrls; i++) {
		struct crl_sched *c = &h->crls[i];
		struct backend *b = backends_find(h->bs, c->backend);
		char path[PATH_MAX], err[1024] = "";
		struct stat sb;
		long revoked = 0;
		int due = 0;

		if (b == NULL || crl_path(h->cfg, c->backend, path, sizeof path) != 0)
			continue;
		if (stat(path, &sb) != 0) {
			c->have = 0;
		} else if (!c->have || sb.st_size != c->size || sb.st_mtim.tv_sec != c->mtime.tv_sec ||
			   sb.st_mtim.tv_nsec != c->mtime.tv_nsec) {
			c->have = crl_read_info(h->cfg, c->backend, &c->info, err, sizeof err) == 1;
			if (!c->have && err[0])
				fg_warn("crl", NULL, "%s", err);
			c->size = sb.st_size;
			c->mtime = sb.st_mtim;
		}
		due = !c->have || crl_due(&c->info, now);
		if (!due && store_check &&
		    store_cert_count_revoked(h->st, c->backend, &revoked, err, sizeof err) == 0 &&
		    revoked != c->info.entries)
			due = 1;
		if (!due || now < c->retry_at)
			continue;
		if (crl_publish(h->cfg, b, h->st, now, &c->info, err, sizeof err) != 0) {
			fg_err("crl", NULL, "%s; retrying in %d s", err, CRL_RETRY);
			c->retry_at = now + CRL_RETRY;
			continue;
		}
		c->retry_at = 0;
		c->have = 0;      /* re-read on the next tick, with the file's mtime */
		if (stat(path, &sb) == 0) {
			c->have = 1;
			c->size = sb.st_size;
			c->mtime = sb.st_mtim;
		}
	}
}

/* ---- the thread ---- */

static void *http_main(void *arg)
{
	struct http *h = arg;

	prctl(PR_SET_NAME, "fg-http", 0, 0, 0);
	event_base_dispatch(h->base);
	return NULL;
}

struct http *http_start(const struct gw_config *cfg, struct backends *bs, char *err, size_t errlen)
{
	static int threads_ok;     /* evthread_use_pthreads done: main thread only */
	struct http *h = NULL;
	char host[256];
	int port;
	sigset_t all, old;

	if (config_http_split(cfg->http_listen, host, sizeof host, &port) != 0) {
		fg_seterr(err, errlen, "http.listen '%s' is not HOST:PORT; fix fleetgated.conf", cfg->http_listen);
		return NULL;
	}
	if (!threads_ok) {
		if (evthread_use_pthreads() != 0) {
			fg_seterr(err, errlen, "libevent has no pthreads support; install libevent-pthreads");
			return NULL;
		}
		threads_ok = 1;
	}
	if ((h = calloc(1, sizeof *h)) == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	h->cfg = cfg;
	h->bs = bs;
	if ((h->st = store_open(cfg->store_path, 0, err, errlen)) == NULL)
		goto fail;
	/* the dashboard goes on HTTPS when there is an EST listener; plain
	 * HTTP only on loopback, which config_load made sure of */
	if (cfg->ui_enabled && cfg->est_listen[0] == '\0' && (h->dash = dashboard_new(cfg, bs)) == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	h->crls = calloc(cfg->nbackends ? cfg->nbackends : 1, sizeof *h->crls);
	if (h->crls == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < cfg->nbackends; i++) {
		struct backend *b = backends_find(bs, cfg->backends[i].name);
		if (b != NULL && b->ops->make_crl != NULL)
			fg_strlcpy(h->crls[h->ncrls++].backend, b->name, sizeof h->crls[0].backend);
	}
	if ((h->base = event_base_new()) == NULL || (h->http = evhttp_new(h->base)) == NULL) {
		fg_seterr(err, errlen, "cannot set up the HTTP server (libevent): out of memory?");
		goto fail;
	}
	evhttp_set_max_body_size(h->http, HTTP_MAX_BODY);
	evhttp_set_max_headers_size(h->http, HTTP_MAX_HEADERS);
	evhttp_set_timeout(h->http, HTTP_TIMEOUT);
	evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
	evhttp_set_gencb(h->http, on_request, h);
	if (evhttp_bind_socket_with_handle(h->http, host, (ev_uint16_t)port) == NULL) {
		fg_seterr(err, errlen, "cannot listen for HTTP on %s: %s; change http.listen in fleetgated.conf or stop what uses the port",
			  cfg->http_listen, strerror(errno));
		goto fail;
	}
	struct timeval tv = { CRL_TICK, 0 }, zero = { 0, 0 };
	if ((h->timer = event_new(h->base, -1, EV_PERSIST, on_tick, h)) == NULL ||
	    event_add(h->timer, &tv) != 0 ||
	    event_base_once(h->base, -1, EV_TIMEOUT, on_tick, h, &zero) != 0) {
		fg_seterr(err, errlen, "cannot set up the CRL timer (libevent)");
		goto fail;
	}
	/* The thread inherits a mask blocking every signal, so SIGTERM and
	 * friends reach the main thread's signalfd, never this thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int r = pthread_create(&h->thread, NULL, http_main, h);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		fg_seterr(err, errlen, "cannot start the HTTP thread: %s", strerror(r));
		goto fail;
	}
	h->started = 1;
	fg_info("http", NULL, "HTTP on %s: /healthz /metrics /ca /crl /ocsp%s", cfg->http_listen,
		h->dash ? " and the dashboard at /ui/" : "");
	return h;
fail:
	http_stop(h);
	return NULL;
}

void http_stop(struct http *h)
{
	if (h == NULL)
		return;
	if (h->started) {
		event_base_loopexit(h->base, NULL);
		pthread_join(h->thread, NULL);
	}
	if (h->timer)
		event_free(h->timer);
	if (h->http)
		evhttp_free(h->http);
	if (h->base)
		event_base_free(h->base);
	store_free(h->st);
	dashboard_free(h->dash);
	free(h->crls);
	free(h);
}
