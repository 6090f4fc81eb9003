/*
 * client.c: DEALER + CURVE + socket monitor (see client.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include <openssl/crypto.h>

#include "client.h"
#include "fg_util.h"
#include "fg_wire.h"

#define REPLY_MAX (1024 * 1024)

struct client {
	void *ctx;
	void *sock;
	void *mon;
	char endpoint[256];
	char rid[65];              /* outstanding request id */
	int connected;             /* TCP connected at least once */
	int handshake_ok;
	int handshake_failed;
	int refused;               /* connection attempts failed/retried */
};

static int set_int(void *s, int opt, int v)
{
	return zmq_setsockopt(s, opt, &v, sizeof v);
}

struct client *client_new(const char *endpoint, const char *server_key, const char *pub,
			  const char *sec, char *err, size_t errlen)
{
	struct client *c = calloc(1, sizeof *c);
	char monep[64];
	int64_t maxmsg = REPLY_MAX;

	if (c == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	fg_strlcpy(c->endpoint, endpoint, sizeof c->endpoint);
	c->ctx = zmq_ctx_new();
	c->sock = c->ctx ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
	if (c->sock == NULL || set_int(c->sock, ZMQ_LINGER, 0) || set_int(c->sock, ZMQ_IMMEDIATE, 1) ||
	    zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
	    zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, server_key, 40) ||
	    zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, pub, 40) ||
	    zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, sec, 40)) {
		fg_seterr(err, errlen, "cannot set up the ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
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
	free(c);
}

int client_fd(struct client *c)
{
	int fd = -1;
	size_t sz = sizeof fd;
	zmq_getsockopt(c->sock, ZMQ_FD, &fd, &sz);
	return fd;
}

/* Read pending monitor events and remember what they say. */
static void drain_monitor(struct client *c)
{
	for (;;) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, c->mon, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			return;
		}
		uint16_t ev = 0;
		if (zmq_msg_size(&m) >= 2)
			memcpy(&ev, zmq_msg_data(&m), 2);
		int more = zmq_msg_more(&m);
		zmq_msg_close(&m);
		if (more) {            /* second frame: the endpoint */
			zmq_msg_init(&m);
			zmq_msg_recv(&m, c->mon, 0);
			zmq_msg_close(&m);
		}
		switch (ev) {
		case ZMQ_EVENT_CONNECTED: c->connected = 1; break;
		case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: c->handshake_ok = 1; c->handshake_failed = 0; break;
		case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
		case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
		case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: c->handshake_failed = 1; break;
		case ZMQ_EVENT_DISCONNECTED: if (!c->handshake_ok) c->handshake_failed = c->connected; break;
		case ZMQ_EVENT_CONNECT_RETRIED:
		case ZMQ_EVENT_CONNECT_DELAYED: c->refused++; break;
		default: break;
		}
	}
}

void client_explain_silence(struct client *c, int waited_s, char *err, size_t errlen)
{
	drain_monitor(c);
	if (c->handshake_failed && !c->handshake_ok)
		fg_seterr(err, errlen, "gateway at %s refused the CURVE handshake: the server key in the bundle does not match this gateway; get a fresh bundle from the operator",
			  c->endpoint);
	else if (!c->connected)
		fg_seterr(err, errlen, "cannot connect to the gateway at %s (no answer within %d s); is fleetgated running and reachable?",
			  c->endpoint, waited_s);
	else
		fg_seterr(err, errlen, "no answer from the gateway at %s within %d s; it may be overloaded; retrying later",
			  c->endpoint, waited_s);
}

int client_send(struct client *c, const uint8_t *buf, size_t len, const char *request_id,
		char *err, size_t errlen)
{
	fg_strlcpy(c->rid, request_id, sizeof c->rid);
	/* With ZMQ_IMMEDIATE the send queues only on a live connection;
	 * without one it would block, so send without waiting and let the
	 * caller's timeout speak. */
	if (zmq_send(c->sock, buf, len, ZMQ_DONTWAIT) < 0 && zmq_errno() != EAGAIN) {
		fg_seterr(err, errlen, "cannot send to the gateway: %s", zmq_strerror(zmq_errno()));
		return CLIENT_ERROR;
	}
	client_pending_input(c);
	return CLIENT_OK;
}

int client_pending_input(struct client *c)
{
	int ev = 0;
	size_t sz = sizeof ev;
	/* Reading ZMQ_EVENTS processes the socket's pending commands, which is
	 * what re-arms its edge-triggered ZMQ_FD. */
	if (zmq_getsockopt(c->sock, ZMQ_EVENTS, &ev, &sz) != 0)
		return 0;
	return (ev & ZMQ_POLLIN) != 0;
}

int client_recv(struct client *c, Fleetgate__Envelope **reply, char *err, size_t errlen)
{
	drain_monitor(c);
	for (;;) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, c->sock, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			return CLIENT_AGAIN;
		}
		char e2[256];
		Fleetgate__Envelope *env = fg_wire_unpack(zmq_msg_data(&m), zmq_msg_size(&m), REPLY_MAX,
							  e2, sizeof e2);
		int more = zmq_msg_more(&m);
		zmq_msg_close(&m);
		while (more) {           /* a well-behaved gateway sends one frame */
			zmq_msg_init(&m);
			zmq_msg_recv(&m, c->sock, 0);
			more = zmq_msg_more(&m);
			zmq_msg_close(&m);
		}
		if (env == NULL) {
			fg_seterr(err, errlen, "undecodable reply from the gateway: %s", e2);
			continue;
		}
		if (strcmp(env->request_id, c->rid) != 0) {
			fg_wire_free(env);   /* a late answer to an earlier request */
			continue;
		}
		c->handshake_ok = 1;
		*reply = env;
		return CLIENT_OK;
	}
}

int client_call(struct client *c, const uint8_t *buf, size_t len, const char *request_id,
		int timeout_ms, Fleetgate__Envelope **reply, char *err, size_t errlen)
{
	uint64_t deadline = fg_mono_ns() + (uint64_t)timeout_ms * 1000000u;
	int sent = 0;

	*reply = NULL;
	fg_strlcpy(c->rid, request_id, sizeof c->rid);
	for (;;) {
		if (!sent) {
			if (zmq_send(c->sock, buf, len, ZMQ_DONTWAIT) >= 0)
				sent = 1;
			else if (zmq_errno() != EAGAIN) {
				fg_seterr(err, errlen, "cannot send to the gateway: %s", zmq_strerror(zmq_errno()));
				return CLIENT_ERROR;
			}
		}
		if (sent && client_recv(c, reply, err, errlen) == CLIENT_OK)
			return CLIENT_OK;
		uint64_t now = fg_mono_ns();
		if (now >= deadline)
			break;
		long wait = (long)((deadline - now) / 1000000u);
		if (!sent && wait > 50)
			wait = 50;            /* not connected yet: retry the send soon */
		zmq_pollitem_t it[2] = { { c->sock, 0, ZMQ_POLLIN, 0 }, { c->mon, 0, ZMQ_POLLIN, 0 } };
		zmq_poll(it, 2, wait);
		drain_monitor(c);
		if (c->handshake_failed && !c->handshake_ok) {
			/* The gateway dropped us at the handshake: no point waiting. */
			client_explain_silence(c, timeout_ms / 1000, err, errlen);
			return CLIENT_TIMEOUT;
		}
	}
	client_explain_silence(c, timeout_ms / 1000, err, errlen);
	return CLIENT_TIMEOUT;
}
