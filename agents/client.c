/*
 * client.c: DEALER + CURVE + socket monitor (see client.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "client.h"
#include "fg_log.h"
#include "fg_util.h"
#include "fg_wire.h"

struct client {
	void *ctx;
	void *sock;
	void *mon;                 /* PAIR receiving the socket's monitor events */
	char endpoint[256];
	/* the outstanding request */
	char rid[65];
	uint8_t *out;
	size_t outlen;
	int out_sent;              /* handed to a live connection... */
	unsigned out_gen;          /* ...which was this one */
	/* what the monitor said */
	unsigned conn_gen;         /* bumped at each disconnect */
	int ever_connected;        /* TCP connected at least once */
	int conn_up;               /* TCP connected now */
	int conn_hs_open;          /* connected, handshake not finished yet */
	int hs_fail_streak;        /* consecutive connections that failed the handshake */
	int hs_auth_refused;       /* the gateway's ZAP refused our key */
	int hs_ok_ever;
};

static int set_int(void *s, int opt, int v)
{
	return zmq_setsockopt(s, opt, &v, sizeof v);
}

/*
 * Reconnects back off from 100 ms to 5 s, so that a fleet does not hammer
 * a gateway that is down; ZMQ_IMMEDIATE keeps requests from queueing on a
 * connection that does not exist (client_flush resends them instead).
 */
struct client *client_new(const char *endpoint, const char *server_key, const char *pub,
			  const char *sec, char *err, size_t errlen)
{
	struct client *c = calloc(1, sizeof *c);
	char monep[64];
	int64_t maxmsg = CLIENT_REPLY_MAX;

	if (c == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	fg_strlcpy(c->endpoint, endpoint, sizeof c->endpoint);
	c->ctx = zmq_ctx_new();
	c->sock = c->ctx ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
	if (c->sock == NULL || set_int(c->sock, ZMQ_LINGER, 0) || set_int(c->sock, ZMQ_IMMEDIATE, 1) ||
	    set_int(c->sock, ZMQ_RECONNECT_IVL, 100) || set_int(c->sock, ZMQ_RECONNECT_IVL_MAX, 5000) ||
	    zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg)) {
		fg_seterr(err, errlen, "cannot set up the ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
		goto fail;
	}
	if (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, server_key, strlen(server_key)) ||
	    zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, pub, strlen(pub)) ||
	    zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, sec, strlen(sec))) {
		fg_seterr(err, errlen, "bad CURVE key (gateway key from the bundle, or this agent's curve.key): %s",
			  zmq_strerror(zmq_errno()));
		goto fail;
	}
	snprintf(monep, sizeof monep, "inproc://fg-monitor-%p", (void *)c);
	if (zmq_socket_monitor(c->sock, monep, ZMQ_EVENT_ALL) != 0 ||
	    (c->mon = zmq_socket(c->ctx, ZMQ_PAIR)) == NULL || set_int(c->mon, ZMQ_LINGER, 0) ||
	    zmq_connect(c->mon, monep) != 0) {
		fg_seterr(err, errlen, "cannot monitor the ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
		goto fail;
	}
	if (zmq_connect(c->sock, endpoint) != 0) {
		fg_seterr(err, errlen, "bad gateway endpoint '%s' in the bundle: %s", endpoint,
			  zmq_strerror(zmq_errno()));
		goto fail;
	}
	return c;
fail:
	client_free(c);
	return NULL;
}

void client_free(struct client *c)
{
	if (c == NULL)
		return;
	if (c->mon)
		zmq_close(c->mon);
	if (c->sock)
		zmq_close(c->sock);
	if (c->ctx)
		zmq_ctx_term(c->ctx);
	free(c->out);
	free(c);
}

int client_fd(struct client *c)
{
	int fd = -1;
	size_t sz = sizeof fd;
	if (zmq_getsockopt(c->sock, ZMQ_FD, &fd, &sz) != 0)
		return -1;
	return fd;
}

/* A connection ended before its handshake did: one more failed handshake. */
static void handshake_lost(struct client *c)
{
	if (c->conn_hs_open) {
		c->conn_hs_open = 0;
		c->hs_fail_streak++;
	}
}

