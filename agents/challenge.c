/*
 * challenge.c: the agent's ACME http-01 responder (see challenge.h).
 *
 * The listener runs libevent's evhttp on a thread of its own, so that the
 * agent's loop (or --once's blocking calls) need not serve it; the token
 * table is shared under a mutex. It answers GET/HEAD of
 * /.well-known/acme-challenge/<token> for the tokens served and 404 for
 * anything else.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>

#include "challenge.h"
#include "fg_log.h"
#include "fg_util.h"

#define CHAL_MAX 16             /* tokens served at once */
#define PREFIX "/.well-known/acme-challenge/"

struct chal {
	char token[128];
	char keyauth[256];
	char file[PATH_MAX];     /* the webroot file written, "" none */
};

struct chal_server {
	pthread_mutex_t mu;      /* guards v and n (the HTTP thread reads them) */
	struct chal v[CHAL_MAX];
	size_t n;
	char *tokens[CHAL_MAX];  /* chal_tokens' view */
	char listen[280];        /* where the listener runs, "" none */
	struct event_base *base;
	struct evhttp *http;
	pthread_t thread;
	int running;
};

struct chal_server *chal_new(void)
{
	struct chal_server *c = calloc(1, sizeof *c);
	if (c != NULL && pthread_mutex_init(&c->mu, NULL) != 0) {
		free(c);
		c = NULL;
	}
	return c;
}

void chal_free(struct chal_server *c)
{
	if (c == NULL)
		return;
	chal_stop(c);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static int b64url_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	return n > 0 && n < max &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == n;
}

