/*
 * client: the agent's ZeroMQ DEALER connection to the gateway, with CURVE.
 *
 * One request at a time, one frame each way. client_send hands over a
 * packed Envelope; the client keeps a copy and sends it as soon as a
 * connection is up (ZMQ_IMMEDIATE: nothing queues while disconnected), and
 * again, with the same request id, if the connection drops before the
 * answer (the gateway answers a repeated request id with the same result).
 * client_recv takes the reply without blocking, for the daemon's epoll loop
 * over client_fd; client_call does it all with a timeout, for --once.
 *
 * A socket monitor tells a CURVE handshake failure (the bundle's server key
 * is not this gateway's) apart from a gateway that does not answer.
 */
#ifndef FG_CLIENT_H
#define FG_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include "fleetgate.pb-c.h"

#define CLIENT_REPLY_MAX (1024 * 1024)   /* bytes: ZMQ_MAXMSGSIZE */

struct client;

enum client_rc {
	CLIENT_OK = 0,
	CLIENT_ERROR = -1,       /* local failure; err says what */
	CLIENT_TIMEOUT = -2,     /* no answer; err tells handshake failure from silence */
	CLIENT_AGAIN = -3        /* client_recv: no (matching) reply yet */
};

/* Connect a DEALER to endpoint with the gateway's CURVE public key and the
 * agent's key pair (Z85, 40 characters each). The connection is made in the
 * background. NULL with err on a bad endpoint or key. */
struct client *client_new(const char *endpoint, const char *server_key, const char *pub,
			  const char *sec, char *err, size_t errlen);
void client_free(struct client *c);

/* The ZMQ_FD to watch with epoll. It is edge-triggered: after each wake-up
 * and after each send, call client_recv until CLIENT_AGAIN and check
 * client_pending_input. */
int client_fd(struct client *c);

/* Make buf (request_id's Envelope) the outstanding request and send it when
 * possible; any earlier outstanding request is forgotten. CLIENT_OK or
 * CLIENT_ERROR. */
int client_send(struct client *c, const uint8_t *buf, size_t len, const char *request_id,
		char *err, size_t errlen);
/* Send the outstanding request if it is not on its way yet (no connection
 * before, or the connection dropped since): 1 when it is on its way, 0 when
 * still waiting for a connection (or nothing outstanding), -1 on error. */
int client_flush(struct client *c, char *err, size_t errlen);
/* Forget the outstanding request (a late reply to it is dropped). */
void client_cancel(struct client *c);

/* 1 when input is waiting; also processes the socket's pending commands,
 * which is what re-arms the edge-triggered ZMQ_FD. */
int client_pending_input(struct client *c);

/* The reply to the outstanding request: CLIENT_OK with *reply (free with
 * fg_wire_free), or CLIENT_AGAIN. Replies with another request id and
 * undecodable frames are dropped. */
int client_recv(struct client *c, Fleetgate__Envelope **reply, char *err, size_t errlen);

/* 1 when the latest connection attempt failed the CURVE handshake. */
int client_handshake_failed(struct client *c);
/* Why the outstanding request got no answer within waited_s, for messages. */
void client_explain_silence(struct client *c, int waited_s, char *err, size_t errlen);

/* Send and wait up to timeout_ms for the reply. Gives up early when the
 * gateway refuses the CURVE handshake. CLIENT_OK with *reply, CLIENT_TIMEOUT
 * or CLIENT_ERROR with err. */
int client_call(struct client *c, const uint8_t *buf, size_t len, const char *request_id,
		int timeout_ms, Fleetgate__Envelope **reply, char *err, size_t errlen);

#endif