/*
 * Read the pending monitor events and remember what they say. Each event is
 * two frames: 6 bytes (16-bit event, 32-bit value), then the endpoint. A
 * wrong server key shows as the gateway closing the connection during the
 * handshake (HANDSHAKE_FAILED_NO_DETAIL and/or DISCONNECTED before
 * HANDSHAKE_SUCCEEDED), again at each reconnect; a ZAP refusal as
 * HANDSHAKE_FAILED_AUTH.
 */
static void drain_monitor(struct client *c)
{
	for (;;) {
		zmq_msg_t m;
		uint16_t ev = 0;
		uint32_t val = 0;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, c->mon, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			return;
		}
		if (zmq_msg_size(&m) >= 6) {
			memcpy(&ev, zmq_msg_data(&m), 2);
			memcpy(&val, (char *)zmq_msg_data(&m) + 2, 4);
		}
		int more = zmq_msg_more(&m);
		zmq_msg_close(&m);
		while (more) {            /* the endpoint frame */
			zmq_msg_init(&m);
			if (zmq_msg_recv(&m, c->mon, 0) < 0)
				more = 0;
			else
				more = zmq_msg_more(&m);
			zmq_msg_close(&m);
		}
		switch (ev) {
		case ZMQ_EVENT_CONNECTED:
			c->ever_connected = c->conn_up = c->conn_hs_open = 1;
			break;
		case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
			c->conn_hs_open = 0;
			c->hs_fail_streak = 0;
			c->hs_auth_refused = 0;
			c->hs_ok_ever = 1;
			break;
		case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
			c->hs_auth_refused = (int)val ? (int)val : 1;
			handshake_lost(c);
			break;
		case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
		case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
			handshake_lost(c);
			break;
		case ZMQ_EVENT_DISCONNECTED:
			handshake_lost(c);
			c->conn_up = 0;
			c->conn_gen++;
			break;
		default:
			break;
		}
		fg_debug("agent", NULL, "gateway connection event 0x%x (%u)", ev, val);
	}
}

int client_handshake_failed(struct client *c)
{
	drain_monitor(c);
	/* Two in a row: one could be a gateway stopping mid-handshake. */
	return c->hs_auth_refused || c->hs_fail_streak >= 2;
}

void client_explain_silence(struct client *c, int waited_s, char *err, size_t errlen)
{
	drain_monitor(c);
	if (c->hs_auth_refused)
		fg_seterr(err, errlen, "gateway at %s refused this agent's key at the CURVE handshake (status %d); ask the operator whether this device was retired, or re-bootstrap with a fresh bundle",
			  c->endpoint, c->hs_auth_refused);
	else if (c->hs_fail_streak > 0)
		fg_seterr(err, errlen, "gateway at %s refused the CURVE handshake: the server key in the bundle does not match this gateway; get a fresh bundle from the operator",
			  c->endpoint);
	else if (!c->conn_up)
		fg_seterr(err, errlen, "no answer from gateway at %s within %d s; is it running and reachable?%s",
			  c->endpoint, waited_s, c->ever_connected ? " (the connection dropped)" : "");
	else
		fg_seterr(err, errlen, "no answer from gateway at %s within %d s although connected; it may be overloaded; retrying later",
			  c->endpoint, waited_s);
}

void client_cancel(struct client *c)
{
	free(c->out);
	c->out = NULL;
	c->outlen = 0;
	c->out_sent = 0;
	c->rid[0] = '\0';
}

int client_send(struct client *c, const uint8_t *buf, size_t len, const char *request_id,
		char *err, size_t errlen)
{
	client_cancel(c);
	if ((c->out = malloc(len ? len : 1)) == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return CLIENT_ERROR;
	}
	memcpy(c->out, buf, len);
	c->outlen = len;
	fg_strlcpy(c->rid, request_id, sizeof c->rid);
	return client_flush(c, err, errlen) < 0 ? CLIENT_ERROR : CLIENT_OK;
}