/* A key authorization is token "." thumbprint (RFC 8555 8.1). */
static int keyauth_ok(const char *token, const char *ka)
{
	size_t tl = strlen(token);
	return strlen(ka) < sizeof(((struct chal *)0)->keyauth) && strncmp(ka, token, tl) == 0 &&
	       ka[tl] == '.' && b64url_ok(ka + tl + 1, 128);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct chal_server *c = arg;
	const char *uri = evhttp_request_get_uri(req);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	char ka[256] = "";
	int found = 0;

	if ((cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD) && strncmp(uri, PREFIX, strlen(PREFIX)) == 0) {
		const char *tok = uri + strlen(PREFIX);
		pthread_mutex_lock(&c->mu);
		for (size_t i = 0; i < c->n && !found; i++) {
			if (strcmp(c->v[i].token, tok) == 0) {
				fg_strlcpy(ka, c->v[i].keyauth, sizeof ka);
				found = 1;
			}
		}
		pthread_mutex_unlock(&c->mu);
	}
	struct evbuffer *b = evbuffer_new();
	if (b == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	if (found) {
		char *peer = NULL;
		ev_uint16_t pport = 0;
		struct evhttp_connection *conn = evhttp_request_get_connection(req);
		if (conn != NULL)
			evhttp_connection_get_peer(conn, &peer, &pport);
		fg_info("agent", NULL, "http-01: answered %s to %s", uri, peer != NULL ? peer : "an unknown peer");
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/octet-stream");
		if (cmd == EVHTTP_REQ_GET)
			evbuffer_add(b, ka, strlen(ka));
		evhttp_send_reply(req, 200, "OK", b);
	} else {
		fg_debug("agent", NULL, "http-01: nothing served at %s", uri);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
		evbuffer_add_printf(b, "no ACME challenge is served here\n");
		evhttp_send_reply(req, 404, "Not Found", b);
	}
	evbuffer_free(b);
}

static void *http_main(void *arg)
{
	struct chal_server *c = arg;
	event_base_dispatch(c->base);
	return NULL;
}

/* Start the listener on listen. 0, or -1 with err. */
static int listener_start(struct chal_server *c, const char *listen, char *err, size_t errlen)
{
	static int threads_ok;
	char host[256];
	int port;
	sigset_t all, old;

	if (agent_listen_split(listen, host, sizeof host, &port) != 0) {
		fg_seterr(err, errlen, "acme_http01_listen '%s' is not HOST:PORT", listen);
		return -1;
	}
	if (!threads_ok) {
		if (evthread_use_pthreads() != 0) {
			fg_seterr(err, errlen, "libevent has no pthreads support");
			return -1;
		}
		threads_ok = 1;
	}
	if ((c->base = event_base_new()) == NULL || (c->http = evhttp_new(c->base)) == NULL) {
		fg_seterr(err, errlen, "cannot set up the http-01 responder (libevent): out of memory?");
		goto fail;
	}
	evhttp_set_max_body_size(c->http, 1024);
	evhttp_set_max_headers_size(c->http, 8192);
	evhttp_set_timeout(c->http, 10);
	evhttp_set_allowed_methods(c->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(c->http, on_request, c);
	if (evhttp_bind_socket_with_handle(c->http, host, (ev_uint16_t)port) == NULL) {
		fg_seterr(err, errlen, "cannot serve ACME http-01 on %s: %s; free the address or change acme_http01_listen",
			  listen, strerror(errno));
		goto fail;
	}
	/* signals stay with the agent's main thread */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int r = pthread_create(&c->thread, NULL, http_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		fg_seterr(err, errlen, "cannot start the http-01 responder thread: %s", strerror(r));
		goto fail;
	}
	c->running = 1;
	fg_strlcpy(c->listen, listen, sizeof c->listen);
	fg_info("agent", NULL, "http-01: serving /.well-known/acme-challenge/ on %s", listen);
	return 0;
fail:
	if (c->http)
		evhttp_free(c->http);
	if (c->base)
		event_base_free(c->base);
	c->http = NULL;
	c->base = NULL;
	return -1;
}

int chal_serve(struct chal_server *c, const struct agent_config *cfg, const char *rid,
	       Fleetgate__Challenge *const *ch, size_t n, char *err, size_t errlen)
{
	int added = 0;

	if (cfg->acme_http01_listen[0] == '\0' && cfg->acme_webroot[0] == '\0') {
		fg_seterr(err, errlen, "the gateway asks this device to answer ACME http-01 challenges, but the agent config sets neither acme_http01_listen nor acme_webroot; set one (docs/acme.md)");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		const Fleetgate__Challenge *x = ch[i];
		if (x == NULL || x->type == NULL || strcmp(x->type, "http-01") != 0) {
			fg_seterr(err, errlen, "the gateway asks for an ACME challenge of type '%s'; this agent answers http-01 only",
				  x && x->type ? x->type : "");
			return -1;
		}
		if (!b64url_ok(x->token, sizeof c->v[0].token) || !keyauth_ok(x->token, x->key_authorization)) {
			fg_seterr(err, errlen, "the gateway sent a malformed http-01 challenge for %s", x->identifier);
			return -1;
		}
	}
	if (cfg->acme_http01_listen[0] && !c->running &&
	    listener_start(c, cfg->acme_http01_listen, err, errlen) != 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const Fleetgate__Challenge *x = ch[i];
		size_t k;
		for (k = 0; k < c->n && strcmp(c->v[k].token, x->token) != 0; k++)
			;
		if (k < c->n)
			continue;
		if (c->n == CHAL_MAX) {
			fg_seterr(err, errlen, "more than %d ACME challenges at once", CHAL_MAX);
			return -1;
		}
		struct chal nc;
		memset(&nc, 0, sizeof nc);
		fg_strlcpy(nc.token, x->token, sizeof nc.token);
		fg_strlcpy(nc.keyauth, x->key_authorization, sizeof nc.keyauth);
		if (cfg->acme_webroot[0]) {
			char dir[PATH_MAX];
			int w = snprintf(dir, sizeof dir, "%s/.well-known/acme-challenge", cfg->acme_webroot);
			int w2 = snprintf(nc.file, sizeof nc.file, "%s/%s", dir, nc.token);
			if (w < 0 || (size_t)w >= sizeof dir || w2 < 0 || (size_t)w2 >= sizeof nc.file) {
				fg_seterr(err, errlen, "acme_webroot path is too long");
				return -1;
			}
			if (fg_mkdirs(dir, 0755, err, errlen) != 0 ||
			    fg_write_file_atomic(nc.file, nc.keyauth, strlen(nc.keyauth), 0644, (uid_t)-1,
						 (gid_t)-1, err, errlen) != 0)
				return -1;
			fg_info("agent", rid, "http-01: wrote %s for %s", nc.file, x->identifier);
		}
		pthread_mutex_lock(&c->mu);
		c->v[c->n] = nc;
		c->tokens[c->n] = c->v[c->n].token;
		c->n++;
		pthread_mutex_unlock(&c->mu);
		fg_info("agent", rid, "http-01: serving the challenge for %s (token %s)", x->identifier, x->token);
		added++;
	}
	return added;
}

char *const *chal_tokens(const struct chal_server *c, size_t *n)
{
	*n = c->n;
	return c->tokens;
}

void chal_stop(struct chal_server *c)
{
	if (c == NULL)
		return;
	if (c->running) {
		event_base_loopexit(c->base, NULL);
		pthread_join(c->thread, NULL);
		c->running = 0;
		fg_info("agent", NULL, "http-01: stopped serving on %s", c->listen);
		c->listen[0] = '\0';
	}
	if (c->http)
		evhttp_free(c->http);
	if (c->base)
		event_base_free(c->base);
	c->http = NULL;
	c->base = NULL;
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->n; i++) {
		if (c->v[i].file[0] && unlink(c->v[i].file) != 0 && errno != ENOENT)
			fg_warn("agent", NULL, "http-01: cannot remove %s: %s", c->v[i].file, strerror(errno));
		else if (c->v[i].file[0])
			fg_info("agent", NULL, "http-01: removed %s", c->v[i].file);
	}
	c->n = 0;
	pthread_mutex_unlock(&c->mu);
}
