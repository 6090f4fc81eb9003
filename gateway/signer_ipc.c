/*
 * signer_ipc: framing of the daemon <-> signer messages (signer_ipc.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fg_util.h"
#include "signer_ipc.h"

int signer_ipc_send(int fd, uint16_t type, uint32_t id, const void *body, size_t len)
{
	struct signer_hdr h = {
		.magic = SIGNER_IPC_MAGIC,
		.version = SIGNER_IPC_VERSION,
		.type = type,
		.len = (uint32_t)len,
		.id = id,
	};
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof h },
		{ .iov_base = (void *)body, .iov_len = len },
	};
	int iovcnt = len > 0 ? 2 : 1;
	struct iovec *v = iov;

	if (len > UINT32_MAX) {
		errno = EMSGSIZE;
		return -1;
	}
	while (iovcnt > 0) {
		ssize_t w = writev(fd, v, iovcnt);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		size_t left = (size_t)w;
		while (iovcnt > 0 && left >= v->iov_len) {
			left -= v->iov_len;
			v++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			v->iov_base = (char *)v->iov_base + left;
			v->iov_len -= left;
		}
	}
	return 0;
}

/* Read exactly len bytes. 0, 1 on end of stream before the first byte,
 * -1 on an error or an end of stream in the middle (errno EPIPE). */
static int read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = read(fd, (char *)buf + got, len - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0) {
			if (got == 0)
				return 1;
			errno = EPIPE;
			return -1;
		}
		got += (size_t)r;
	}
	return 0;
}

/* The checks every header passes before its body is read. 0, or -1 with err. */
static int header_check(const struct signer_hdr *h, size_t max, char *err, size_t errlen)
{
	if (h->magic != SIGNER_IPC_MAGIC || h->version != SIGNER_IPC_VERSION) {
		fg_seterr(err, errlen, "message header has magic 0x%08x version %u, not 0x%08x version %u: not the signer protocol of this fleetgated",
			  (unsigned)h->magic, (unsigned)h->version, SIGNER_IPC_MAGIC, SIGNER_IPC_VERSION);
		return -1;
	}
	if (h->len > max) {
		fg_seterr(err, errlen, "message %u announces %u bytes, more than the cap of %zu; dropped unread",
			  (unsigned)h->id, (unsigned)h->len, max);
		return -1;
	}
	return 0;
}

/* err for a body that read_full could not read (r its result). */
static void body_error(const struct signer_hdr *h, int r, char *err, size_t errlen)
{
	fg_seterr(err, errlen, "cannot read the %u-byte body of message %u: %s", (unsigned)h->len, (unsigned)h->id,
		  r == 1 || errno == EPIPE ? "the peer closed the socket" : strerror(errno));
}

int signer_ipc_recv(int fd, size_t max, struct signer_hdr *h, unsigned char **body, char *err,
		    size_t errlen)
{
	unsigned char *b = NULL;
	int r;

	*body = NULL;
	r = read_full(fd, h, sizeof *h);
	if (r == 1)
		return 1;
	if (r < 0) {
		fg_seterr(err, errlen, "cannot read a message header: %s",
			  errno == EPIPE ? "the peer closed the socket mid-header" : strerror(errno));
		return -1;
	}
	if (header_check(h, max, err, errlen) != 0)
		return -1;
	if (h->len == 0)
		return 0;
	if ((b = malloc((size_t)h->len + 1)) == NULL) {
		fg_seterr(err, errlen, "out of memory for a message of %u bytes", (unsigned)h->len);
		return -1;
	}
	r = read_full(fd, b, h->len);
	if (r != 0) {
		body_error(h, r, err, errlen);
		free(b);
		return -1;
	}
	b[h->len] = 0;
	*body = b;
	return 0;
}

int signer_ipc_recv_buf(int fd, struct signer_rbuf *rb, size_t max, struct signer_hdr *h, unsigned char **body,
			char *err, size_t errlen)
{
	*body = NULL;
	/* The header: from the buffer, filling it with what the socket has. */
	while (rb->len < sizeof *h) {
		if (rb->off > 0) {
			memmove(rb->b, rb->b + rb->off, rb->len);
			rb->off = 0;
		}
		ssize_t r = read(fd, rb->b + rb->len, sizeof rb->b - rb->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fg_seterr(err, errlen, "cannot read a message header: %s", strerror(errno));
			return -1;
		}
		if (r == 0) {
			if (rb->len == 0)
				return 1;
			fg_seterr(err, errlen, "cannot read a message header: the peer closed the socket mid-header");
			return -1;
		}
		rb->len += (size_t)r;
	}
	memcpy(h, rb->b + rb->off, sizeof *h);
	if (header_check(h, max, err, errlen) != 0)
		return -1;
	rb->off += sizeof *h;
	rb->len -= sizeof *h;
	if (h->len == 0)
		return 0;
	unsigned char *b = malloc((size_t)h->len + 1);
	if (b == NULL) {
		fg_seterr(err, errlen, "out of memory for a message of %u bytes", (unsigned)h->len);
		return -1;
	}
	/* The body: what the buffer holds, then the rest straight from the
	 * socket (a large body does not go through the buffer). */
	size_t have = rb->len < h->len ? rb->len : h->len;
	memcpy(b, rb->b + rb->off, have);
	rb->off += have;
	rb->len -= have;
	if (rb->len == 0)
		rb->off = 0;
	if (have < h->len) {
		int r = read_full(fd, b + have, h->len - have);
		if (r != 0) {
			body_error(h, r, err, errlen);
			free(b);
			return -1;
		}
	}
	b[h->len] = 0;
	*body = b;
	return 0;
}