int client_flush(struct client *c, char *err, size_t errlen)
{
	drain_monitor(c);
	if (c->out == NULL)
		return 0;
	if (c->out_sent && c->out_gen != c->conn_gen) {
		/* the connection it went out on is gone: it may never have
		 * arrived; the same request id again is safe */
		fg_debug("agent", c->rid, "connection dropped while waiting; sending the request again");
		c->out_sent = 0;
	}
	if (c->out_sent)
		return 1;
	if (zmq_send(c->sock, c->out, c->outlen, ZMQ_DONTWAIT) < 0) {
		if (zmq_errno() == EAGAIN)
			return 0;       /* no live connection yet */
		fg_seterr(err, errlen, "cannot send to the gateway at %s: %s", c->endpoint,
			  zmq_strerror(zmq_errno()));
		return -1;
	}
	c->out_sent = 1;
	c->out_gen = c->conn_gen;
	return 1;
}

int client_pending_input(struct client *c)
{
	int ev = 0;
	size_t sz = sizeof ev;
	if (zmq_getsockopt(c->sock, ZMQ_EVENTS, &ev, &sz) != 0)
		return 0;
	return (ev & ZMQ_POLLIN) != 0;
}

int client_recv(struct client *c, Fleetgate__Envelope **reply, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	*reply = NULL;
	drain_monitor(c);
	for (;;) {
		zmq_msg_t m;
		char e2[256];
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, c->sock, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			return CLIENT_AGAIN;
		}
		int more = zmq_msg_more(&m);
		Fleetgate__Envelope *env = more ? NULL
			: fg_wire_unpack(zmq_msg_data(&m), zmq_msg_size(&m), CLIENT_REPLY_MAX, e2, sizeof e2);
		if (more)
			fg_seterr(e2, sizeof e2, "a reply of several frames");
		zmq_msg_close(&m);
		while (more) {           /* a well-behaved gateway sends one frame */
			zmq_msg_init(&m);
			if (zmq_msg_recv(&m, c->sock, 0) < 0)
				more = 0;
			else
				more = zmq_msg_more(&m);
			zmq_msg_close(&m);
		}
		if (env == NULL) {
			fg_warn("agent", c->rid[0] ? c->rid : NULL, "dropped an undecodable reply from the gateway: %s", e2);
			continue;
		}
		if (c->rid[0] == '\0' || strcmp(env->request_id, c->rid) != 0) {
			fg_debug("agent", env->request_id, "dropped a reply to a request no longer outstanding");
			fg_wire_free(env);
			continue;
		}
		client_cancel(c);
		*reply = env;
		return CLIENT_OK;
	}
}

int client_call(struct client *c, const uint8_t *buf, size_t len, const char *request_id,
		int timeout_ms, Fleetgate__Envelope **reply, char *err, size_t errlen)
{
	uint64_t deadline = fg_mono_ns() + (uint64_t)timeout_ms * 1000000u;

	*reply = NULL;
	if (client_send(c, buf, len, request_id, err, errlen) != CLIENT_OK)
		return CLIENT_ERROR;
	for (;;) {
		int f = client_flush(c, err, errlen);
		if (f < 0)
			break;
		if (client_recv(c, reply, err, errlen) == CLIENT_OK)
			return CLIENT_OK;
		if (client_handshake_failed(c)) {
			/* the gateway drops us at the handshake: waiting will not help */
			client_explain_silence(c, timeout_ms / 1000, err, errlen);
			client_cancel(c);
			return CLIENT_TIMEOUT;
		}
		uint64_t now = fg_mono_ns();
		if (now >= deadline) {
			client_explain_silence(c, timeout_ms / 1000, err, errlen);
			client_cancel(c);
			return CLIENT_TIMEOUT;
		}
		long wait = (long)((deadline - now) / 1000000u) + 1;
		if (wait > 50)
			wait = 50;       /* look at the monitor and resend promptly */
		zmq_pollitem_t it[2] = { { c->sock, 0, ZMQ_POLLIN, 0 }, { c->mon, 0, ZMQ_POLLIN, 0 } };
		if (zmq_poll(it, 2, wait) < 0 && zmq_errno() != EINTR) {
			fg_seterr(err, errlen, "cannot wait for the gateway: %s", zmq_strerror(zmq_errno()));
			break;
		}
	}
	client_cancel(c);
	return CLIENT_ERROR;
}
