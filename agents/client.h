/*
 * client: the agent's ZeroMQ DEALER connection to the gateway, with CURVE.
 *
 * One request at a time: client_send sends a packed Envelope, and
 * client_recv takes a reply without blocking (for the daemon's epoll loop
 * over client_fd), or client_call does both with a timeout (for --once). A
 * socket monitor tells a CURVE handshake failure (the bundle's server key is
 * not this gateway's) apart from a gateway that does not answer.
 */
#ifndef FG_CLIENT_H
#define FG_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include "fleetgate.pb-c.h"

struct client;

enum client_rc {
	CLIENT_OK = 0,
	CLIENT_ERROR = -1,       /* local failure; err says what */
	CLIENT_TIMEOUT = -2,     /* no answer; err tells handshake failure from silence */
	CLIENT_AGAIN = -3        /* client_recv: nothing (matching) yet */
};

struct client *client_new(const char *endpoint, const char *server_key, const char *pub,
			  const char *sec, char *err, size_t errlen);
void client_free(struct client *c);

/* The ZMQ_FD to watch with epoll (edge-triggered semantics: drain with
 * client_recv until CLIENT_AGAIN after every wake-up and after every send). */
int client_fd(struct client *c);

int client_send(struct client *c, const uint8_t *buf, size_t len, const char *request_id,
		char *err, size_t errlen);
/* 1 when input is waiting; also re-arms ZMQ_FD (call after every wake-up). */
int client_pending_input(struct client *c);

/* A reply to the outstanding request (others are dropped). */
int client_recv(struct client *c, Fleetgate__Envelope **reply, char *err, size_t errlen);
/* Why the outstanding request got no answer, for messages. */
void client_explain_silence(struct client *c, int waited_s, char *err, size_t errlen);

/* Send and wait up to timeout_ms for the reply. */
int client_call(struct client *c, const uint8_t *buf, size_t len, const char *request_id,
		int timeout_ms, Fleetgate__Envelope **reply, char *err, size_t errlen);

#endif
