/*
 * zap.c: ZAP 1.0 handler (ZeroMQ RFC 27) that tags each CURVE client with its
 * public key. See zap.h for why every well-formed CURVE client is let in.
 */
#include <pthread.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <zmq.h>

#include "fg_log.h"
#include "fg_util.h"
#include "zap.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

struct zap {
	void *sock;        /* REP, owned by the thread after start */
	pthread_t thread;
	int started;
};

/* Receive one multipart ZAP request into frames (at most nmax); returns the
 * frame count, or -1 when the context is terminating. Frames past nmax are
 * discarded; each frame is copied into a fixed 256-byte slot. */
static int zap_recv(void *sock, char frames[][256], size_t lens[], int nmax)
{
	int n = 0, more = 1;

	while (more) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		int r;
		/* A signal to the process (glibc's set*id broadcast when the
		 * daemon switches user, for one) interrupts the wait: retry. */
		while ((r = zmq_msg_recv(&m, sock, 0)) < 0 && zmq_errno() == EINTR)
			;
		if (r < 0) {
			zmq_msg_close(&m);
			return -1;
		}
		if (n < nmax) {
			size_t len = zmq_msg_size(&m);
			if (len > 255)
				len = 255;
			memcpy(frames[n], zmq_msg_data(&m), len);
			frames[n][len] = '\0';
			lens[n] = len;
		}
		n++;
		more = zmq_msg_more(&m);
		zmq_msg_close(&m);
	}
	return n;
}

static void zap_reply(void *sock, const char *rid, size_t ridlen, const char *code,
		      const char *text, const char *user)
{
	zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
	zmq_send(sock, rid, ridlen, ZMQ_SNDMORE);
	zmq_send(sock, code, strlen(code), ZMQ_SNDMORE);
	zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
	zmq_send(sock, user, strlen(user), ZMQ_SNDMORE);
	zmq_send(sock, "", 0, 0);
}

/* The handler loop: frames are version, request id, domain, address,
 * identity, mechanism, credentials... (RFC 27). */
static void *zap_main(void *arg)
{
	struct zap *z = arg;
	char f[8][256];
	size_t len[8];

	for (;;) {
		int n = zap_recv(z->sock, f, len, 8);
		if (n < 0)
			break;
		if (n < 6 || strcmp(f[0], "1.0") != 0) {
			/* Not a ZAP request we can answer; a REP socket must
			 * still reply to stay in step. */
			zap_reply(z->sock, n > 1 ? f[1] : "", n > 1 ? len[1] : 0, "500",
				  "malformed ZAP request", "");
			continue;
		}
		if (strcmp(f[5], "CURVE") != 0 || n < 7 || len[6] != 32) {
			fg_warn("zap", NULL, "refused a %s connection from %s: only CURVE is accepted",
				f[5], f[3]);
			zap_reply(z->sock, f[1], len[1], "400", "CURVE required", "");
			continue;
		}
		char key[41];
		if (zmq_z85_encode(key, (const uint8_t *)f[6], 32) == NULL) {
			zap_reply(z->sock, f[1], len[1], "500", "cannot encode key", "");
			continue;
		}
		fg_debug("zap", NULL, "CURVE client %s from %s", key, f[3]);
		zap_reply(z->sock, f[1], len[1], "200", "OK", key);
	}
	zmq_close(z->sock);
	z->sock = NULL;
	return NULL;
}

struct zap *zap_start(void *zmq_ctx, char *err, size_t errlen)
{
	struct zap *z = calloc(1, sizeof *z);
	if (z == NULL) {
		fg_seterr(err, errlen, "out of memory starting the ZAP handler");
		return NULL;
	}
	z->sock = zmq_socket(zmq_ctx, ZMQ_REP);
	int linger = 0;
	if (z->sock == NULL || zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
	    zmq_bind(z->sock, ZAP_ENDPOINT) != 0) {
		fg_seterr(err, errlen, "cannot start the ZAP handler on %s: %s", ZAP_ENDPOINT,
			  zmq_strerror(zmq_errno()));
		if (z->sock)
			zmq_close(z->sock);
		free(z);
		return NULL;
	}
	if (pthread_create(&z->thread, NULL, zap_main, z) != 0) {
		fg_seterr(err, errlen, "cannot start the ZAP handler thread");
		zmq_close(z->sock);
		free(z);
		return NULL;
	}
	z->started = 1;
	return z;
}

/* The thread leaves its loop when zmq_ctx_term (or zmq_ctx_shutdown) makes
 * its receive fail with ETERM, so callers shut the context down first. */
void zap_stop(struct zap *z)
{
	if (z == NULL)
		return;
	if (z->started)
		pthread_join(z->thread, NULL);
	free(z);
}
