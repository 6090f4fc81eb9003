/*
 * zap: the ZeroMQ authentication handler (RFC 27, ZAP 1.0) for CURVE.
 *
 * Runs in its own thread on inproc://zeromq.zap.01. Every client that
 * completes the CURVE handshake is let in with its public key (Z85) as
 * the ZAP User-Id, which libzmq then attaches to each message of that
 * connection: workers read the device identity from there, never from the
 * payload. Only CURVE is accepted; NULL and PLAIN are refused. Whether a
 * key may do anything (known device, token, revoked) is decided per request.
 */
#ifndef FG_ZAP_H
#define FG_ZAP_H

struct zap;

/* Bind the handler socket on ctx and start the thread. Must run before any
 * CURVE server socket binds. NULL with err on failure. */
struct zap *zap_start(void *zmq_ctx, char *err, size_t errlen);
/* Stop the thread (the context's termination ends it) and free. */
void zap_stop(struct zap *z);

#endif
